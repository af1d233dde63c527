"""Model updates through the twin, end to end: real HTTPS downloads, a real module process, kill -9 and restart."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import StartModule
from tests.modelstore.conftest import Refs, certs, refs, served, server  # noqa: F401 - fixtures reused here

pytestmark = pytest.mark.timeout(240)


def model_ack(hub: DevHub, version: int, code: int, timeout: float = 90.0) -> dict[str, Any]:
    """Wait for the reported `model` acknowledgement of desired $version with status `code`."""
    doc = hub.emulator.wait_for_reported(
        lambda r: r.get("model", {}).get("av") == version and r.get("model", {}).get("ac") == code, timeout=timeout
    )
    ack: dict[str, Any] = doc["model"]
    return ack


def result_models(hub: DevHub) -> list[str]:
    """The model named by each result message, in sequence order."""
    bodies = sorted((m.json for m in hub.emulator.telemetry() if m.output == "results"), key=lambda b: b["seq"])
    return [b["model"]["name"] for b in bodies]


def collapse(names: list[str]) -> list[str]:
    """Runs of the same model collapsed to one entry: the order in which models produced results."""
    return [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]


def wait_for_results_from(hub: DevHub, model: str, count: int = 3, timeout: float = 60.0) -> None:
    """Wait until `count` result messages name `model`."""
    hub.emulator.wait_for_telemetry(lambda m: m.output == "results" and m.json["model"]["name"] == model,
                                    timeout=timeout, count=count)


def test_squeezenet_to_yolox_and_back_while_results_keep_flowing(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any  # noqa: F811
) -> None:
    """Two updates from an HTTPS server: acked 200, results never stop, each names one model, no going back. A
    classifier replaced by a detector has no agreement figure: the shadow says so and judges latency and health."""
    hub.set_desired({"shadow": {"frames": 10, "min_frames": 5, "max_cost": 0.5}})  # gates at their defaults
    start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_for_results_from(hub, "squeezenet")
    v2 = hub.set_desired({"model": refs("yolox", "2")})
    done = model_ack(hub, v2, 200)["ad"]
    assert done.startswith("yolox-nano@2 is active (shadow: agreement undefined (tasks differ (classify -> detect)), "
                           "so gates: health and keeping up, not a latency ratio; "), done
    block = hub.emulator.wait_for_reported(lambda r: r.get("modelHealth", {}).get("desiredVersion") == v2
                                           and r["modelHealth"]["verdict"] == "promoted")["modelHealth"]
    assert "agreement" not in block, "undefined agreement is reported as null, which the twin drops"
    assert block["active"] == {"name": "yolox-nano", "version": "2"}
    assert block["frames"] >= 5
    wait_for_results_from(hub, "yolox-nano")
    v3 = hub.set_desired({"model": refs("squeezenet", "3")})
    assert model_ack(hub, v3, 200)["value"]["version"] == "3"
    wait_for_results_from(hub, "squeezenet-custom")
    assert collapse(result_models(hub)) == ["squeezenet", "yolox-nano", "squeezenet-custom"]
    seqs = sorted({m.json["seq"] for m in hub.emulator.telemetry()})
    assert seqs == list(range(1, len(seqs) + 1)), "an event went missing around a swap"
    _status, payload = hub.emulator.call_method("getStatus", {})
    assert payload["model"] == {"name": "squeezenet-custom", "version": "3"}
    assert payload["model_update"]["previous"] == {"name": "yolox-nano", "version": "2"}


def test_bad_sha256_is_rejected_and_the_old_model_keeps_producing(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any  # noqa: F811
) -> None:
    """A model whose hash does not match is refused with 400 and its reason; squeezenet results continue."""
    start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_for_results_from(hub, "squeezenet")
    version = hub.set_desired({"model": refs("yolox", "9", sha256="0" * 64)})
    ack = model_ack(hub, version, 400)
    assert "sha256" in ack["ad"]
    hub.emulator.clear_telemetry()
    wait_for_results_from(hub, "squeezenet", count=5)
    assert set(result_models(hub)) == {"squeezenet"}


def test_kill_9_during_download_restarts_on_the_last_good_model(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any, server: Any, tmp_path: Path  # noqa: F811
) -> None:
    """SIGKILL while a throttled download runs: the restarted module runs squeezenet again and never a partial file."""
    local = {"ca_bundle": str(certs.ca_cert)}
    first = start_module(hub, local=local)
    wait_for_results_from(hub, "squeezenet")
    slow = refs("yolox", "5", url=server.url("yolox_nano.onnx", kind="slow/150000"))
    version = hub.set_desired({"model": slow})
    hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                   and "downloading" in r["model"].get("ad", ""), timeout=60)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    staging = first.data_dir / "models" / "staging"
    assert any(staging.iterdir()), "the kill should have left a partial download behind"
    hub.set_desired({"model": {**dict.fromkeys(slow), "name": "squeezenet"}})  # twin merge: null removes a field
    hub.emulator.clear_telemetry()
    second = start_module(hub, local=local, data_dir=first.data_dir)
    wait_for_results_from(hub, "squeezenet")
    assert set(result_models(hub)) == {"squeezenet"}
    assert not any(staging.iterdir()), "staging leftovers must be cleaned at start-up"
    assert second.proc.poll() is None


def test_kill_9_while_a_new_model_is_on_probation_restarts_on_the_last_good_model(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any  # noqa: F811
) -> None:
    """SIGKILL after the swap, during the watch: restart comes up on squeezenet and reports the failed update."""
    hub.set_desired({"rollback": {"watch_frames": 100000, "watch_s": 600}})
    local = {"ca_bundle": str(certs.ca_cert)}
    first = start_module(hub, local=local)
    wait_for_results_from(hub, "squeezenet")
    version = hub.set_desired({"model": refs("yolox", "6", shadow=False)})
    hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                   and "watching" in r["model"].get("ad", ""), timeout=90)
    wait_for_results_from(hub, "yolox-nano")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    hub.emulator.clear_telemetry()
    start_module(hub, local=local, data_dir=first.data_dir)
    wait_for_results_from(hub, "squeezenet")
    ack = model_ack(hub, version, 500)
    assert "squeezenet" in str(hub.emulator.reported["status"]["model"])
    assert ack["ad"]
