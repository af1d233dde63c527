"""IoT Hub's service REST API over HTTPS with its own CA and SAS-token checks, as `azure-iot-hub` 2.7 calls it.

Routes (api-version 2021-04-12): /configurations[/{id}] GET PUT DELETE, /configurations/testQueries POST,
/twins/{id} GET PATCH, /twins/{id}/modules/{mid} GET PATCH, /devices/query POST (x-ms-max-item-count,
x-ms-continuation). `outage` makes every request answer 503, as a hub that is down or throttled does.

Two devhub routes beside them, signed with the same service token, so another shell can rehearse with a running
fleet: POST /devhub/outage {"seconds": N} (503 for everything else for N seconds) and POST /devhub/down.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

from visionedge_devhub.certs import CertBundle
from visionedge_devhub.service import ServiceError, ServiceHub

_log = logging.getLogger(__name__)

API_VERSION = "2021-04-12"
DEFAULT_PAGE = 100
MAX_PAGE = 1000
POLICY_NAME = "iothubowner"


def verify_service_token(header: str | None, hostname: str, policies: Mapping[str, str], now: float) -> None:
    """Check a service SAS token (sr = the host name, skn = a policy, HMAC with its key, not expired)."""
    if not header or not header.startswith("SharedAccessSignature "):
        raise ServiceError(401, "IotHubUnauthorizedAccess", "missing SharedAccessSignature authorization")
    fields: dict[str, str] = {}
    for part in header[len("SharedAccessSignature "):].split("&"):
        key, _, value = part.partition("=")
        fields[key] = value
    try:
        resource, sig, expiry, name = fields["sr"], fields["sig"], int(fields["se"]), fields["skn"]
    except (KeyError, ValueError):
        raise ServiceError(401, "IotHubUnauthorizedAccess", "malformed SharedAccessSignature") from None
    if unquote_plus(resource).lower() != hostname.lower():
        raise ServiceError(401, "IotHubUnauthorizedAccess", f"token is for {unquote_plus(resource)!r}, not this hub")
    policy_key = policies.get(name)
    if policy_key is None:
        raise ServiceError(401, "IotHubUnauthorizedAccess", f"unknown shared access policy {name!r}")
    if expiry < now:
        raise ServiceError(401, "IotHubUnauthorizedAccess", "token expired")
    digest = hmac.new(base64.b64decode(policy_key), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(base64.b64encode(digest).decode(), unquote(sig)):
        raise ServiceError(401, "IotHubUnauthorizedAccess", "token signature does not match")


class RestApi:
    """The HTTPS server in front of a ServiceHub, on (ip, port), for one host name and its access policies."""

    def __init__(self, service: ServiceHub, certs: CertBundle, ip: str, port: int,
                 policies: Mapping[str, str]) -> None:
        self.service = service
        self.policies = dict(policies)
        self.outage_until = 0.0
        self.on_down: Callable[[], None] | None = None
        """What POST /devhub/down does (`fleet up` sets its stop); None: the route answers 404."""
        self.requests = 0
        self._server = ThreadingHTTPServer((ip, port), _handler_for(self))
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.ip, self.port = ip, int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def outage(self) -> bool:
        """True while every service call answers 503."""
        return time.monotonic() < self.outage_until

    @outage.setter
    def outage(self, on: bool) -> None:
        self.outage_until = float("inf") if on else 0.0

    def start_outage(self, seconds: float) -> None:
        """Answer 503 to every service call for `seconds` from now."""
        self.outage_until = time.monotonic() + seconds

    @property
    def hostname(self) -> str:
        """The HostName of the connection string: the SDK's base URL is https://HostName."""
        return f"{self.ip}:{self.port}"

    def connection_string(self, policy: str = POLICY_NAME) -> str:
        """A service connection string for one of the policies."""
        return f"HostName={self.hostname};SharedAccessKeyName={policy};SharedAccessKey={self.policies[policy]}"

    def start(self) -> None:
        """Serve on a named thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="devhub-restapi", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    """Dispatches the SDK's calls to the ServiceHub, answering errors the way IoT Hub does."""

    api: RestApi
    """Set on the subclass _handler_for makes for one server."""

    protocol_version = "HTTP/1.1"
    server_version = "visionedge-devhub"

    def log_message(self, format: str, *args: Any) -> None:
        """Access log to `logging` at debug level."""
        _log.debug("restapi: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.api.requests += 1
        try:
            url = urlsplit(self.path)
            if url.path.startswith("/devhub/"):
                verify_service_token(self.headers.get("Authorization"), self.api.hostname, self.api.policies,
                                     time.time())
                status, answer, headers = self._devhub(method, url.path, json.loads(raw) if raw else {})
                self._send(status, answer, headers)
                return
            if self.api.outage:
                raise ServiceError(503, "ServiceUnavailable", "the hub is unavailable (devhub outage)")
            verify_service_token(self.headers.get("Authorization"), self.api.hostname, self.api.policies, time.time())
            version = parse_qs(url.query).get("api-version", [""])[0]
            if version != API_VERSION:
                raise ServiceError(400, "InvalidProtocolVersion", f"api-version {version!r} is not supported")
            body = json.loads(raw) if raw else None
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            status, answer, headers = self._route(method, parts, body)
        except ServiceError as err:
            status, headers = err.status, {}
            answer = {"Message": f"ErrorCode:{err.code};{err}", "ExceptionMessage": str(err)}
        except ValueError as err:
            status, headers = 400, {}
            answer = {"Message": f"ErrorCode:BadRequest;{err}", "ExceptionMessage": str(err)}
        self._send(status, answer, headers)

    def _devhub(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """The rehearsal routes: an outage of N seconds, or stopping the fleet."""
        if (method, path) == ("POST", "/devhub/outage"):
            seconds = _object(body).get("seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= 86400:
                raise ServiceError(400, "BadRequest", "seconds: a number from 0 to 86400")
            self.api.start_outage(float(seconds))
            _log.warning("devhub outage: every service call answers 503 for %.0f s", seconds)
            return 200, {"seconds": seconds}, {}
        if (method, path) == ("POST", "/devhub/down") and self.api.on_down is not None:
            self.api.on_down()
            return 202, {"stopping": True}, {}
        raise ServiceError(404, "NotFound", f"{method} {path} is not served by devhub")

    def _route(self, method: str, parts: list[str], body: Any) -> tuple[int, Any, dict[str, str]]:
        service = self.api.service
        if_match = self.headers.get("If-Match")
        match (method, parts):
            case ("GET", ["configurations"]):
                top = parse_qs(urlsplit(self.path).query).get("top", [None])[0]
                return 200, service.list_configurations(int(top) if top else None), {}
            case ("POST", ["configurations", "testQueries"]):
                return 200, service.test_queries(_object(body)), {}
            case ("GET", ["configurations", cid]):
                return 200, service.get_configuration(cid), {}
            case ("PUT", ["configurations", cid]):
                status, config = service.put_configuration(cid, _object(body), if_match)
                return status, config, {}
            case ("DELETE", ["configurations", cid]):
                service.delete_configuration(cid, if_match)
                return 204, None, {}
            case ("GET", ["twins", device]):
                return 200, service.get_twin(device), {}
            case ("PATCH", ["twins", device]):
                return 200, service.patch_twin(device, _object(body), if_match), {}
            case ("GET", ["twins", device, "modules", module]):
                return 200, service.get_module_twin(device, module), {}
            case ("PATCH", ["twins", device, "modules", module]):
                return 200, service.patch_module_twin(device, module, _object(body), if_match), {}
            case ("POST", ["devices", "query"]):
                return self._query(_object(body))
        raise ServiceError(404, "NotFound", f"{method} /{'/'.join(parts)} is not served by devhub")

    def _query(self, body: Mapping[str, Any]) -> tuple[int, Any, dict[str, str]]:
        rows = self.api.service.query(str(body.get("query") or ""))
        page = min(int(self.headers.get("x-ms-max-item-count") or DEFAULT_PAGE), MAX_PAGE)
        start = int(self.headers.get("x-ms-continuation") or 0)
        chunk = rows[start:start + page]
        headers = {"x-ms-item-type": "twin" if body.get("query", "").split()[1:2] == ["*"] else "raw"}
        if start + page < len(rows):
            headers["x-ms-continuation"] = str(start + page)
        return 200, chunk, headers

    def _send(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _handler_for(api: RestApi) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to one RestApi."""
    return type("Handler", (_Handler,), {"api": api})


def _object(body: Any) -> Mapping[str, Any]:
    """Request bodies must be JSON objects."""
    if not isinstance(body, Mapping):
        raise ServiceError(400, "BadRequest", "the request body must be a JSON object")
    return body
