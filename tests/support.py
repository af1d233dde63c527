"""What every test folder shares: waiting for a condition, filling a disk. Free ports come from devhub
(`broker.free_port`)."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition", *,
               detail: Callable[[], object] | None = None, poll: float = 0.02) -> None:
    """Poll until `predicate` holds; after `timeout` seconds fail, naming `what` and, if given, `detail()`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            suffix = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{suffix}")
        time.sleep(poll)


def fill_disk(path: Path) -> None:
    """Write zeros to `path` until its file system is full (ENOSPC). Unbuffered: a buffered file would retry its
    refused tail when closed and raise ENOSPC out of the filler itself."""
    block = b"\0" * (1 << 16)
    with path.open("wb", buffering=0) as f:
        try:
            while f.write(block):
                pass
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
