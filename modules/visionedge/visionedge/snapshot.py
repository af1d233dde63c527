"""Annotated snapshots kept on the device: a person can look at what the model saw without pixels leaving."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from visionedge.frame import Frame, Inference
from visionedge.result import iso_utc

COLOUR = (0, 200, 255)


def annotate(frame: Frame, inference: Inference) -> np.ndarray:
    """Draw boxes and labels (detector) or the top-k list (classifier) on a copy of the frame."""
    image = frame.image.copy()
    h, w = image.shape[:2]
    for d in inference.detections:
        x1, y1, x2, y2 = (int(d.box[0] * w), int(d.box[1] * h), int(d.box[2] * w), int(d.box[3] * h))
        cv2.rectangle(image, (x1, y1), (x2, y2), COLOUR, 2)
        cv2.putText(image, f"{d.label} {d.confidence:.2f}", (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    COLOUR, 1, cv2.LINE_AA)
    for i, c in enumerate(inference.classifications):
        cv2.putText(image, f"{c.label[:40]} {c.confidence:.3f}", (8, 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    COLOUR, 1, cv2.LINE_AA)
    cv2.putText(image, f"{inference.model_name} {inference.model_version} | {iso_utc(frame.timestamp)}",
                (8, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, COLOUR, 1, cv2.LINE_AA)
    return image


def save_snapshot(folder: Path, frame: Frame, inference: Inference, keep: int = 100) -> Path:
    """Write a JPEG and prune the oldest beyond `keep`, so snapshots never fill the disk."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(frame.timestamp))
    path = folder / f"{frame.source_id}-{stamp}-{frame.index:08d}.jpg"
    if not cv2.imwrite(str(path), annotate(frame, inference), [cv2.IMWRITE_JPEG_QUALITY, 85]):
        raise OSError(f"cannot write snapshot {path}")
    for old in sorted(folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime)[:-keep]:
        old.unlink(missing_ok=True)
    return path
