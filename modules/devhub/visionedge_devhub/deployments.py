"""IoT Hub's edge deployment rules as pure functions: which deployments a device applies, and the module twins.

A deployment is *layered* when one of its modules sets `properties.desired.<path>`, else it is a *base*
(as `az iot edge deployment create` classifies them). A device applies the base with the highest priority (the newest
at equal priority) and every layered deployment that targets it, in priority order; layered ones apply only on top of
a base. For each module, the base's `properties.desired` is the start; a layered `properties.desired` replaces it
whole, a layered `properties.desired.a.b` sets that one property.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DESIRED = "properties.desired"
SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")


def modules_content(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """`content.modulesContent` of a configuration (empty for a device configuration)."""
    content = configuration.get("content") or {}
    modules: dict[str, Any] = content.get("modulesContent") or {}
    return modules


def is_layered(configuration: Mapping[str, Any]) -> bool:
    """True when any module block sets a sub-path of its desired properties."""
    return any(
        isinstance(block, Mapping) and any(key.startswith(DESIRED + ".") for key in block)
        for block in modules_content(configuration).values()
    )


def _order(configuration: Mapping[str, Any]) -> tuple[int, str]:
    """Priority first, then creation time: later wins."""
    return int(configuration.get("priority") or 0), str(configuration.get("createdTimeUtc") or "")


@dataclass(frozen=True)
class Selection:
    """What one device applies: the winning base (or None), the layered deployments in order, and the outranked."""

    base: Mapping[str, Any] | None
    layered: tuple[Mapping[str, Any], ...]
    targeted_only: tuple[str, ...]
    """Ids of deployments whose target matches but that do not apply (outranked bases; layers without a base)."""

    @property
    def applied(self) -> tuple[str, ...]:
        """Ids of the deployments in effect, lowest first."""
        chain = ([self.base] if self.base is not None else []) + list(self.layered)
        return tuple(str(c["id"]) for c in chain)


def select(targeting: Iterable[Mapping[str, Any]]) -> Selection:
    """Pick the deployments a device applies among those whose target condition it matches."""
    configs = sorted(targeting, key=_order)
    bases = [c for c in configs if modules_content(c) and not is_layered(c)]
    base = bases[-1] if bases else None
    layered = tuple(c for c in configs if is_layered(c)) if base is not None else ()
    applied = {c["id"] for c in ([base] if base else [])} | {c["id"] for c in layered}
    return Selection(base, layered, tuple(str(c["id"]) for c in configs if c["id"] not in applied))


def module_desired(selection: Selection, module_id: str) -> dict[str, Any] | None:
    """The desired properties the deployments give one module; None when none of them mentions it."""
    chain = ([selection.base] if selection.base is not None else []) + list(selection.layered)
    desired: dict[str, Any] | None = None
    for configuration in chain:
        block = modules_content(configuration).get(module_id)
        if not isinstance(block, Mapping):
            continue
        for key in sorted(block, key=len):
            if key == DESIRED:
                desired = copy.deepcopy(dict(block[key]))
            elif key.startswith(DESIRED + "."):
                desired = desired if desired is not None else {}
                _set_path(desired, key[len(DESIRED) + 1:].split("."), block[key])
    return desired


def _set_path(document: dict[str, Any], path: list[str], value: Any) -> None:
    """Set document[a][b]... = value, creating objects on the way."""
    node = document
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = copy.deepcopy(value)


def diff_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The twin merge patch that turns `old` into `new` (null deletes); `$` keys are ignored."""
    patch: dict[str, Any] = {}
    for key in old:
        if not key.startswith("$") and key not in new:
            patch[key] = None
    for key, value in new.items():
        if key.startswith("$"):
            continue
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = diff_patch(before, value)
            if inner:
                patch[key] = inner
        elif before != value or key not in old:
            patch[key] = copy.deepcopy(value)
    return patch
