"""Delivery after a hub outage, measured: the real module process and SDK against DevHub, every-frame at 5 fps.

The hub refuses connections for `--outage` seconds (optionally the module is killed with SIGKILL and restarted
half-way through); then it accepts again. Printed as JSON: seconds from the hub's return to the first message and to
the first live result (made after the return), and to an empty outbox; from the module's first CONNECT the hub
admitted after the return to its first message; events delivered and the backlog size.
Heavy (minutes): run it under the heavy-run lock, not in CI.

    flock /tmp/ve-heavy.lock python -m tests.edge.outage_figures --outage 30 --kill
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from visionedge_devhub.broker import free_port
from visionedge_devhub.hub import DevHub
from visionedge_devhub.testing import running_devhub, sdk_nodelay


def start(hub: DevHub, work: Path, n: int) -> subprocess.Popen[bytes]:
    """The module as IoT Edge runs it, logging to work/module-n.log."""
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"local": {"data_dir": str(work / "data"), "cache_dir": str(work / "cache"),
                                                "metrics_port": free_port(), "status_interval_s": 1.0}}),
                      encoding="utf-8")
    env = {**os.environ, **hub.env(), "VISIONEDGE_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    env.pop("VISIONEDGE_DATA_DIR", None)
    with (work / f"module-{n}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "visionedge", "run"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def made_at(event: dict[str, Any]) -> float:
    """A result's frame time (wall clock)."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def events_of(body: Any) -> list[dict[str, Any]]:
    """The events one message carried."""
    if not isinstance(body, dict):
        return []
    return list(body["events"]) if body.get("type") == "batch" else [body]


def depth(hub: DevHub) -> int | None:
    """The module's outbox depth from getStatus, or None when it does not answer."""
    try:
        code, payload = hub.emulator.call_method("getStatus", {}, timeout=5)
    except TimeoutError:
        return None
    return int(payload["telemetry"]["outbox"]["depth"]) if code == 200 else None


def measure(outage_s: float, kill: bool, work: Path) -> dict[str, Any]:
    """One outage, as the module docstring says."""
    desired = {"source": {"uri": "sample", "fps": 5}, "model": {"name": "squeezenet"},
               "telemetry": {"policy": "every-frame", "batch": True}}
    with sdk_nodelay(), running_devhub(work, desired=desired) as hub:
        module = start(hub, work, 0)
        try:
            hub.emulator.wait_for_telemetry(lambda m: m.output == "results", timeout=120, count=3)
            hub.front.set_down(True)
            hub.front.drop()
            cut = time.time()
            if kill:
                time.sleep(outage_s / 2)
                module.send_signal(signal.SIGKILL)
                module.wait(10)
                module = start(hub, work, 1)
            time.sleep(max(0.0, cut + outage_s - time.time()))
            seen = hub.emulator.last_seq
            admitted = hub.front.stats.authenticated
            back = time.time()
            hub.front.set_down(False)
            hub.front.wait_for(lambda stats: stats.authenticated > admitted, timeout=120)
            connected = time.time()
            first = hub.emulator.wait_for_telemetry(lambda m: m.seq > seen, timeout=120)[0]
            live = hub.emulator.wait_for_telemetry(
                lambda m: m.seq > seen and any(made_at(e) >= back for e in events_of(m.json)
                                               if e.get("type") == "result"), timeout=120)[0]
            while depth(hub) != 0:
                time.sleep(0.2)
            drained = time.time()
            after = [m for m in hub.emulator.telemetry() if m.seq > seen]
            backlog = sum(1 for m in after for e in events_of(m.json) if e.get("type") == "result"
                          and made_at(e) < back)
        finally:
            module.send_signal(signal.SIGTERM)
            module.wait(20)
    return {"outage_s": outage_s, "kill_9_restart": kill, "first_message_s": round(first.received_at - back, 2),
            "connected_s": round(connected - back, 2), "first_message_after_connect_s": round(
                first.received_at - connected, 2),
            "first_live_result_s": round(live.received_at - back, 2), "drained_s": round(drained - back, 2),
            "backlog_results": backlog, "messages_after_return": len(after)}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one outage, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the hub refuses connections")
    parser.add_argument("--kill", action="store_true", help="SIGKILL and restart the module half-way through")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="outage-") as work:
        print(json.dumps(measure(args.outage, args.kill, Path(work))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
