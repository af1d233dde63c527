"""The two sources made only for measuring: the first N frames of a real video, and one frame held still with noise."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
from visionedge.frame import Frame
from visionedge.sources import Source, VideoFileSource


class FirstFrames(Source):
    """The real video source, stopped after its first `count` frames (the file is still decoded frame by frame)."""

    def __init__(self, inner: VideoFileSource, count: int) -> None:
        super().__init__(inner.source_id, inner.description)
        self.inner = inner
        self.count = count

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """The inner source's frames up to `count`."""
        for frame in self.inner.frames(stop):
            if frame.index >= self.count:
                return
            yield frame


class HeldFrame(Source):
    """One frame held still for `seconds` at `fps` with fresh sensor-like noise per frame (sigma 4 grey levels)."""

    def __init__(self, image: np.ndarray, seconds: float, fps: float) -> None:
        super().__init__("still", "a held frame with noise")
        self.image, self.total, self.rate = image.astype(np.float32), int(seconds * fps), fps

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Noisy copies of the frame (25 noise fields made beforehand, so making them costs no CPU per frame),
        timestamped as a camera at `fps` would stamp them."""
        rng = np.random.default_rng(0)
        noisy = [np.clip(self.image + 4.0 * rng.standard_normal(self.image.shape, dtype=np.float32), 0, 255)
                 .astype(np.uint8) for _ in range(25)]
        start = time.time()
        for index in range(int(self.total or 0)):
            yield Frame(noisy[index % len(noisy)], self.source_id, index, start + index / self.rate)
