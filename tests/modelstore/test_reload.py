"""A runtime change reloads the serving model in its one holder: the pipeline runs on it at the next frame, and the
replaced model's session and threads are released (issue 20.1, 27.6)."""

from __future__ import annotations

import os
from pathlib import Path

from visionedge.config import RuntimeSettings

from tests.support import wait_until

from .conftest import MakeHarness
from .support import RUNTIME

WIDER = RuntimeSettings(intra_op_threads=2, inter_op_threads=2)


def native_threads() -> int:
    """Threads of this process as the kernel counts them, onnxruntime's pool threads included."""
    return len(os.listdir("/proc/self/task"))


def test_reloading_with_new_runtime_settings_serves_at_once_and_releases_the_replaced_threads(
        make_harness: MakeHarness, video: Path) -> None:
    """Three cycles between two layouts while a real pipeline runs on vtest.avi: every reload serves (records keep
    coming, named as before) and the process ends each cycle on the thread count it started with."""
    h = make_harness(video=video)
    h.wait_records(5)
    baseline = native_threads()
    for _ in range(3):
        assert h.manager.reload(WIDER) is h.manager.model
        h.wait_records(3)
        h.manager.reload(RUNTIME)
        h.wait_records(3)
        wait_until(lambda: native_threads() <= baseline, 10, f"the thread count back to {baseline}",
                   detail=native_threads)
    assert h.swaps == ["squeezenet@1.1-winml-fp16"] * 6
    assert {f"{r['model']['name']}@{r['model']['version']}" for r in h.records} == {"squeezenet@1.1-winml-fp16"}
