"""`analyze --analytics/--mot/--preview`: scene analytics over a file, its summary, MOTChallenge tracks, a picture."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from pydantic import ValidationError

from visionedge.analytics.events import AnalyticsEvent, Crossing
from visionedge.analytics.mot import write_row
from visionedge.analytics.settings import SourceAnalytics
from visionedge.config import describe_validation_error, read_yaml
from visionedge.errors import ConfigError
from visionedge.sources import Source

LINE_COLOUR = (0, 200, 255)
ZONE_COLOUR = (255, 160, 0)


def load_settings(path: Path) -> SourceAnalytics:
    """One source's analytics from a YAML file (the value of one source id in the `analytics` section)."""
    raw = read_yaml(path, "analytics file", ConfigError)
    try:
        return SourceAnalytics.model_validate(raw if raw is not None else {})
    except ValidationError as err:
        raise ConfigError(f"analytics file {path}: {describe_validation_error(err)}") from err


def summary(settings: SourceAnalytics, events: Iterable[AnalyticsEvent]) -> list[str]:
    """Closing lines, counted from the run's events: crossings per line, direction and class; per zone entries,
    exits and dwell."""
    crossings: dict[str, dict[str, dict[str, int]]] = {line.name: {} for line in settings.lines}
    zones: dict[str, dict[str, dict[str, int]]] = {zone.name: {"enter": {}, "exit": {}} for zone in settings.zones}
    dwell: dict[str, list[float]] = {}
    for event in events:
        if isinstance(event, Crossing):
            per = crossings[event.line].setdefault(event.direction, {})
        elif event.kind in ("enter", "exit"):
            per = zones[event.zone][event.kind]
            if event.kind == "exit" and event.dwell_s is not None:
                dwell.setdefault(event.zone, []).append(event.dwell_s)
        else:
            continue
        per[event.label] = per.get(event.label, 0) + 1
    lines = []
    for name, per_direction in crossings.items():
        counts = ", ".join(f"{d} {sum(per.values())} ({_per_class(per)})" for d, per in sorted(per_direction.items()))
        lines.append(f"line {name}: {counts or 'no crossings'}")
    for name, zone in zones.items():
        stays = dwell.get(name, [])
        told = (f"; dwell mean {sum(stays) / len(stays):.1f} s, max {max(stays):.1f} s over {len(stays)} stays"
                if stays else "")
        lines.append(f"zone {name}: entries {sum(zone['enter'].values())} ({_per_class(zone['enter'])}), "
                     f"exits {sum(zone['exit'].values())} ({_per_class(zone['exit'])}){told}")
    return lines


def _per_class(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} {n}" for label, n in sorted(counts.items())) or "none"


class MotWriter:
    """Tracks in MOTChallenge format from result records: frame numbers from 1, boxes in pixels; only the labels in
    `classes` when given, since a ground truth of pedestrians counts every tracked bag or bird as a false positive."""

    def __init__(self, out: TextIO, classes: frozenset[str] | None = None) -> None:
        self.out = out
        self.classes = classes

    @classmethod
    def open(cls, path: Path, classes: frozenset[str] | None = None) -> MotWriter:
        """A writer on a new file at path; a one-line ConfigError when it cannot be written."""
        try:
            return cls(path.open("w", encoding="ascii"), classes)
        except OSError as err:
            raise ConfigError(f"cannot write {path}: {err.strerror}") from err

    def add(self, record: dict[str, Any]) -> None:
        """Every detection of the record that belongs to a confirmed track (of the chosen classes)."""
        width, height = record["frame_size"]
        for det in record.get("detections", ()):
            if "track_id" in det and (self.classes is None or det["label"] in self.classes):
                x1, y1, x2, y2 = det["box"]
                write_row(self.out, record["frame_index"] + 1, det["track_id"],
                          (x1 * width, y1 * height, x2 * width, y2 * height), det["confidence"])


def draw(image: np.ndarray, settings: SourceAnalytics) -> np.ndarray:
    """The lines (with an arrow and name per direction) and zones drawn on a copy of the frame."""
    out = image.copy()
    h, w = out.shape[:2]

    def px(p: tuple[float, float]) -> tuple[int, int]:
        return round(p[0] * (w - 1)), round(p[1] * (h - 1))

    for zone in settings.zones:
        corners = np.array([px(p) for p in zone.points], dtype=np.int32)
        shade = out.copy()
        cv2.fillPoly(shade, [corners], ZONE_COLOUR)
        out = cv2.addWeighted(shade, 0.25, out, 0.75, 0)
        cv2.polylines(out, [corners], True, ZONE_COLOUR, 2, cv2.LINE_AA)
        _label(out, zone.name, tuple(corners.min(axis=0)))
    for line in settings.lines:
        a, b = px(line.points[0]), px(line.points[1])
        cv2.line(out, a, b, LINE_COLOUR, 2, cv2.LINE_AA)
        mid = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
        length = math.hypot(b[0] - a[0], b[1] - a[1])
        normal = (-(b[1] - a[1]) / length, (b[0] - a[0]) / length)  # points to the first direction's side
        reach = max(20, round(min(w, h) * 0.08))
        for sign, name in ((1, line.directions[0]), (-1, line.directions[1])):
            tip = (round(mid[0] + sign * normal[0] * reach), round(mid[1] + sign * normal[1] * reach))
            tail = (round(mid[0] - sign * normal[0] * reach * 0.2), round(mid[1] - sign * normal[1] * reach * 0.2))
            cv2.arrowedLine(out, tail, tip, LINE_COLOUR, 2, cv2.LINE_AA, tipLength=0.3)
            _label(out, name, tip)
        _label(out, line.name, (min(a[0], b[0]), min(a[1], b[1]) - 6))
    return out


def write_preview(source: Source, settings: SourceAnalytics, path: Path) -> int:
    """The geometry drawn on the source's first frame, written as a picture; 0 when written."""
    stop = threading.Event()
    frame = next(iter(source.frames(stop)), None)
    stop.set()
    if frame is None:
        raise ConfigError("the source gave no frame to draw the geometry on")
    if not cv2.imwrite(str(path), draw(frame.image, settings)):
        raise ConfigError(f"cannot write {path}: not writable, or not an image name (.png, .jpg)")
    sys.stderr.write(f"wrote {path}\n")
    return 0


def _label(image: np.ndarray, text: str, at: tuple[int, int]) -> None:
    x, y = int(at[0]), max(int(at[1]), 14)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
