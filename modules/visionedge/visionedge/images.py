"""Image files decoded within a memory bound: the header's resolution is read before any pixel is decoded."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from visionedge.errors import SourceError

MAX_PIXELS = 40_000_000
"""About 120 MB decoded (BGR): every camera sensor fits; a header announcing more is decoded reduced or refused."""
REDUCED = ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))
HEADER_BYTES = 1 << 16


def read_image(path: Path) -> np.ndarray:
    """A BGR frame; a JPEG over MAX_PIXELS is decoded at 1/2, 1/4 or 1/8 scale, other huge or unknown ones refused."""
    try:
        size = image_size(path)
    except OSError as err:
        raise SourceError(f"cannot read image {path}: {err.strerror}") from err
    if size is None:
        raise SourceError(f"cannot decode image {path}: not an image file or unsupported format")
    flag = cv2.IMREAD_COLOR
    if size[0] * size[1] > MAX_PIXELS:
        width, height = size
        jpeg = _is_jpeg(path)
        factor = next((f for f, _ in REDUCED if jpeg and (width // f) * (height // f) <= MAX_PIXELS), None)
        if factor is None:
            raise SourceError(f"image {path} is {width}x{height} pixels, over the limit of "
                              f"{MAX_PIXELS // 1_000_000} megapixels")
        flag = dict(REDUCED)[factor]
    image = cv2.imread(str(path), flag)
    if image is None or image.size == 0:
        raise SourceError(f"cannot decode image {path}: not an image file or unsupported format")
    return image


def _is_jpeg(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\xff\xd8"


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP, GIF, WebP or TIFF header; None when it is not recognised or cut short."""
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    try:
        return _header_size(path, head)
    except struct.error:
        return None


def _header_size(path: Path, head: bytes) -> tuple[int, int] | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(path)
    if head.startswith(b"BM") and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return int(width), int(height)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(head)
    return None


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    """Walk the markers up to the first start-of-frame, reading only segment headers."""
    with path.open("rb") as f:
        f.read(2)
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            kind = marker[1]
            if kind == 0xFF:  # fill byte
                f.seek(-1, 1)
                continue
            if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:
                continue
            length_bytes = f.read(2)
            if len(length_bytes) < 2:
                return None
            length = struct.unpack(">H", length_bytes)[0]
            if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
                frame = f.read(5)
                if len(frame) < 5:
                    return None
                height, width = struct.unpack(">HH", frame[1:5])
                return int(width), int(height)
            f.seek(length - 2, 1)


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _tiff_size(head: bytes) -> tuple[int, int] | None:
    """Width and length tags of the first image directory, when it lies within the header bytes read."""
    order = "<" if head[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", head[4:8])
    if offset + 2 > len(head):
        return None
    (count,) = struct.unpack(order + "H", head[offset:offset + 2])
    found: dict[int, int] = {}
    for i in range(count):
        entry = head[offset + 2 + 12 * i: offset + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"
            found[tag] = int(struct.unpack(order + fmt, entry[8:8 + struct.calcsize(fmt)])[0])
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None
