"""The `visionedge` command's first code: SIGTERM ends the process cleanly from its first moment, even as PID 1.

A container's PID 1 gets no default action for SIGTERM: until a handler exists the signal is ignored and `docker
stop` waits out its grace period, then kills. Importing the command line (onnxruntime, OpenCV, the IoT SDK) takes
about a second, so the handler is installed here, before those imports. Commands with a loop (`run`, `analyze`)
replace it with one that sets their stop event; every other command exits with 143 (128 + SIGTERM).

A crash of the main thread ends the process at once with 70, whatever other threads still run: IoT Edge restarts
only a module that exits, and the SDK's threads would otherwise keep a dead module alive (and deaf to SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from types import FrameType

EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_CRASHED = 70
"""EX_SOFTWARE: the main thread raised something no handler expected."""


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    """End at once, as the default action would: an exception raised here mid-import breaks native modules instead."""
    os._exit(EXIT_TERMINATED)


def main() -> int:
    """Install the early SIGTERM handler, then load and run the command line."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from visionedge.cli import main as cli_main

        return cli_main()
    except Exception:  # noqa: BLE001 - the process must end; the traceback is the one record of why
        traceback.print_exc()
        sys.stderr.write(f"visionedge: the main thread crashed; exiting with {EXIT_CRASHED} so it is restarted\n")
        for stream in (sys.stdout, sys.stderr):  # os._exit skips the interpreter's flush of results already written
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(EXIT_CRASHED)
