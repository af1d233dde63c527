"""`python -m visionedge_devhub`: same as the `visionedge-devhub` console script."""

from visionedge_devhub.cli import main

raise SystemExit(main())
