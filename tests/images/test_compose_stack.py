"""docker/compose.yaml's flow on podman: the devhub and the module in one network namespace, plus a local broker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from .podman import LOCKED_DOWN, REPO, Image, Podman, stop_cleanly, wait_healthy

pytestmark = pytest.mark.timeout(600)  # on a fresh machine this test may be the one that builds the images
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text(encoding="utf-8"))["services"]
SUBSCRIBE = """
import sys, paho.mqtt.client as mqtt
got = []
c = mqtt.Client()
c.on_connect = lambda c, u, f, rc: c.subscribe("visionedge/+/results")
c.on_message = lambda c, u, m: got.append(m)
c.connect("127.0.0.1", 1883)
c.loop_start()
import time
deadline = time.monotonic() + 20
while not got and time.monotonic() < deadline:
    time.sleep(0.1)
c.loop_stop()
print(got[0].topic if got else "", got[0].payload.decode() if got else "")
"""


def devhub(podman: Podman, hub: str, *args: str, timeout: float = 30.0) -> str:
    """A `visionedge-devhub` command in the devhub container, against the running devhub; its stdout."""
    return podman("exec", hub, "visionedge-devhub", "--workdir", "/devhub/work", *args, timeout=timeout).stdout


def telemetry(podman: Podman, hub: str) -> list[dict[str, Any]]:
    """Every event the devhub has received on any output (batches unpacked), in arrival order."""
    out = devhub(podman, hub, "watch", "--all", "--once")
    events: list[dict[str, Any]] = []
    for line in out.splitlines():
        body = json.loads(line)["body"]
        events += body["events"] if body.get("type") == "batch" else [body]
    return events


def outbox_depth(podman: Podman, hub: str) -> float:
    """visionedge_outbox_depth from the module's /metrics, read inside the shared network namespace."""
    script = ("import urllib.request as u; print(next(l for l in u.urlopen('http://127.0.0.1:9600/metrics')"
              ".read().decode().splitlines() if l.startswith('visionedge_outbox_depth')).split()[-1])")
    return float(podman("exec", hub, "python", "-c", script).stdout)


def epoch_s(iso: str) -> float:
    """A record's ISO timestamp as seconds since the epoch."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_compose_flow_devhub_and_module(podman: Podman, build: Callable[..., Image], names: Callable[[str], str],
                                        mirror_mounts: list[str], tmp_path: Path) -> None:
    """docker/compose.yaml's devhub and module in one network namespace, with its entrypoints, commands, settings:
    telemetry reaches the devhub, getStatus answers, the HEALTHCHECK passes, results reach the local broker; a
    stop and a restart while the hub is unreachable keep the model and lose no queued result.

    Differences from compose, for a machine without a registry or a container network: the broker is the devhub
    image's Mosquitto, in the same namespace, and the module's /etc/hosts maps compose's service name `mosquitto`
    to it; the mirror is mounted so no model is downloaded.
    """
    module_image, hub_image = build("Dockerfile.amd64"), build("Dockerfile.amd64", "devhub")
    spec, module_spec = COMPOSE["devhub"], COMPOSE["visionedge"]
    volume, hub, broker, module = names("devhub-volume"), names("devhub"), names("mosquitto"), names("module")
    podman("run", "-d", "--name", hub, "--network", "none", "-v", f"{volume}:/devhub",
           "--entrypoint", json.dumps(spec["entrypoint"]), hub_image.tag, *spec["command"])
    podman("run", "-d", "--name", broker, "--network", f"container:{hub}", "--tmpfs", "/mosquitto/data",
           "-v", f"{REPO / 'docker' / 'mosquitto.conf'}:/mosquitto/config/mosquitto.conf:ro",
           "--entrypoint", "mosquitto", hub_image.tag, "-c", "/mosquitto/config/mosquitto.conf")
    wait_healthy(podman, hub)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost mosquitto\n", encoding="utf-8")
    data = names("data")
    volumes = [v.replace("./", f"{REPO / 'docker'}/", 1).replace("devhub:", f"{volume}:", 1)
               .replace("visionedge-data:", f"{data}:", 1) for v in module_spec["volumes"]]
    podman("run", "-d", "--name", module, "--network", f"container:{hub}", *LOCKED_DOWN,
           *[arg for v in volumes for arg in ("-v", v)], "-v", f"{hosts}:/etc/hosts:ro",
           *[arg for k, v in module_spec["environment"].items() for arg in ("-e", f"{k}={v}")], *mirror_mounts,
           "--entrypoint", json.dumps([a.replace("$$", "$") for a in module_spec["entrypoint"]]),
           module_image.tag, *module_spec["command"])

    wait_healthy(podman, module)
    deadline = time.monotonic() + 30
    while not telemetry(podman, hub) and time.monotonic() < deadline:
        time.sleep(1.0)
    answer = json.loads(devhub(podman, hub, "call", "getStatus"))
    assert answer["status"] == 200
    assert answer["payload"]["model"]["name"] == "squeezenet"
    assert answer["payload"]["source"]["id"] == "sample"
    topic, payload = podman("exec", hub, "timeout", "30", "python", "-c", SUBSCRIBE, timeout=40).stdout.split(" ", 1)
    assert topic == "visionedge/sample/results", "nothing on the local broker; broker log:\n{}\nmodule log:\n{}".format(
        podman("logs", "--tail", "15", broker, check=False).stdout,
        "\n".join(line for line in podman("logs", module).stderr.splitlines() if "mqtt" in line.lower()))
    assert json.loads(payload)["type"] == "result"
    assert any(e["type"] == "result" for e in telemetry(podman, hub)), "no result reached the devhub"

    devhub(podman, hub, "down")
    down_at = time.time()
    deadline = time.monotonic() + 30
    while outbox_depth(podman, hub) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop_cleanly(podman, module)
    stopped_at = time.time()
    podman("start", module)
    wait_healthy(podman, module)
    devhub(podman, hub, "up-link")
    deadline = time.monotonic() + 30
    queued: list[dict[str, Any]] = []
    while not queued and time.monotonic() < deadline:
        time.sleep(1.0)
        queued = [e for e in telemetry(podman, hub)
                  if e["type"] == "result" and down_at <= epoch_s(e["timestamp"]) <= stopped_at]
    assert queued, "results queued in the outbox while the hub was down did not arrive after the restart"
    seqs = sorted({e["seq"] for e in telemetry(podman, hub) if e.get("source_id") == "sample"})
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "events of the sample source are missing"
    logs = podman("logs", module).stderr
    restart = logs[logs.rindex("starting under IoT Edge"):]
    assert "fetched" not in restart, "the restarted module fetched its model again instead of using /data"
