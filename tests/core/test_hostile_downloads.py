"""Hostile model servers: a byte every so often, redirects to refused places; downloads end on time and say why."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge.download import DownloadCancelled, DownloadPolicy, TransferError, download
from visionedge.errors import FetchError

from .support import serve

BODY = b"onnx-bytes" * 1000


class HostileServer:
    """Real HTTP server: /crawl sends one byte every 0.2 s forever; /to?URL redirects; /file is BODY."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/crawl":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 << 20))
                    self.end_headers()
                    while not server.stop.wait(0.2):
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:
                            return
                elif self.path.startswith("/to?"):
                    self.send_response(302)
                    self.send_header("Location", self.path[4:])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY)

        self.httpd = serve(Handler, "hostile-server")
        self.port = self.httpd.server_address[1]

    def close(self) -> None:
        """Release crawling handlers and stop."""
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    """A hostile server on the loopback."""
    server = HostileServer()
    yield server
    server.close()


POLICY = DownloadPolicy(allow_insecure_http=True, read_timeout_s=30.0, deadline_s=2.0)


def test_a_crawling_server_hits_the_whole_download_deadline(hostile: HostileServer, tmp_path: Path) -> None:
    """A byte every 0.2 s never trips the 30 s read timeout, but the 2 s whole-download deadline ends it."""
    started = time.monotonic()
    with pytest.raises(TransferError, match=r"did not finish within 2 s \(the whole-download deadline"):
        download(f"http://127.0.0.1:{hostile.port}/crawl", tmp_path / "m.onnx", POLICY)
    assert time.monotonic() - started < 3.5


def test_a_crawling_download_is_cancelled_within_a_second(hostile: HostileServer, tmp_path: Path) -> None:
    """A newer desired version cancels the transfer while bytes trickle in: it ends within a second."""
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(DownloadCancelled):
        download(f"http://127.0.0.1:{hostile.port}/crawl", tmp_path / "m.onnx",
                 DownloadPolicy(allow_insecure_http=True, deadline_s=60.0), should_stop=cancel.is_set)
    assert time.monotonic() - started < 1.5


def test_a_redirect_to_a_host_off_the_allow_list_is_refused_before_it_is_followed(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """The allow-list is checked on the Location before any connection to it is made."""
    other = HostileServer()
    try:
        policy = DownloadPolicy(allow_insecure_http=True, allowed_hosts=("127.0.0.1",))
        target = f"http://localhost:{other.port}/file"
        with pytest.raises(FetchError, match="redirects to a refused URL: host 'localhost' is not in the allowed"):
            download(f"http://127.0.0.1:{hostile.port}/to?{target}", tmp_path / "m.onnx", policy)
        assert other.requests == []
    finally:
        other.close()


def test_a_redirect_to_another_scheme_is_refused(hostile: HostileServer, tmp_path: Path) -> None:
    """A redirect to ftp:// (or anything but http(s) the policy allows) is refused with the reason."""
    with pytest.raises(FetchError, match="redirects to a refused URL: unsupported URL scheme 'ftp'"):
        download(f"http://127.0.0.1:{hostile.port}/to?ftp://127.0.0.1/m.onnx", tmp_path / "m.onnx", POLICY)


def test_an_allowed_redirect_is_followed_and_verified(hostile: HostileServer, tmp_path: Path) -> None:
    """A redirect within the policy still downloads and verifies the file."""
    dest = download(f"http://127.0.0.1:{hostile.port}/to?/file", tmp_path / "m.onnx", POLICY,
                    sha256=hashlib.sha256(BODY).hexdigest())
    assert dest.read_bytes() == BODY
