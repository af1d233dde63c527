"""The watch after a swap: a model that validated but misbehaves on real frames is rolled back by itself."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

from tests.support import wait_until

from .conftest import MakeHarness, Refs

SQUEEZENET = "squeezenet@1.1-winml-fp16"


def model_runs(records: list[dict[str, object]]) -> list[str]:
    """The sequence of models that produced consecutive records."""
    keys = (f"{r['model']['name']}@{r['model']['version']}" for r in records)  # type: ignore[index]
    return [key for key, _ in itertools.groupby(keys)]


def test_a_model_slower_than_the_latency_factor_is_rolled_back(make_harness: MakeHarness, refs: Refs, server: Any,
                                                                served: dict[str, bytes], video: Path) -> None:
    """SqueezeNet fp32 plus a chain of real MatMuls: the same kind of model, many times the work; the default factor
    (3 x the previous model's median) rolls it back. (A model of another kind has no such baseline: its speed is
    judged in the shadow phase by whether it keeps up.)"""
    h = make_harness(video=video, watch_frames=12, watch_s=60.0)
    h.wait_records(30)
    slow = served["squeezenet-slow.onnx"]
    assert h.request(refs("squeezenet", "slow", url=server.url("squeezenet-slow.onnx"),
                          sha256=hashlib.sha256(slow).hexdigest(), size=len(slow)), 2)
    ack = h.outcome(2, timeout=180)
    assert (ack["ac"], ack["value"]) == (500, {"name": "squeezenet"})
    assert re.fullmatch(rf"rolled back squeezenet-custom@slow to {SQUEEZENET}: median inference \d+\.\d ms over 12 "
                        r"frames is above 3 x the previous model's \d+\.\d ms", ack["ad"]), ack["ad"]
    h.wait_records(10)
    h.stop()
    assert model_runs(h.records) == [SQUEEZENET, "squeezenet-custom@slow", SQUEEZENET]
    assert json.loads((h.store.root / "active.json").read_text(encoding="utf-8"))["history"] == [SQUEEZENET]
    assert (h.store.active(), h.store.trial(), h.store.installed()) == (SQUEEZENET, None, [SQUEEZENET])
    assert h.manager.status()["last_error"] == ack["ad"]


def test_a_model_that_fails_on_real_frames_is_rolled_back_with_the_error(make_harness: MakeHarness, refs: Refs,
                                                                        video: Path) -> None:
    """It passes the grey probe, then onnxruntime fails on the first bright video frame: back to SqueezeNet."""
    h = make_harness(video=video, watch_frames=20, watch_s=60.0)
    start = h.wait_records(5)
    assert h.request(refs("bright", "1"), 2)
    ack = h.outcome(2)
    assert ack["ac"] == 500
    assert ack["ad"].startswith(f"rolled back tiny-bright@1 to {SQUEEZENET}: inference failed on frame 1 of the watch: "
                                "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape "
                                "node."), ack["ad"]
    assert len(ack["ad"]) < 400
    h.wait_records(10)
    assert model_runs(h.records[start:]) == [SQUEEZENET]
    assert h.swaps == ["tiny-bright@1", SQUEEZENET]
    assert h.store.active() == SQUEEZENET


def test_rollback_model_during_the_watch_ends_it_at_once(make_harness: MakeHarness, refs: Refs,
                                                          video: Path) -> None:
    """An operator does not have to wait for the watch: rollbackModel swaps the old model back immediately."""
    h = make_harness(video=video, watch_frames=1_000_000, watch_s=120.0)  # held for the operator; default factor
    h.wait_records(5)
    assert h.request(refs("yolox", "7"), 2)
    wait_until(lambda: h.manager.status()["state"] == "watching", 30, "the watch", detail=h.manager.status)
    h.wait_records(5)
    text = f"rolled back yolox-nano@7 to {SQUEEZENET} on request (rollbackModel)"
    result = h.manager.rollback_now(timeout=30)
    assert result == {"status": 200, "payload": {"message": text, "active": {"name": "squeezenet",
                                                                               "version": "1.1-winml-fp16"},
                                                 "previous": None}}
    assert h.outcome(2) == {"value": {"name": "squeezenet"}, "ac": 200, "av": 2, "ad": text}
    assert (h.store.active(), h.store.trial()) == (SQUEEZENET, None)
