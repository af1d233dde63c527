"""Where result records go; the IoT Hub path is a sink too, behind the telemetry policy and outbox."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

from visionedge.errors import ConfigError


class Sink(Protocol):
    """Receives every result record on the publishing thread; must not block for long."""

    name: str

    def publish(self, record: dict[str, Any]) -> None:
        """Take one record."""

    def close(self) -> None:
        """Flush and release resources."""


class JsonLinesSink:
    """One compact JSON object per line, to a file or stdout, flushed per record so tails see it at once."""

    def __init__(self, stream: TextIO, name: str, owns: bool) -> None:
        self.stream = stream
        self.name = name
        self.owns = owns
        self.on_broken: Callable[[], None] | None = None
        """Called once when the reader went away (`visionedge run | head`), e.g. to stop the pipeline."""
        self.broken = False

    def publish(self, record: dict[str, Any]) -> None:
        """Write one line; a closed pipe ends the output quietly instead of raising on every record."""
        if self.broken:
            return
        try:
            self.stream.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.broken = True
            # Point stdout at /dev/null so the interpreter's own flush at exit does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            if self.on_broken is not None:
                self.on_broken()

    def close(self) -> None:
        """Close the file (never stdout)."""
        if self.owns:
            self.stream.close()
        elif not self.broken:
            self.stream.flush()


def stdout_sink() -> JsonLinesSink:
    """Records on standard output."""
    return JsonLinesSink(sys.stdout, "stdout", owns=False)


def jsonl_sink(path: Path) -> JsonLinesSink:
    """Records appended to a JSON Lines file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = path.open("a", encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}") from err
    return JsonLinesSink(stream, f"jsonl:{path}", owns=True)


def parse_sink(spec: str) -> JsonLinesSink:
    """`stdout` or `jsonl:PATH` (the IoT Hub sink is chosen by the environment, not here)."""
    if spec == "stdout":
        return stdout_sink()
    if spec.startswith("jsonl:") and len(spec) > len("jsonl:"):
        return jsonl_sink(Path(spec[len("jsonl:"):]))
    raise ConfigError(f"unknown sink {spec!r}: use stdout or jsonl:PATH")
