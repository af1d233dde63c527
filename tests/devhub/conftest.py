"""Fixtures for the devhub's own tests: a running DevHub and a real SDK module client connected to it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge_devhub.hub import DevHub
from visionedge_devhub.testing import module_client, running_devhub, sdk_nodelay


@pytest.fixture(autouse=True)
def _quiet_sdk() -> None:
    """The SDK logs every expected disconnect as an error from a background thread; keep test output readable."""
    logging.getLogger("azure.iot.device").setLevel(logging.CRITICAL)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[DevHub]:
    """A running DevHub with a desired document set before any module connects."""
    with sdk_nodelay(), running_devhub(tmp_path, desired={"fps": 5, "camera": {"uri": "rtsp://cam"}}) as devhub:
        yield devhub


@pytest.fixture
def client(hub: DevHub) -> Iterator[Any]:
    """A connected IoTHubModuleClient from `create_from_edge_environment()`, retrying every second."""
    with module_client(hub, connection_retry_interval=1) as sdk_client:
        sdk_client.connect()
        yield sdk_client
