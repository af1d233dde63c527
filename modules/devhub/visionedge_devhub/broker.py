"""A real Mosquitto process, because only a real broker keeps MQTT sessions the way the SDK relies on."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from visionedge_devhub.certs import CertBundle

_log = logging.getLogger(__name__)

PLAIN_HOST = "127.0.0.1"
_FALLBACK_EXECUTABLE = "/usr/sbin/mosquitto"


class BrokerError(RuntimeError):
    """Mosquitto could not be started or did not come up."""


def free_port(host: str = PLAIN_HOST) -> int:
    """Return a TCP port that is free on `host` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """Mosquitto with a plain listener on 127.0.0.1 and, given certs, a TLS 1.2 listener on the devhub's loopback IP.

    Tests that need only a plain broker leave out `tls_ip` and `certs`. Ports are chosen once, so a stop + start
    comes back on the same addresses with the persisted sessions.
    """

    def __init__(
        self,
        work_dir: Path,
        tls_ip: str | None = None,
        certs: CertBundle | None = None,
        *,
        plain_port: int | None = None,
        tls_port: int | None = None,
        executable: str | None = None,
    ) -> None:
        """Prepare (but do not start) a broker whose config, log and persistence live in `work_dir`."""
        self.work_dir = work_dir
        self.tls_ip = tls_ip
        self.certs = certs
        self.plain_port = plain_port if plain_port is not None else free_port(PLAIN_HOST)
        self.tls_port = tls_port if tls_port is not None else free_port(tls_ip) if tls_ip is not None else 0
        self.executable = executable or shutil.which("mosquitto") or _FALLBACK_EXECUTABLE
        self.config_path = work_dir / "mosquitto.conf"
        self.log_path = work_dir / "mosquitto.log"
        self.persistence_dir = work_dir / "persistence"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def plain_address(self) -> tuple[str, int]:
        """Where the emulator and the TLS front connect without TLS."""
        return (PLAIN_HOST, self.plain_port)

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """Mosquitto's own TLS listener (the front on port 8883 is what the SDK uses); None without certs."""
        return (self.tls_ip, self.tls_port) if self.tls_ip is not None and self.certs is not None else None

    @property
    def running(self) -> bool:
        """True while the Mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start Mosquitto and return once both listeners accept connections."""
        if self.running:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config(), encoding="utf-8")
        with open(self.work_dir / "mosquitto.out", "ab") as out:
            self._process = subprocess.Popen(
                [self.executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                start_new_session=True,  # a Ctrl-C in the terminal is for us; we stop the broker in order
            )
        try:
            self._wait_listening(timeout)
        except BrokerError:
            self.stop()
            raise
        _log.info("broker up (pid %s): plain %s:%s, tls %s", self._process.pid, PLAIN_HOST, self.plain_port,
                  self.tls_address)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Mosquitto with SIGTERM, so it saves its sessions, and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _log.warning("broker (pid %s) ignored SIGTERM for %s s: killing it", process.pid, timeout)
                process.kill()
                process.wait()
        _log.info("broker stopped (exit code %s)", process.returncode)

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of Mosquitto's log, for error messages."""
        text = ""
        for path in (self.log_path, self.work_dir / "mosquitto.out"):
            if path.exists():
                text += path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Broker:
        """Start the broker for a `with` block."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the broker at the end of a `with` block."""
        self.stop()

    def _config(self) -> str:
        """Render mosquitto.conf: persistence for sessions, nodelay for fast round trips, two listeners."""
        lines = [
            *(["user root"] if os.geteuid() == 0 else []),
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "persistence_file mosquitto.db",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"listener {self.plain_port} {PLAIN_HOST}",
        ]
        if self.tls_address is not None and self.certs is not None:
            lines += [
                f"listener {self.tls_port} {self.tls_ip}",
                f"cafile {self.certs.ca_cert}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
                "tls_version tlsv1.2",
            ]
        return "\n".join([*lines, ""])

    def _wait_listening(self, timeout: float) -> None:
        """Poll both listeners until they accept, failing fast if Mosquitto exits."""
        deadline = time.monotonic() + timeout
        pending = [address for address in (self.plain_address, self.tls_address) if address is not None]
        while pending:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise BrokerError(f"mosquitto exited with code {code} at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(pending[0], timeout=0.5):
                    pending.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"mosquitto did not listen on {pending[0]} within {timeout} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.01)
