"""Hostile input and faults against the running module: its ports, its twin, its methods, its threads and its disk."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from visionedge.metrics import CONNECTION_DEADLINE_S, MAX_CONNECTIONS, default_metrics_host
from visionedge_devhub.emulator import MethodTimeoutError
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import ModuleProcess, StartModule
from tests.edge.test_twin_methods import metric, reported_ack, scrape, wait_running
from tests.modelstore.conftest import Refs, certs, refs, served, server  # noqa: F401 - fixtures reused here
from tests.support import fill_disk, wait_until

pytestmark = pytest.mark.timeout(180)


def _threads(module: ModuleProcess) -> int:
    return len(list(Path(f"/proc/{module.proc.pid}/task").iterdir()))


def _health(port: int) -> int:
    """The /healthz status code, 0 when the connection failed."""
    try:
        return scrape(port, "/healthz")[0]
    except OSError:
        return 0


def _health_detail(port: int) -> dict[str, Any]:
    """The /healthz body ({} when the connection failed)."""
    try:
        return dict(json.loads(scrape(port, "/healthz")[1]))
    except (OSError, ValueError):
        return {}


def _listening_address(port: int) -> str:
    """The local address of the socket listening on `port`, read from /proc/net/tcp (e.g. '127.0.0.1')."""
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on port {port}")


def test_metrics_port_bounds_connections_and_cuts_half_sent_requests(hub: DevHub, start_module: StartModule) -> None:
    """A flood of idle connections adds at most MAX_CONNECTIONS threads, half-sent requests are cut, health answers."""
    module = start_module(hub, local={"metrics_host": "127.0.0.1"})
    wait_running(hub)
    assert _listening_address(module.metrics_port) == "127.0.0.1"
    before = _threads(module)
    flood = [socket.create_connection(("127.0.0.1", module.metrics_port), timeout=5) for _ in range(100)]
    try:
        for sock in flood[:50]:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        time.sleep(1.0)
        assert _threads(module) <= before + MAX_CONNECTIONS
        started = time.monotonic()
        for sock in flood[:MAX_CONNECTIONS]:
            sock.settimeout(CONNECTION_DEADLINE_S + 5)
            assert sock.recv(1024) == b""  # the server closed it
        assert time.monotonic() - started < CONNECTION_DEADLINE_S + 3
    finally:
        for sock in flood:
            sock.close()
    wait_until(lambda: _health(module.metrics_port) == 200, timeout=15, what="/healthz after the flood")
    wait_until(lambda: _threads(module) <= before + 4, timeout=10, what="the connection threads gone")


def test_metrics_bind_address_defaults_by_where_the_module_runs(tmp_path: Path) -> None:
    """Inside a container (IoT Edge, Docker, Podman) every interface of its own network; elsewhere the loopback."""
    assert default_metrics_host({"IOTEDGE_MODULEID": "visionedge"}, root=tmp_path) == "0.0.0.0"
    assert default_metrics_host({}, root=tmp_path) == "127.0.0.1"
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.containerenv").write_text("", encoding="utf-8")
    assert default_metrics_host({}, root=tmp_path) == "0.0.0.0"
    assert json.dumps(default_metrics_host({}, root=tmp_path / "nowhere")) == '"127.0.0.1"'


def test_credentials_never_reach_reported_properties_and_the_saved_twin_is_private(
    hub: DevHub, start_module: StartModule
) -> None:
    """Source and model URLs with user, password and token are acked redacted; the saved desired file is 0600."""
    module = start_module(hub)
    wait_running(hub)
    version = hub.set_desired({
        "source": {"uri": "rtsp://viewer:s3cret-pw@127.0.0.1:9/live?token=s3cret-tok"},
        "model": {"name": "private", "version": "2", "url": "https://alice:s3cret-pw@127.0.0.1:9/m.onnx?sig=s3cret-sig",
                  "sha256": "0" * 64, "manifest_url": "https://bob:s3cret-pw@127.0.0.1:9/m.yaml?sig=s3cret-sig"},
    })
    source = reported_ack(hub, "source", version)
    assert source["value"]["uri"] == "rtsp://***@127.0.0.1:9/live?***"
    hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                   and r["model"].get("ac") in (400, 500), timeout=60)
    reported = json.dumps(hub.emulator.reported)
    assert "s3cret" not in reported
    assert "https://***@127.0.0.1:9/m." in reported  # the download failure names the URL, redacted
    status, answer = hub.emulator.call_method("getStatus", {}, timeout=10)
    assert status == 200
    assert "s3cret" not in json.dumps(answer)
    saved = module.data_dir / "twin-desired.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in module.log()


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    """8 MB for the module's data dir: room for the outbox, little more."""
    return tmpfs("8m")


def _status(hub: DevHub, timeout: float = 10.0) -> dict[str, Any]:
    code, payload = hub.emulator.call_method("getStatus", {}, timeout=timeout)
    assert code == 200
    return dict(payload)


def _status_of_a_new_instance(hub: DevHub, old: str) -> dict[str, Any] | None:
    """getStatus from a restarted module (another instance id), None while it cannot answer yet. A request made
    before it connected is lost, so each try waits 3 s, not 10 (a connected module answers in milliseconds)."""
    try:
        status = _status(hub, timeout=3.0)
    except MethodTimeoutError:
        return None
    return status if status["instance"] != old else None


def test_a_full_disk_takes_no_thread_down_for_good(hub: DevHub, start_module: StartModule, small_disk: Path) -> None:
    """A backlog is acknowledged on a full disk: the sender crashes, is named down (health 503) while getStatus
    answers; once space is freed it restarts by itself and delivers."""
    module = start_module(hub, data_dir=small_disk / "data")
    wait_running(hub)
    hub.emulator.wait_for_telemetry(lambda m: m.output == "results", timeout=60, count=2)
    hub.front.set_down(True)
    hub.front.drop()
    wait_until(lambda: metric(scrape(module.metrics_port)[1], "visionedge_outbox_depth") >= 5, timeout=30,
               what="a backlog in the outbox")
    filler = small_disk / "filler"
    fill_disk(filler)
    hub.front.set_down(False)
    wait_until(lambda: "telemetry-sender" in _health_detail(module.metrics_port).get("down", {}), timeout=60,
               what="the sender named down on /healthz")
    assert _health(module.metrics_port) == 503
    assert "full" in _status(hub)["down"]["telemetry-sender"]
    crashes = [line.split("stopped unexpectedly: ")[1].split("; restarting")[0]
               for line in module.log().splitlines() if "telemetry-sender stopped unexpectedly" in line]
    assert crashes
    assert len(crashes) == len(set(crashes))  # each reason logged once, however often it crashed
    filler.unlink()
    try:
        wait_until(lambda: metric(scrape(module.metrics_port)[1], "visionedge_outbox_depth") == 0, timeout=90,
                   what="the backlog delivered after freeing the disk")
    except AssertionError as err:
        raise AssertionError(f"{err}; status {_status(hub)}; log tail {module.log()[-4000:]}") from err
    wait_until(lambda: _status(hub)["down"] == {} and _health(module.metrics_port) == 200, timeout=60,
               what="every part up again")
    assert _status(hub)["restarts"]["telemetry-sender"] >= 1


def _frames(hub: DevHub) -> int:
    return int(_status(hub)["frames"])


def test_settings_that_fail_when_applied_are_refused_and_never_come_back_after_a_restart(
    hub: DevHub, start_module: StartModule, tmp_path: Path
) -> None:
    """Values that validate but fail for real get 400 with the reason; the last accepted state runs, and is what a
    restart starts on, even though the cloud still holds the bad values."""
    module = start_module(hub)
    wait_running(hub)
    version = hub.set_desired({"inference": {"top_k": 2}})
    assert reported_ack(hub, "inference", version)["value"]["top_k"] == 2
    version = hub.set_desired({"inference": {"top_k": None}})
    assert "top_k" not in reported_ack(hub, "inference", version)["value"]  # the ack's null removed it on the hub
    version = hub.set_desired({"outbox": None, "telemetry": {"heartbeat_s": None}})
    assert reported_ack(hub, "telemetry", version)["ac"] == 200  # a nested null in a new object deletes nothing
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    cases = [
        ({"source": {"uri": str(tmp_path / ("x" * 3000 + ".mp4"))}}, "source", "File name too long"),
        ({"source": {"uri": str(fifo)}}, "source", "is not a regular file or folder"),
        ({"local_mqtt": {"enabled": True, "host": ""}}, "local_mqtt", "local_mqtt.host"),
        ({"local_mqtt": {"enabled": True, "topic_prefix": "site/#"}}, "local_mqtt", "local_mqtt.topic_prefix"),
        ({"runtime": {"require_accelerator": True}}, "runtime", "accelerator"),
        ({"source": {"uri": str(tmp_path / "missing.mp4")}}, "source", "does not exist"),
    ]
    for patch, key, reason in cases:
        before = _frames(hub)
        started = time.monotonic()
        version = hub.set_desired(patch)
        ack = reported_ack(hub, key, version)
        assert ack["ac"] == 400, (patch, ack)
        assert reason in ack["ad"], (patch, ack)
        assert ack["ad"].endswith("keeping the previous value")
        assert time.monotonic() - started < 10
        wait_until(lambda before=before: _frames(hub) > before, timeout=20, what=f"frames still flowing after {key}")
    old = _status(hub)["instance"]
    code, _ = module.stop()
    assert code == 0
    saved = json.loads((module.data_dir / "twin-desired.json").read_text(encoding="utf-8"))
    assert saved["settings"]["source"]["uri"] == "sample"
    assert saved["settings"]["runtime"]["require_accelerator"] is False
    restarted = start_module(hub, data_dir=module.data_dir)
    wait_until(lambda: (_status_of_a_new_instance(hub, old) or {}).get("frames", 0) > 0, timeout=60,
               what="the restarted module analysing the accepted source")
    assert _status(hub)["source"]["uri"] == "sample"
    assert "source: rejected: source" in restarted.log()  # the cloud's bad value, refused again
    assert restarted.proc.poll() is None


def test_the_module_reaches_the_hub_whatever_its_saved_settings_are(
    hub: DevHub, start_module: StartModule, tmp_path: Path
) -> None:
    """Saved settings naming a source that would block on open (a FIFO) or a saved file of the wrong shape never
    keep the module from connecting: the cloud can always fix it."""
    data = tmp_path / "device"
    data.mkdir()
    fifo = tmp_path / "hung.fifo"
    os.mkfifo(fifo)
    (data / "twin-desired.json").write_text(json.dumps({"version": 1, "settings": {"source": {"uri": str(fifo)}}}),
                                            encoding="utf-8")
    module = start_module(hub, data_dir=data)
    version = hub.emulator.desired["$version"]
    assert reported_ack(hub, "inference", version, timeout=60)["ac"] == 200
    wait_running(hub)
    code, seconds = module.stop()
    assert (code, seconds < 5.0) == (0, True)
    (data / "twin-desired.json").write_text('["not", "settings"]', encoding="utf-8")
    module = start_module(hub, data_dir=data)
    wait_until(lambda: "moved to twin-desired.json.corrupt-" in module.log(), timeout=30,
               what="the unusable saved settings moved aside")
    assert [p.name for p in data.glob("twin-desired.json.corrupt-*")]
    assert reported_ack(hub, "inference", hub.emulator.desired["$version"], timeout=60)["ac"] == 200


@pytest.mark.parametrize("saved", [
    '{"version": 1e999, "settings": {}}',
    '{"version": 3, "settings": {"source": {"uri": "sample", "fps": 1e999}}}',
    "fifo",
])
def test_saved_settings_the_module_cannot_use_are_moved_aside_and_the_hub_takes_over(
    hub: DevHub, start_module: StartModule, tmp_path: Path, saved: str
) -> None:
    """A saved twin with an infinite $version or value, or a FIFO in its place, never bricks the device: it is moved
    aside and counted, the module starts on its defaults and applies the hub's desired properties."""
    data = tmp_path / "device"
    data.mkdir()
    if saved == "fifo":
        os.mkfifo(data / "twin-desired.json")
    else:
        (data / "twin-desired.json").write_text(saved, encoding="utf-8")
    module = start_module(hub, data_dir=data)
    assert reported_ack(hub, "inference", hub.emulator.desired["$version"], timeout=60)["ac"] == 200
    status = wait_running(hub)
    assert status["saved_settings_moved_aside"] == 1
    assert [p.name for p in data.glob("twin-desired.json.corrupt-*")]
    assert "moved to twin-desired.json.corrupt-" in module.log()
    code, seconds = module.stop()
    assert (code, seconds < 5.0) == (0, True)
    assert json.loads((data / "twin-desired.json").read_text(encoding="utf-8"))["settings"]["source"]["uri"] == "sample"


CRASHING_MAIN = """
import sys
from visionedge.edge.twin import DesiredState
from visionedge.entry import main

def restore(self):
    raise OverflowError("cannot convert float infinity to integer")

DesiredState.restore = restore  # a fault the start-up code does not expect, in the real module process
sys.argv = ["visionedge", "run"]
sys.exit(main())
"""


def test_a_crash_of_the_main_thread_ends_the_module_process(hub: DevHub, start_module: StartModule) -> None:
    """Whatever kills the main thread, the process exits non-zero within seconds (the SDK's threads once kept it
    alive, 503 and deaf to SIGTERM, forever): IoT Edge restarts only a module that exits."""
    module = start_module(hub, command=[sys.executable, "-c", CRASHING_MAIN])
    code = module.proc.wait(30)
    assert code == 70
    assert "OverflowError: cannot convert float infinity to integer" in module.log()
    assert "the main thread crashed; exiting with 70" in module.log()


def _nested(levels: int) -> dict[str, Any]:
    """{"a": {"a": ... {}}} `levels` deep."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_every_desired_version_gets_an_answer_however_deep_or_infinite(hub: DevHub, start_module: StartModule
                                                                         ) -> None:
    """An inline manifest nested 300 levels deep once crashed the control thread and that version was never
    acknowledged; now it, a 300-deep section and an infinite number are each refused 400 with the reason, and the
    control loop goes on (the next patch is applied, nothing restarted)."""
    start_module(hub)
    wait_running(hub)
    manifest_block = {"name": "deep", "version": "1", "url": "https://models.invalid/m.onnx", "sha256": "0" * 64,
                      "manifest": _nested(300)}
    version = hub.set_desired({"model": manifest_block})
    ack = reported_ack(hub, "model", version)
    assert ack["ac"] == 400
    assert "the inline manifest is nested deeper than 8 levels" in ack["ad"]
    version = hub.set_desired({"inference": {"top_k": _nested(300)}, "telemetry": {"heartbeat_s": math.inf}})
    ack = reported_ack(hub, "inference", version)
    assert (ack["ac"], ack["ad"]) == (400, "rejected: desired 'inference' is nested deeper than 9 levels; keeping "
                                           "the previous value")
    ack = reported_ack(hub, "telemetry", version)
    assert (ack["ac"], ack["ad"]) == (400, "rejected: desired 'telemetry' holds a number that is not finite (inf); "
                                           "keeping the previous value")
    version = hub.set_desired({"inference": {"top_k": 2}})
    assert reported_ack(hub, "inference", version)["ac"] == 200
    status = wait_running(hub)
    assert status["down"] == {}
    assert "control" not in status["restarts"]


def test_a_crawling_model_download_holds_neither_methods_nor_rollback_nor_sigterm(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any, server: Any  # noqa: F811
) -> None:
    """A model server sending 2 KB a second: 202 progress keeps coming, getStatus and rollbackModel answer
    within seconds, the rollback cancels the crawl, and SIGTERM during another crawl stops the module in time."""
    module = start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_running(hub)
    crawl = refs("yolox", "5", url=server.url("yolox_nano.onnx", kind="slow/2000"))
    version = hub.set_desired({"model": crawl})
    hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                   and "so far" in r["model"].get("ad", ""), timeout=40)  # a 202 while it crawls
    for method, answers in (("getStatus", (200,)), ("rollbackModel", (200, 202, 409))):
        started = time.monotonic()
        status, _ = hub.emulator.call_method(method, {}, timeout=20)
        assert status in answers, method
        assert time.monotonic() - started < 7, method
    ack = hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                         and r["model"].get("ac") != 202, timeout=10)["model"]  # crawl cancelled
    assert (ack["ac"], "cancelled by rollbackModel" in ack["ad"]) == (409, True)
    version = hub.set_desired({"model": refs("yolox", "6", url=server.url("yolox_nano.onnx", kind="slow/2000"))})
    hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                   and "downloading" in r["model"].get("ad", ""), timeout=30)
    code, seconds = module.stop()
    assert code == 0
    assert seconds < 5.0
