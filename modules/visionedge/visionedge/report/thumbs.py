"""Key-frame thumbnails: the frame shrunk, with its boxes and labels drawn, as a small JPEG for the report."""

from __future__ import annotations

import cv2
import numpy as np

from visionedge.frame import Inference
from visionedge.report.records import Item
from visionedge.tasks import task_of

THUMB_WIDTH = 360
JPEG_QUALITY = 70
"""About 15-25 KB a thumbnail: a report of 40 key frames stays near 1 MB."""


def _colour(label: str) -> tuple[int, int, int]:
    """A stable colour per label, so the same label looks the same in every picture."""
    seed = sum(label.encode("utf-8")) * 2654435761 % 2**24
    return (seed & 0xFF) | 0x40, (seed >> 8 & 0xFF) | 0x40, (seed >> 16 & 0xFF) | 0x40


def items_of(inference: Inference) -> tuple[Item, ...]:
    """A model's result as the items a thumbnail draws."""
    return tuple(Item(i.label, i.confidence, getattr(i, "box", None)) for i in task_of(inference.task).items(inference))


def thumbnail(image: np.ndarray, items: tuple[Item, ...]) -> bytes | None:
    """Draw the detections (or the top classification) on a shrunk copy of the frame."""
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        return None
    scale = min(1.0, THUMB_WIDTH / w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if small.ndim == 2:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    sh, sw = small.shape[:2]
    for item in items:
        colour = _colour(item.label)
        text = f"{item.label} {item.confidence:.2f}"
        if item.box is None:  # a classifier: its top label in the corner
            cv2.putText(small, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(small, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
            break
        x1, y1, x2, y2 = (round(item.box[0] * sw), round(item.box[1] * sh),
                          round(item.box[2] * sw), round(item.box[3] * sh))
        cv2.rectangle(small, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(small, text, (x1 + 2, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return encoded.tobytes() if ok else None
