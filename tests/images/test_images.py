"""The amd64 and debug images, built from the Dockerfiles unmodified and run the way a locked-down device runs them:
uid 10001, read-only root, a tmpfs on /tmp, /data a volume. Then the compose stack's flow, devhub plus module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from .podman import REPO, Image, Podman

pytestmark = pytest.mark.timeout(600)  # the first test builds the base and the images on a fresh machine
DOCKERFILES = ["Dockerfile.amd64", "Dockerfile.amd64.debug"]
LOCKED_DOWN = ["--user", "10001", "--read-only", "--tmpfs", "/tmp"]
GRACE_S = 10
"""`podman stop` and compose's stop_grace_period: SIGTERM, then SIGKILL after this long."""
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


def own_lines(stderr: str) -> list[str]:
    """The container's stderr without podman's own log lines (no systemd here to schedule health checks)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("time=")]


def wait_healthy(podman: Podman, name: str, timeout: float = 60.0) -> float:
    """Run the image's HEALTHCHECK by hand until it passes (no systemd timer here); returns the seconds it took."""
    started = time.monotonic()
    while True:
        check = podman("healthcheck", "run", name, check=False)
        if check.returncode == 0:
            return time.monotonic() - started
        state = podman.inspect("container", name)["State"]
        if not state["Running"]:
            logs = podman("logs", "--tail", "5", name, check=False)
            raise AssertionError(f"{name} exited {state['ExitCode']} before it was healthy:\n{logs.stderr}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{name} not healthy after {timeout:.0f} s: {check.stdout.strip()}")
        time.sleep(1.0)


def stop_cleanly(podman: Podman, name: str) -> float:
    """`podman stop` within the grace period; the module exits 0 on SIGTERM. Returns the seconds it took."""
    started = time.monotonic()
    podman("stop", "-t", str(GRACE_S), name, timeout=GRACE_S + 30)
    seconds = time.monotonic() - started
    code = podman.inspect("container", name)["State"]["ExitCode"]
    assert (code, seconds < GRACE_S) == (0, True), f"exit {code} after {seconds:.1f} s (137 = killed after grace)"
    return seconds


@pytest.fixture(scope="module", params=DOCKERFILES)
def image(request: pytest.FixtureRequest, build: Callable[..., Image]) -> Image:
    """Each Dockerfile, built once."""
    return build(request.param)


def test_image_runs_as_10001_with_a_data_volume_and_a_health_check(image: Image, podman: Podman) -> None:
    """The built image (Docker format) keeps its HEALTHCHECK, runs as uid 10001 and declares /data a volume."""
    config = podman.inspect("image", image.tag)["Config"]
    assert config["User"] == "10001"
    assert "/data" in config["Volumes"]
    assert any("/healthz" in part for part in podman.inspect("image", image.tag)["Healthcheck"]["Test"])


def test_analyze_a_sample_image_read_only(image: Image, podman: Podman, names: Callable[[str], str],
                                          mirror_mounts: list[str], sample_image: str) -> None:
    """`analyze` prints the golden record for a sample image; nothing else is written, onnxruntime reports nothing."""
    done = podman("run", "--rm", "--network", "none", *LOCKED_DOWN, "-v", f"{names('data')}:/data", *mirror_mounts,
                  image.tag, "analyze", sample_image, "--no-progress", timeout=120)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["classifications"][0]["label"] == "golden retriever"
    assert record["model"]["name"] == "squeezenet"
    errors = [line for line in own_lines(done.stderr) if "Traceback" in line or "telemetry" in line.lower()]
    assert errors == []


def test_run_is_healthy_locally_and_stops_on_sigterm(image: Image, podman: Podman, names: Callable[[str], str],
                                                     mirror_mounts: list[str]) -> None:
    """`run --source sample` outside IoT Edge: the HEALTHCHECK passes, results flow, `podman stop` exits 0 in time."""
    name = names("run")
    podman("run", "-d", "--name", name, "--network", "none", *LOCKED_DOWN, "-v", f"{names('data')}:/data",
           *mirror_mounts, image.tag, "run", "--source", "sample")
    wait_healthy(podman, name)
    time.sleep(2.0)
    stop_cleanly(podman, name)
    logs = podman("logs", name)
    records = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{")]
    assert len(records) >= 5
    assert "received SIGTERM: stopping" in logs.stderr


def test_sigterm_while_starting_is_honoured_as_pid_1(image: Image, podman: Podman, names: Callable[[str], str],
                                                     mirror_mounts: list[str]) -> None:
    """PID 1 has no default SIGTERM action: a stop during start-up (imports, model load) still ends it in time."""
    name = names("early")
    podman("run", "-d", "--name", name, "--network", "none", *LOCKED_DOWN, "-v", f"{names('data')}:/data",
           *mirror_mounts, image.tag, "run", "--source", "sample")
    started = time.monotonic()
    podman("stop", "-t", str(GRACE_S), name, timeout=GRACE_S + 30)
    seconds = time.monotonic() - started
    code = podman.inspect("container", name)["State"]["ExitCode"]
    assert code in (0, 143), f"exit {code} after {seconds:.1f} s (137 = killed after the grace period)"
    assert seconds < GRACE_S


def test_root_owned_data_dir_is_one_line(podman: Podman, build: Callable[..., Image], tmp_path: Path) -> None:
    """A /data the module's user cannot write gives one line naming the owner and the fix, and exit 1."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    done = podman("run", "--rm", "--network", "none", *LOCKED_DOWN, "-v", f"{data}:/data",
                  build("Dockerfile.amd64").tag, "run", "--source", "sample", check=False)
    owner = f"{data.stat().st_uid}:{data.stat().st_gid}"
    assert done.returncode == 1
    assert own_lines(done.stderr) == [
        f"visionedge: error: data dir /data is not writable by uid 10001 (Permission denied): /data is owned by "
        f"{owner} with mode 0755; make it writable for this user (e.g. chown -R 10001:10001 on the host), use a "
        "named volume, or set --data-dir"]


def devhub(podman: Podman, hub: str, *args: str, timeout: float = 30.0) -> str:
    """A `visionedge-devhub` command in the devhub container, against the running devhub; its stdout."""
    return podman("exec", hub, "visionedge-devhub", "--workdir", "/devhub/work", *args, timeout=timeout).stdout


def telemetry(podman: Podman, hub: str) -> list[dict[str, Any]]:
    """Every event the devhub has received on any output (batches unpacked), in arrival order."""
    out = podman("exec", hub, "timeout", "-s", "INT", "3", "visionedge-devhub", "--workdir", "/devhub/work", "watch",
                 "--all", check=False).stdout
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
    assert topic == "visionedge/sample/results"
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
