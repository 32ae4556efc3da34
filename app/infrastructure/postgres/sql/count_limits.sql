SELECT count(*) FROM rate_limits
