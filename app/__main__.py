"""`python -m app`: the command line of app/main/cli.py."""

import sys

from app.main.cli import main

if __name__ == "__main__":
    sys.exit(main())
