"""The module's speed against the best plain onnxruntime loop a user would write, side by side in one run.

    python scripts/bench.py [--section throughput sources rss] [--frames 300] [--rounds 5] [--models ...]

Sections (throughput and sources by default, or pick with --section; each prints its own table):
{sections}
The machine is shared and noisy: rerun on a quiet one; every section takes the same flags there.
To add a section: one module in scripts/bench/sections/ and its entry in SECTIONS (see sections/__init__.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Sequence

from bench.common import DEFAULT_MODELS, WARMUP_RUNS
from bench.sections import DEFAULT_SECTIONS, SECTIONS


def describe() -> str:
    """The help text: this module's docstring with each section's own docstring in it."""
    sections = []
    for name, module in SECTIONS.items():
        first, _, rest = (module.__doc__ or name).partition("\n")
        sections.append(f"  {first}\n{textwrap.indent(rest, '      ')}".rstrip())
    return (__doc__ or "").format(sections="\n".join(sections))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options: the shared ones here, each section's own from its `add_arguments`."""
    parser = argparse.ArgumentParser(description=describe(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", nargs="+", choices=list(SECTIONS), default=list(DEFAULT_SECTIONS),
                        help=f"sections to run (default: {' '.join(DEFAULT_SECTIONS)})")
    parser.add_argument("--frames", type=int, default=300, help="throughput: first N frames of vtest.avi")
    parser.add_argument("--rounds", type=int, default=5, help="throughput: rounds of every path (default 5)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="built-in model names")
    for module in SECTIONS.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    own = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(own)
    if args.frames < WARMUP_RUNS or args.rounds < 1:
        parser.error(f"--frames must be at least {WARMUP_RUNS} and --rounds at least 1")
    args.argv = own
    return args


def run_worker(args: argparse.Namespace) -> int:
    """Child side of `common.worker`: the named section's `work`, its result as JSON on the last stdout line."""
    logging.disable(logging.INFO)
    name, *params = args.worker
    sys.stdout.write(json.dumps(SECTIONS[name].work(args, params)) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections in order."""
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    failed = 0
    for name in args.section:
        failed |= SECTIONS[name].run(args)
        print()
    return failed
