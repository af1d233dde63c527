"""Result records read back from JSONL files, streamed, with bad lines skipped and counted instead of fatal."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from visionedge.errors import ConfigError, first_line
from visionedge.tasks import TASKS

MAX_LINE_BYTES = 1 << 20
"""A result record is a few KB; a longer line is not one, and reading it whole would cost memory."""
MAX_DETECTIONS = 1000
"""More boxes than any model here emits per frame: a record claiming more is refused, not trusted."""
REPORTED_BAD_LINES = 5


@dataclass(frozen=True, slots=True)
class Item:
    """One classification or detection of a record; box is x1, y1, x2, y2 in 0..1, absent for a classifier."""

    label: str
    confidence: float
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """The fields of a result record that reports and exports use, checked once when read."""

    source_id: str
    frame_index: int
    timestamp: float
    """Seconds since the epoch (UTC)."""
    model_name: str
    model_version: str
    inference_ms: float
    frame_size: tuple[int, int]
    task: str
    """`classify` or `detect`."""
    items: tuple[Item, ...]
    counts: dict[str, int]
    reused: bool = False
    """The frame was gated as unchanged and carries the previous result."""


@dataclass
class BadLines:
    """Lines that were not result records: how many, and where the first few are, to tell the user."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        """Count one bad line and remember where it is when it is among the first few."""
        self.count += 1
        if len(self.first) < REPORTED_BAD_LINES:
            self.first.append(f"{where}: {reason}")

    def describe(self) -> str:
        """One line for stderr and the report."""
        more = f" (and {self.count - len(self.first)} more)" if self.count > len(self.first) else ""
        return f"skipped {self.count} line(s) that are not result records: " + "; ".join(self.first) + more


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is not a number")
    return float(value)


def _items(record: dict[str, Any], key: str, boxes: bool) -> tuple[Item, ...]:
    raw = record[key]
    if not isinstance(raw, list) or len(raw) > MAX_DETECTIONS:
        raise ValueError(f"{key} is not a list of at most {MAX_DETECTIONS}")
    try:  # float() and a 4-tuple unpack check each field at C speed: a day has millions of these
        if boxes:
            items = []
            for entry in raw:
                x1, y1, x2, y2 = entry["box"]
                items.append(Item(str(entry["label"]), float(entry["confidence"]),
                                  (float(x1), float(y1), float(x2), float(y2))))
            return tuple(items)
        return tuple(Item(str(entry["label"]), float(entry["confidence"])) for entry in raw)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{key} entry without a label, a numeric confidence or a 4-number box ({err})") from err


def parse_timestamp(text: Any) -> float:
    """ISO 8601 as the module writes it (`...Z`) to epoch seconds."""
    if not isinstance(text, str):
        raise ValueError("timestamp is not a string")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return moment.timestamp()


def to_row(record: Any) -> Row:
    """Check a decoded record and keep what reports need; raises ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    model = record.get("model")
    if not isinstance(model, dict):
        raise ValueError("no model")
    kind = next((t for t in TASKS.values() if t.items_field in record), None)
    if kind is None:
        raise ValueError("neither " + " nor ".join(t.items_field for t in TASKS.values()))
    task, items = kind.name, _items(record, kind.items_field, boxes=kind.boxes)
    size = record.get("frame_size")
    if not isinstance(size, list) or len(size) != 2:
        raise ValueError("frame_size is not [width, height]")
    index = record.get("frame_index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError("frame_index is not an integer")
    counts = record.get("counts", {})
    if not isinstance(counts, dict) or not all(isinstance(n, int) for n in counts.values()):
        raise ValueError("counts is not a map of integers")
    return Row(
        source_id=str(record.get("source_id", "")),
        frame_index=index,
        timestamp=parse_timestamp(record.get("timestamp")),
        model_name=str(model.get("name", "")),
        model_version=str(model.get("version", "")),
        inference_ms=_number(record.get("inference_ms", 0.0), "inference_ms"),
        frame_size=(int(_number(size[0], "frame_size")), int(_number(size[1], "frame_size"))),
        task=task,
        items=items,
        counts={str(k): v for k, v in counts.items()},
        reused=record.get("reused") is True,
    )


def read_rows(paths: Iterable[Path], bad: BadLines, on_bytes: Callable[[int], None] | None = None) -> Iterator[Row]:
    """Every good record of every file, in file order; one line in memory at a time."""
    for path in paths:
        try:
            stream = path.open("rb")
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror}") from err
        with stream:
            number = 0
            while True:
                line = stream.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                number += 1
                if on_bytes is not None:
                    on_bytes(len(line))
                if len(line) > MAX_LINE_BYTES:
                    bad.add(f"{path.name}:{number}", f"longer than {MAX_LINE_BYTES} bytes")
                    while line and not line.endswith(b"\n"):  # the rest of the over-long line
                        line = stream.readline(MAX_LINE_BYTES)
                        if on_bytes is not None:
                            on_bytes(len(line))
                    continue
                if not line.strip():
                    continue
                try:
                    yield to_row(json.loads(line))
                except (ValueError, TypeError, RecursionError) as err:
                    bad.add(f"{path.name}:{number}", first_line(err, 120))

