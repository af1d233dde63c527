"""The shadow phase: a candidate runs beside the active model on the pipeline's frames and must pass the gates
before it is swapped in; results come from the active model only, and never stop."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from visionedge.config import ShadowSettings
from visionedge.modelstore.shadow import LATENCY_MIN_FRAMES

from .conftest import MakeHarness, Refs

SQUEEZENET = "squeezenet@1.1-winml-fp16"
FP32 = "squeezenet-fp32@1.1-winml-fp32"
FAST = ShadowSettings(frames=20, min_frames=10, max_s=60.0, max_cost=0.5)
"""Gates at their defaults; fewer frames and a larger share of the thread than on a device, to stay quick here."""


def _models(records: list[dict[str, Any]]) -> set[str]:
    return {f"{r['model']['name']}@{r['model']['version']}" for r in records}


def test_fp16_and_fp32_squeezenet_agree_and_the_candidate_is_promoted(make_harness: MakeHarness,
                                                                      video: Path) -> None:
    """The same network in fp32: agreement >= 0.98 on live frames, swapped in, modelHealth says promoted."""
    # Equal work: only load moves their ratios, and the default gate refuses only when p95 and median are both slower.
    h = make_harness(video=video, shadow=FAST)
    h.wait_records(5)
    assert h.request({"name": "squeezenet-fp32", "rollout": "r-fp32"}, 2)
    done = h.outcome(2)
    assert done["ac"] == 200, done
    assert done["ad"].startswith(f"{FP32} is active (shadow: agreement ")
    health = h.health[-1]
    assert health["agreement"] >= 0.98
    assert health["frames"] >= FAST.frames
    assert {k: health[k] for k in ("active", "candidate", "rollout", "phase", "verdict", "desiredVersion")} == {
        "active": {"name": "squeezenet-fp32", "version": "1.1-winml-fp32"},
        "candidate": {"name": "squeezenet-fp32", "version": "1.1-winml-fp32"},
        "rollout": "r-fp32", "phase": "idle", "verdict": "promoted", "desiredVersion": 2}
    phases = [report["phase"] for report in h.health if report["desiredVersion"] == 2]
    assert phases.index("validating") < phases.index("shadow") < phases.index("idle")
    h.wait_records(10)
    assert _models(h.records[-5:]) == {FP32}  # frames in flight at the swap may still name the old model


def test_a_slower_model_is_refused_by_the_latency_gate_and_results_keep_flowing(make_harness: MakeHarness,
                                                                                refs: Refs, server: Any,
                                                                                served: dict[str, bytes],
                                                                                video: Path) -> None:
    """Same answers, a MatMul chain on an extra output: agreement 1.00 but p95 far above 2x over the 30 frames a
    ratio needs to be judged, so 500 and no swap."""
    h = make_harness(video=video, shadow=FAST.model_copy(update={"frames": LATENCY_MIN_FRAMES,
                                                                 "min_frames": LATENCY_MIN_FRAMES}))
    h.wait_records(5)
    block = refs("squeezenet", "slow", url=server.url("squeezenet-slow.onnx"),
                 sha256=hashlib.sha256(served["squeezenet-slow.onnx"]).hexdigest(),
                 size=len(served["squeezenet-slow.onnx"]))
    assert h.request(block, 2)
    done = h.outcome(2)
    assert done["ac"] == 500, done
    assert done["ad"].startswith("shadow: agreement 1.00 over ")
    assert done["ad"].endswith("x > 2x")
    assert done["value"] == {"name": "squeezenet"}
    health = h.health[-1]
    assert (health["verdict"], health["agreement"], health["reason"]) == ("rejected", 1.0, done["ad"])
    assert health["latencyRatio"] > 2.0
    start = h.wait_records(10)
    assert _models(h.records) == {SQUEEZENET}, "a candidate in shadow must never publish"
    assert len(h.records) > start
    assert h.store.installed() == [SQUEEZENET]
    assert h.swaps == []


def test_a_candidate_that_fails_on_live_frames_is_refused(make_harness: MakeHarness, refs: Refs,
                                                          video: Path) -> None:
    """A model that passes validation but raises on real frames ends its shadow at once with that reason (500);
    the active model never stopped and never swapped."""
    h = make_harness(video=video, shadow=FAST)
    h.wait_records(5)
    assert h.request(refs("bright", "1"), 2)
    done = h.outcome(2)
    assert done["ac"] == 500, done
    assert done["ad"].startswith("shadow: candidate failed on a live frame: ")
    assert h.health[-1]["verdict"] == "rejected"
    start = h.wait_records(5)
    assert _models(h.records[start:]) == {SQUEEZENET}
    assert h.swaps == []


def test_on_first_boot_the_model_asked_for_is_loaded_directly_and_later_updates_are_shadowed(
        make_harness: MakeHarness, refs: Refs, video: Path) -> None:
    """Until a desired block has made its model serve, the built-in default is nobody's choice: the first block is
    validated and swapped in without a shadow against it; the next update is compared with the model asked for."""
    h = make_harness(video=video, shadow=FAST, first_boot=True)
    h.wait_records(5)
    assert h.request(refs("yolox", "2"), 2)
    first = h.outcome(2)
    assert first["ad"] == "yolox-nano@2 is active (first boot: loaded directly, no shadow against the built-in default)"
    assert "shadow" not in [report["phase"] for report in h.health if report["desiredVersion"] == 2]
    assert h.request(refs("yolox", "3"), 3)
    second = h.outcome(3)
    assert second["ac"] == 200, second
    assert second["ad"].startswith("yolox-nano@3 is active (shadow: agreement "), second["ad"]
    assert "shadow" in [report["phase"] for report in h.health if report["desiredVersion"] == 3]
    assert h.store.read_updates()["served"] is True
