"""Shadow evaluation on the device, end to end: a real module process, devhub, real downloads, kill -9."""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import StartModule
from tests.edge.test_model_updates_e2e import model_ack, result_models, wait_for_results_from
from tests.edge.test_twin_methods import metric, scrape
from tests.modelstore.conftest import Refs, certs, refs, served, server  # noqa: F401 - fixtures reused here

pytestmark = pytest.mark.timeout(240)

QUICK = {"frames": 15, "min_frames": 5, "max_cost": 0.5}
"""The default gates, with fewer frames and a larger share of the inference thread than on a device, to stay quick."""


def health(hub: DevHub) -> dict[str, Any]:
    """The reported modelHealth block."""
    block: dict[str, Any] = hub.emulator.reported.get("modelHealth", {})
    return block


def test_shuffled_labels_are_refused_on_the_device_while_results_keep_flowing(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any  # noqa: F811
) -> None:
    """YOLOX-nano weights with a shuffled label file: healthy and fast, but they disagree with the model in use, so
    the update is refused with the figure in the ack, modelHealth and /metrics, and yolox-nano keeps reporting."""
    hub.set_desired({"model": {"name": "yolox-nano", "shadow": False}, "shadow": QUICK})  # from squeezenet
    module = start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_for_results_from(hub, "yolox-nano")
    bad = refs("yolox", "7", labels_url=refs("yolox", "7")["labels_url"].replace("coco.names", "coco-shuffled.names"),
               rollout="canary-7")
    version = hub.set_desired({"model": {**bad, "shadow": None}})  # twin merge: null removes the earlier false
    hub.emulator.wait_for_reported(lambda r: r.get("modelHealth", {}).get("phase") == "shadow", timeout=90)
    hub.emulator.clear_telemetry()
    ack = model_ack(hub, version, 500)
    figure = re.fullmatch(r"shadow: agreement (0\.\d\d) < 0\.80 over (\d+) frames; latency p95 \d+\.\d\dx, "
                          r"p50 \d+\.\d\dx( > 2x|, not judged on \d+ frames \(30 needed; [a-z ]+\))?",
                          ack["ad"])
    assert figure, ack["ad"]
    # the hub merges reported values: the refused block's url, sha256, labels and rollout must not linger in it
    assert ack["value"] == {"name": "yolox-nano", "shadow": False}
    wait_for_results_from(hub, "yolox-nano", count=5)
    assert set(result_models(hub)) == {"yolox-nano"}, "results stopped or came from the candidate"
    reported = hub.emulator.wait_for_reported(lambda r: r.get("modelHealth", {}).get("verdict") == "rejected")
    block = reported["modelHealth"]
    assert {k: block[k] for k in ("active", "candidate", "rollout", "phase", "verdict", "reason", "desiredVersion")} \
        == {"active": {"name": "yolox-nano", "version": "0.1.1-coco"}, "candidate": {"name": "yolox-nano",
            "version": "7"}, "rollout": "canary-7", "phase": "idle", "verdict": "rejected", "reason": ack["ad"],
            "desiredVersion": version}
    assert f"{block['agreement']:.2f}" == figure.group(1)
    assert block["frames"] == int(figure.group(2))
    _, text = scrape(module.metrics_port)
    assert metric(text, "visionedge_model_shadow_agreement") == block["agreement"]
    assert metric(text, "visionedge_model_shadow_frames") == block["frames"]
    assert 'verdict="rejected"' in next(line for line in text.splitlines()
                                        if line.startswith("visionedge_model_health_info{"))


def test_kill_9_during_the_shadow_phase_leaves_the_old_model_active(
    hub: DevHub, start_module: StartModule
) -> None:
    """SIGKILL while the candidate is in shadow: the restart serves squeezenet, and the candidate is not tried again
    (it may be what killed the process); modelHealth says rejected."""
    hub.set_desired({"shadow": {"frames": 100000, "max_s": 600}})
    first = start_module(hub)
    wait_for_results_from(hub, "squeezenet")
    version = hub.set_desired({"model": {"name": "squeezenet-fp32"}})
    hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                   and r["model"].get("ad", "").startswith("shadow: comparing"), timeout=90)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    hub.emulator.clear_telemetry()
    start_module(hub, data_dir=first.data_dir)
    ack = model_ack(hub, version, 500)
    assert ack["ad"] == ("squeezenet-fp32@1.1-winml-fp32 was in its shadow phase when the module stopped "
                         "unexpectedly, so it is not tried again; publish it under a new version to retry")
    wait_for_results_from(hub, "squeezenet", count=5)
    assert set(result_models(hub)) == {"squeezenet"}
    block = hub.emulator.wait_for_reported(lambda r: r.get("modelHealth", {}).get("verdict") == "rejected",
                                           timeout=30)["modelHealth"]
    assert block["active"] == {"name": "squeezenet", "version": "1.1-winml-fp16"}
    assert block["candidate"] == {"name": "squeezenet-fp32", "version": "1.1-winml-fp32"}
