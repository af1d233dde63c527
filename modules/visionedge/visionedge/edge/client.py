"""The azure-iot-device module client, with every blocking call bounded and errors sorted into transient and fatal."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse
from azure.iot.device import exceptions as sdk_errors

from visionedge.errors import VisionEdgeError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = (
    sdk_errors.ConnectionFailedError,
    sdk_errors.ConnectionDroppedError,
    sdk_errors.NoConnectionError,
    sdk_errors.OperationTimeout,
    sdk_errors.OperationCancelled,
    sdk_errors.ServiceError,
)


class HubUnavailable(VisionEdgeError):
    """IoT Hub/edgeHub did not answer in time or the link is down; the caller retries later."""


class HubCredentialsRejected(VisionEdgeError):
    """The hub refused the module's identity; retrying cannot help until the deployment is fixed."""


@dataclass(frozen=True, slots=True)
class MethodCall:
    """A direct method request handed from the SDK thread to the control loop."""

    name: str
    payload: Any
    request: Any


@dataclass(frozen=True, slots=True)
class DesiredPatch:
    """A desired-properties patch, or the whole desired document (`full`) read with the twin at connect."""

    patch: dict[str, Any]
    full: bool = False


ControlItem = MethodCall | DesiredPatch


class HubClient:
    """Owns the SDK client; SDK handler threads only enqueue work, our threads do it."""

    def __init__(self, sdk: Any, timeout_s: float = 15.0) -> None:
        self.sdk = sdk
        self.timeout_s = timeout_s
        self.control: queue.Queue[ControlItem] = queue.Queue()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hub-call")
        self.connected = threading.Event()
        self.on_connected: list[Callable[[], None]] = []
        """Called (on an SDK or connect thread) each time the link comes up, e.g. to wake the telemetry sender."""
        self.closing = False
        self._handlers_set = False

    @classmethod
    def from_edge_environment(cls, timeout_s: float = 15.0, keep_alive: int = 30) -> HubClient:
        """The production path: identity and trust bundle from the IoT Edge workload API."""
        try:
            sdk = IoTHubModuleClient.create_from_edge_environment(
                keep_alive=keep_alive, connection_retry=True, connection_retry_interval=5,
                product_info="visionedge",
            )
        except (OSError, ValueError) as err:
            raise VisionEdgeError(f"cannot create the IoT Edge module client: {err}") from err
        return cls(sdk, timeout_s)

    def _on_patch(self, patch: dict[str, Any]) -> None:
        self.control.put(DesiredPatch(patch))

    def _on_method(self, request: Any) -> None:
        self.control.put(MethodCall(request.name, request.payload, request))

    def _on_connection_state(self) -> None:
        if self.sdk.connected:
            log.info("connected to IoT Hub/edgeHub")
            self._set_connected()
        else:
            self.connected.clear()
            if self.closing:
                return
            log.warning("disconnected from IoT Hub/edgeHub; the SDK is reconnecting")

    def call(self, what: str, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run one blocking SDK call on a worker thread and wait at most timeout for it."""
        future: Future[T] = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=timeout or self.timeout_s)
        except FutureTimeout as err:
            raise HubUnavailable(f"{what} timed out after {timeout or self.timeout_s:g} s") from err
        except sdk_errors.CredentialError as err:
            raise HubCredentialsRejected(
                f"IoT Hub rejected the module's credentials during {what} (CredentialError): check the module "
                "identity and its key in the deployment; not retrying"
            ) from err
        except TRANSIENT as err:
            raise HubUnavailable(f"{what} failed: {type(err).__name__}") from err
        except sdk_errors.ClientError as err:
            cause = err.__cause__
            if isinstance(cause, sdk_errors.CredentialError):
                raise HubCredentialsRejected(
                    f"IoT Hub rejected the module's credentials during {what}: check the module identity and key"
                ) from err
            raise HubUnavailable(f"{what} failed: {type(cause or err).__name__}") from err

    def connect(self) -> None:
        """Connect, then subscribe; raises HubUnavailable or HubCredentialsRejected."""
        self.call("connect", self.sdk.connect)
        if not self._handlers_set:
            # Assigning a handler subscribes on the wire and blocks without a timeout, so it runs bounded here.
            self.call("subscribe", self._set_handlers)
            self._handlers_set = True
        self._set_connected()

    def _set_connected(self) -> None:
        """Mark the link up and tell the listeners."""
        self.connected.set()
        for listener in list(self.on_connected):
            listener()

    def _set_handlers(self) -> None:
        self.sdk.on_connection_state_change = self._on_connection_state
        self.sdk.on_twin_desired_properties_patch_received = self._on_patch
        self.sdk.on_method_request_received = self._on_method

    def get_twin(self) -> dict[str, Any]:
        """The full twin: desired and reported documents."""
        twin: dict[str, Any] = self.call("get_twin", self.sdk.get_twin)
        return twin

    def patch_reported(self, patch: dict[str, Any]) -> None:
        """Send a reported-properties patch."""
        self.call("patch_twin_reported_properties", self.sdk.patch_twin_reported_properties, patch)

    def send(self, output: str, payload: bytes, message_id: str, properties: dict[str, str], timeout: float) -> None:
        """Send one message to a named output as UTF-8 JSON, so edgeHub routes can filter on $body."""
        message = Message(  # type: ignore[no-untyped-call]
            payload, message_id=message_id, content_encoding="utf-8", content_type="application/json"
        )
        message.custom_properties.update(properties)
        self.call(f"send to output {output!r}", self.sdk.send_message_to_output, message, output, timeout=timeout)

    def respond(self, call: MethodCall, status: int, payload: Any) -> None:
        """Answer a direct method."""
        response = MethodResponse.create_from_method_request(call.request, status, payload)
        self.call(f"method response {call.name}", self.sdk.send_method_response, response)

    def shutdown(self, timeout: float = 3.0) -> None:
        """Disconnect and release the SDK's threads, bounded so SIGTERM handling stays within IoT Edge's grace."""
        self.closing = True
        try:
            self.call("shutdown", self.sdk.shutdown, timeout=timeout)
        except VisionEdgeError as err:
            log.warning("shutdown of the hub client did not complete: %s", err)
        self._pool.shutdown(wait=False, cancel_futures=True)
