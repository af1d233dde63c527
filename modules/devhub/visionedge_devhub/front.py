"""TLS front on port 8883 that checks SAS tokens like IoT Hub and can drop, refuse or stall links on demand.

Mosquitto accepts any password and cannot cut links without a restart; this proxy sits between the SDK and the
broker's plain listener to do both.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from visionedge_devhub.certs import CertBundle
from visionedge_devhub.workload import sign

_log = logging.getLogger(__name__)

MQTT_TLS_PORT = 8883  # fixed by the SDK
CONNACK_SERVER_UNAVAILABLE = 3
CONNACK_NOT_AUTHORIZED = 5
_MAX_CONNECT_SIZE = 64 * 1024
_SAS_PREFIX = "SharedAccessSignature "


class AuthError(Exception):
    """A CONNECT packet failed the IoT Hub checks; the message is the reason recorded and logged."""


@dataclass(frozen=True)
class Identity:
    """The module identity the front admits: IoT Hub host name, device id, module id."""

    hostname: str
    device_id: str
    module_id: str

    @property
    def client_id(self) -> str:
        """The MQTT client id IoT Hub expects for a module."""
        return f"{self.device_id}/{self.module_id}"

    @property
    def username_prefix(self) -> str:
        """The start of the MQTT username (api-version and client type follow)."""
        return f"{self.hostname}/{self.device_id}/{self.module_id}/"

    @property
    def resource(self) -> str:
        """The SAS token resource (`sr`, before url-encoding)."""
        return f"{self.hostname}/devices/{self.device_id}/modules/{self.module_id}"


@dataclass(frozen=True)
class ConnectPacket:
    """The parts of an MQTT CONNECT the front checks, plus its raw bytes to forward."""

    client_id: str
    username: str | None
    password: bytes | None
    keepalive: int
    raw: bytes


@dataclass(frozen=True)
class Rejection:
    """Why a connection was refused, for tests that assert the reason a user would be given."""

    reason: str
    client_id: str | None
    at: float


@dataclass(frozen=True)
class FrontStats:
    """Counters since start: TCP accepts, admitted and refused CONNECTs, links refused while down, live links."""

    accepted: int
    authenticated: int
    rejected: int
    refused_down: int
    unavailable: int
    handshake_failures: int
    live: int


def parse_connect(packet: bytes) -> ConnectPacket:
    """Decode an MQTT 3.1.1 CONNECT packet; raise ValueError when it is not one."""
    if not packet or packet[0] != 0x10:
        raise ValueError(f"first packet is not CONNECT (type byte {packet[:1].hex() or 'none'})")
    pos = 1
    while packet[pos] & 0x80:
        pos += 1
    pos += 1

    def take(count: int) -> bytes:
        nonlocal pos
        if pos + count > len(packet):
            raise ValueError("truncated CONNECT packet")
        chunk = packet[pos : pos + count]
        pos += count
        return chunk

    def take_field() -> bytes:
        return take(int.from_bytes(take(2), "big"))

    protocol = take_field()
    level = take(1)[0]
    if protocol != b"MQTT" or level != 4:
        raise ValueError(f"unsupported protocol {protocol!r} level {level}: IoT Hub speaks MQTT 3.1.1")
    flags = take(1)[0]
    keepalive = int.from_bytes(take(2), "big")
    client_id = take_field().decode("utf-8")
    if flags & 0x04:  # will flag: will topic and will message
        take_field()
        take_field()
    username = take_field().decode("utf-8") if flags & 0x80 else None
    password = take_field() if flags & 0x40 else None
    return ConnectPacket(client_id=client_id, username=username, password=password, keepalive=keepalive, raw=packet)


def verify_connect(connect: ConnectPacket, identity: Identity, key_b64: str, now: float) -> None:
    """Check client id, username and SAS token against the module identity and key; raise AuthError with why."""
    if connect.client_id != identity.client_id:
        raise AuthError(f"client id {connect.client_id!r} is not {identity.client_id!r}")
    if connect.username is None or not connect.username.startswith(identity.username_prefix):
        raise AuthError(f"username {connect.username!r} does not start with {identity.username_prefix!r}")
    if connect.password is None:
        raise AuthError("no password: a SAS token is required")
    token = connect.password.decode("utf-8", errors="replace")
    if not token.startswith(_SAS_PREFIX):
        raise AuthError("password is not a SharedAccessSignature token")
    fields = dict(part.partition("=")[::2] for part in token[len(_SAS_PREFIX) :].split("&"))
    missing = {"sr", "sig", "se"} - fields.keys()
    if missing:
        raise AuthError(f"SAS token lacks {', '.join(sorted(missing))}")
    if unquote(fields["sr"]).lower() != identity.resource.lower():
        raise AuthError(f"SAS token resource {unquote(fields['sr'])!r} is not {identity.resource!r}")
    try:
        expiry = int(fields["se"])
    except ValueError:
        raise AuthError(f"SAS token expiry {fields['se']!r} is not a number") from None
    if expiry < now:
        raise AuthError(f"SAS token expired {now - expiry:.0f} s ago")
    expected = sign(key_b64, f"{fields['sr']}\n{fields['se']}".encode())
    if not hmac.compare_digest(expected, unquote(fields["sig"])):
        raise AuthError("SAS token signature does not match the module key")


def bind_listener(ip: str, port: int = MQTT_TLS_PORT) -> socket.socket:
    """Bind and listen on (ip, port); raises OSError when taken (how a DevHub finds a free loopback IP)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


class _Link:
    """One client connection and its backend leg, owned by one thread."""

    def __init__(self, number: int, raw: socket.socket) -> None:
        """Keep a dup of the raw socket so another thread can shut it down whatever phase the link is in."""
        self.number = number
        self.raw = raw
        self.killer = raw.dup()
        self.backend: socket.socket | None = None
        self.closed = False

    def kill(self) -> None:
        """Shut both legs down from any thread; the link's own thread then sees EOF and cleans up."""
        self.closed = True
        for sock in (self.killer, self.backend):
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed: nothing to shut
                    sock.shutdown(socket.SHUT_RDWR)


class Front:
    """Terminates TLS on (ip, 8883), admits only the module identity with a valid SAS token, pipes to the broker."""

    def __init__(
        self,
        listener: socket.socket,
        backend: tuple[str, int],
        identity: Identity,
        key_b64: str,
        certs: CertBundle,
        *,
        handshake_timeout: float = 10.0,
    ) -> None:
        """Take over a bound, listening socket (see `bind_listener`); nothing runs until `start`."""
        self.address: tuple[str, int] = listener.getsockname()
        self.backend = backend
        self.identity = identity
        self.key_b64 = key_b64
        self.handshake_timeout = handshake_timeout
        self._listener = listener
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.load_cert_chain(certs.server_cert, certs.server_key)
        self._cond = threading.Condition()
        self._links: dict[int, _Link] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._numbers = itertools.count(1)
        self._down = False
        self._stalled = False
        self._stopping = False
        self._counts = dict.fromkeys(
            ("accepted", "authenticated", "rejected", "refused_down", "unavailable", "handshake_failures"), 0
        )
        self._rejections: list[Rejection] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="devhub-front-accept", daemon=True)

    # ------------------------------------------------------------------------------------------- control

    def start(self) -> None:
        """Start accepting connections."""
        self._accept_thread.start()
        _log.info("TLS front listening on %s:%s, forwarding to %s:%s", *self.address, *self.backend)

    def stop(self) -> None:
        """Stop accepting, close every link and wait for their threads."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._stalled = False
            self._cond.notify_all()
        self._wake_w.send(b"x")
        if self._accept_thread.is_alive():
            self._accept_thread.join()
        self.drop()
        with self._cond:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout=5)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        _log.info("TLS front stopped")

    def drop(self) -> int:
        """Close every live connection now (the SDK sees the link die and reconnects); return how many."""
        with self._cond:
            links = list(self._links.values())
            for link in links:
                link.closed = True
            self._cond.notify_all()
        for link in links:
            link.kill()
        if links:
            _log.info("front dropped %d connection(s)", len(links))
        return len(links)

    def set_down(self, down: bool) -> None:
        """While down, drop live links and close new ones right after accept (the hub is unreachable)."""
        with self._cond:
            self._down = down
        _log.info("front link %s", "down: refusing connections" if down else "up: accepting connections")
        if down:
            self.drop()

    def stall(self, stalled: bool) -> None:
        """While stalled, keep sockets open but forward nothing either way, so keep-alive has to notice."""
        with self._cond:
            self._stalled = stalled
            self._cond.notify_all()
        _log.info("front %s", "stalled: forwarding nothing" if stalled else "unstalled: forwarding again")

    @property
    def down(self) -> bool:
        """True while new connections are refused."""
        with self._cond:
            return self._down

    @property
    def stalled(self) -> bool:
        """True while no bytes are forwarded."""
        with self._cond:
            return self._stalled

    @property
    def stats(self) -> FrontStats:
        """A snapshot of the counters."""
        with self._cond:
            return FrontStats(live=len(self._links), **self._counts)

    @property
    def rejections(self) -> list[Rejection]:
        """Every refused CONNECT with its reason, oldest first."""
        with self._cond:
            return list(self._rejections)

    def wait_for(self, predicate: Callable[[FrontStats], bool], timeout: float = 5.0) -> FrontStats:
        """Block until `predicate(stats)` holds (e.g. a reconnect was admitted); raise TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._stats_locked()), timeout):
                raise TimeoutError(f"front stats did not match within {timeout} s: {self._stats_locked()}")
            return self._stats_locked()

    def _stats_locked(self) -> FrontStats:
        """Counters snapshot; callers hold the condition."""
        return FrontStats(live=len(self._links), **self._counts)

    def _count(self, name: str) -> None:
        """Increment one counter and wake waiters."""
        with self._cond:
            self._counts[name] += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------------- threads

    def _accept_loop(self) -> None:
        """Accept until stopped; each admitted socket gets its own named thread."""
        while True:
            ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                raw, peer = self._listener.accept()
            except OSError as err:
                _log.warning("front accept failed: %s", err)
                continue
            with self._cond:
                if self._down:
                    self._counts["refused_down"] += 1
                    self._cond.notify_all()
                    raw.close()
                    _log.debug("front is down: closed connection from %s", peer)
                    continue
                number = next(self._numbers)
                link = _Link(number, raw)
                thread = threading.Thread(
                    target=self._serve, args=(link,), name=f"devhub-front-link-{number}", daemon=True
                )
                self._links[number] = link
                self._threads[number] = thread
                self._counts["accepted"] += 1
                self._cond.notify_all()
            thread.start()

    def _serve(self, link: _Link) -> None:
        """Handshake, check the CONNECT, connect the backend, then pipe bytes until either side closes."""
        client: ssl.SSLSocket | None = None
        try:
            link.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link.raw.settimeout(self.handshake_timeout)
            try:
                client = self._context.wrap_socket(link.raw, server_side=True)
            except (ssl.SSLError, OSError) as err:
                self._count("handshake_failures")
                _log.info("front: TLS handshake failed on link %d: %s", link.number, err)
                return
            connect = self._admit(link, client)
            if connect is None or not self._wait_flowing(link):
                return
            try:
                backend = socket.create_connection(self.backend, timeout=5)
            except OSError as err:
                self._count("unavailable")
                _log.info("front: broker unreachable (%s): CONNACK 3 to link %d", err, link.number)
                client.sendall(bytes([0x20, 2, 0, CONNACK_SERVER_UNAVAILABLE]))
                return
            backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link.backend = backend
            if link.closed:  # dropped while connecting the backend
                return
            client.settimeout(None)
            backend.settimeout(None)
            backend.sendall(connect.raw)
            self._pump(link, client, backend)
        except OSError as err:
            _log.debug("front link %d ended: %s", link.number, err)
        finally:
            for sock in (client, link.raw, link.backend, link.killer):
                if sock is not None:
                    sock.close()
            with self._cond:
                self._links.pop(link.number, None)
                self._threads.pop(link.number, None)
                self._cond.notify_all()
            _log.debug("front link %d closed", link.number)

    def _admit(self, link: _Link, client: ssl.SSLSocket) -> ConnectPacket | None:
        """Read and verify the CONNECT; on failure answer CONNACK 5 (the SDK raises CredentialError)."""
        try:
            connect = parse_connect(_read_packet(client))
        except (ValueError, UnicodeDecodeError, IndexError) as err:
            self._reject(None, f"malformed CONNECT: {err}")
            return None
        try:
            verify_connect(connect, self.identity, self.key_b64, time.time())
        except AuthError as err:
            self._reject(connect.client_id, str(err))
            client.sendall(bytes([0x20, 2, 0, CONNACK_NOT_AUTHORIZED]))
            return None
        self._count("authenticated")
        _log.info("front: admitted %s on link %d (keep-alive %s s)", connect.client_id, link.number, connect.keepalive)
        return connect

    def _reject(self, client_id: str | None, reason: str) -> None:
        """Record and log why a connection was refused."""
        with self._cond:
            self._counts["rejected"] += 1
            self._rejections.append(Rejection(reason=reason, client_id=client_id, at=time.time()))
            self._cond.notify_all()
        _log.warning("front: rejected %s: %s", client_id, reason)

    def _wait_flowing(self, link: _Link) -> bool:
        """Block while stalled; return False if the link was dropped meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: not self._stalled or link.closed)
            return not link.closed

    def _pump(self, link: _Link, client: ssl.SSLSocket, backend: socket.socket) -> None:
        """Copy bytes both ways until EOF or drop; hold them (unread) while stalled."""
        peers: dict[socket.socket, socket.socket] = {client: backend, backend: client}
        while not link.closed:
            ready = [client] if client.pending() else select.select([client, backend], [], [])[0]
            if not self._wait_flowing(link):
                return
            for source in ready:
                data = source.recv(65536)
                if not data:
                    _log.debug("front link %d: %s closed", link.number, "client" if source is client else "broker")
                    return
                peers[source].sendall(data)


def _read_packet(sock: ssl.SSLSocket) -> bytes:
    """Read exactly one MQTT packet (fixed header, remaining length, body) from the socket."""
    header = _recv_exact(sock, 1)
    length_bytes = b""
    multiplier, length = 1, 0
    while True:
        byte = _recv_exact(sock, 1)
        length_bytes += byte
        length += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        multiplier *= 128
        if len(length_bytes) >= 4:
            raise ValueError("bad remaining length")
    if length > _MAX_CONNECT_SIZE:
        raise ValueError(f"first packet too large ({length} bytes)")
    return header + length_bytes + _recv_exact(sock, length)


def _recv_exact(sock: ssl.SSLSocket, count: int) -> bytes:
    """Receive exactly `count` bytes or raise ValueError on EOF."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ValueError("connection closed before the first packet was complete")
        data += chunk
    return data
