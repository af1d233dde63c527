"""Model updates as a fleet gets them, end to end at default gates: after a runtime change, on first boot, across
model families, and under kill -9 after each acknowledgement (issue 26)."""

from __future__ import annotations

import hashlib
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from visionedge_devhub.hub import DevHub
from visionedge_devhub.testing import running_devhub, sdk_nodelay

from tests.edge.conftest import StartModule
from tests.edge.test_model_updates_e2e import model_ack, result_models, wait_for_results_from
from tests.modelstore.conftest import Refs, certs, refs, served, server  # noqa: F401 - fixtures reused here

pytestmark = pytest.mark.timeout(300)


FAST_SOURCE = {"source": {"uri": "sample", "fps": 10}}
"""The sample video at 10 fps instead of the hub fixture's 5, for the like-for-like updates below: the default
150-frame shadow then takes about 15 s instead of 30 s. The rate is not what they check (the candidate's 10% share
and every gate stay at their defaults); the classifier-to-detector test keeps 5 fps, its keeping-up gate is a rate."""


def section_ack(hub: DevHub, key: str, version: int, timeout: float = 60.0) -> dict[str, Any]:
    """The reported acknowledgement of one desired section for desired $version."""
    doc = hub.emulator.wait_for_reported(lambda r: r.get(key, {}).get("av") == version, timeout=timeout)
    block: dict[str, Any] = doc[key]
    return block


def test_a_runtime_change_then_a_model_update_ends_200_and_serving(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any  # noqa: F811
) -> None:
    """A fleet that tuned `runtime` still takes rollouts: the shadow compares against the model serving now (loaded
    with the new runtime settings), so the same weights under a new version pass every default gate and serve."""
    hub.set_desired(FAST_SOURCE)
    start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_for_results_from(hub, "squeezenet")
    tuned = hub.set_desired({"runtime": {"intra_op_threads": 1, "workers": 1}})
    assert section_ack(hub, "runtime", tuned)["ac"] == 200
    hub.emulator.clear_telemetry()
    wait_for_results_from(hub, "squeezenet")
    version = hub.set_desired({"model": refs("squeezenet", "3")})
    done = model_ack(hub, version, 200, timeout=240)
    assert done["ad"].startswith("squeezenet-custom@3 is active (shadow: agreement 1.00 over "), done["ad"]
    hub.emulator.clear_telemetry()
    wait_for_results_from(hub, "squeezenet-custom", count=5)
    assert set(result_models(hub)) == {"squeezenet-custom"}
    _status, payload = hub.emulator.call_method("getStatus", {})
    assert payload["model"] == {"name": "squeezenet-custom", "version": "3"}


def test_first_boot_serves_the_detector_the_twin_asks_for_without_a_shadow_against_the_default(
    tmp_path: Path, start_module: StartModule
) -> None:
    """A fresh device whose twin names yolox-nano from the start: the built-in SqueezeNet runs only until the twin
    arrives, then yolox-nano is loaded directly (validated, then watched), never compared with a default nobody
    asked for."""
    desired = {"source": {"uri": "sample", "fps": 5}, "model": {"name": "yolox-nano"},
               "telemetry": {"policy": "every-frame", "batch": False}}
    with sdk_nodelay(), running_devhub(tmp_path, desired=desired) as hub:
        module = start_module(hub)
        version = hub.emulator.desired["$version"]
        done = model_ack(hub, version, 200, timeout=240)
        assert done["ad"] == ("yolox-nano@0.1.1-coco is active (first boot: loaded directly, no shadow against the "
                              "built-in default)"), done["ad"]
        hub.emulator.clear_telemetry()
        wait_for_results_from(hub, "yolox-nano", count=5)
        assert set(result_models(hub)) == {"yolox-nano"}
        assert "shadow: comparing" not in module.log()
        block = hub.emulator.reported["modelHealth"]
        assert (block["active"], block["verdict"]) == ({"name": "yolox-nano", "version": "0.1.1-coco"}, "promoted")


def test_a_classifier_to_detector_update_at_default_gates_ends_200_and_names_its_gates(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any  # noqa: F811
) -> None:
    """A deliberate change of model family with every gate at its default: agreement is undefined, so a latency
    ratio against a classifier judges nothing; the detector must keep up with the frame rate and stay healthy, and
    the ack says which gates applied."""
    start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_for_results_from(hub, "squeezenet")
    version = hub.set_desired({"model": refs("yolox", "2")})
    done = model_ack(hub, version, 200, timeout=240)["ad"]
    shown = re.fullmatch(r"yolox-nano@2 is active \(shadow: agreement undefined \(tasks differ \(classify -> detect\)"
                         r"\), so gates: health and keeping up, not a latency ratio; (\d+) frames; p95 [\d.]+ ms at "
                         r"[\d.]+ frames/s uses [\d.]+% of the inference time\)", done)
    assert shown, done
    assert int(shown.group(1)) >= 30
    hub.emulator.clear_telemetry()
    wait_for_results_from(hub, "yolox-nano", count=5)
    assert set(result_models(hub)) == {"yolox-nano"}


def test_a_genuinely_slower_like_for_like_model_is_still_refused_at_default_gates(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any, server: Any,  # noqa: F811
    served: dict[str, bytes]  # noqa: F811
) -> None:
    """SqueezeNet fp32 plus a chain of 50 real MatMuls on its input (same answers, about 5x the work): the
    like-for-like ratio gate refuses it at p95 and at the median, and squeezenet keeps serving."""
    start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_for_results_from(hub, "squeezenet")
    slow = served["squeezenet-slow50.onnx"]
    version = hub.set_desired({"model": refs("squeezenet", "slow", url=server.url("squeezenet-slow50.onnx"),
                                             sha256=hashlib.sha256(slow).hexdigest(), size=len(slow))})
    ad = model_ack(hub, version, 500, timeout=240)["ad"]
    # on a loaded machine its 10% share of the inference time may fit fewer than min_frames runs: refused then too,
    # with the same ratios (the camera delivered, so it is not "inconclusive")
    # (fewer than the 30 frames a ratio needs: the ratios are shown, not judged, and the share refuses it)
    shown = re.fullmatch(r"shadow: (agreement 1\.00 over \d+ frames|only \d+ frames .* too slow for its 10% share "
                         r"of the inference time); latency p95 (\d+\.\d\d)x, p50 (\d+\.\d\d)x"
                         r"( > 2x|, not judged on \d+ frames \(30 needed; probation still watches it\))", ad)
    assert shown, ad
    assert min(float(shown.group(2)), float(shown.group(3))) > 2.0
    hub.emulator.clear_telemetry()
    wait_for_results_from(hub, "squeezenet", count=5)
    assert set(result_models(hub)) == {"squeezenet"}


AFTER_THE_RESTART = {
    "shadow: comparing": (500, "squeezenet", "squeezenet-custom@4 was in its shadow phase when the module stopped "
                          "unexpectedly, so it is not tried again; publish it under a new version to retry"),
    "watching": (500, "squeezenet", "squeezenet-custom@4 was on probation when the module stopped unexpectedly, so "
                 "it is not tried again; publish it under a new version to retry"),
    "is active": (200, "squeezenet-custom", None),
}
"""What docs/model-updates.md says a restart does after a kill -9 that follows each acknowledgement of an update:
(the final ack code, the model serving, the final reason; None: the one given before the kill stands)."""


@pytest.mark.parametrize("after", list(AFTER_THE_RESTART))
def test_kill_9_after_each_acknowledgement_of_an_update(
    after: str, hub: DevHub, start_module: StartModule, refs: Refs, certs: Any, server: Any  # noqa: F811
) -> None:
    """SIGKILL as soon as the ack is reported (every durable mark is written before its ack, so the moment within
    the phase does not matter); the restarted module, offline-first, ends as the docs say and nothing is retried."""
    local = {"ca_bundle": str(certs.ca_cert)}
    hub.set_desired(FAST_SOURCE)
    first = start_module(hub, local=local)
    wait_for_results_from(hub, "squeezenet")
    version = hub.set_desired({"model": refs("squeezenet", "4")})
    seen = hub.emulator.wait_for_reported(lambda r: r.get("model", {}).get("av") == version
                                          and after in r["model"].get("ad", ""), timeout=240)["model"]
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    downloads = dict(server.hits)
    hub.emulator.clear_telemetry()
    second = start_module(hub, local=local, data_dir=first.data_dir)
    code, serving, reason = AFTER_THE_RESTART[after]
    ack = model_ack(hub, version, code, timeout=120)
    assert ack["ad"] == (reason if reason is not None else seen["ad"]), ack["ad"]
    wait_for_results_from(hub, serving, count=5)
    assert set(result_models(hub)) == {serving}
    assert "shadow: comparing" not in second.log(), "the update was retried"
    assert server.hits == downloads, "the update was downloaded again"
