"""Runtime settings bounded by what the device has, and a replaced layout's sessions and threads released (issue
27.6): a real module process, devhub, its threads counted in /proc."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

import pytest
from visionedge.models.runtime import usable_cores
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import ModuleProcess, StartModule
from tests.edge.test_model_updates_e2e import wait_for_results_from
from tests.edge.test_update_reliability_e2e import section_ack
from tests.support import wait_until

pytestmark = pytest.mark.timeout(300)

HUGE = {"workers": 64, "intra_op_threads": 256, "inter_op_threads": 256}
DEFAULTS = {"workers": 0, "intra_op_threads": 0, "inter_op_threads": 1}
IDLE_POOL_THREADS = 4
"""Thread-pool executors start their workers lazily, one per call that finds none idle (the module's `hub-call` pool
and the SDK's handler pool, 4 each at most): gdb shows the thread a twin patch can add waiting in SimpleQueue.get.
They are bounded and not the layout's; the exact release of a layout's threads is tested in-process in
tests/modelstore/test_reload.py."""


def threads(module: ModuleProcess) -> int:
    """Threads of the module process as the kernel counts them (Python's and onnxruntime's native ones)."""
    return len(os.listdir(f"/proc/{module.proc.pid}/task"))


def names(module: ModuleProcess) -> Counter[str]:
    """The kernel's name of each thread, to say which ones stayed behind."""
    tasks = Path(f"/proc/{module.proc.pid}/task")
    found: Counter[str] = Counter()
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # a thread may end while it is listed
            found[(task / "comm").read_text(encoding="utf-8").strip()] += 1
    return found


def test_runtime_beyond_the_cores_is_lowered_with_the_reason_and_cycling_it_releases_every_thread(
    hub: DevHub, start_module: StartModule
) -> None:
    """64 workers and 256 threads on this machine's cores: applied lowered to the cores, said in the ack; set back,
    the process returns to the thread count it had before, twice (issue 27.6 saw 279 left of 22 before the bound)."""
    module = start_module(hub)
    wait_for_results_from(hub, "squeezenet", count=5)
    baseline, before = threads(module), names(module)
    cores = usable_cores()
    for _ in range(2):
        version = hub.set_desired({"runtime": HUGE})
        ack = section_ack(hub, "runtime", version)
        assert ack["ac"] == 200, ack
        assert ack["ad"] == (f"applied; lowered to the {cores} usable core(s): workers 64 -> {cores}, "
                             f"intra_op_threads 256 -> {cores}, inter_op_threads 256 -> {cores}"), ack["ad"]
        hub.emulator.clear_telemetry()
        wait_for_results_from(hub, "squeezenet", count=5)
        assert threads(module) < baseline + 3 * cores * cores, "more threads than the bounded layout needs"
        version = hub.set_desired({"runtime": DEFAULTS})
        assert section_ack(hub, "runtime", version)["ac"] == 200
        hub.emulator.clear_telemetry()
        wait_for_results_from(hub, "squeezenet", count=5)
        wait_until(lambda: threads(module) <= baseline + IDLE_POOL_THREADS, 30,
                   f"the thread count back to {baseline} (+ idle pool workers)", detail=lambda: names(module) - before)
