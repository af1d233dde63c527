"""Small HTTP-over-unix-socket server and client, shared by the workload API and the CLI's control API."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


class JsonRequestHandler(BaseHTTPRequestHandler):
    """Base handler: JSON in and out, logging through `logging` instead of stderr."""

    server_version = "visionedge-devhub"

    def address_string(self) -> str:
        """Name the peer: a unix socket's client address is '' and the default handler would index into it."""
        return "unix-socket"

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to `logging` at debug level."""
        _log.debug("%s: " + format, self.server.server_address, *args)

    def read_json(self) -> Any:
        """Parse the request body as JSON (None when empty); raises ValueError on bad JSON."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def send_json(self, status: int, body: Any) -> None:
        """Write a JSON response with a Content-Length."""
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    """Threaded HTTP server on a unix socket, served from a named thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, handler: type[JsonRequestHandler], name: str) -> None:
        """Bind `path` (replacing a stale socket file) with owner-only permissions."""
        if path.exists() or path.is_symlink():
            path.unlink()
        super().__init__(str(path), handler)
        os.chmod(path, 0o600)
        self.path = path
        self.name = name
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name=name, daemon=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle each request on its own thread, named after the server (ThreadingMixIn's are anonymous)."""
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), name=f"{self.name}-request", daemon=True
        )
        thread.start()

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and remove its file."""
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join()
        self.server_close()
        self.path.unlink(missing_ok=True)


class UnixHTTPConnection(http.client.HTTPConnection):
    """`http.client` connection to a server on a unix socket."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        """Prepare a connection to the socket at `path`."""
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        """Connect the unix socket instead of TCP."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request_json(path: Path, method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    """Make one JSON request over a unix socket; return (status, decoded body or None)."""
    conn = UnixHTTPConnection(path, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, url, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()
