"""onnxruntime sessions on the best accelerator available, with the providers in effect recorded."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import onnxruntime as ort

from visionedge.config import RuntimeSettings
from visionedge.errors import AcceleratorError, ModelError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"


def choose_providers(settings: RuntimeSettings, available: list[str] | None = None) -> list[str]:
    """The requested providers this onnxruntime build offers, in preference order; CPU always last resort."""
    offered = ort.get_available_providers() if available is None else available
    chosen = [p for p in settings.resolved_providers() if p in offered]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def default_intra_op_threads() -> int:
    """All usable cores but one: capture, preprocessing and decoding need a core, and an intra-op thread that loses
    its core to them stalls every parallel operator until it is scheduled again."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable - 1)


def create_session(path: Path, settings: RuntimeSettings) -> tuple[ort.InferenceSession, list[str]]:
    """Load a model; raise a one-line ModelError for files that are not usable ONNX."""
    requested = settings.resolved_providers()
    chosen = choose_providers(settings)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.intra_op_threads or default_intra_op_threads()
    options.inter_op_num_threads = settings.inter_op_threads
    options.log_severity_level = 3
    # Spinning threads would steal the cores that capture and decoding need between inferences.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    provider_list: list[Any] = [(p, {k: str(v) for k, v in settings.provider_options.get(p, {}).items()})
                                for p in chosen]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=provider_list)
    except Exception as err:  # onnxruntime raises several unrelated types for unreadable models
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{path.name} is not a loadable ONNX model: {detail[:200]}") from err
    in_effect = list(session.get_providers())
    if settings.require_accelerator and all(p == CPU for p in in_effect):
        raise AcceleratorError(
            f"require_accelerator is set but only the CPU is in effect (requested {', '.join(requested)}; "
            f"this onnxruntime offers {', '.join(ort.get_available_providers())})"
        )
    log.info("model %s: providers requested=%s available=%s in effect=%s", path.name, requested,
             ort.get_available_providers(), in_effect)
    return session, in_effect
