"""The registry of benchmark sections: a dict from the name given to --section to the module that measures it.

A section is one module here with
  run(args) -> int                      prints its table; non-zero fails the run (the exit status);
  add_arguments(parser)  (optional)     its own options, named after it (`--rss-minutes`);
  work(args, params) -> object (opt.)   what `common.worker([name, *params], args)` runs in a fresh process; the
                                        result comes back as JSON.
Its docstring (first line `name: what it measures`) is its entry in `--help`. Add the module to SECTIONS below."""

from __future__ import annotations

from types import ModuleType

from bench.sections import calibration, gate, report, rss, shadow, sources, throughput, tracking, variants

SECTIONS: dict[str, ModuleType] = {
    "throughput": throughput,
    "sources": sources,
    "rss": rss,
    "report": report,
    "gate": gate,
    "variants": variants,
    "shadow": shadow,
    "calibration": calibration,
    "tracking": tracking,
}
DEFAULT_SECTIONS = ("throughput", "sources")
"""`rss` takes 10 minutes, `report` about 3, `gate` and `variants` 2-5 (variants quantizes first): ask by name."""
