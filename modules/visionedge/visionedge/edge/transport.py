"""The telemetry sender's Transport over the module client: IoT Hub/edgeHub outputs."""

from __future__ import annotations

from collections.abc import Mapping

from visionedge.edge.client import HubClient, HubCredentialsRejected, HubUnavailable
from visionedge.telemetry.sender import FatalSendError, TransientSendError


class HubTransport:
    """Sends only while connected, so a dead link fails fast instead of parking SDK worker threads."""

    def __init__(self, client: HubClient) -> None:
        self.client = client

    def send(self, output: str, payload: bytes, message_id: str, properties: Mapping[str, str],
             timeout: float) -> None:
        """Deliver one message to a named output, or say whether retrying can help."""
        if not self.client.connected.is_set():
            raise TransientSendError("not connected to IoT Hub/edgeHub")
        try:
            self.client.send(output, payload, message_id, dict(properties), timeout)
        except HubCredentialsRejected as err:
            raise FatalSendError(str(err)) from err
        except HubUnavailable as err:
            raise TransientSendError(str(err)) from err
