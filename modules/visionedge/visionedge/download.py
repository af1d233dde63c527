"""Bounded, verified downloads: https only by default, host allow-list, size cap, timeouts, sha256, and retries.

A transfer that fails in a way a retry may cure (a timeout, a connection reset, HTTP 408/429/5xx) is tried again,
up to `attempts` times in all, with backoff; each attempt resumes the `.part` file where the server allows (Range).
Anything else (404, a refusal, a wrong sha256) is final at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import certifi
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, ReadTimeoutError

from visionedge.errors import FetchError
from visionedge.retry import backoff_delay
from visionedge.urls import redact_url

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_REDIRECTS = 5
GUARD_POLL_S = 0.25
Progress = Callable[[int, int | None], None]
RETRY_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP answers that say "not now" rather than "no"."""


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    """Limits that every download obeys; the insecure flag only ever comes from device-local settings."""

    max_bytes: int = 200 * 1024 * 1024
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    allow_insecure_http: bool = False
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    ca_bundle: Path | None = None
    """PEM file of extra CAs, trusted besides the system store; verification is never turned off."""
    attempts: int = 3
    """Tries in all for a transfer that fails transiently."""
    retry_initial_s: float = 1.0
    retry_max_s: float = 10.0
    deadline_s: float = 900.0
    """The whole download, however the server trickles its bytes."""


class TransferError(FetchError):
    """The server or the network failed (HTTP status, timeout, reset): unlike a refusal, a retry may succeed."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class DownloadCancelled(FetchError):
    """should_stop asked to abandon the transfer; the .part file stays for a later resume."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_url(url: str, policy: DownloadPolicy) -> None:
    """Refuse URLs the policy does not allow, before any connection is made."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise FetchError(f"unsupported URL scheme {parts.scheme!r} in {redact_url(url)}: use https")
    if parts.scheme == "http" and not policy.allow_insecure_http:
        raise FetchError(f"plain http is not allowed ({redact_url(url)}): use https, or set "
                         "local.allow_insecure_http for development")
    host = (parts.hostname or "").lower()
    if policy.allowed_hosts and host not in {h.lower() for h in policy.allowed_hosts}:
        raise FetchError(f"host {host!r} is not in the allowed hosts ({', '.join(policy.allowed_hosts)})")


def trust_context(extra: Path | None) -> ssl.SSLContext:
    """The system's CAs (OpenSSL's default paths, so SSL_CERT_FILE/SSL_CERT_DIR count) and certifi's, plus `extra`:
    an extra CA must not make public servers, such as the built-in models' pinned URLs, untrusted."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    if extra is not None:
        try:
            context.load_verify_locations(cafile=str(extra))
        except (OSError, ssl.SSLError) as err:
            raise FetchError(f"local.ca_bundle {extra} cannot be loaded as PEM CA certificates: {err}") from err
    return context


class _TrustAdapter(HTTPAdapter):
    """Verifies servers against one SSL context (requests alone trusts either certifi or one bundle, not both)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        """Every pool this adapter makes uses our context."""
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._context, **pool_kwargs)


def session_for(policy: DownloadPolicy) -> requests.Session:
    """A requests session that verifies TLS against the system store plus the policy's extra CA bundle."""
    session = requests.Session()
    session.mount("https://", _TrustAdapter(trust_context(policy.ca_bundle)))
    return session


def download(url: str, dest: Path, policy: DownloadPolicy, *, sha256: str | None = None,
             size: int | None = None, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> Path:
    """Stream url to dest (via dest.part, resumed when the server allows), verifying size and sha256; transient
    failures are retried with backoff (see the module docstring)."""
    attempt = 1
    give_up_at = time.monotonic() + policy.deadline_s  # the whole download, retries included
    while True:
        try:
            return _attempt(url, dest, policy, sha256=sha256, size=size, progress=progress, should_stop=should_stop,
                            give_up_at=give_up_at)
        except TransferError as err:
            if not err.transient or attempt >= policy.attempts:
                raise
            delay = backoff_delay(attempt - 1, policy.retry_initial_s, policy.retry_max_s)
            log.warning("%s; attempt %d of %d in %.1f s", err, attempt + 1, policy.attempts, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if should_stop is not None and should_stop():
                    raise DownloadCancelled(f"download of {redact_url(url)} cancelled") from err
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            attempt += 1


def _attempt(url: str, dest: Path, policy: DownloadPolicy, *, sha256: str | None, size: int | None,
             progress: Progress | None, should_stop: Callable[[], bool] | None, give_up_at: float) -> Path:
    """One transfer: resume or start the .part, stream it within the limits, verify, move into place."""
    check_url(url, policy)
    if size is not None and size > policy.max_bytes:
        raise FetchError(f"declared size {size} bytes exceeds the download limit of {policy.max_bytes} bytes")
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    guard = _Guard(should_stop, give_up_at, policy.deadline_s)
    try:
        with session_for(policy) as session, _get(session, url, headers, policy) as resp:
            if resp.status_code == 416 and have:
                # The .part is not a prefix the server can continue (e.g. the file changed): start afresh.
                part.unlink(missing_ok=True)
                return _attempt(url, dest, policy, sha256=sha256, size=size, progress=progress,
                                should_stop=should_stop, give_up_at=give_up_at)
            if resp.status_code not in (200, 206):
                raise TransferError(f"HTTP {resp.status_code} {resp.reason} for {redact_url(url)}",
                                    transient=resp.status_code in RETRY_STATUS)
            if resp.url != url:
                check_url(resp.url, policy)
            if resp.status_code == 200:
                have = 0
            total = _total(resp, have)
            if total is not None and total > policy.max_bytes:
                part.unlink(missing_ok=True)
                raise FetchError(f"{redact_url(url)} is {total} bytes, over the limit of {policy.max_bytes} bytes")
            guard.watch(resp)
            with part.open("ab" if have else "wb") as out:
                written = have
                while chunk := resp.raw.read1(CHUNK, decode_content=True):  # returns as bytes arrive: a crawl
                    guard.check(url)  # is seen within a read timeout, never after a whole CHUNK
                    written += len(chunk)
                    if written > policy.max_bytes:
                        out.close()
                        part.unlink(missing_ok=True)
                        raise FetchError(f"{redact_url(url)} exceeds the download limit of {policy.max_bytes} bytes")
                    out.write(chunk)
                    if progress is not None:
                        progress(written, total)
                guard.check(url)
                out.flush()
                os.fsync(out.fileno())
    except (requests.RequestException, HTTPError) as err:
        guard.check(url)  # a socket cut by the guard surfaces as a connection error: say why it was cut
        if isinstance(err, ReadTimeoutError) or (isinstance(err, requests.RequestException) and _timed_out(err)):
            raise TransferError(f"timed out downloading {redact_url(url)} (connect {policy.connect_timeout_s:g} s, "
                                f"read {policy.read_timeout_s:g} s)") from err
        raise TransferError(f"cannot download {redact_url(url)}: {type(err).__name__}") from err
    finally:
        guard.done()
    verify_file(part, sha256=sha256, size=size, what=redact_url(url))
    os.replace(part, dest)
    return dest


def _get(session: requests.Session, url: str, headers: dict[str, str], policy: DownloadPolicy) -> requests.Response:
    """GET with redirects followed by hand, each target checked against the policy BEFORE it is contacted."""
    timeout = (policy.connect_timeout_s, policy.read_timeout_s)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        resp = session.get(current, stream=True, timeout=timeout, headers=headers, allow_redirects=False)
        if not resp.is_redirect:
            return resp
        target = urljoin(current, resp.headers.get("Location", ""))
        resp.close()
        try:
            check_url(target, policy)
        except FetchError as err:
            raise FetchError(f"{redact_url(url)} redirects to a refused URL: {err}") from err
        current = target
    raise TransferError(f"{redact_url(url)} redirects more than {MAX_REDIRECTS} times")


class _Guard:
    """Cuts a transfer's socket when it is cancelled or its whole-download deadline passes, even mid-read."""

    def __init__(self, should_stop: Callable[[], bool] | None, deadline: float, deadline_s: float) -> None:
        self.should_stop = should_stop
        self.deadline = deadline
        self.deadline_s = deadline_s
        self.why = ""
        self._finished = threading.Event()

    def watch(self, resp: requests.Response) -> None:
        """Poll on a daemon thread until done(); on cancel or deadline shut the socket, which ends a blocked read."""
        threading.Thread(target=self._run, args=(resp,), name="download-guard", daemon=True).start()

    def _run(self, resp: requests.Response) -> None:
        while not self._finished.wait(GUARD_POLL_S):
            if self._expired():
                sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    def _expired(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            self.why = "cancelled"
        elif time.monotonic() > self.deadline:
            self.why = "deadline"
        return bool(self.why)

    def check(self, url: str) -> None:
        """Raise DownloadCancelled or a deadline TransferError when the transfer must end."""
        if self.why or self._expired():
            if self.why == "cancelled":
                raise DownloadCancelled(f"download of {redact_url(url)} cancelled")
            raise TransferError(f"download of {redact_url(url)} did not finish within {self.deadline_s:g} s "
                                "(the whole-download deadline, local.download_deadline_s)", transient=False)

    def done(self) -> None:
        """Stop watching."""
        self._finished.set()


def _timed_out(err: requests.RequestException) -> bool:
    """A stall in the body surfaces from requests as ConnectionError(ReadTimeoutError), not as requests.Timeout."""
    return isinstance(err, requests.Timeout) or any(isinstance(arg, ReadTimeoutError) for arg in err.args)


def _total(resp: requests.Response, have: int) -> int | None:
    length = resp.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return None
    return int(length) + (have if resp.status_code == 206 else 0)


def verify_file(path: Path, *, sha256: str | None, size: int | None, what: str) -> None:
    """Size first (cheap), then sha256; a mismatching file is deleted so it can never be used."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink(missing_ok=True)
        raise FetchError(f"{what}: size {actual_size} bytes, expected {size}")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            path.unlink(missing_ok=True)
            raise FetchError(f"{what}: sha256 {actual[:12]}… does not match the pinned {sha256[:12]}…")
