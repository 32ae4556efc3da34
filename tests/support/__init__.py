"""What tests share that is not a fixture: builders, clients and measuring tools."""
