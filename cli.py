#!/usr/bin/env python3
"""Run the `wno` CLI from a checkout without installing it: `python cli.py --help`."""
from wno.cli import main

if __name__ == "__main__":
    main()
