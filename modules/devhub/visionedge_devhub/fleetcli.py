"""`visionedge-devhub fleet up --devices N`: a fleet of real module processes behind a local IoT Hub service API;
`fleet outage --for S` and `fleet down` reach that running fleet from another shell, through its hub.env."""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import requests
from visionedge.fleet.hub import parse_connection_string
from visionedge.fleet.rest import TOKEN_TTL_S, sas_token

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
    outage = fsub.add_parser("outage", help="make the running fleet's hub answer 503 for a while (rehearse an outage)")
    outage.add_argument("--for", dest="seconds", type=float, required=True, help="seconds of outage")
    outage.add_argument("--fleet-dir", type=Path, default=DEFAULT_FLEET_DIR, help=f"(default {DEFAULT_FLEET_DIR})")
    outage.set_defaults(func=cmd_fleet_outage, client=False)
    down = fsub.add_parser("down", help="stop the running fleet (every module, broker and the hub)")
    down.add_argument("--fleet-dir", type=Path, default=DEFAULT_FLEET_DIR, help=f"(default {DEFAULT_FLEET_DIR})")
    down.set_defaults(func=cmd_fleet_down, client=False)


class FleetUnreachable(Exception):
    """No fleet answers at that fleet dir; the message says why."""


def _call(fleet_dir: Path, route: str, body: dict[str, Any]) -> requests.Response:
    """POST a devhub route of the fleet whose hub.env is in `fleet_dir`, signed with its service key."""
    env_file = fleet_dir.absolute() / "hub.env"
    try:
        values = dict(re.findall(r"export (\w+)='([^']*)'", env_file.read_text(encoding="utf-8")))
    except OSError as err:
        raise FleetUnreachable(f"no fleet at {fleet_dir} ({env_file}: {err.strerror}); start one with "
                               "`visionedge-devhub fleet up`") from None
    fields = parse_connection_string(values.get("IOTHUB_CONNECTION_STRING", ""))
    token = sas_token(fields["HostName"], fields["SharedAccessKeyName"], fields["SharedAccessKey"],
                      int(time.time()) + TOKEN_TTL_S)
    try:
        response = requests.post(f"https://{fields['HostName']}/devhub/{route}", json=body, timeout=10,
                                 headers={"Authorization": token}, verify=values.get("VISIONEDGE_HUB_CA", True))
    except requests.RequestException as err:
        raise FleetUnreachable(f"the fleet at {fleet_dir} does not answer ({type(err).__name__}): is it up?") from None
    if response.status_code >= 300:
        raise FleetUnreachable(f"the fleet at {fleet_dir} refused: HTTP {response.status_code} {response.text[:200]}")
    return response


def cmd_fleet_outage(args: argparse.Namespace) -> int:
    """Every service call of the running fleet's hub answers 503 for --for seconds; devices keep running."""
    if not 0 < args.seconds <= 86400:
        sys.stderr.write("visionedge-devhub: error: --for must be between 0 and 86400 seconds\n")
        return 2
    try:
        _call(args.fleet_dir, "outage", {"seconds": args.seconds})
    except FleetUnreachable as err:
        sys.stderr.write(f"visionedge-devhub: error: {err}\n")
        return 1
    until = time.strftime("%H:%M:%S", time.localtime(time.time() + args.seconds))
    sys.stdout.write(f"hub outage: every service call answers 503 for {args.seconds:g} s (until {until})\n")
    return 0


def cmd_fleet_down(args: argparse.Namespace) -> int:
    """Stop the running fleet and wait until its hub no longer answers."""
    try:
        _call(args.fleet_dir, "down", {})
    except FleetUnreachable as err:
        sys.stderr.write(f"visionedge-devhub: error: {err}\n")
        return 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _call(args.fleet_dir, "down", {})
        except FleetUnreachable:
            sys.stdout.write(f"fleet at {args.fleet_dir} stopped\n")
            return 0
        time.sleep(0.5)
    sys.stderr.write(f"visionedge-devhub: error: the fleet at {args.fleet_dir} still answers after 60 s\n")
    return 1


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
        assert fleet.api is not None
        fleet.api.on_down = stop.set
        env_file = fleet.write_env(work / "hub.env")
        for line in (
            f"# fleet of {args.devices} devices up; each runs `visionedge run` with its own broker",
            f"# hub connection string and CA: {env_file} (owner-only); for example:",
            f"#   . {shlex.quote(str(env_file))} && visionedge fleet rings assign && visionedge fleet status",
            f"# module logs: {work}/devices/<device>/module.log; Ctrl-C or `visionedge-devhub fleet down` stops "
            "everything; `visionedge-devhub fleet outage --for 30` rehearses a hub outage",
        ):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        stop.wait()
    finally:
        fleet.stop()
        (work / "hub.env").unlink(missing_ok=True)
    return 0
