"""`python -m visionedge` runs the command line."""

import sys

from visionedge.entry import main

sys.exit(main())
