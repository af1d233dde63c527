"""Readers for the deployment files under test: templates, module.json, routes and Dockerfiles."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_NAME = "visionedge"
MODULE_DIR = REPO_ROOT / "modules" / MODULE_NAME
MODULE_JSON = MODULE_DIR / "module.json"
DOCKER_DIR = REPO_ROOT / "docker"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

MAIN_TEMPLATE = "deployment.template.json"
DEBUG_TEMPLATE = "deployment.debug.template.json"
GPU_TEMPLATE = "deployment.gpu.template.json"
TEMPLATES = (MAIN_TEMPLATE, DEBUG_TEMPLATE, GPU_TEMPLATE)

SCHEMASTORE = "https://json.schemastore.org/"
TEMPLATE_SCHEMA = SCHEMASTORE + "azure-iot-edge-deployment-template-4.0.json"
MANIFEST_SCHEMA = SCHEMASTORE + "azure-iot-edge-deployment-2.0.json"

MODULE_PLACEHOLDER = re.compile(r"\$\{MODULES\.(?P<module>[A-Za-z0-9_]+)(?:\.(?P<platform>[A-Za-z0-9_.]+))?\}")
ENV_PLACEHOLDER = re.compile(r"\$\{(?!MODULES\.|MODULEDIR<)(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")


def load_json(path: Path) -> Any:
    """Parse one JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def template(name: str) -> dict[str, Any]:
    """One deployment template from the repository root."""
    doc: dict[str, Any] = load_json(REPO_ROOT / name)
    return doc


def module_json() -> dict[str, Any]:
    """The module's module.json."""
    doc: dict[str, Any] = load_json(MODULE_JSON)
    return doc


def edge_agent(doc: dict[str, Any]) -> dict[str, Any]:
    """The edgeAgent's desired properties."""
    desired: dict[str, Any] = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    return desired


def edge_hub(doc: dict[str, Any]) -> dict[str, Any]:
    """The edgeHub's desired properties."""
    desired: dict[str, Any] = doc["modulesContent"]["$edgeHub"]["properties.desired"]
    return desired


def user_modules(doc: dict[str, Any]) -> dict[str, Any]:
    """The deployed custom modules by name."""
    modules: dict[str, Any] = edge_agent(doc)["modules"]
    return modules


def all_modules(doc: dict[str, Any]) -> dict[str, Any]:
    """System and custom modules by name."""
    return {**edge_agent(doc)["systemModules"], **user_modules(doc)}


def create_options(module: dict[str, Any]) -> dict[str, Any]:
    """A module's createOptions as an object, whether the file holds an object or string chunks."""
    settings = module["settings"]
    chunks = [settings[key] for key in sorted(settings) if re.fullmatch(r"createOptions\d*", key)]
    if len(chunks) == 1 and isinstance(chunks[0], dict):
        options: dict[str, Any] = chunks[0]
        return options
    joined: dict[str, Any] = json.loads("".join(chunks)) if chunks else {}
    return joined


def module_twin(doc: dict[str, Any], name: str = MODULE_NAME) -> dict[str, Any]:
    """A module's desired twin properties as deployed by the manifest."""
    desired: dict[str, Any] = doc["modulesContent"][name]["properties.desired"]
    return desired


@dataclass(frozen=True)
class Route:
    """One edgeHub route, split into its parts."""

    name: str
    source: str
    condition: str | None
    sink: str
    priority: int | None
    ttl: int | None

    @property
    def output(self) -> tuple[str, str] | None:
        """(module, output) when the source is one module output, else None."""
        match = re.fullmatch(r"/messages/modules/([^/]+)/outputs/([^/]+)", self.source)
        return (match[1], match[2]) if match else None

    @property
    def sink_module(self) -> str | None:
        """The module a BrokeredEndpoint sink delivers to, else None."""
        match = re.fullmatch(r'BrokeredEndpoint\("/modules/([^/]+)/inputs/[^/"]+"\)', self.sink)
        return match[1] if match else None


_ROUTE = re.compile(r"FROM\s+(?P<source>\S+)(?:\s+WHERE\s+(?P<condition>.+?))?\s+INTO\s+(?P<sink>\S+)", re.I | re.S)


def routes(doc: dict[str, Any]) -> list[Route]:
    """Every route of the manifest, parsed; a route that does not parse raises ValueError."""
    parsed = []
    for name, value in edge_hub(doc)["routes"].items():
        spec = value if isinstance(value, dict) else {"route": value}
        match = _ROUTE.fullmatch(spec["route"].strip())
        if match is None:
            raise ValueError(f"route {name} does not read FROM <source> [WHERE <condition>] INTO <sink>")
        parsed.append(
            Route(
                name=name,
                source=match["source"],
                condition=match["condition"],
                sink=match["sink"],
                priority=spec.get("priority"),
                ttl=spec.get("timeToLiveSecs"),
            )
        )
    return parsed


def dockerfiles() -> list[Path]:
    """Every Dockerfile in docker/ (not the .dockerignore files beside them)."""
    return sorted(p for p in DOCKER_DIR.glob("Dockerfile.*") if p.suffix != ".dockerignore")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD."""
        text = self.args.split(" CMD ", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value: list[str] = json.loads(text)
        return value


@dataclass(frozen=True)
class Stage:
    """One build stage: its base image or parent stage, its name and its instructions."""

    base: str
    name: str | None
    instructions: tuple[Instruction, ...]


def stages(path: Path) -> list[Stage]:
    """The build stages of a Dockerfile in order (comments dropped, continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    result: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base=words[0], name=name, instructions=()))
        elif result:
            last = result[-1]
            result[-1] = Stage(last.base, last.name, (*last.instructions, Instruction(keyword, args.strip())))
    return result


def image_stage(path: Path) -> list[Instruction]:
    """Instructions that make the default image: the last stage's, after those of the stages it builds on."""
    by_name = {stage.name: stage for stage in stages(path) if stage.name}
    chain = [stages(path)[-1]]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return [instruction for stage in reversed(chain) for instruction in stage.instructions]


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    """The effective (last) instruction of a kind; AssertionError if there is none."""
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword} instruction"
    return found[-1]
