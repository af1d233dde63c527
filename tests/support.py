"""What every test folder shares: waiting for a condition. Free ports come from devhub (`broker.free_port`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition", *,
               detail: Callable[[], object] | None = None, poll: float = 0.02) -> None:
    """Poll until `predicate` holds; after `timeout` seconds fail, naming `what` and, if given, `detail()`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            suffix = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{suffix}")
        time.sleep(poll)
