"""The amd64 and debug images, built from the Dockerfiles unmodified and run the way a locked-down device runs them:
uid 10001, read-only root, a tmpfs on /tmp, /data a volume.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import wait_until

from .podman import GRACE_S, LOCKED_DOWN, Image, Podman, own_lines, stop_cleanly, wait_healthy

pytestmark = pytest.mark.timeout(600)  # the first test builds the base and the images on a fresh machine
DOCKERFILES = ["Dockerfile.amd64", "Dockerfile.amd64.debug"]


@pytest.fixture(scope="module", params=DOCKERFILES)
def image(request: pytest.FixtureRequest, build: Callable[..., Image]) -> Image:
    """Each Dockerfile, built once."""
    return build(request.param)


def test_image_runs_as_10001_with_a_data_volume_and_a_health_check(image: Image, podman: Podman) -> None:
    """The built image (Docker format) keeps its HEALTHCHECK, runs as uid 10001 and declares /data a volume."""
    config = podman.inspect("image", image.tag)["Config"]
    assert config["User"] == "10001"
    assert "/data" in config["Volumes"]
    assert any("/healthz" in part for part in podman.inspect("image", image.tag)["Healthcheck"]["Test"])


def test_analyze_a_sample_image_read_only(image: Image, podman: Podman, names: Callable[[str], str],
                                          mirror_mounts: list[str], sample_image: str) -> None:
    """`analyze` prints the golden record for a sample image; nothing else is written, onnxruntime reports nothing."""
    done = podman("run", "--rm", "--network", "none", *LOCKED_DOWN, "-v", f"{names('data')}:/data", *mirror_mounts,
                  image.tag, "analyze", sample_image, "--no-progress", timeout=120)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["classifications"][0]["label"] == "golden retriever"
    assert record["model"]["name"] == "squeezenet"
    errors = [line for line in own_lines(done.stderr) if "Traceback" in line or "telemetry" in line.lower()]
    assert errors == []


def records_of(podman: Podman, name: str) -> list[dict[str, object]]:
    """The JSON records a container has printed on stdout so far."""
    return [json.loads(line) for line in podman("logs", name).stdout.splitlines() if line.startswith("{")]


def test_run_is_healthy_locally_and_stops_on_sigterm(image: Image, podman: Podman, names: Callable[[str], str],
                                                     mirror_mounts: list[str]) -> None:
    """`run --source sample` outside IoT Edge: the HEALTHCHECK passes, results flow, `podman stop` exits 0 in time."""
    name = names("run")
    podman("run", "-d", "--name", name, "--network", "none", *LOCKED_DOWN, "-v", f"{names('data')}:/data",
           *mirror_mounts, image.tag, "run", "--source", "sample")
    wait_healthy(podman, name)
    wait_until(lambda: len(records_of(podman, name)) >= 5, timeout=30, what="5 records on stdout", poll=0.5)
    stop_cleanly(podman, name)
    logs = podman("logs", name)
    assert len(records_of(podman, name)) >= 5
    assert "received SIGTERM: stopping" in logs.stderr


def test_sigterm_while_starting_is_honoured_as_pid_1(image: Image, podman: Podman, names: Callable[[str], str],
                                                     mirror_mounts: list[str]) -> None:
    """PID 1 has no default SIGTERM action: a stop during start-up (imports, model load) still ends it in time."""
    name = names("early")
    podman("run", "-d", "--name", name, "--network", "none", *LOCKED_DOWN, "-v", f"{names('data')}:/data",
           *mirror_mounts, image.tag, "run", "--source", "sample")
    started = time.monotonic()
    podman("stop", "-t", str(GRACE_S), name, timeout=GRACE_S + 30)
    seconds = time.monotonic() - started
    code = podman.inspect("container", name)["State"]["ExitCode"]
    assert code in (0, 143), f"exit {code} after {seconds:.1f} s (137 = killed after the grace period)"
    assert seconds < GRACE_S


def test_root_owned_data_dir_is_one_line(podman: Podman, build: Callable[..., Image], tmp_path: Path) -> None:
    """A /data the module's user cannot write gives one line naming the owner and the fix, and exit 1."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    done = podman("run", "--rm", "--network", "none", *LOCKED_DOWN, "-v", f"{data}:/data",
                  build("Dockerfile.amd64").tag, "run", "--source", "sample", check=False)
    owner = f"{data.stat().st_uid}:{data.stat().st_gid}"
    assert done.returncode == 1
    assert own_lines(done.stderr) == [
        f"visionedge: error: data dir /data is not writable by uid 10001 (Permission denied): /data is owned by "
        f"{owner} with mode 0755; make it writable for this user (e.g. chown -R 10001:10001 on the host), use a "
        "named volume, or set --data-dir"]
