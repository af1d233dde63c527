"""Contract of modules/visionedge/module.json: what the IoT Edge tooling builds, for which platforms, from where."""

from __future__ import annotations

import re

import visionedge

from .manifests import DOCKER_DIR, MODULE_DIR, MODULE_NAME, REPO_ROOT, dockerfiles, module_json

PLATFORMS = {"amd64", "arm64v8", "amd64.cuda", "arm64v8.jetson", "amd64.debug"}


def test_module_json_has_the_tooling_format() -> None:
    """Schema version 0.0.1, a description and the Python language tag, as iotedgedev and VS Code expect."""
    doc = module_json()
    assert doc["$schema-version"] == "0.0.1"
    assert doc["description"]
    assert doc["language"] == "python"


def test_module_folder_is_a_valid_module_name() -> None:
    """The folder name keys the placeholders: letters, digits and inner underscores only."""
    assert re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9_]*[A-Za-z0-9])?", MODULE_DIR.name)
    assert MODULE_DIR.name == MODULE_NAME


def test_image_is_pushed_to_the_configured_registry() -> None:
    """The repository is <registry from .env>/visionedge."""
    assert module_json()["image"]["repository"] == "${CONTAINER_REGISTRY_SERVER}/visionedge"


def test_image_tag_is_the_package_version() -> None:
    """The image is tagged with the version the Python package reports."""
    assert module_json()["image"]["tag"]["version"] == visionedge.__version__ == "0.1.0"


def test_module_builds_for_cpu_gpu_jetson_and_debug() -> None:
    """amd64 and arm64v8 on the CPU, amd64.cuda and arm64v8.jetson on NVIDIA GPUs, amd64.debug with debugpy."""
    assert set(module_json()["image"]["tag"]["platforms"]) == PLATFORMS


def test_every_platform_builds_from_a_dockerfile_in_docker() -> None:
    """Each platform names, relative to the module folder, an existing Dockerfile in the top-level docker/."""
    for platform, relative in module_json()["image"]["tag"]["platforms"].items():
        path = (MODULE_DIR / relative).resolve()
        assert path.parent == DOCKER_DIR, f"{platform}: {relative} is not in docker/"
        assert path.is_file(), f"{platform}: {relative} does not exist"


def test_every_dockerfile_in_docker_is_built_for_a_platform() -> None:
    """No Dockerfile in docker/ is left unused by module.json."""
    used = {(MODULE_DIR / p).resolve() for p in module_json()["image"]["tag"]["platforms"].values()}
    assert set(dockerfiles()) == used


def test_build_context_is_the_repository_root() -> None:
    """contextPath ../.. lets the Dockerfiles COPY modules/visionedge; no extra docker build flags are needed."""
    image = module_json()["image"]
    assert (MODULE_DIR / image["contextPath"]).resolve() == REPO_ROOT
    assert image["buildOptions"] == []
