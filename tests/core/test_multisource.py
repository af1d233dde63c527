"""Several sources in one pipeline: one shared model, fair turns, per-source order; a broken camera stalls none."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from visionedge.config import DesiredProperties, RuntimeSettings, SourceSettings
from visionedge.edge.twin import DesiredState
from visionedge.models.catalog import builtin_manifest
from visionedge.models.fetch import resolve_model
from visionedge.models.model import Model
from visionedge.pipeline import Pipeline
from visionedge.sources import LiveSource, SourceState, VideoFileSource

from tests.support import wait_until

from .support import CollectSink, MjpegCamera

LIVE = {"reconnect_initial_s": 0.2, "reconnect_max_s": 0.5, "watchdog_s": 5.0, "fps": 5.0}
TIMINGS = ("timestamp", "inference_ms")


def by_source(records: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    """Records grouped by source id, each group in arrival order."""
    groups: dict[str, list[dict[str, object]]] = {}
    for record in records:
        groups.setdefault(str(record["source_id"]), []).append(record)
    return groups


@pytest.fixture
def cameras(vtest_jpegs) -> Iterator[list[MjpegCamera]]:
    """Four live MJPEG cameras at 10 fps on local ports."""
    cams = [MjpegCamera(vtest_jpegs, fps=10).start() for _ in range(4)]
    yield cams
    for cam in cams:
        cam.stop()


@pytest.mark.timeout(120)
def test_four_cameras_advance_and_a_killed_one_does_not_slow_the_others(cameras, model):
    """4 MJPEG cameras at 5 fps each: all advance; camera 0 dies -> it retries, the other three keep their pace."""
    sources = [LiveSource(c.url(), f"cam{i}", SourceSettings(uri=c.url(), id=f"cam{i}", **LIVE))
               for i, c in enumerate(cameras)]
    for source in sources:
        source.fps = LIVE["fps"]
    sink = CollectSink()
    pipeline = Pipeline(sources, model("squeezenet"), [sink])
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), name="test-pipeline", daemon=True)
    thread.start()
    try:
        wait_until(lambda: all(len(g) >= 5 for g in by_source(sink.records).values())
                   and len(by_source(sink.records)) == 4, 45, "five records from each of the four sources",
                   detail=lambda: Counter(r["source_id"] for r in sink.records))
        window = 3.0
        start = Counter(r["source_id"] for r in sink.records)
        time.sleep(window)
        healthy = Counter(r["source_id"] for r in sink.records) - start

        cameras[0].stop()
        wait_until(lambda: sources[0].state is SourceState.RETRYING, 20, "retrying", detail=lambda: sources[0].state)
        start = Counter(r["source_id"] for r in sink.records)
        time.sleep(window)
        after = Counter(r["source_id"] for r in sink.records) - start
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    for cam in ("cam1", "cam2", "cam3"):
        assert after[cam] >= healthy[cam] / 2, f"{cam} slowed from {healthy[cam]} to {after[cam]} records"
    assert after["cam0"] <= 1, "a dead camera produced records"
    assert pipeline.feed("cam0").stats.inferred == len(by_source(sink.records)["cam0"])  # type: ignore[union-attr]
    for cam, records in by_source(sink.records).items():
        indices = [r["frame_index"] for r in records]
        assert indices == sorted(indices), f"{cam} records out of order"
        assert pipeline.feed(cam).stats.published == len(records)  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_four_files_are_analysed_completely_each_in_order_taking_fair_turns(short_video, model):
    """4 unpaced files: 48 records each, in frame order per source, and no source runs ahead while others wait."""
    sources = [VideoFileSource(short_video, f"file{i}") for i in range(4)]
    sink = CollectSink()
    pipeline = Pipeline(sources, model("squeezenet", intra_op_threads=1), [sink])
    stats = pipeline.run(threading.Event())
    assert (stats.inferred, stats.errors, pipeline.skipped()) == (192, 0, 0)
    groups = by_source(sink.records)
    assert sorted(groups) == ["file0", "file1", "file2", "file3"]
    for records in groups.values():
        assert [r["frame_index"] for r in records] == list(range(48))
    first_half = Counter(r["source_id"] for r in sink.records[:96])
    assert min(first_half.values()) >= 18, f"unfair turns: {first_half}"


@pytest.fixture(scope="module")
def batchable_squeezenet(fetcher, tmp_path_factory) -> Model:
    """SqueezeNet fp32 with its batch dimension made dynamic (the same weights), so frames of sources can batch."""
    resolved = resolve_model("squeezenet-fp32", fetcher)
    graph = onnx.load(str(resolved.model_path))
    del graph.graph.value_info[:]  # the stored shapes pin the batch to 1
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = Path(tmp_path_factory.mktemp("batch")) / "squeezenet_batch.onnx"
    onnx.save(graph, str(path))
    return Model(builtin_manifest("squeezenet-fp32"), path, resolved.labels_path,
                 RuntimeSettings(workers=1, intra_op_threads=1))


@pytest.mark.timeout(120)
def test_a_dynamic_batch_model_runs_frames_of_several_sources_together_with_the_same_records(
        short_video, model, batchable_squeezenet):
    """4 files into a batchable model: frames share runs, and every record equals the batch-1 model's, per source."""
    assert batchable_squeezenet.batchable
    assert not model("squeezenet-fp32", intra_op_threads=1).batchable
    outputs = []
    for shared in (batchable_squeezenet, model("squeezenet-fp32", workers=1, intra_op_threads=1)):
        sink = CollectSink()
        pipeline = Pipeline([VideoFileSource(short_video, f"file{i}") for i in range(4)], shared, [sink])
        stats = pipeline.run(threading.Event())
        assert (stats.inferred, stats.errors) == (192, 0)
        groups = by_source(sink.records)
        outputs.append({cam: [json.dumps({k: v for k, v in r.items() if k not in TIMINGS}, sort_keys=True)
                              for r in records] for cam, records in groups.items()})
        if shared is batchable_squeezenet:
            assert pipeline.batched > 0, "no frames were batched"
        else:
            assert pipeline.batched == 0
    assert outputs[0] == outputs[1]


def test_sources_list_in_the_twin_replaces_the_single_source_and_needs_unique_ids():
    """`sources` with url/id entries runs those; a repeated id is rejected with the reason and the last good list."""
    state = DesiredState(DesiredProperties())
    assert [s.id for s in state.settings.source_list()] == ["camera"]
    outcome = state.apply({"sources": [{"id": "gate", "url": "rtsp://10.0.0.5/s", "fps": 5},
                                       {"id": "dock", "url": "http://10.0.0.6/mjpeg"}]}, 2)
    assert outcome.reported["sources"]["ac"] == 200
    assert [(s.id, s.uri, s.fps) for s in state.settings.source_list()] == [
        ("gate", "rtsp://10.0.0.5/s", 5.0), ("dock", "http://10.0.0.6/mjpeg", None)]

    outcome = state.apply({"sources": [{"id": "gate", "url": "a.mp4"}, {"id": "gate", "url": "b.mp4"}]}, 3)
    assert outcome.reported["sources"]["ac"] == 400
    assert outcome.reported["sources"]["ad"] == ("rejected: sources: every source needs its own id; gate used more "
                                                 "than once; keeping the previous value")
    assert [s.id for s in state.settings.source_list()] == ["gate", "dock"]

    state.apply({"sources": None}, 4)
    assert [s.id for s in state.settings.source_list()] == ["camera"]


@pytest.mark.timeout(120)
def test_run_with_two_sources_in_the_config_file_writes_records_of_both(run_cli, media, tmp_path):
    """`visionedge run` with `sources: [a, b]` in its config file publishes records of both, each in order."""
    config = tmp_path / "config.yaml"
    video = media("vtest.avi")
    config.write_text(json.dumps({"desired": {"sources": [{"id": "left", "url": str(video), "fps": 5},
                                                          {"id": "right", "url": str(video), "fps": 5}]}}))
    out = tmp_path / "out.jsonl"
    done = run_cli("--config", config, "run", "--model", "squeezenet", "--duration", "4", "--sink", f"jsonl:{out}")
    assert done.returncode == 0, done.stderr
    assert "source left: frames " in done.stderr
    assert "source right: frames " in done.stderr
    groups = by_source([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()])
    assert sorted(groups) == ["left", "right"]
    for records in groups.values():
        assert len(records) >= 3
        indices = [r["frame_index"] for r in records]
        assert indices == sorted(indices)
