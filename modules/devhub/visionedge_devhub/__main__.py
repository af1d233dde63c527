"""`python -m visionedge.devhub`: same as the `visionedge-devhub` console script."""

from visionedge.devhub.cli import main

raise SystemExit(main())
