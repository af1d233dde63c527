"""pytest-friendly helpers around DevHub: a running hub, the edge environment, a real SDK client, fast sockets."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visionedge_devhub.hub import DevHub


@contextmanager
def running_devhub(tmp_path: Path | None = None, **kwargs: Any) -> Iterator[DevHub]:
    """Run a DevHub for a `with` block or a yield fixture; broker files go under `tmp_path/devhub` for post-mortems."""
    work_dir = tmp_path / "devhub" if tmp_path is not None else None
    with DevHub(work_dir=work_dir, **kwargs) as hub:
        yield hub


@contextmanager
def sdk_nodelay() -> Iterator[None]:
    """Test-only: make `socket.create_connection` set TCP_NODELAY, since paho never does (44-88 ms -> ~2 ms)."""
    original = socket.create_connection

    def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        sock = original(*args, **kwargs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    socket.create_connection = create_connection
    try:
        yield
    finally:
        socket.create_connection = original


@contextmanager
def edge_environment(hub: DevHub, *, wrong_key: bool = False) -> Iterator[dict[str, str]]:
    """Set the IOTEDGE_* variables of `hub` in os.environ for the block, restoring the previous values after."""
    env = hub.env(wrong_key=wrong_key)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def module_client(hub: DevHub, *, wrong_key: bool = False, **kwargs: Any) -> Iterator[Any]:
    """A real `IoTHubModuleClient` made by `create_from_edge_environment()` against `hub`; shut down after."""
    from azure.iot.device import IoTHubModuleClient

    with edge_environment(hub, wrong_key=wrong_key):
        client = IoTHubModuleClient.create_from_edge_environment(**kwargs)
    try:
        yield client
    finally:
        client.shutdown()
