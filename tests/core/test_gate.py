"""The scene-change gate: unchanged frames reuse the last result, every frame still gets a record, changes are seen."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from visionedge.config import GateSettings, TelemetrySettings
from visionedge.gate import GateStats, gate_for
from visionedge.pipeline import Pipeline
from visionedge.sources import SourceState, VideoFileSource
from visionedge.state import ModuleSnapshot, SourceSnapshot, heartbeat_view, status_view
from visionedge.telemetry.events import Sequencer, label_state
from visionedge.telemetry.policy import TelemetryPolicy

from .support import CollectSink, epoch

NOISE_SIGMA = 4.0
"""Grey levels of per-pixel Gaussian noise, about what a small camera sensor shows in a lit room."""


def write_clip(path: Path, first: np.ndarray, frames: int, fps: float,
               brightness: Callable[[int], int] = lambda _i: 0, seed: int = 0) -> Path:
    """An MJPG AVI of `first` held still, with fresh sensor-like noise per frame and an optional brightness offset."""
    rng = np.random.default_rng(seed)
    base = first.astype(np.float32)
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    try:
        for i in range(frames):
            noisy = base + brightness(i) + NOISE_SIGMA * rng.standard_normal(base.shape, dtype=np.float32)
            writer.write(np.clip(noisy, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    return path


@pytest.fixture(scope="module")
def vtest_first(media: Callable[[str], Path]) -> np.ndarray:
    """The first frame of vtest.avi (a street with people)."""
    capture = cv2.VideoCapture(str(media("vtest.avi")))
    ok, image = capture.read()
    capture.release()
    assert ok
    return np.asarray(image)


def run_pipeline(source: VideoFileSource, model: Any, gate: GateSettings | None) -> tuple[list[dict[str, Any]],
                                                                                   Pipeline]:
    """Every record the pipeline publishes for the source, in order."""
    sink = CollectSink()
    pipeline = Pipeline(source, model, [sink], gate=gate)
    pipeline.run(threading.Event())
    return sink.records, pipeline


def sent_results(records: Sequence[dict[str, Any]], fps: float) -> list[tuple[float, Any]]:
    """What the default on-change policy sends for these records, on the video's own clock."""
    policy = TelemetryPolicy(TelemetrySettings(), source_id="cam", sequencer=Sequencer("test"))
    sent = []
    for record in records:
        now = record["frame_index"] / fps
        for event in policy.offer(record, now=now):
            if event.kind == "result":
                sent.append((now, label_state(event.body)))
    return sent


@pytest.mark.timeout(120)
def test_a_still_scene_with_sensor_noise_is_mostly_gated(tmp_path, vtest_first, model, record_validator):
    """60 s of one vtest frame with noise: >= 90 % of frames reuse a result, yet every frame has its record."""
    clip = write_clip(tmp_path / "still.avi", vtest_first, frames=120, fps=2.0)
    records, pipeline = run_pipeline(VideoFileSource(clip, "still"), model("squeezenet"), GateSettings(mode="on"))

    stats = pipeline.gate_stats()
    assert stats is not None
    assert [r["frame_index"] for r in records] == list(range(120)), "a gated frame lost its record"
    assert stats.gated + stats.inferred == 120
    assert stats.gated >= 108, f"only {stats.gated} of 120 still frames were gated"
    assert pipeline.stats.inferred == stats.inferred
    reused = [r for r in records if r.get("reused")]
    assert len(reused) == stats.gated
    assert not records[0].get("reused"), "the first frame has nothing to reuse"
    last_inferred: dict[str, Any] = {}
    for record in records:
        record_validator.validate(record)
        if record.get("reused"):
            assert record["classifications"] == last_inferred["classifications"]
            assert record["inference_ms"] == 0.0
        else:
            last_inferred = record
    # Telemetry numbering does not notice the gate: every-frame sends one result per frame, seq without a gap.
    policy = TelemetryPolicy(TelemetrySettings(policy="every-frame"), source_id="still", sequencer=Sequencer("t"))
    events = [e for r in records for e in policy.offer(r, now=epoch(r["timestamp"]))]
    assert [e.seq for e in events] == list(range(1, 121))
    assert sum(1 for e in events if e.body.get("reused")) == stats.gated, "results sent must say they were reused"


@pytest.mark.timeout(180)
def test_on_a_busy_street_the_sent_results_match_with_the_gate_on_and_off(vtest_clip, model):
    """YOLOX-nano on 30 s of vtest, default on-change policy: the gate changes little of what is sent: the same
    first results and about as many (on-change follows the dominant state, and a reused frame repeats its result
    exactly where a fresh inference would have wobbled by a count, so later results may shift)."""
    busy_street = vtest_clip(300, 10.0, start=300)  # seconds 30-60: people walking, with a few still moments
    detector = model("yolox-nano")
    off, _ = run_pipeline(VideoFileSource(busy_street, "vtest"), detector, None)
    on, pipeline = run_pipeline(VideoFileSource(busy_street, "vtest"), detector, GateSettings(mode="on"))
    gate = pipeline.gate_stats()
    assert gate is not None

    assert len(on) == len(off) == 300
    sent_off, sent_on = sent_results(off, 10.0), sent_results(on, 10.0)
    print(json.dumps({"frames": len(on), "gated": gate.gated, "sent_gate_off": sent_off,
                      "sent_gate_on": sent_on}))
    assert sent_off, "a busy street must send something"
    assert gate.gated > 0, "the clip has still moments for the gate to find"
    assert sent_on[:2] == sent_off[:2]
    assert abs(len(sent_on) - len(sent_off)) <= max(2, len(sent_off) // 4)


@pytest.mark.timeout(60)
def test_a_light_change_without_motion_is_reinferred_within_max_skip(tmp_path, vtest_first, model):
    """A brightness step too small for the difference test is inferred within max_skip_s; a big one at once."""
    fps, subtle_at, big_at = 20.0, 30, 60
    clip = write_clip(tmp_path / "light.avi", vtest_first, frames=80, fps=fps,
                      brightness=lambda i: 0 if i < subtle_at else (8 if i < big_at else 60))
    settings = GateSettings(max_skip_s=1.0)
    source = VideoFileSource(clip, "light", realtime=True)  # paced like a camera: timestamps are capture times
    records, pipeline = run_pipeline(source, model("squeezenet"), settings)
    assert pipeline.gate_stats() is not None, "auto mode gates live sources"

    after_subtle = [r for r in records if subtle_at <= r["frame_index"] < big_at]
    step_time = epoch(after_subtle[0]["timestamp"])
    assert after_subtle[0].get("reused"), "8 grey levels are below the threshold: the gate should not see them"
    first = next(r for r in after_subtle if not r.get("reused"))
    assert epoch(first["timestamp"]) - step_time <= settings.max_skip_s + 1.5 / fps
    after_big = next(r for r in records if r["frame_index"] >= big_at)
    assert not after_big.get("reused"), "a big brightness step is a scene change"


def test_auto_gates_live_sources_only_and_a_swapped_model_runs_at_once(tmp_path, vtest_first, model):
    """analyze (unpaced file) is not gated unless asked; after a model swap the next frame is inferred."""
    clip = write_clip(tmp_path / "swap.avi", vtest_first, frames=40, fps=10.0)
    assert gate_for(GateSettings(), live=False) is None
    assert gate_for(GateSettings(mode="off"), live=True) is None
    assert gate_for(GateSettings(mode="on"), live=False) is not None

    first, second = model("squeezenet"), model("squeezenet", intra_op_threads=1)
    sink = CollectSink()
    pipeline = Pipeline(VideoFileSource(clip, "swap"), first, [sink], gate=GateSettings(mode="on"),
                        on_record=lambda r: pipeline.swap_model(second) if r["frame_index"] == 10 else None)
    pipeline.run(threading.Event())

    assert [r["frame_index"] for r in sink.records] == list(range(40))
    inferred = [r["frame_index"] for r in sink.records if not r.get("reused")]
    assert inferred[0] == 0
    assert len(inferred) == 2, f"expected the first frame and one after the swap, got {inferred}"
    assert 10 < inferred[1] <= 10 + 32 + 1, "the swap must be followed by an inference"


def test_status_and_heartbeat_show_the_gate_counters():
    """The reported status and the heartbeat read the gate's counters from the one module snapshot."""
    gated = SourceSnapshot(id="cam", uri="0", state=SourceState.STREAMING, gate=GateStats(90, 10, 0.02))
    snapshot = ModuleSnapshot(module_version="0", instance="i", started_at=0.0, desired_version=1, last_error="",
                              hub_connected=True, sources=(gated,), model=None, model_update=None, telemetry=None)
    expected = {"on": True, "frames_gated": 90, "frames_inferred": 10, "cpu_s": 0.02}
    assert status_view(snapshot)["gate"] == expected
    assert heartbeat_view(snapshot)["gate"] == expected
    off = replace(snapshot, sources=(replace(gated, gate=None),))
    assert status_view(off)["gate"] == heartbeat_view(off)["gate"] == {"on": False}
