#!/usr/bin/env python3
"""Entry point of the benchmark; the sections live in the `bench` package beside this file (see bench/cli.py)."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
