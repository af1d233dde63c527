"""Live sources hand inference the newest frame: a slow model skips frames instead of falling behind."""

from __future__ import annotations

import statistics
import threading

import pytest
from visionedge.pipeline import Pipeline
from visionedge.sources import VideoFileSource

from .support import CollectSink, epoch

AGE_GROWTH_S = 0.5
"""How much older the last analysed frames may be than the first, beyond one inference cycle."""


@pytest.mark.timeout(60)
def test_slow_model_on_a_paced_video_drops_frames_instead_of_queueing(fast_video, model):
    """A 100 fps paced video into YOLOv3-tiny at 1 thread: frames are skipped, and frame age stays bounded."""
    source = VideoFileSource(fast_video, "fast", loop=False, realtime=True)
    assert source.file_fps == pytest.approx(100.0)
    assert source.live
    detector = model("yolov3-tiny", intra_op_threads=1)
    sink = CollectSink()
    pipeline = Pipeline(source, detector, [sink])
    assert pipeline.feeds[0].handoff.latest

    stats = pipeline.run(threading.Event())

    records = sink.records
    assert stats.captured == 200
    assert pipeline.skipped() > 0
    assert stats.inferred == len(records) < stats.captured
    assert stats.inferred + pipeline.skipped() == stats.captured, "a frame was neither analysed nor counted"
    indices = [r["frame_index"] for r in records]
    assert indices == sorted(indices)
    assert indices[-1] >= 190, "the newest frames must still be analysed at the end"

    # Age of each frame when its result came out, and when its inference started.
    ages = [arrived - epoch(r["timestamp"]) for r, arrived in zip(records, sink.arrived, strict=True)]
    cycle = stats.elapsed() / stats.inferred  # seconds per analysed frame
    # A free worker takes the newest frame; with a queue this age would grow to seconds as the backlog builds.
    started = list(pipeline.feeds[0].stats.ages)
    assert len(started) == stats.inferred
    assert max(started) < cycle + 0.1, f"a frame waited {max(started):.3f} s for a worker"
    late = statistics.mean(ages[-5:])
    early = statistics.mean(ages[:5])
    # With a queue the age keeps growing, to seconds by the end of the clip. A loaded machine delays a few frames
    # (0.077 s -> 0.241 s seen on Python 3.13 beside other test runs, 0.16 s past the old 0.05 s margin), so the
    # margin is half a second: about three times that hiccup, a fraction of what a queue builds.
    assert late < early + cycle + AGE_GROWTH_S, f"frame age grew from {early:.3f} s to {late:.3f} s"


@pytest.mark.timeout(60)
def test_video_analysis_never_drops_frames(fast_video, model):
    """The same video opened for analysis (unpaced) is analysed completely, in order, with nothing skipped."""
    source = VideoFileSource(fast_video, "fast")
    sink = CollectSink()
    pipeline = Pipeline(source, model("yolox-nano"), [sink])
    assert not pipeline.feeds[0].handoff.latest
    stats = pipeline.run(threading.Event())
    assert [r["frame_index"] for r in sink.records] == list(range(200))
    assert (stats.captured, stats.inferred, pipeline.skipped()) == (200, 200, 0)
