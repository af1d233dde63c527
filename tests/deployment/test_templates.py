"""Contract of the deployment templates: schema, runtime, the module's container, routes and twin defaults."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft4Validator
from visionedge.config import DesiredProperties
from visionedge.lifecycle import system_image
from visionedge.outputs import ALL as OUTPUTS

from .conftest import schema_errors
from .manifests import (
    DEBUG_TEMPLATE,
    ENV_EXAMPLE,
    ENV_PLACEHOLDER,
    GPU_TEMPLATE,
    MAIN_TEMPLATE,
    MODULE_NAME,
    MODULE_PLACEHOLDER,
    REPO_ROOT,
    TEMPLATE_SCHEMA,
    TEMPLATES,
    all_modules,
    create_options,
    edge_agent,
    edge_hub,
    load_json,
    module_twin,
    routes,
    template,
    user_modules,
)

CREATE_OPTIONS_LIMIT = 8 * 512  # the tools split createOptions into at most 8 twin values of 512 characters
GPU_REQUEST = {"Count": -1, "Capabilities": [["gpu"]]}


def visionedge(doc: dict[str, Any]) -> dict[str, Any]:
    """The visionedge module's edgeAgent entry."""
    module: dict[str, Any] = user_modules(doc)[MODULE_NAME]
    return module


def host_config(doc: dict[str, Any]) -> dict[str, Any]:
    """The visionedge container's HostConfig."""
    config: dict[str, Any] = create_options(visionedge(doc))["HostConfig"]
    return config


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_validates_against_the_schemastore_template_schema(
    name: str, validator_for: Callable[[str], Draft4Validator]
) -> None:
    """Each template is a valid deployment template 4.0 (edgeAgent schema 1.1, edgeHub schema 1.2)."""
    assert schema_errors(validator_for(TEMPLATE_SCHEMA), template(name)) == []


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_runs_the_current_iot_edge_lts(name: str) -> None:
    """Template format 4.0.0 with the edgeAgent and edgeHub images of the LTS in visionedge.lifecycle."""
    doc = template(name)
    system = edge_agent(doc)["systemModules"]
    assert doc["$schema-template"] == "4.0.0"
    assert system["edgeAgent"]["settings"]["image"] == system_image("edgeAgent")
    assert system["edgeHub"]["settings"]["image"] == system_image("edgeHub")


@pytest.mark.parametrize(
    ("name", "placeholder"),
    [
        (MAIN_TEMPLATE, "${MODULES.visionedge}"),
        (GPU_TEMPLATE, "${MODULES.visionedge}"),
        (DEBUG_TEMPLATE, "${MODULES.visionedge.debug}"),
    ],
)
def test_module_image_is_the_build_placeholder(name: str, placeholder: str) -> None:
    """The module's image is filled in by the tooling from module.json, never hard-coded."""
    assert visionedge(template(name))["settings"]["image"] == placeholder


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_placeholder_names_a_module_folder_and_one_of_its_platforms(name: str) -> None:
    """${MODULES.<folder>[.<platform>]} resolves: the folder has a module.json that lists the platform."""
    text = (REPO_ROOT / name).read_text(encoding="utf-8")
    placeholders = list(MODULE_PLACEHOLDER.finditer(text))
    assert placeholders
    for found in placeholders:
        module_json = REPO_ROOT / "modules" / found["module"] / "module.json"
        assert module_json.is_file(), f"{found[0]}: no {module_json.relative_to(REPO_ROOT)}"
        platforms = load_json(module_json)["image"]["tag"]["platforms"]
        wanted = found["platform"]
        if wanted == "debug":
            assert any(p.endswith(".debug") for p in platforms), f"{found[0]}: no *.debug platform"
        elif wanted is not None:
            assert wanted in platforms, f"{found[0]}: module.json has no platform {wanted}"


def test_every_variable_the_files_use_is_in_env_example() -> None:
    """Each ${VAR} in a template or module.json has a line in .env.example."""
    documented = {
        line.partition("=")[0].strip()
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    files = [REPO_ROOT / name for name in TEMPLATES] + [REPO_ROOT / "modules" / MODULE_NAME / "module.json"]
    used = {m["name"] for path in files for m in ENV_PLACEHOLDER.finditer(path.read_text(encoding="utf-8"))}
    assert used
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_camera_is_mapped_into_the_container(name: str) -> None:
    """/dev/video0 appears at the same path with read, write and mknod cgroup permissions."""
    assert {"PathOnHost": "/dev/video0", "PathInContainer": "/dev/video0", "CgroupPermissions": "rwm"} in host_config(
        template(name)
    )["Devices"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_data_dir_is_a_host_bind(name: str) -> None:
    """VISIONEDGE_DATA_DIR is bind-mounted from the host, so models and the outbox survive a new container."""
    doc = template(name)
    data_dir = visionedge(doc)["env"]["VISIONEDGE_DATA_DIR"]["value"]
    container_paths = {bind.split(":")[1] for bind in host_config(doc)["Binds"]}
    assert data_dir == "/data"
    assert data_dir in container_paths


@pytest.mark.parametrize("name", TEMPLATES)
def test_module_container_stays_contained(name: str) -> None:
    """No host network, no privileged mode, no connection string in the environment: edgeHub is the way out."""
    doc = template(name)
    config = host_config(doc)
    env_values = json.dumps(visionedge(doc).get("env", {}))
    assert config.get("NetworkMode") != "host"
    assert config.get("Privileged") is not True
    assert "SharedAccessKey" not in env_values
    assert "HostName=" not in env_values


@pytest.mark.parametrize("name", TEMPLATES)
def test_module_restarts_after_a_crash(name: str) -> None:
    """The module runs and IoT Edge restarts it after a failure (the debug module only after a crash)."""
    module = visionedge(template(name))
    assert module["status"] == "running"
    assert module["restartPolicy"] == ("on-failure" if name == DEBUG_TEMPLATE else "always")


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_create_options_fits_the_4kb_twin_limit(name: str) -> None:
    """Serialised compactly, each module's createOptions fits 8 chunks of 512 characters."""
    for module_name, module in all_modules(template(name)).items():
        size = len(json.dumps(create_options(module), separators=(",", ":")))
        assert size <= CREATE_OPTIONS_LIMIT, f"{module_name}: createOptions is {size} characters"


@pytest.mark.parametrize("name", TEMPLATES)
def test_routes_read_only_real_outputs_of_deployed_modules(name: str) -> None:
    """Every route starts at an output visionedge really emits and ends upstream or at a deployed module."""
    doc = template(name)
    deployed = set(user_modules(doc))
    for route in routes(doc):
        assert route.output is not None, f"{route.name}: source {route.source} is not one module output"
        module, output = route.output
        assert module in deployed, f"{route.name}: module {module} is not deployed"
        assert output in OUTPUTS, f"{route.name}: visionedge has no output {output!r} (outputs: {OUTPUTS})"
        assert route.sink == "$upstream" or route.sink_module in deployed, f"{route.name}: sink {route.sink}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_output_goes_upstream_with_a_priority_and_a_ttl(name: str) -> None:
    """Each output has an unfiltered route to IoT Hub that sets its priority and time to live."""
    unfiltered = {
        route.output[1]: route
        for route in routes(template(name))
        if route.output and route.condition is None and route.sink == "$upstream"
    }
    assert set(unfiltered) == set(OUTPUTS)
    for route in unfiltered.values():
        assert route.priority in range(10), route.name
        assert isinstance(route.ttl, int), route.name
        assert route.ttl > 0, route.name


@pytest.mark.parametrize("name", TEMPLATES)
def test_a_filtered_route_shows_the_where_syntax(name: str) -> None:
    """One example route filters results on a message property before it goes anywhere."""
    filtered = [route for route in routes(template(name)) if route.condition]
    assert [(r.output, r.sink) for r in filtered] == [((MODULE_NAME, "results"), "$upstream")]


@pytest.mark.parametrize("name", TEMPLATES)
def test_store_and_forward_keeps_messages_for_a_day(name: str) -> None:
    """While IoT Hub is unreachable, edgeHub keeps messages of routes without their own TTL for a day."""
    assert edge_hub(template(name))["storeAndForwardConfiguration"]["timeToLiveSecs"] >= 86400


@pytest.mark.parametrize("name", TEMPLATES)
def test_twin_defaults_are_valid_desired_properties(name: str) -> None:
    """The module twin block passes the module's own validation (unknown keys are errors there)."""
    desired = {k: v for k, v in module_twin(template(name)).items() if not k.startswith("$")}
    DesiredProperties.model_validate(desired)


@pytest.mark.parametrize("name", TEMPLATES)
def test_twin_defaults_read_the_mapped_camera(name: str) -> None:
    """The twin's source is the camera device the container gets."""
    source = DesiredProperties.model_validate(module_twin(template(name))).source
    assert source.uri == "/dev/video0"


def test_gpu_template_requests_every_gpu_with_the_nested_capabilities_array() -> None:
    """DeviceRequests asks for all GPUs with Capabilities as a list of lists ([["gpu"]], not ["gpu"])."""
    assert host_config(template(GPU_TEMPLATE))["DeviceRequests"] == [GPU_REQUEST]


def test_gpu_template_insists_on_the_accelerator() -> None:
    """On a GPU deployment the module prefers CUDA and reports an error instead of silently running on the CPU."""
    runtime = DesiredProperties.model_validate(module_twin(template(GPU_TEMPLATE))).runtime
    assert runtime.resolved_providers()[0] == "CUDAExecutionProvider"
    assert runtime.require_accelerator is True


def test_gpu_template_is_the_cpu_template_plus_the_gpu() -> None:
    """Only the GPU request and the execution providers differ, so the two cannot drift apart."""
    cpu, gpu = template(MAIN_TEMPLATE), copy.deepcopy(template(GPU_TEMPLATE))
    del host_config(gpu)["DeviceRequests"]
    del module_twin(gpu)["runtime"], module_twin(cpu)["runtime"]
    assert gpu == cpu


def test_only_the_gpu_template_requests_a_gpu() -> None:
    """CPU devices have no NVIDIA runtime: asking for a GPU there would stop the container from starting."""
    for name in (MAIN_TEMPLATE, DEBUG_TEMPLATE):
        assert "DeviceRequests" not in host_config(template(name))


def test_debug_template_publishes_debugpy_and_metrics_on_loopback() -> None:
    """The debug module exposes 5678 (debugpy) and 9600 (metrics) on the device's 127.0.0.1 only."""
    options = create_options(visionedge(template(DEBUG_TEMPLATE)))
    assert {"5678/tcp", "9600/tcp"} <= set(options["ExposedPorts"])
    assert options["HostConfig"]["PortBindings"] == {
        "5678/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5678"}],
        "9600/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9600"}],
    }


def test_debug_template_is_the_cpu_template_plus_the_debugger() -> None:
    """Only the image, restart policy and published ports differ from the CPU template."""
    cpu, debug = template(MAIN_TEMPLATE), copy.deepcopy(template(DEBUG_TEMPLATE))
    module = visionedge(debug)
    module["settings"]["image"] = visionedge(cpu)["settings"]["image"]
    module["restartPolicy"] = visionedge(cpu)["restartPolicy"]
    del module["settings"]["createOptions"]["ExposedPorts"], host_config(debug)["PortBindings"]
    assert debug == cpu
