"""Nothing here deploys or builds on a platform past its end of support: IoT Edge, base OS and Python, checked today.

The dates live in one table (`visionedge.lifecycle`); docs/deployment.md shows it, generated. When a release in use
reaches its end, these tests fail on that day and name the release and the date.
"""

from __future__ import annotations

import copy
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from visionedge.lifecycle import (
    BEGIN,
    END,
    IOT_EDGE,
    IOT_EDGE_CURRENT,
    base_problems,
    runtime_problems,
    support_tables,
    system_image,
)
from visionedge_devhub.fleet import base_deployment, base_desired

from .manifests import MAIN_TEMPLATE, REPO_ROOT, TEMPLATES, dockerfiles, edge_agent, stages, template

TODAY = date.today()


def with_runtime(doc: dict[str, Any], tag: str) -> dict[str, Any]:
    """DOC with its edgeAgent and edgeHub images moved to TAG, as an old manifest still in a repository has them."""
    moved = copy.deepcopy(doc)
    for name, module in edge_agent(moved)["systemModules"].items():
        module["settings"]["image"] = system_image(name, tag)
    return moved


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_deploy_a_supported_iot_edge(name: str) -> None:
    """Every template's system modules are an IoT Edge release still supported today."""
    assert runtime_problems(template(name), TODAY) == []


def test_generated_manifests_deploy_a_supported_iot_edge(generated_manifests: dict[tuple[str, str], Any]) -> None:
    """What iotedgedev writes from the templates, for every platform, is checked too."""
    problems = {f"{t} -P {p}": runtime_problems(doc, TODAY) for (t, p), doc in generated_manifests.items()}
    assert {case: lines for case, lines in problems.items() if lines} == {}


def test_devhub_base_deployment_deploys_the_current_lts() -> None:
    """The base deployment devhub's fleet writes uses the same images as the templates."""
    deployment = base_deployment(base_desired(1.0))
    assert runtime_problems(deployment, TODAY) == []
    agent = deployment["content"]["modulesContent"]["$edgeAgent"]["properties.desired"]
    images = {name: module["settings"]["image"] for name, module in agent["systemModules"].items()}
    assert images == {"edgeAgent": system_image("edgeAgent"), "edgeHub": system_image("edgeHub")}


def test_a_1_5_manifest_fails_the_check_with_its_end_date() -> None:
    """IoT Edge 1.5 ended on 2026-11-10: a manifest still on it fails, naming both images and the date."""
    old = with_runtime(template(MAIN_TEMPLATE), "1.5")
    problems = runtime_problems(old, TODAY)
    assert problems == [
        f"mcr.microsoft.com/azureiotedge-{kind}:1.5: Azure IoT Edge 1.5 reached its end of support on 2026-11-10 "
        f"(use {IOT_EDGE_CURRENT}, supported until {IOT_EDGE[IOT_EDGE_CURRENT].ends.isoformat()})"
        for kind in ("agent", "hub")
    ]
    patch_tags = with_runtime(template(MAIN_TEMPLATE), "1.5.21")
    assert len(runtime_problems(patch_tags, TODAY)) == 2, "a patch tag of an ended LTS is as out of support"


def test_the_current_lts_fails_the_day_after_its_end() -> None:
    """The next end of support cannot pass silently: on the day after it, today's templates fail the same check."""
    ends = IOT_EDGE[IOT_EDGE_CURRENT].ends
    assert runtime_problems(template(MAIN_TEMPLATE), ends) == []
    assert len(runtime_problems(template(MAIN_TEMPLATE), ends + timedelta(days=1))) == 2


def test_an_unknown_runtime_release_fails() -> None:
    """A tag the table does not know (a typo, or a new LTS nobody recorded) is not assumed to be supported."""
    problems = runtime_problems(with_runtime(template(MAIN_TEMPLATE), "1.9"), TODAY)
    assert len(problems) == 2
    assert all("not a release this project knows" in line for line in problems)


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_images_build_on_a_supported_os_and_python(dockerfile: Path) -> None:
    """Every Dockerfile's base has a recorded support window, and neither its OS nor its Python has ended."""
    names = {stage.name for stage in stages(dockerfile) if stage.name}
    bases = {stage.base for stage in stages(dockerfile) if stage.base not in names}
    assert [line for base in sorted(bases) for line in base_problems(base, TODAY)] == []


def test_an_ended_base_fails_the_check() -> None:
    """A base whose OS or Python has ended, or that the table does not know, is named in one line."""
    assert base_problems("python:3.13-slim-trixie", date(2029, 11, 1)) == [
        "python:3.13-slim-trixie: Python 3.13 (python.org build) reached its end of support on 2029-10-31"]
    assert base_problems("python:3.11-slim-bookworm", TODAY) == [
        "python:3.11-slim-bookworm: no support window recorded in visionedge.lifecycle.BASE_IMAGES"]


def test_deployment_doc_shows_the_support_table_as_generated() -> None:
    """Regenerate with `python -m visionedge.lifecycle` after changing the table."""
    text = (REPO_ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == support_tables()
