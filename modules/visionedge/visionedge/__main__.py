"""`python -m visionedge` runs the command line."""

import sys

from visionedge.cli import main

sys.exit(main())
