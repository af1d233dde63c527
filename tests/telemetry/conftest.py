"""Fixtures for the telemetry tests: real Mosquitto brokers on free ports and a settable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge.telemetry.outbox import Outbox
from visionedge_devhub.broker import Broker

from .support import Clock


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto of our own (devhub's, plain listener only); tests may stop and start it."""
    process = Broker(tmp_path / "broker")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[Broker]:
    """A second broker, standing for the on-premises one beside the IoT Hub stand-in."""
    process = Broker(tmp_path / "local-broker")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def clock() -> Clock:
    """Simulated time starting on a window boundary."""
    return Clock()


OpenOutbox = Callable[..., Outbox]


@pytest.fixture
def open_outbox() -> Iterator[OpenOutbox]:
    """`open_outbox(data_dir, settings, ...)`: an Outbox exactly as constructed, closed after the test (an unclosed
    SQLite connection is a ResourceWarning from Python 3.13 on, reported in whichever test collects it)."""
    opened: list[Outbox] = []

    def open_(*args: Any, **kwargs: Any) -> Outbox:
        outbox = Outbox(*args, **kwargs)
        opened.append(outbox)
        return outbox

    yield open_
    for outbox in opened:
        outbox.close()
