"""The module under a real SDK connection: twin acknowledgements, direct methods, credentials, shutdown, metrics."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from visionedge.config import GateSettings
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import StartModule
from tests.support import wait_until

pytestmark = pytest.mark.timeout(120)


def reported_ack(hub: DevHub, key: str, version: int, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the module acknowledged `key` for desired `$version`, and return the acknowledgement."""
    doc = hub.emulator.wait_for_reported(lambda r: r.get(key, {}).get("av") == version, timeout=timeout)
    ack: dict[str, Any] = doc[key]
    return ack


def wait_running(hub: DevHub, timeout: float = 60.0) -> dict[str, Any]:
    """Wait for a reported status block that shows frames being analysed (the module refreshes it every second)."""
    doc = hub.emulator.wait_for_reported(lambda r: r.get("status", {}).get("frames", 0) > 0, timeout=timeout)
    status: dict[str, Any] = doc["status"]
    return status


def status_frames(hub: DevHub) -> int:
    """Frames analysed so far, from getStatus (0 when it does not answer 200)."""
    status, payload = hub.emulator.call_method("getStatus", {}, timeout=10)
    return int(payload.get("frames", 0)) if status == 200 else 0


def test_start_reads_the_whole_twin_and_acknowledges_every_setting(hub: DevHub, start_module: StartModule) -> None:
    """At start the desired document is applied and each setting is acknowledged 200 with its $version."""
    start_module(hub)
    version = hub.emulator.desired["$version"]
    for key in ("source", "inference", "telemetry", "runtime"):
        ack = reported_ack(hub, key, version)
        assert ack["ac"] == 200, ack
    assert reported_ack(hub, "source", version)["value"]["uri"] == "sample"


def test_top_k_patch_changes_results_and_is_acknowledged(hub: DevHub, start_module: StartModule) -> None:
    """A valid patch is applied (snapshot labels follow top_k) and acknowledged 200 with av = the patch $version."""
    start_module(hub)
    wait_running(hub)
    version = hub.set_desired({"inference": {"top_k": 2}})
    ack = reported_ack(hub, "inference", version)
    in_use = {"top_k": 2, "gate": GateSettings().model_dump(mode="json")}  # the whole section in use, nulls left out
    assert ack == {"value": in_use, "ac": 200, "av": version, "ad": "applied"}
    time.sleep(0.5)
    status, payload = hub.emulator.call_method("captureSnapshot", {})
    assert status == 200
    assert len(payload["labels"]) == 2


def test_invalid_patch_is_rejected_with_reason_and_keeps_last_good_value(
    hub: DevHub, start_module: StartModule
) -> None:
    """A bad value gets 400 with the field and reason; the previous value stays in use; unknown keys get 400."""
    start_module(hub)
    good = hub.set_desired({"inference": {"top_k": 3}})
    assert reported_ack(hub, "inference", good)["ac"] == 200
    bad = hub.set_desired({"inference": {"top_k": 0}, "colour": "blue"})
    ack = reported_ack(hub, "inference", bad)
    assert ack["ac"] == 400
    assert "inference.top_k: Input should be greater than or equal to 1" in ack["ad"]
    assert ack["value"]["top_k"] == 3
    unknown = reported_ack(hub, "colour", bad)
    assert unknown["ac"] == 400
    assert "unknown setting 'colour'" in unknown["ad"]
    wait_running(hub)
    status, payload = hub.emulator.call_method("captureSnapshot", {})
    assert status == 200
    assert len(payload["labels"]) == 3


def test_source_that_cannot_open_is_rejected_and_pipeline_keeps_running(hub: DevHub, start_module: StartModule,
                                                                          tmp_path: Path) -> None:
    """A desired source file that does not exist is rejected with a one-line reason; frames keep flowing."""
    start_module(hub)
    wait_running(hub)
    version = hub.set_desired({"source": {"uri": str(tmp_path / "missing.avi")}})
    ack = reported_ack(hub, "source", version)
    assert ack["ac"] == 400
    assert "missing.avi does not exist" in ack["ad"]
    assert ack["value"]["uri"] == "sample"
    before = status_frames(hub)
    time.sleep(1.5)
    assert status_frames(hub) > before


def test_change_made_while_link_is_down_is_applied_after_reconnect(hub: DevHub, start_module: StartModule) -> None:
    """A desired patch set while the module is cut off arrives after the link returns and is acknowledged."""
    start_module(hub)
    wait_running(hub)
    hub.front.set_down(True)
    hub.front.drop()
    version = hub.set_desired({"inference": {"top_k": 4}})
    time.sleep(3)
    hub.front.set_down(False)
    ack = reported_ack(hub, "inference", version, timeout=60)
    assert ack["ac"] == 200
    assert ack["value"]["top_k"] == 4


def test_methods_return_what_they_promise(hub: DevHub, start_module: StartModule) -> None:
    """getStatus gives the status block, captureSnapshot saves a JPEG on the device, unknown methods get 404."""
    module = start_module(hub)
    wait_running(hub)
    status, payload = hub.emulator.call_method("getStatus", {})
    assert status == 200
    assert payload["model"] == {"name": "squeezenet", "version": "1.1-winml-fp16"}
    assert payload["providers"] == ["CPUExecutionProvider"]
    assert payload["variant"]["chosen"] == "fp16"
    assert payload["variant"]["reason"] == "no variants of this model file"
    assert payload["source"]["state"] == "streaming"
    assert payload["module_version"]
    gate = payload["gate"]  # the sample video is paced like a camera, so the scene-change gate is on
    assert gate["on"] is True
    assert gate["frames_inferred"] >= 1
    assert set(gate) == {"on", "frames_gated", "frames_inferred", "cpu_s"}
    status, payload = hub.emulator.call_method("captureSnapshot", {})
    assert status == 200
    path = Path(payload["path"])
    assert path.is_file()
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"
    assert path.is_relative_to(module.data_dir)
    assert payload["labels"]
    assert "image" not in json.dumps(payload).lower() or "jpg" in payload["path"]
    status, payload = hub.emulator.call_method("selfDestruct", {})
    assert status == 404
    assert payload == {"error": "unknown method 'selfDestruct'; available: getStatus, captureSnapshot, "
                                "rollbackModel, resetCounters"}
    status, payload = hub.emulator.call_method("resetCounters", {"source": "cam", "name": "door"})
    assert (status, payload) == (404, {"error": "source 'cam' has no line or zone 'door'"})


def test_wrong_module_key_exits_with_a_credential_error(hub: DevHub, start_module: StartModule) -> None:
    """A wrong key is reported in one clear line and the process exits with code 3 (IoT Edge restarts it)."""
    module = start_module(hub, wrong_key=True)
    code = module.proc.wait(60)
    assert code == 3
    assert "rejected the module's credentials" in module.log()
    assert "Traceback" not in module.log()


def test_sigterm_stops_the_module_within_a_few_seconds(hub: DevHub, start_module: StartModule) -> None:
    """IoT Edge stops modules with SIGTERM: the module exits 0 quickly and reports it stopped."""
    module = start_module(hub)
    wait_running(hub)
    code, seconds = module.stop(signal.SIGTERM)
    assert code == 0
    assert seconds < 5.0
    assert hub.emulator.reported.get("status", {}).get("state") == "stopped"


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """GET a path from the module's metrics server."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metric(text: str, name: str) -> float:
    """The value of the first sample of a metric in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in scrape")


def test_metrics_scrape_shows_values_moving_and_health_is_ready(hub: DevHub, start_module: StartModule) -> None:
    """The Prometheus endpoint carries IoT Edge labels and counters that grow; /healthz says ready."""
    module = start_module(hub)
    wait_running(hub)
    _, first = scrape(module.metrics_port)
    time.sleep(2.0)
    _, second = scrape(module.metrics_port)
    assert metric(second, "visionedge_frames_analyzed_total") > metric(first, "visionedge_frames_analyzed_total")
    assert 'module="visionedge"' in second
    assert 'edge_device="devhub-device"' in second
    assert "instance_number=" in second
    assert metric(second, "visionedge_inference_latency_seconds_count") > 0
    assert metric(second, "visionedge_gate_cpu_seconds_total") > 0
    assert metric(second, "visionedge_frames_gated_total") >= 0
    assert 'visionedge_model_info{' in second
    assert 'name="squeezenet"' in second
    assert 'state="streaming"} 1.0' in second
    code, body = scrape(module.metrics_port, "/healthz")
    assert code == 200
    assert json.loads(body)["ready"] is True


def test_metrics_show_the_backlog_while_the_link_is_down_and_messages_sent_once_it_is_back(
    hub: DevHub, start_module: StartModule
) -> None:
    """What operators alert on: with the hub cut off the outbox depth and its oldest age grow; back, sending resumes."""
    module = start_module(hub)
    wait_running(hub)
    hub.emulator.wait_for_telemetry(lambda m: m.output == "results", timeout=60, count=2)
    wait_until(lambda: metric(scrape(module.metrics_port)[1], "visionedge_messages_sent_total") > 0, timeout=30,
               what="messages_sent counting what reached the hub")
    hub.front.set_down(True)
    hub.front.drop()
    wait_until(lambda: metric(scrape(module.metrics_port)[1], "visionedge_outbox_oldest_age_seconds") >= 1.0,
               timeout=30, what="a backlog at least a second old")
    _, down = scrape(module.metrics_port)
    assert metric(down, "visionedge_outbox_depth") > 0
    assert metric(down, "visionedge_outbox_oldest_age_seconds") >= 1.0
    assert metric(down, "visionedge_telemetry_dropped_total") == 0
    sent_while_down = metric(down, "visionedge_messages_sent_total")
    hub.front.set_down(False)
    wait_until(lambda: metric(scrape(module.metrics_port)[1], "visionedge_messages_sent_total") > sent_while_down,
               timeout=60, what="messages_sent rising after the link came back")
    wait_until(lambda: metric(scrape(module.metrics_port)[1], "visionedge_outbox_depth") == 0, timeout=60,
               what="the backlog drained")


def test_device_that_boots_with_no_model_at_all_starts_analysing_once_one_can_be_fetched(
    hub: DevHub, start_module: StartModule, tmp_path: Path
) -> None:
    """Offline first boot with an empty cache: the module runs, says why in status, and recovers by itself."""
    from visionedge.models.fetch import mirrors_from_env

    empty = tmp_path / "mirror"
    empty.mkdir()
    start_module(hub, local={"cache_dir": str(tmp_path / "empty-cache")}, mirrors=[empty])
    doc = hub.emulator.wait_for_reported(lambda r: "status" in r, timeout=60)
    assert doc["status"].get("model") is None  # null: reported properties drop it
    assert "cannot download" in doc["status"]["last_error"]
    for name in ("squeezenet1.1_fp16.onnx", "imagenet_labels.txt", "vtest.avi"):
        source = next(d / name for d in mirrors_from_env() if (d / name).is_file())
        (empty / name).write_bytes(source.read_bytes())
    status = wait_running(hub)
    assert status["model"] == {"name": "squeezenet", "version": "1.1-winml-fp16"}
