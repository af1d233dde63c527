"""`visionedge-devhub fleet up --devices N`: a fleet of real module processes behind a local IoT Hub service API."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from visionedge_devhub.fleet import Fleet

DEFAULT_FLEET_DIR = Path(".cache/devhub-fleet")


def add_parser(sub: Any) -> None:
    """Register `fleet up` on the devhub parser."""
    fleet = sub.add_parser("fleet", help="a fleet of devices, each a real module with its own broker")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True)
    up = fsub.add_parser("up", help="start N devices and the hub's service API; Ctrl-C stops them all")
    up.add_argument("--devices", type=int, default=20, help="number of devices (default 20)")
    up.add_argument("--fleet-dir", type=Path, default=DEFAULT_FLEET_DIR,
                    help=f"where device data, logs and the hub's env file go (default {DEFAULT_FLEET_DIR})")
    up.add_argument("--fps", type=float, default=1.0, help="analysis rate of every device (default 1)")
    up.add_argument("--prefix", default="device", help="device ids are PREFIX-00, PREFIX-01, ...")
    up.add_argument("--model-ca", type=Path, help="extra CA (PEM) the devices trust for model downloads")
    up.add_argument("--no-modules", action="store_true", help="start the devices' hubs but not the modules")
    up.set_defaults(func=cmd_fleet_up, client=False)


def cmd_fleet_up(args: argparse.Namespace) -> int:
    """Run the fleet until Ctrl-C or SIGTERM; the connection string goes to an owner-only env file, not stdout."""
    if args.devices < 1 or args.devices > 200:
        sys.stderr.write("visionedge-devhub: error: --devices must be between 1 and 200\n")
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    work = args.fleet_dir.absolute()
    fleet = Fleet(args.devices, work, fps=args.fps, prefix=args.prefix, model_ca=args.model_ca)
    try:
        fleet.start(modules=not args.no_modules)
        env_file = fleet.write_env(work / "hub.env")
        for line in (
            f"# fleet of {args.devices} devices up; each runs `visionedge run` with its own broker",
            f"# hub connection string and CA: {env_file} (owner-only); for example:",
            f"#   . {shlex.quote(str(env_file))} && visionedge fleet rings assign && visionedge fleet status",
            f"# module logs: {work}/devices/<device>/module.log; Ctrl-C stops everything",
        ):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        stop.wait()
    finally:
        fleet.stop()
    return 0
