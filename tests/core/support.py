"""Real servers and sinks the core tests drive: an MJPEG camera, a file server that can fail, a collecting sink."""

from __future__ import annotations

import base64
import http.server
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class CollectSink:
    """A real pipeline sink that keeps every record, with the wall time it arrived."""

    name = "collect"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self._cond = threading.Condition()

    def publish(self, record: dict[str, Any]) -> None:
        """Keep the record."""
        with self._cond:
            self.records.append(record)
            self.arrived.append(time.time())
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to release."""

    def wait_for(self, count: int, timeout: float) -> bool:
        """True once at least `count` records have arrived, False after `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.records) >= count, timeout)


def epoch(iso: str) -> float:
    """Seconds since the epoch of a record timestamp such as 2026-01-01T00:00:00.000Z."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class MjpegCamera:
    """An HTTP MJPEG camera (multipart/x-mixed-replace) looping JPEG frames at `fps`; stop() is a real outage.

    With `credentials`, requests without the matching Basic Authorization get a 401 challenge, so frames arriving
    proves the client really sent the user and password from the URL.
    """

    def __init__(self, jpegs: list[bytes], fps: float = 20.0, credentials: tuple[str, str] | None = None) -> None:
        self.jpegs = jpegs
        self.period = 1.0 / fps
        self.port = 0
        self.expected_auth = (
            "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode() if credentials else None
        )
        self.connections = 0
        self.unauthorised = 0
        self._running = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None

    def url(self, path: str = "/video", userinfo: str = "") -> str:
        """The stream URL, optionally with user:password@ in it."""
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}{path}"

    def start(self) -> MjpegCamera:
        """Listen (on the same port as before, after a stop) and stream to every client."""
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                if camera.expected_auth and self.headers.get("Authorization") != camera.expected_auth:
                    camera.unauthorised += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                index = 0
                try:
                    while camera._running.is_set():
                        jpeg = camera.jpegs[index % len(camera.jpegs)]
                        index += 1
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                        self.wfile.write(head.encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                        time.sleep(camera.period)
                except OSError:
                    return
                self.close_connection = True

        self._running.set()
        self._httpd = serve(Handler, "mjpeg-camera", self.port)
        self.port = self._httpd.server_address[1]
        return self

    def stop(self) -> None:
        """Stop listening and end every open stream (clients see the connection close)."""
        self._running.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@dataclass
class Route:
    """What the file server answers for one path."""

    body: bytes = b""
    status: int = 200
    send_length: bool = True
    stall_after: int | None = None
    """Send this many body bytes, then go silent until the server closes."""
    stall_before_headers: bool = False
    failures: list[str] = field(default_factory=list)
    """Answers given before the real one, one per request: an HTTP status ("503"), or "reset" (half the rest of the
    body, then the connection is closed short of the announced length). The real answer honours a Range header."""


def serve(handler: type[http.server.BaseHTTPRequestHandler], name: str, port: int = 0,
          tls: ssl.SSLContext | None = None) -> http.server.ThreadingHTTPServer:
    """A threaded HTTP(S) server on 127.0.0.1 answering on a daemon thread; call shutdown() and server_close()."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), name=name, daemon=True).start()
    return httpd


class FileServer:
    """An http (or, given a TLS context, https) server with per-path behaviour: files, 404s, no Content-Length,
    stalls."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path, Route(body=b"not found", status=404))
                if route.stall_before_headers:
                    server._release.wait()
                    return
                failure = route.failures.pop(0) if route.failures else None
                if failure is not None and failure != "reset":
                    self.send_response(int(failure))
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                ranged = self.headers.get("Range", "")
                start = int(ranged[6:].split("-")[0]) if ranged.startswith("bytes=") and route.status == 200 else 0
                body = route.body[start:]
                self.send_response(206 if start else route.status)
                if route.send_length:
                    self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(route.body) - 1}/{len(route.body)}")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if failure == "reset":
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if route.stall_after is not None:
                        self.wfile.write(body[: route.stall_after])
                        self.wfile.flush()
                        server._release.wait()
                        return
                    self.wfile.write(body)
                except OSError:
                    return
                self.close_connection = True

        self._httpd = serve(Handler, "file-server", tls=tls)
        self.port = self._httpd.server_address[1]
        self.scheme = "http" if tls is None else "https"

    def url(self, path: str) -> str:
        """http(s)://127.0.0.1:PORT/path."""
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        """Release stalled handlers and stop."""
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
