"""The hub as the fleet commands see it: seven calls on configurations and twins, as plain REST-shaped dicts.

Everything above this interface (rings, plan, rollout, status) is written against `FleetHub` only. Two clients
implement it: `sdk.py`, the official service SDK `azure-iot-hub` (the only file that imports it), and `rest.py`,
IoT Hub's documented REST API over `requests` (no uamqp, so it installs on any Python). Replacing the SDK is a
change to `sdk.py`, or `--client rest`.

The connection string is a secret: it is kept only inside the client, never printed, logged or put in an error
message (errors name the hub by its HostName). An extra CA (`--hub-ca`) is added to the system store in a bundle
file that lives as long as the client; verification is never turned off.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import certifi

CONNECTION_ENV = "IOTHUB_CONNECTION_STRING"
CA_ENV = "VISIONEDGE_HUB_CA"
CLIENT_ENV = "VISIONEDGE_HUB_CLIENT"
CLIENTS = ("sdk", "rest")
PAGE = 1000
TIMEOUT_S = 30


class HubError(RuntimeError):
    """The hub refused or could not be reached; `status` is the HTTP status, 0 when there was no answer."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


T = TypeVar("T")


def unless_absent(call: Callable[[], T]) -> T | None:
    """The call's result, or None when the hub answers 404: both clients read a deployment that is not there (get,
    delete) the same way."""
    try:
        return call()
    except HubError as err:
        if err.status == 404:
            return None
        raise


def create_once(config_id: str, create: Callable[[], dict[str, Any]],
                get: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """Create a configuration; on 409 the existing one with this id is returned as is, so a resumed controller
    re-running a step never fails on what it already made (both clients share this rule)."""
    try:
        return create()
    except HubError as err:
        if err.status != 409:
            raise
        existing = get(config_id)
        if existing is None:
            raise
        return existing


class FleetHub(Protocol):
    """What a replacement client must provide: every call the fleet commands make, dicts in the REST API's shape.

    Errors are HubError with the HTTP status (404 absent, 409 exists, 412 etag changed, 0 unreachable); a
    message never holds the connection string.
    """

    host: str

    def configurations(self) -> list[dict[str, Any]]:
        """GET /configurations: every configuration (deployment) on the hub."""

    def get(self, config_id: str) -> dict[str, Any] | None:
        """GET /configurations/{id}, or None on 404."""

    def create(self, config: dict[str, Any]) -> dict[str, Any]:
        """PUT /configurations/{id} without If-Match; on 409 the existing one is returned (a re-run creates none)."""

    def update(self, config: dict[str, Any]) -> dict[str, Any]:
        """PUT /configurations/{id} with If-Match: the etag it was read with (412 when someone changed it)."""

    def delete(self, config_id: str) -> bool:
        """DELETE /configurations/{id} with If-Match '*'; False when it was already gone."""

    def query(self, text: str) -> Iterator[dict[str, Any]]:
        """POST /devices/query, every page (x-ms-continuation), each row as the hub returns it."""

    def set_tags(self, device_id: str, tags: dict[str, Any], etag: str) -> None:
        """PATCH /twins/{id} {"tags": ...} with If-Match: the twin's etag."""

    def close(self) -> None:
        """Release the client's files and connections."""


def parse_connection_string(connection_string: str) -> dict[str, str]:
    """HostName, SharedAccessKeyName and SharedAccessKey of a service connection string; raises HubError."""
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    missing = [k for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not fields.get(k)]
    if missing:
        raise HubError(f"the connection string lacks {', '.join(missing)}: use the hub's service connection "
                       "string (az iot hub connection-string show --policy-name registryReadWrite)")
    return fields


def host_of(connection_string: str) -> str:
    """The HostName of a service connection string (the only part that may be shown); raises HubError."""
    return parse_connection_string(connection_string)["HostName"]


class CaBundle:
    """The system store (certifi) plus an extra CA, in a file removed by `close()` or when the owner is collected."""

    def __init__(self, owner: object, extra_ca: Path) -> None:
        try:
            extra = extra_ca.read_text(encoding="ascii")
        except (OSError, ValueError) as err:
            raise HubError(f"cannot read the hub CA {extra_ca}: {getattr(err, 'strerror', None) or err}") from err
        if "BEGIN CERTIFICATE" not in extra:
            raise HubError(f"the hub CA {extra_ca} is not a PEM certificate")
        system = Path(certifi.where()).read_text(encoding="ascii")
        fd, name = tempfile.mkstemp(prefix="visionedge-hub-ca-", suffix=".pem")
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(system + "\n" + extra)
        self.path = Path(name)
        self._remove = weakref.finalize(owner, self.path.unlink, True)

    def close(self) -> None:
        """Remove the bundle file now."""
        self._remove()


def connect(connection_string: str, ca_file: Path | None = None, client: str = "sdk") -> FleetHub:
    """A hub client of the kind asked for (`sdk` or `rest`)."""
    if client == "rest":
        from visionedge.fleet.rest import RestHub

        return RestHub(connection_string, ca_file)
    if client == "sdk":
        from visionedge.fleet.sdk import SdkHub

        return SdkHub(connection_string, ca_file)
    raise HubError(f"unknown hub client {client!r}: use one of {', '.join(CLIENTS)}")
