"""The benchmark as a package: `cli.py` runs the sections named in `sections/` (one module per section), `common.py`
holds what several sections share and `clips.py` the two sources made only for measuring."""
