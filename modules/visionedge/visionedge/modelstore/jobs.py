"""A desired `model` block on its way through the model manager, and the small facts read off it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from visionedge.config import ModelRef, describe_validation_error
from visionedge.modelstore.refs import split_key


@dataclass
class Job:
    """One desired block to apply; av follows re-deliveries of the same block."""

    ref: ModelRef | None
    av: int
    text: str
    invalid: str = ""
    """Why the block is not even a valid `model` setting (then ref is None)."""
    cancel: threading.Event = field(default_factory=threading.Event)


def pair(key: str) -> tuple[str, str]:
    """(name, version) of a version key."""
    parts = split_key(key)
    return parts["name"], parts["version"]


def rollout(job: Job) -> str | None:
    """The fleet rollout id the block carries, echoed in modelHealth."""
    return job.ref.rollout if job.ref is not None else None


def as_ref(block: ModelRef | Mapping[str, Any]) -> tuple[ModelRef | None, str]:
    """The block as a ModelRef, or None and the one-line reason it is not a valid `model` setting."""
    if isinstance(block, ModelRef):
        return block, ""
    try:
        return ModelRef.model_validate(block), ""
    except ValidationError as err:
        return None, f"invalid model setting: {describe_validation_error(err, 'model')}"
