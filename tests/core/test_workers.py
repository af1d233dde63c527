"""Several inference workers on one model: the same records, in the same order, as one worker."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from visionedge.config import RuntimeSettings
from visionedge.models.runtime import CPU, Layout, bound, plan_layout, usable_cores
from visionedge.pipeline import Pipeline
from visionedge.sources import VideoFileSource

from .support import CollectSink

TIMINGS = ("timestamp", "inference_ms")


def _without_timings(records: list[dict[str, object]]) -> list[str]:
    return [json.dumps({k: v for k, v in r.items() if k not in TIMINGS}, sort_keys=True) for r in records]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["squeezenet", "yolox-nano"])
def test_three_workers_give_the_single_worker_records_byte_for_byte(short_video, model, name):
    """48 frames through 1 and 3 workers sharing one session: identical records (timings aside), in frame order."""
    shared = model(name, intra_op_threads=1)
    outputs = []
    for workers in (1, 3):
        sink = CollectSink()
        pipeline = Pipeline(VideoFileSource(short_video, "fast"), shared, [sink], workers=workers)
        assert pipeline.workers == workers
        stats = pipeline.run(threading.Event())
        assert (stats.inferred, stats.errors, pipeline.skipped()) == (48, 0, 0)
        assert [r["frame_index"] for r in sink.records] == list(range(48))
        outputs.append(_without_timings(sink.records))
    assert outputs[0] == outputs[1]


def test_layout_is_one_single_thread_worker_per_core_on_the_cpu_unless_overridden():
    """CPU: a worker per core, one thread each; one worker keeps a core for decoding; settings win; GPU: one worker."""
    auto = RuntimeSettings()
    assert plan_layout(auto, [CPU], 2) == Layout(2, 1)
    assert plan_layout(auto, [CPU], 8) == Layout(8, 1)
    assert plan_layout(auto, [CPU], 1) == Layout(1, 1)
    assert plan_layout(RuntimeSettings(workers=1), [CPU], 4) == Layout(1, 3)
    assert plan_layout(RuntimeSettings(workers=2, intra_op_threads=3), [CPU], 2) == Layout(2, 3)
    assert plan_layout(auto, ["CUDAExecutionProvider", CPU], 8) == Layout(1, 7)


def test_cli_flags_override_the_layout(run_cli, media, tmp_path):
    """`analyze --workers 2 --intra-op-threads 1` is logged as the layout in effect and analyses every frame."""
    out = tmp_path / "out.jsonl"
    done = run_cli("analyze", media("kitten_224.png"), "--model", "squeezenet", "--workers", "2",
                   "--intra-op-threads", "1", "--jsonl", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "2 worker(s) x 1 thread(s)" in done.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1


@pytest.mark.timeout(120)
def test_after_a_swap_no_record_of_the_old_model_follows_one_of_the_new(short_video, model):
    """A swap during a 3-worker run: frames in flight finish on the old model, and the records switch model once."""
    old, new = model("squeezenet", intra_op_threads=1), model("squeezenet-fp32", intra_op_threads=1)
    sink = CollectSink()
    pipeline = Pipeline(VideoFileSource(short_video, "swap"), old, [sink], workers=3,
                        on_record=lambda r: pipeline.swap_model(new) if r["frame_index"] == 10 else None)
    pipeline.run(threading.Event())
    names = [r["model"]["name"] for r in sink.records]
    assert [r["frame_index"] for r in sink.records] == list(range(48))
    switch = names.index("squeezenet-fp32")
    assert set(names[:switch]) == {"squeezenet"}
    assert set(names[switch:]) == {"squeezenet-fp32"}, "an old model's record followed a new one"


def test_runtime_settings_are_bounded_by_the_usable_cores_and_the_cgroup_quota(tmp_path: Path) -> None:
    """Workers and thread counts above the cores are lowered, with the reason; a cgroup v2 quota lowers the cores."""
    settings, said = bound(RuntimeSettings(workers=64, intra_op_threads=256, inter_op_threads=1), 2)
    assert (settings.workers, settings.intra_op_threads, settings.inter_op_threads) == (2, 2, 1)
    assert said == "lowered to the 2 usable core(s): workers 64 -> 2, intra_op_threads 256 -> 2"
    assert bound(RuntimeSettings(), 2) == (RuntimeSettings(), "")
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n", encoding="ascii")  # docker run --cpus 1.5
    assert usable_cores(quota) == min(2, len(os.sched_getaffinity(0)))
    quota.write_text("max 100000\n", encoding="ascii")
    assert usable_cores(quota) == len(os.sched_getaffinity(0))
