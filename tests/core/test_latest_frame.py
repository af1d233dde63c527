"""Live sources hand inference the newest frame: a slow model skips frames instead of falling behind."""

from __future__ import annotations

import statistics
import threading

import pytest
from visionedge.pipeline import Pipeline
from visionedge.sources import VideoFileSource

from .support import CollectSink, epoch

LOAD_MARGIN_S = 0.5
"""What a loaded machine may add, beyond one inference cycle, to a frame's wait for a worker and to the growth of
frame age; a queue makes both grow to seconds by the end of the 2 s clip. Seen beside other test runs: a wait of
0.246 s (cycle 0.088 s) and a growth from 0.077 s to 0.241 s, each past the old margins of 0.1 s and 0.05 s."""


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
    assert max(started) < cycle + LOAD_MARGIN_S, f"a frame waited {max(started):.3f} s for a worker"
    late = statistics.mean(ages[-5:])
    early = statistics.mean(ages[:5])
    assert late < early + cycle + LOAD_MARGIN_S, f"frame age grew from {early:.3f} s to {late:.3f} s"


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
