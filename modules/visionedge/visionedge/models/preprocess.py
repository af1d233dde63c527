"""Frame to input tensor, returning the geometry the decoder needs to map boxes back."""

from __future__ import annotations

import cv2
import numpy as np

from visionedge.frame import Geometry
from visionedge.models.manifest import ModelManifest


class Preprocessor:
    """Resize, reorder and normalise exactly as the model was trained, with constants computed once."""

    def __init__(self, manifest: ModelManifest, width: int, height: int, dtype: np.dtype) -> None:
        self.width = width
        self.height = height
        self.letterbox = manifest.resize == "letterbox"
        self.fill = manifest.letterbox_fill
        self.rgb = manifest.color == "RGB"
        self.nchw = manifest.layout == "NCHW"
        self.dtype = dtype
        scale = np.float32(manifest.scale)
        mean = np.asarray(manifest.mean, dtype=np.float32)
        std = np.asarray(manifest.std, dtype=np.float32)
        # value = (pixel * scale - mean) / std  ==  pixel * mul + add
        mul = scale / std
        add = -mean / std
        self.identity = bool(np.all(mul == 1.0) and np.all(add == 0.0))
        self.uniform = bool(np.all(mul == mul[0]) and np.all(add == 0.0))
        shape = (3, 1, 1) if self.nchw else (1, 1, 3)
        self.mul = mul.reshape(shape)
        self.add = add.reshape(shape)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """One BGR uint8 frame to a 1-batch tensor."""
        h, w = image.shape[:2]
        if self.letterbox:
            r = min(self.width / w, self.height / h)
            nw, nh = max(int(w * r), 1), max(int(h * r), 1)  # a 1xN strip still keeps one row
            canvas: np.ndarray = np.full((self.height, self.width, 3), self.fill, dtype=np.uint8)
            canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
            geometry = Geometry(w, h, r, r)
        else:
            canvas = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            geometry = Geometry(w, h, self.width / w, self.height / h)
        if self.rgb:
            canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        planes = canvas.transpose(2, 0, 1) if self.nchw else canvas
        tensor = planes.astype(np.float32)
        # In place: two temporaries of the whole tensor per frame cost more than the arithmetic itself.
        if self.uniform and not self.identity:
            tensor *= self.mul.reshape(-1)[0]
        elif not self.identity:
            tensor *= self.mul
            tensor += self.add
        if tensor.dtype != self.dtype:
            tensor = tensor.astype(self.dtype)
        return tensor[np.newaxis], geometry
