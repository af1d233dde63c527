"""The one gate for files and documents from outside: size before reading, nesting, finite numbers, no special files.

Every reader of something the module did not just write itself (JSONL results, YAML, JSON, labels, manifests,
twin values, saved state) goes through these checks, so one hostile input can cost a line of error, never a hang,
a traceback or gigabytes of memory. The rule and the cap of each reader are in docs/robustness.md.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from visionedge.errors import VisionEdgeError

MAX_DEPTH = 32
"""Nesting no document of ours needs (IoT Hub itself refuses twin documents deeper than 10 levels)."""
MAX_INT = 2**63 - 1
"""Integers must fit 64 bits: every consumer (Parquet, SQLite, the SDK) stores them so."""


class IntakeError(VisionEdgeError):
    """An input refused by the intake rule; the message is the one-line reason."""


def check_file(path: Path, what: str, *, special: bool = False) -> os.stat_result:
    """A regular file (FIFOs and devices block or never end) unless `special`; its stat, read without opening it."""
    try:
        info = path.stat()
    except OSError as err:
        raise IntakeError(f"cannot read {what} {path}: {err.strerror}") from err
    if not special and not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
        raise IntakeError(f"{what} {path} is {kind}, not a regular file")
    return info


def read_capped(path: Path, limit: int, what: str, *, special: bool = False) -> bytes:
    """The whole file, refused once it passes `limit` bytes: at most limit + 1 bytes are ever read."""
    check_file(path, what, special=special)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise IntakeError(f"cannot read {what} {path}: {err.strerror}") from err
    if len(data) > limit:
        raise IntakeError(f"{what} {path} is larger than {_size(limit)}")
    return data


def check_tree(value: Any, what: str, depth: int = MAX_DEPTH) -> Any:
    """Refuse nesting deeper than `depth` and numbers that are not finite or do not fit 64 bits; returns value."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list | tuple):
            if level > depth:
                raise IntakeError(f"{what} is nested deeper than {depth} levels")
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise IntakeError(f"{what} holds a number that is not finite ({node})")
        elif isinstance(node, int) and not isinstance(node, bool) and not -MAX_INT - 1 <= node <= MAX_INT:
            raise IntakeError(f"{what} holds an integer that does not fit 64 bits")
    return value


def refuse_constant(name: str) -> Any:
    """json.loads' parse_constant: NaN and Infinity are not JSON, whatever Python's json module accepts."""
    raise ValueError(f"{name} is not a number JSON allows")


def loads_json(text: str | bytes, what: str, depth: int = MAX_DEPTH) -> Any:
    """json.loads without NaN/Infinity, then check_tree; any failure is one IntakeError line."""
    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except RecursionError as err:
        raise IntakeError(f"{what} is nested deeper than {depth} levels") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, the constants above, int digit limits
        raise IntakeError(f"{what} is not valid JSON: {' '.join(str(err).split())[:160]}") from err
    return check_tree(value, what, depth)


def read_json(path: Path, limit: int, what: str, depth: int = MAX_DEPTH) -> Any:
    """read_capped then loads_json."""
    return loads_json(read_capped(path, limit, what), f"{what} {path}", depth)


def refuse_overlap(inputs: Iterable[Path], outputs: Iterable[Path | None]) -> None:
    """No output may be an input or another output, by name, through links or as a hard link (same device and
    inode): checked before anything is opened for writing, so a typo never truncates a day of results."""
    seen: dict[tuple[int, int] | str, str] = {}
    for path in inputs:
        for key in _identities(path):
            seen[key] = f"the input {path}"
    for out in outputs:
        if out is None:
            continue
        keys = _identities(out)
        for key in keys:
            if key in seen:
                raise IntakeError(f"output {out} is {seen[key]}: refusing to overwrite it")
        for key in keys:
            seen[key] = f"also the output {out}"


def _identities(path: Path) -> list[tuple[int, int] | str]:
    """The resolved name, and (device, inode) when the file exists: what makes two paths one file."""
    keys: list[tuple[int, int] | str] = [os.path.realpath(path)]
    try:
        info = path.stat()
    except OSError:
        return keys
    keys.append((info.st_dev, info.st_ino))
    return keys


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB" if limit >= 1 << 10 else f"{limit} bytes"
