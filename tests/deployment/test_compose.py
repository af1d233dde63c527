"""Contract of docker/compose.yaml: Mosquitto, the devhub and the module on the sample video, on loopback only."""

from __future__ import annotations

import json
from typing import Any

import yaml
from visionedge.config import DesiredProperties, load_config

from .manifests import DOCKER_DIR, image_stage, last, stages

COMPOSE = DOCKER_DIR / "compose.yaml"


def services() -> dict[str, Any]:
    """The compose file's services by name."""
    found: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    return found


def test_stack_is_broker_devhub_and_module() -> None:
    """Three services: Mosquitto pinned to a release, the devhub and the module."""
    stack = services()
    assert set(stack) == {"mosquitto", "devhub", "visionedge"}
    image, _, tag = stack["mosquitto"]["image"].partition(":")
    assert image == "eclipse-mosquitto"
    assert tag[:1].isdigit()


def test_module_and_devhub_build_from_the_amd64_dockerfile() -> None:
    """Both come from docker/Dockerfile.amd64 with the repository root as context; the devhub adds Mosquitto."""
    stack = services()
    for name in ("visionedge", "devhub"):
        assert stack[name]["build"]["context"] == ".."
        assert stack[name]["build"]["dockerfile"] == "docker/Dockerfile.amd64"
    assert "target" not in stack["visionedge"]["build"]
    assert stack["devhub"]["build"]["target"] == "devhub"
    assert any(s.name == "devhub" and s.base == "runtime" for s in stages(DOCKER_DIR / "Dockerfile.amd64"))


def test_devhub_runs_visionedge_devhub_up() -> None:
    """The devhub service runs `visionedge-devhub up` with its work dir in the shared /devhub volume."""
    devhub = services()["devhub"]
    assert devhub["entrypoint"] + devhub["command"][:1] == ["visionedge-devhub", "up"]
    assert devhub["command"][1:3] == ["--workdir", "/devhub/work"]
    assert "devhub:/devhub" in devhub["volumes"]


def test_module_joins_the_devhub_with_its_environment() -> None:
    """The module shares the devhub's network and volume and sources the IOTEDGE_* lines `up` writes."""
    module = services()["visionedge"]
    assert module["network_mode"] == "service:devhub"
    assert "devhub:/devhub" in module["volumes"]
    assert module["entrypoint"][:2] == ["tini", "--"]
    assert ". /devhub/work/devhub.env" in module["entrypoint"][4]
    assert module["depends_on"]["devhub"] == {"condition": "service_healthy"}
    assert module["command"] == ["run"]


def test_module_analyses_the_sample_video_and_publishes_to_mosquitto() -> None:
    """The devhub's desired properties are valid, read the bundled sample and publish to the compose broker."""
    command = services()["devhub"]["command"]
    desired = DesiredProperties.model_validate(json.loads(command[command.index("--desired") + 1]))
    assert desired.source.uri == "sample"
    assert (desired.local_mqtt.enabled, desired.local_mqtt.host) == (True, "mosquitto")


def test_module_settings_file_holds_only_local_settings() -> None:
    """The mounted file sets what only the device decides; the twin (the devhub) owns every desired section."""
    module = services()["visionedge"]
    mount = next(v for v in module["volumes"] if v.startswith("./compose.visionedge.yaml:"))
    assert mount.split(":")[1] == module["environment"]["VISIONEDGE_CONFIG"]
    raw = yaml.safe_load((DOCKER_DIR / "compose.visionedge.yaml").read_text(encoding="utf-8"))
    assert set(raw) == {"local"}
    config = load_config(DOCKER_DIR / "compose.visionedge.yaml", env={})
    assert str(config.local.data_dir) == module["environment"]["VISIONEDGE_DATA_DIR"] == "/data"


def test_devhub_image_stays_out_of_production() -> None:
    """The devhub stage is not the default target: the module image (last stage) has no Mosquitto."""
    dockerfile = DOCKER_DIR / "Dockerfile.amd64"
    assert stages(dockerfile)[-1].base == "runtime"
    assert "mosquitto" not in " ".join(i.args for i in image_stage(dockerfile))
    assert last(image_stage(dockerfile), "ENTRYPOINT").exec_form() == ["tini", "--", "visionedge"]


def test_published_ports_listen_on_loopback_only() -> None:
    """Nothing in the local stack is reachable from other machines."""
    for name, service in services().items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"
