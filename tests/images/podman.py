"""Podman on a plain Debian machine: settings, the stand-in base image and a thin command wrapper for the image tests.

No registry is reachable and Docker Hub's `python:3.13-slim-trixie` cannot be pulled, so the base is built locally
with mmdebstrap and tagged with the Dockerfiles' own `FROM` name: the Dockerfiles build unmodified. Podman runs with
its own storage under /tmp (the layer cache survives between runs on the same machine, nothing touches the user's
own podman storage) and the settings a VM without systemd needs (runc, cgroupfs, file events, fixed ulimits).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_TAG = "docker.io/library/python:3.13-slim-trixie"
BASE_SUITE = "trixie"
"""The Debian release of BASE_TAG, which the stand-in is bootstrapped from."""
"""The `FROM` name of Dockerfile.amd64 and Dockerfile.amd64.debug."""
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates", "netbase", "tzdata")
APT_PACKAGES = ("podman", "buildah", "runc", "fuse-overlayfs", "uidmap", "slirp4netns", "mmdebstrap")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("VISIONEDGE_PODMAN_ROOT", "/tmp/visionedge-podman"))
"""Podman's storage, runtime state and temporary files for these tests: /tmp, an ext4 file system here."""

LOCKED_DOWN = ["--user", "10001", "--read-only", "--tmpfs", "/tmp"]
"""How a locked-down device runs the module: its own uid, a read-only root, only /tmp and /data writable."""
GRACE_S = 10
"""`podman stop` and compose's stop_grace_period: SIGTERM, then SIGKILL after this long."""

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


@dataclass(frozen=True)
class Image:
    """An image built by this session: its tag, the Dockerfile it came from, build seconds and size."""

    tag: str
    dockerfile: str
    target: str | None
    build_s: float
    size_mb: float


class PodmanUnavailable(Exception):
    """Podman cannot build or run containers on this machine; the message says why in one line."""


@dataclass
class Podman:
    """`podman` with this suite's settings; every call is bounded by a timeout."""

    root: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for sub in ("storage", "run", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "containers.conf").write_text(CONTAINERS_CONF, encoding="utf-8")
        (self.root / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.root / "storage"}"\nrunroot = "{self.root / "run"}"\n',
            encoding="utf-8")
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"), "TMPDIR": str(self.root / "tmp")}

    def __call__(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS`; a failure raises with podman's own last lines."""
        try:
            done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"podman {' '.join(args[:3])} ... did not finish in {timeout:.0f} s") from err
        if check and done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n" + "\n".join(tail))
        return done

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """`podman <kind> inspect NAME` as a dict."""
        data: list[dict[str, Any]] = json.loads(self(kind, "inspect", name).stdout)
        return data[0]

    def image_exists(self, name: str) -> bool:
        """Whether NAME is in this storage."""
        return self("image", "exists", name, check=False).returncode == 0


def ensure_tools() -> None:
    """Install podman and mmdebstrap with apt when missing (the suite runs as root or with sudo, like setup.sh)."""
    missing = [tool for tool in ("podman", "mmdebstrap", "runc") if shutil.which(tool) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise PodmanUnavailable(f"{', '.join(missing)} not installed and no apt-get to install them with")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        done = subprocess.run([*sudo, *command], env=env, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise PodmanUnavailable(f"cannot install {' '.join(APT_PACKAGES)} with apt-get: {last[0]}")


def debian_mirror() -> str:
    """The host's Debian mirror, from its apt configuration."""
    done = subprocess.run(["apt-get", "indextargets", "--format", "$(REPO_URI)"], capture_output=True, text=True,
                          check=False)
    uris = [u for u in done.stdout.split() if "security" not in u]
    return uris[0] if uris else "http://deb.debian.org/debian/"


def _host_cas() -> list[Path]:
    """Extra CAs of the host (e.g. a TLS-inspecting proxy's): the stand-in trusts what the host trusts."""
    return sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []


def base_tarball(cache: Path) -> tuple[Path, float]:
    """The stand-in base as a tarball, built once per recipe and CA set and cached; returns it and build seconds."""
    recipe = {"suite": BASE_SUITE, "packages": BASE_PACKAGES,
              "cas": [hashlib.sha256(p.read_bytes()).hexdigest() for p in _host_cas()]}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    tarball = cache / f"base-{BASE_SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball, 0.0
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        cas = Path(scratch) / "cas"
        cas.mkdir()
        for ca in _host_cas():
            shutil.copy(ca, cas / ca.name)
        partial = Path(scratch) / "base.tar"
        command = [
            "mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            f"--customize-hook=copy-in {cas}/. /usr/local/share/ca-certificates/",
            '--customize-hook=chroot "$1" update-ca-certificates --fresh >/dev/null',
            '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            BASE_SUITE, str(partial), debian_mirror(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise PodmanUnavailable("mmdebstrap could not build the base: " + " | ".join(last))
        partial.replace(tarball)
    return tarball, time.monotonic() - started


def ensure_base(podman: Podman, cache: Path) -> str:
    """Import the stand-in base under the Dockerfiles' FROM name when missing; returns what was done, for the log."""
    tarball, seconds = base_tarball(cache)
    built = f"built in {seconds:.0f} s" if seconds else "cached"
    if podman.image_exists(BASE_TAG):
        return f"base {BASE_TAG}: present ({tarball.name} {built})"
    podman("import", "--change", "CMD [\"python3\"]", str(tarball), BASE_TAG, timeout=180)
    return f"base {BASE_TAG}: imported from {tarball} ({built})"


def check_runs(podman: Podman) -> None:
    """One throw-away container proves podman can run containers here, else says why in one line."""
    done = podman("run", "--rm", "--network", "none", BASE_TAG, "true", timeout=60, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit {done.returncode}"]
        raise PodmanUnavailable(f"podman cannot run containers on this machine: {last[0]}")


def own_lines(stderr: str) -> list[str]:
    """The container's stderr without podman's own log lines (no systemd here to schedule health checks)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("time=")]


def wait_healthy(podman: Podman, name: str, timeout: float = 60.0) -> float:
    """Run the image's HEALTHCHECK by hand until it passes (no systemd timer here); returns the seconds it took."""
    started = time.monotonic()
    while True:
        check = podman("healthcheck", "run", name, check=False)
        if check.returncode == 0:
            return time.monotonic() - started
        state = podman.inspect("container", name)["State"]
        if not state["Running"]:
            logs = podman("logs", "--tail", "5", name, check=False)
            raise AssertionError(f"{name} exited {state['ExitCode']} before it was healthy:\n{logs.stderr}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{name} not healthy after {timeout:.0f} s: {check.stdout.strip()}")
        time.sleep(1.0)


def stop_cleanly(podman: Podman, name: str) -> float:
    """`podman stop` within the grace period; the module exits 0 on SIGTERM. Returns the seconds it took."""
    started = time.monotonic()
    podman("stop", "-t", str(GRACE_S), name, timeout=GRACE_S + 30)
    seconds = time.monotonic() - started
    code = podman.inspect("container", name)["State"]["ExitCode"]
    assert (code, seconds < GRACE_S) == (0, True), f"exit {code} after {seconds:.1f} s (137 = killed after grace)"
    return seconds
