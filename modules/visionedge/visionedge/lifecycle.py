"""Support windows of the platforms visionedge ships on, in one table: the manifest and image checks and docs read it.

An IoT Edge runtime, a base OS or a Python that reaches its end of support must fail a check on that day instead of
passing silently, so every manifest, template and Dockerfile is checked against these dates (tests/deployment), and
the tables in docs/deployment.md are generated from them (`python -m visionedge.lifecycle`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any


@dataclass(frozen=True)
class Support:
    """One release of a platform and the last day it gets security fixes, with where that date comes from."""

    product: str
    version: str
    ends: date
    source: str

    def label(self) -> str:
        """`Azure IoT Edge 1.6`: how the docs and error lines name it."""
        return f"{self.product} {self.version}"


IOT_EDGE_SOURCE = "Azure/azure-iotedge release notes (1.5.0, 1.6.0)"
IOT_EDGE = {
    "1.5": Support("Azure IoT Edge", "1.5", date(2026, 11, 10), IOT_EDGE_SOURCE),
    "1.6": Support("Azure IoT Edge", "1.6", date(2028, 11, 14), IOT_EDGE_SOURCE),
}
IOT_EDGE_CURRENT = "1.6"
"""The LTS every manifest, template and generated deployment here deploys."""
SYSTEM_IMAGES = {"edgeAgent": "mcr.microsoft.com/azureiotedge-agent", "edgeHub": "mcr.microsoft.com/azureiotedge-hub"}
RUNTIME_IMAGE = re.compile(r"^mcr\.microsoft\.com/azureiotedge-(?:agent|hub):(?P<tag>[0-9][0-9A-Za-z.\-]*)$")

IOT_EDGE_HOSTS = {
    "1.6": ("Ubuntu 22.04 and 24.04, Debian 12, Red Hat Enterprise Linux 8 and 9, Azure Linux 3.0; "
            "not Debian 11 and not Mariner 2.0 (dropped in 1.6.0)"),
}
"""Host OSes the IoT Edge packages install on (Tier 1), per the 1.6.0 release notes and the supported-platforms page."""

DEBIAN_SOURCE = "Debian security and LTS schedule (regular security support, then Debian LTS)"
UBUNTU_SOURCE = "Ubuntu release cycle (end of standard support)"
PYTHON_SOURCE = "Python developer guide, status of Python versions (end of life)"
DEBIAN_13 = Support("Debian", "13 trixie", date(2030, 6, 30), DEBIAN_SOURCE)
UBUNTU_2204 = Support("Ubuntu", "22.04", date(2027, 5, 31), UBUNTU_SOURCE)
UBUNTU_2404 = Support("Ubuntu", "24.04", date(2029, 5, 31), UBUNTU_SOURCE)
PYTHON_313 = Support("Python", "3.13 (python.org build)", date(2029, 10, 31), PYTHON_SOURCE)
PYTHON_312_UBUNTU = Support("Python", "3.12 (Ubuntu's python3)", UBUNTU_2404.ends, UBUNTU_SOURCE)
PYTHON_310_UBUNTU = Support("Python", "3.10 (Ubuntu's python3)", UBUNTU_2204.ends, UBUNTU_SOURCE)


@dataclass(frozen=True)
class BaseImage:
    """A Dockerfile's base (`FROM` name), the OS it is built on and the Python it runs, each with its support end."""

    image: str
    os: Support
    python: Support

    def ends(self) -> date:
        """The first of the OS's and the Python's end of support: the day the image must have moved."""
        return min(self.os.ends, self.python.ends)


BASE_IMAGES = {
    base.image: base
    for base in (
        BaseImage("python:3.13-slim-trixie", DEBIAN_13, PYTHON_313),
        BaseImage("arm64v8/python:3.13-slim-trixie", DEBIAN_13, PYTHON_313),
        BaseImage("nvidia/cuda:13.2.1-cudnn-runtime-ubuntu24.04", UBUNTU_2404, PYTHON_312_UBUNTU),
        BaseImage("nvcr.io/nvidia/l4t-jetpack:r36.4.0", UBUNTU_2204, PYTHON_310_UBUNTU),
    )
}
"""Every base a Dockerfile in docker/ may build on. A distribution's own python3 is patched as long as the release."""


class OutOfSupport(ValueError):
    """A manifest or image names a platform release past its end of support, or one this table does not know."""


def system_image(module: str, version: str = IOT_EDGE_CURRENT) -> str:
    """`mcr.microsoft.com/azureiotedge-agent:1.6` for module `edgeAgent`: the image a manifest deploys it with."""
    return f"{SYSTEM_IMAGES[module]}:{version}"


def runtime_release(tag: str) -> Support:
    """The IoT Edge LTS a system module tag (`1.6`, `1.6.1`) belongs to; an unknown line raises OutOfSupport."""
    line = ".".join(tag.split(".")[:2])
    if line not in IOT_EDGE:
        raise OutOfSupport(f"IoT Edge {tag} is not a release this project knows (known: {', '.join(IOT_EDGE)})")
    return IOT_EDGE[line]


def _images(node: Any) -> Iterator[str]:
    """Every string under an `image` key of a manifest, template or REST deployment, however deep."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from _images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images(item)


def runtime_problems(manifest: Mapping[str, Any], today: date) -> list[str]:
    """One line per IoT Edge system image in MANIFEST whose release is unknown or out of support on TODAY."""
    problems = []
    for image in _images(manifest):
        match = RUNTIME_IMAGE.match(image)
        if match is None:
            continue
        try:
            release = runtime_release(match["tag"])
        except OutOfSupport as err:
            problems.append(f"{image}: {err}")
            continue
        if release.ends < today:
            problems.append(f"{image}: {release.label()} reached its end of support on {release.ends.isoformat()} "
                            f"(use {system_image('edgeAgent').rsplit(':', 1)[1]}, supported until "
                            f"{IOT_EDGE[IOT_EDGE_CURRENT].ends.isoformat()})")
    return problems


def base_problems(image: str, today: date) -> list[str]:
    """One line if the base IMAGE is unknown to the table or its OS or Python is out of support on TODAY."""
    base = BASE_IMAGES.get(image)
    if base is None:
        return [f"{image}: no support window recorded in visionedge.lifecycle.BASE_IMAGES"]
    return [f"{image}: {part.label()} reached its end of support on {part.ends.isoformat()}"
            for part in (base.os, base.python) if part.ends < today]


BEGIN = "<!-- platform-support:begin (generated by `python -m visionedge.lifecycle`; do not edit) -->"
END = "<!-- platform-support:end -->"


def support_tables() -> str:
    """The IoT Edge and base image support tables of docs/deployment.md, between their markers."""
    lines = [BEGIN, "", "| IoT Edge | system modules | supported until | host OSes |", "|---|---|---|---|"]
    for version, release in IOT_EDGE.items():
        images = f"`{system_image('edgeAgent', version)}`, `{system_image('edgeHub', version)}`"
        hosts = IOT_EDGE_HOSTS.get(version, "out of support: do not deploy")
        lines.append(f"| {version} | {images} | {release.ends.isoformat()} | {hosts} |")
    lines += ["", "| base image | OS (supported until) | Python (supported until) | image moves by |",
              "|---|---|---|---|"]
    for base in BASE_IMAGES.values():
        lines.append(f"| `{base.image}` | {base.os.label()} ({base.os.ends.isoformat()}) | {base.python.version} "
                     f"({base.python.ends.isoformat()}) | {base.ends().isoformat()} |")
    sources = sorted({release.source for release in IOT_EDGE.values()}
                     | {part.source for base in BASE_IMAGES.values() for part in (base.os, base.python)})
    lines += ["", "Sources: " + "; ".join(sources) + ".", "", END]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(support_tables() + "\n")
