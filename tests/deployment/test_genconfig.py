"""What `iotedgedev solution genconfig` makes of the templates: manifests IoT Hub accepts, for every platform."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft4Validator

from .conftest import GENCONFIG_CASES, TEST_ENV, schema_errors
from .manifests import (
    MANIFEST_SCHEMA,
    MODULE_NAME,
    all_modules,
    create_options,
    module_json,
    module_twin,
    template,
    user_modules,
)

CASE_IDS = [f"{name.removesuffix('.template.json')}-{platform}" for name, platform in GENCONFIG_CASES]


def image_platform(template_name: str, platform: str) -> str:
    """The module.json platform genconfig picks: the debug template's placeholder means <platform>.debug."""
    return f"{platform}.debug" if template_name == "deployment.debug.template.json" else platform


@pytest.fixture(params=GENCONFIG_CASES, ids=CASE_IDS)
def case(request: pytest.FixtureRequest, generated_manifests: dict[tuple[str, str], Any]) -> tuple[str, str, Any]:
    """(template, platform, generated manifest) for one genconfig run."""
    name, platform = request.param
    return name, platform, generated_manifests[name, platform]


def test_generated_manifest_validates_against_the_deployment_schema(
    case: tuple[str, str, Any], validator_for: Callable[[str], Draft4Validator]
) -> None:
    """The expanded manifest is a valid IoT Edge deployment 2.0, the shape `az iot edge set-modules` takes."""
    _, _, manifest = case
    assert schema_errors(validator_for(MANIFEST_SCHEMA), manifest) == []


def test_no_placeholder_survives_expansion(case: tuple[str, str, Any]) -> None:
    """No ${...} is left: genconfig keeps unknown placeholders and still exits 0, so this is the only guard."""
    _, _, manifest = case
    text = json.dumps(manifest)
    assert "${" not in text
    assert TEST_ENV["CONTAINER_REGISTRY_PASSWORD"] in text


def test_module_image_is_built_for_the_platform(case: tuple[str, str, Any]) -> None:
    """The module runs <registry>/visionedge:<version>-<platform>, the tag `solution build` pushes."""
    name, platform, manifest = case
    version = module_json()["image"]["tag"]["version"]
    expected = f"{TEST_ENV['CONTAINER_REGISTRY_SERVER']}/visionedge:{version}-{image_platform(name, platform)}"
    assert user_modules(manifest)[MODULE_NAME]["settings"]["image"] == expected


def test_create_options_are_chunked_strings_that_join_back(case: tuple[str, str, Any]) -> None:
    """createOptions become strings of at most 512 characters that join into the template's object."""
    name, _, manifest = case
    for module_name, module in all_modules(manifest).items():
        chunks = {k: v for k, v in module["settings"].items() if k.startswith("createOptions")}
        assert all(isinstance(v, str) and len(v) <= 512 for v in chunks.values()), module_name
        assert len(chunks) <= 8, module_name
        assert create_options(module) == create_options(all_modules(template(name))[module_name])


def test_twin_defaults_are_deployed_unchanged(case: tuple[str, str, Any]) -> None:
    """The module twin block reaches the manifest exactly as written in the template."""
    name, _, manifest = case
    assert module_twin(manifest) == module_twin(template(name))


def test_every_platform_is_deployed_by_some_template(generated_manifests: dict[tuple[str, str], Any]) -> None:
    """Each platform module.json builds is the image of at least one generated manifest."""
    version = module_json()["image"]["tag"]["version"]
    tags = {user_modules(m)[MODULE_NAME]["settings"]["image"].rpartition(":")[2] for m in generated_manifests.values()}
    assert {tag.removeprefix(f"{version}-") for tag in tags} == set(module_json()["image"]["tag"]["platforms"])
