"""The IoT Edge workload API (trust bundle + HMAC signing) that `create_from_edge_environment()` calls."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import threading
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlsplit

from visionedge_devhub.unixhttp import JsonRequestHandler, UnixHTTPServer

_log = logging.getLogger(__name__)

_SIGN_PATH = re.compile(r"^/modules/(?P<module>[^/]+)/genid/(?P<genid>[^/]+)/sign$")


def sign(key_b64: str, data: bytes) -> str:
    """Return base64(HMAC-SHA256(base64-decoded key, data)), the digest a SAS token's `sig` carries."""
    digest = hmac.new(base64.b64decode(key_b64), data, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class WorkloadServer:
    """Answers `GET /trust-bundle` and `POST /modules/{id}/genid/{genid}/sign` on a unix socket, like aziot-edged."""

    def __init__(self, socket_path: Path, module_id: str, ca_pem: str) -> None:
        """Serve one module id; register generation ids (each with its key) with `add_generation`."""
        self.socket_path = socket_path
        self.module_id = module_id
        self.ca_pem = ca_pem
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: UnixHTTPServer | None = None
        self._sign_requests = 0

    @property
    def uri(self) -> str:
        """The value for IOTEDGE_WORKLOADURI."""
        return f"unix://{self.socket_path}"

    def add_generation(self, generation_id: str, key_b64: str) -> None:
        """Sign for `generation_id` with `key_b64` (a wrong key here makes a module fail authentication)."""
        with self._lock:
            self._keys[generation_id] = key_b64

    def key_for(self, module_id: str, generation_id: str) -> str | None:
        """The key registered for this module and generation, or None when unknown."""
        with self._lock:
            return self._keys.get(generation_id) if module_id == self.module_id else None

    @property
    def sign_requests(self) -> int:
        """How many signatures were handed out (one per SAS token, so one per connect or renewal)."""
        with self._lock:
            return self._sign_requests

    def sign_for(self, key_b64: str, data: bytes) -> str:
        """Sign `data` with `key_b64` and count the request."""
        with self._lock:
            self._sign_requests += 1
        return sign(key_b64, data)

    def start(self) -> None:
        """Bind the socket and serve from a named thread."""
        self._server = UnixHTTPServer(self.socket_path, _handler_for(self), name="devhub-workload")
        self._server.start()
        _log.info("workload API listening on %s", self.uri)

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()


def _handler_for(workload: WorkloadServer) -> type[JsonRequestHandler]:
    """Bind a request handler class to one WorkloadServer."""

    class Handler(JsonRequestHandler):
        """HTTP handler for the two workload API calls the SDK makes."""

        def do_GET(self) -> None:
            """Serve the trust bundle (the devhub CA) so the SDK trusts the TLS front."""
            if urlsplit(self.path).path == "/trust-bundle":
                self.send_json(200, {"certificate": workload.ca_pem})
            else:
                self.send_json(404, {"message": f"unknown workload API path {urlsplit(self.path).path}"})

        def do_POST(self) -> None:
            """Sign `data` with the module key of the generation id in the path."""
            try:
                request = self.read_json()  # read the body first: answering early breaks the client's pipe
            except (ValueError, TypeError) as err:
                self.send_json(400, {"message": f"bad sign request: {err}"})
                return
            match = _SIGN_PATH.match(urlsplit(self.path).path)
            if match is None:
                self.send_json(404, {"message": f"unknown workload API path {urlsplit(self.path).path}"})
                return
            module_id, generation_id = unquote(match["module"]), unquote(match["genid"])
            key = workload.key_for(module_id, generation_id)
            if key is None:
                _log.warning("sign request for unknown module %s generation %s", module_id, generation_id)
                self.send_json(404, {"message": f"module {module_id!r} with generation id {generation_id!r} not found"})
                return
            try:
                if not isinstance(request, dict) or request.get("algo") != "HMACSHA256":
                    raise ValueError("expected {'keyId': 'primary', 'algo': 'HMACSHA256', 'data': base64}")
                data = base64.b64decode(cast(str, request["data"]), validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error) as err:
                self.send_json(400, {"message": f"bad sign request: {err}"})
                return
            self.send_json(200, {"digest": workload.sign_for(key, data)})

    return Handler
