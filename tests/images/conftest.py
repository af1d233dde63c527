"""Fixtures for the image tests: podman, the images built from the Dockerfiles unmodified, throw-away containers.

Nothing is skipped: on a machine where podman cannot build or run containers the first test fails with the reason in
one line. Build times and image sizes are printed in the test summary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .podman import BASE_SUITE, BASE_TAG, REPO, Image, Podman, PodmanUnavailable, check_runs, ensure_base, ensure_tools

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "visionedge" / "images"
"""The base tarball is kept here between runs, so a developer's second run skips mmdebstrap."""
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Build times and image sizes, once at the end of the run."""
    if REPORT:
        terminalreporter.section("images")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def podman() -> Podman:
    """Podman with this suite's settings and the stand-in base imported, or a one-line failure saying why not."""
    started = time.monotonic()
    try:
        ensure_tools()
        tool = Podman()
        done = ensure_base(tool, CACHE)
        check_runs(tool)
    except PodmanUnavailable as err:
        pytest.fail(str(err), pytrace=False)
    REPORT.append(f"{done}; podman ready in {time.monotonic() - started:.0f} s (storage {tool.root})")
    REPORT.append(f"note: {BASE_TAG} here is a Debian {BASE_SUITE} stand-in (Debian's Python 3 in /usr/bin), "
                  "not Docker Hub's")
    return tool


@pytest.fixture(scope="session")
def build(podman: Podman) -> Callable[[str, str | None], Image]:
    """`build("Dockerfile.amd64", target)`: the image built once per session, unmodified, in Docker format."""
    built: dict[tuple[str, str | None], Image] = {}

    def get(dockerfile: str, target: str | None = None) -> Image:
        key = (dockerfile, target)
        if key not in built:
            suffix = dockerfile.lower().replace("dockerfile.", "") + (f"-{target}" if target else "")
            tag = f"localhost/visionedge-test:{suffix}"
            started = time.monotonic()
            # --format docker keeps HEALTHCHECK (OCI drops it); the .dockerignore beside the Dockerfile cuts the
            # context, as BuildKit does by itself.
            podman("build", "--format", "docker", "--pull=never", "--network", "host", "--quiet",
                   "-f", f"docker/{dockerfile}", "--ignorefile", f"docker/{dockerfile}.dockerignore",
                   *(["--target", target] if target else []), "-t", tag, str(REPO), timeout=600)
            seconds = time.monotonic() - started
            size = int(podman.inspect("image", tag)["Size"]) / 1e6
            built[key] = Image(tag, dockerfile, target, seconds, size)
            REPORT.append(f"{dockerfile}{' --target ' + target if target else ''}: built in {seconds:.0f} s "
                          f"(layer cache in {podman.root}), {size:.0f} MB")
        return built[key]

    return get


@pytest.fixture
def names(podman: Podman) -> Iterator[Callable[[str], str]]:
    """`names("devhub")`: a unique container or volume name; everything named is removed after the test."""
    made: list[str] = []
    prefix = f"vetest-{os.getpid()}-{time.monotonic_ns() % 10**6}"

    def name(what: str) -> str:
        made.append(f"{prefix}-{what}")
        return made[-1]

    yield name
    for item in reversed(made):
        podman("rm", "-f", "-v", "-t", "0", item, check=False)  # -v: the images declare VOLUME /data
        podman("volume", "rm", "-f", item, check=False)


@pytest.fixture(scope="session")
def mirror_mounts(mirror_dirs: list[Path]) -> list[str]:
    """podman arguments that mount the workplace mirror read-only and point VISIONEDGE_MIRROR at it."""
    args: list[str] = []
    inside = [f"/mirror/{i}" for i in range(len(mirror_dirs))]
    for host, path in zip(mirror_dirs, inside, strict=True):
        args += ["-v", f"{host}:{path}:ro"]
    return [*args, "-e", "VISIONEDGE_MIRROR=" + ":".join(inside)]


@pytest.fixture(scope="session")
def sample_image(mirror_dirs: list[Path]) -> str:
    """golden_retriever.jpg as the container sees it under /mirror."""
    for i, folder in enumerate(mirror_dirs):
        if (folder / "golden_retriever.jpg").is_file():
            return f"/mirror/{i}/golden_retriever.jpg"
    pytest.fail(f"golden_retriever.jpg is in none of the mirror folders {mirror_dirs}", pytrace=False)
