"""Contract of docker/Dockerfile.*: lint-clean, two-stage, non-root, with the data volume, health check and ports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .manifests import DOCKER_DIR, Instruction, dockerfiles, image_stage, last, stages

DOCKERFILES = dockerfiles()
IDS = [path.name for path in DOCKERFILES]
GPU = {"Dockerfile.amd64.cuda", "Dockerfile.arm64v8.jetson"}
DEBUG = {"Dockerfile.amd64.debug"}
UID = "10001"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cmake|make|cargo|rustc)\b")

pytestmark = pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)


def runs(instructions: list[Instruction]) -> str:
    """Every RUN command of a stage, one per line."""
    return "\n".join(i.args for i in instructions if i.keyword == "RUN")


def builder_runs(dockerfile: Path) -> str:
    """Every RUN command of the builder stage."""
    return runs(list(next(s for s in stages(dockerfile) if s.name == "builder").instructions))


def test_dockerfile_passes_hadolint(dockerfile: Path, hadolint: Path) -> None:
    """hadolint finds nothing at any level, with the project's docker/.hadolint.yaml."""
    lint = subprocess.run(
        [str(hadolint), "--config", str(DOCKER_DIR / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")


def test_base_images_are_pinned_tags_from_trusted_registries(dockerfile: Path) -> None:
    """Every external base image has an explicit tag other than latest; builder and image share the base."""
    all_stages = stages(dockerfile)
    names = {s.name for s in all_stages if s.name}
    bases = [s.base for s in all_stages if s.base not in names]
    for base in bases:
        _, colon, tag = base.rpartition(":")
        assert colon, f"{base} has no tag"
        assert "/" not in tag, f"{base} has no tag"
        assert tag != "latest", f"{base} is not pinned"
    assert len(set(bases)) == 1, f"builder and runtime must share a base (the venv links its Python): {bases}"


def test_wheels_are_built_in_a_builder_stage_and_only_the_venv_is_copied(dockerfile: Path) -> None:
    """The image gets /opt/venv from the builder stage and nothing else from the build context."""
    assert any(s.name == "builder" for s in stages(dockerfile))
    assert "pip wheel" in builder_runs(dockerfile)
    copies = [i.args for i in image_stage(dockerfile) if i.keyword in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_image_installs_no_compiler(dockerfile: Path) -> None:
    """No RUN of the image's stages installs a compiler or build tool."""
    assert COMPILERS.search(runs(image_stage(dockerfile))) is None


def test_image_runs_as_a_non_root_member_of_video(dockerfile: Path) -> None:
    """The process runs as uid 10001, created with the video group so it can open /dev/video0."""
    image = image_stage(dockerfile)
    assert last(image, "USER").args == UID
    assert re.search(rf"useradd [^\n&]*--uid {UID} [^\n&]*--groups video", runs(image))


def test_data_is_a_volume_the_user_owns(dockerfile: Path) -> None:
    """/data is created for the user before it is declared a volume, and VISIONEDGE_DATA_DIR points at it."""
    image = image_stage(dockerfile)
    assert re.search(r"install -d -o visionedge -g visionedge [^\n&]*/data\b", runs(image))
    assert [i.args for i in image if i.keyword == "VOLUME"] == ["/data"]
    assert "VISIONEDGE_DATA_DIR=/data" in " ".join(i.args for i in image if i.keyword == "ENV")


def test_onnxruntime_telemetry_is_switched_off(dockerfile: Path) -> None:
    """onnxruntime's own telemetry (a device id under $HOME, uploads) is off before any Python code runs."""
    assert "ORT_DISABLE_TELEMETRY=1" in " ".join(i.args for i in image_stage(dockerfile) if i.keyword == "ENV")


def test_health_check_asks_the_module_with_python(dockerfile: Path) -> None:
    """HEALTHCHECK fetches http://127.0.0.1:9600/healthz with urllib (a 503 raises), no curl in the image."""
    image = image_stage(dockerfile)
    check = last(image, "HEALTHCHECK")
    command = check.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request.urlopen('http://127.0.0.1:9600/healthz'" in command[2]
    assert "9600" in last(image, "EXPOSE").args.split()


def test_image_starts_the_module(dockerfile: Path) -> None:
    """`visionedge run` by default; the debug image runs the same command under debugpy on port 5678, with tini as
    PID 1 so that a stop during debugpy's start-up is not ignored."""
    image = image_stage(dockerfile)
    entrypoint = last(image, "ENTRYPOINT").exec_form()
    assert last(image, "CMD").exec_form() == ["run"]
    if dockerfile.name in DEBUG:
        assert entrypoint == ["tini", "--", "python", "-m", "debugpy", "--listen", "0.0.0.0:5678",
                              "/opt/venv/bin/visionedge"]
        assert "5678" in last(image, "EXPOSE").args.split()
        assert "debugpy==" in builder_runs(dockerfile)
    else:
        assert entrypoint == ["tini", "--", "visionedge"]


def test_gpu_images_swap_onnxruntime_for_onnxruntime_gpu(dockerfile: Path) -> None:
    """CUDA and Jetson images install onnxruntime-gpu and install visionedge without its CPU onnxruntime."""
    commands = builder_runs(dockerfile)
    if dockerfile.name in GPU:
        assert "onnxruntime-gpu" in commands
        assert "--no-deps visionedge" in commands
    else:
        assert "onnxruntime-gpu" not in commands


def test_build_context_is_cut_down_to_the_module(dockerfile: Path) -> None:
    """The Dockerfile's own .dockerignore admits only modules/visionedge/ and modules/devhub/ (for the compose devhub
    stage), which is all it copies from the context."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    patterns = [line for line in ignore.read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[:3] == ["*", "!modules/visionedge/", "!modules/devhub/"]
    assert ignore.read_text() == (DOCKER_DIR / "Dockerfile.amd64.dockerignore").read_text(), "they must not drift"
    sources = [
        word
        for stage in stages(dockerfile)
        for i in stage.instructions
        if i.keyword in {"COPY", "ADD"} and not i.args.startswith("--from")
        for word in i.args.split()[:-1]
    ]
    assert sources
    assert all(source.startswith(("modules/visionedge/", "modules/devhub/")) for source in sources), sources


def test_devhub_is_a_development_extra_never_in_the_module_image(dockerfile: Path) -> None:
    """devhub's wheel is built beside the module's but installed only in the compose `devhub` stage."""
    for stage in stages(dockerfile):
        copies_devhub = [i.args for i in stage.instructions if i.keyword == "COPY" and "devhub" in i.args]
        runs = " ".join(i.args for i in stage.instructions if i.keyword == "RUN")
        if stage.name == "devhub":
            assert copies_devhub == ["--from=builder /devhub-wheels /tmp/devhub-wheels"]
            assert "pip install --no-cache-dir --no-index --no-deps /tmp/devhub-wheels/" in runs
        elif stage.name == "builder":
            assert all(args == "modules/devhub/ devhub/" for args in copies_devhub), copies_devhub
            assert "devhub" not in runs.split("pip wheel --no-deps --wheel-dir /devhub-wheels ./devhub")[0]
        else:
            assert copies_devhub == [], f"stage {stage.name or '(final)'} must not get devhub"
            assert "devhub" not in runs
