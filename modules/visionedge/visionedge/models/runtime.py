"""onnxruntime sessions on the best accelerator available, with the providers in effect recorded."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# onnxruntime >= 1.29 starts its own telemetry when it is imported (a device id and an upload queue under $HOME, sent
# to Microsoft). A privacy-first module sends nothing it was not asked to, and this variable is onnxruntime's only
# switch that acts before the import; `disable_telemetry_events()` below covers builds that do not read it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # after the switch above, on purpose

from visionedge.config import RuntimeSettings
from visionedge.errors import AcceleratorError, ModelError, first_line

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"


def choose_providers(settings: RuntimeSettings, available: list[str] | None = None) -> list[str]:
    """The requested providers this onnxruntime build offers, in preference order; CPU always last resort."""
    offered = ort.get_available_providers() if available is None else available
    chosen = [p for p in settings.resolved_providers() if p in offered]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2 CPU quota of this container: "<quota> <period>" or "max <period>"."""


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its CPU set (a container's, not the host's count), lowered to the cgroup CPU
    quota rounded up (`docker run --cpus 1.5` on 8 cores: 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable here: the CPU set is the bound
    return cores


def bound(settings: RuntimeSettings, cores: int) -> tuple[RuntimeSettings, str]:
    """The settings with workers and thread counts no larger than the usable cores, and what was lowered ("" if
    nothing): more threads than cores only queue behind each other, and each one costs memory and a stack."""
    lowered = {name: cores for name in ("workers", "intra_op_threads", "inter_op_threads")
               if getattr(settings, name) > cores}
    if not lowered:
        return settings, ""
    said = ", ".join(f"{name} {getattr(settings, name)} -> {cores}" for name in lowered)
    return settings.model_copy(update=lowered), f"lowered to the {cores} usable core(s): {said}"


@dataclass(frozen=True, slots=True)
class Layout:
    """How inference is spread: `workers` threads share one session, each run using `intra_op_threads`."""

    workers: int
    intra_op_threads: int


def plan_layout(settings: RuntimeSettings, providers: list[str], cores: int) -> Layout:
    """Workers and threads for these providers on this many cores; explicit settings win.

    On the CPU, small vision models scale poorly across intra-op threads (SqueezeNet: about 1.3x on 2 threads) while
    independent single-thread runs on the same session scale almost linearly, so the default is one worker per core
    with one thread each. An accelerator does the work itself: one worker feeds it, batching across sources.
    """
    cpu_only = all(p == CPU for p in providers)
    workers = settings.workers or (cores if cpu_only else 1)
    # A lone worker leaves a core to capture and decoding: an intra-op thread that loses its core stalls the run.
    threads = settings.intra_op_threads or max(1, (cores - 1 if workers == 1 else cores) // workers)
    return Layout(workers, threads)


def create_session(path: Path, settings: RuntimeSettings) -> tuple[ort.InferenceSession, list[str], Layout]:
    """Load a model with its layout; raise a one-line ModelError for files that are not usable ONNX."""
    requested = settings.resolved_providers()
    chosen = choose_providers(settings)
    cores = usable_cores()
    settings, lowered = bound(settings, cores)
    if lowered:
        log.warning("runtime settings %s", lowered)
    layout = plan_layout(settings, chosen, cores)
    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = layout.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.log_severity_level = 3
    # Spinning threads would steal the cores that capture and decoding need between inferences.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    provider_list: list[Any] = [(p, {k: str(v) for k, v in settings.provider_options.get(p, {}).items()})
                                for p in chosen]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=provider_list)
    except Exception as err:  # onnxruntime raises several unrelated types for unreadable models
        raise ModelError(f"{path.name} is not a loadable ONNX model: {first_line(err)}") from err
    in_effect = list(session.get_providers())
    if settings.require_accelerator and all(p == CPU for p in in_effect):
        raise AcceleratorError(
            f"require_accelerator is set but only the CPU is in effect (requested {', '.join(requested)}; "
            f"this onnxruntime offers {', '.join(ort.get_available_providers())})"
        )
    log.info("model %s: providers requested=%s available=%s in effect=%s; %d worker(s) x %d thread(s)", path.name,
             requested, ort.get_available_providers(), in_effect, layout.workers, layout.intra_op_threads)
    return session, in_effect, layout
