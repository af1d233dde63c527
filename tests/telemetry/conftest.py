"""Fixtures for the telemetry tests: real Mosquitto brokers on free ports and a settable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Clock, Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running Mosquitto of our own; tests may stop and start it."""
    process = Mosquitto(tmp_path / "broker")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A second broker, standing for the on-premises one beside the IoT Hub stand-in."""
    process = Mosquitto(tmp_path / "local-broker")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def clock() -> Clock:
    """Simulated time starting on a window boundary."""
    return Clock()
