"""The versioned result record: what leaves the device for each analysed frame (labels, never pixels)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from visionedge.frame import Frame, Inference
from visionedge.tasks import task_of

SCHEMA_VERSION = "1.0"


def iso_utc(epoch: float) -> str:
    """Millisecond ISO 8601 in UTC with a Z, the form IoT Hub routing and most dashboards parse."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_record(frame: Frame, inference: Inference) -> dict[str, Any]:
    """Build the schema-1.0 record for one frame."""
    h, w = frame.image.shape[:2]
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source_id": frame.source_id,
        "frame_index": frame.index,
        "timestamp": iso_utc(frame.timestamp),
        "frame_size": [w, h],
        "model": {"name": inference.model_name, "version": inference.model_version},
        "inference_ms": round(inference.inference_ms, 3),
    }
    return record | task_of(inference.task).record_fields(inference)


def result_schema() -> dict[str, Any]:
    """The JSON Schema of a result record, shipped with the package."""
    text = (resources.files("visionedge") / "schemas" / "result.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
