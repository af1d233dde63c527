"""IoT Hub's rules for a twin document (tags, desired and reported properties), as its device twin guide states them.

One definition for both sides: `visionedge fleet plan` refuses a model block the hub would refuse, and devhub's
service refuses what the real hub refuses. Sources are in docs/fleet.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 10
MAX_KEY_BYTES = 1024
INT_RANGE = (-(2**52), 2**52 - 1)
_BAD_KEY = re.compile(r"[.$ \x00-\x1f\x7f-\x9f]")


def twin_problem(value: Any, where: str, level: int = 0) -> str | None:
    """Why IoT Hub would refuse `value` in a twin, or None; `level` is the depth of the object that holds it.

    Keys: 1 to 1,024 bytes, no '.', '$', space or control character. Objects: nested at most 10 deep. Integers:
    within -2^52 .. 2^52-1.
    """
    stack: list[tuple[Any, int, str]] = [(value, level, where)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, Mapping):
            if depth + 1 > MAX_DEPTH:
                return f"{path}: twin objects nest at most {MAX_DEPTH} levels"
            for key, child in node.items():
                if not key or _BAD_KEY.search(key) or len(key.encode("utf-8")) > MAX_KEY_BYTES:
                    return (f"{path}: twin key {key[:40]!r} is empty, over 1 KB or holds '.', '$', a space or a "
                            "control character")
                stack.append((child, depth + 1, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((child, depth, path) for child in node)
        elif isinstance(node, int) and not isinstance(node, bool) and not INT_RANGE[0] <= node <= INT_RANGE[1]:
            return f"{path}: integer {node} is outside -2^52 .. 2^52-1"
    return None
