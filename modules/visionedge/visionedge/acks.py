"""Twin documents as IoT Hub treats them: merge patches and Plug and Play acknowledgements (module and devhub)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def ack(value: Any, code: int, version: int, description: str) -> dict[str, Any]:
    """`{value, ac, av, ad}`: the value in use, the status code, the desired $version it answers, and why.

    Unset fields stay explicit nulls: the hub merges reported patches, so a null is what removes a value that was
    acknowledged before and is no longer in use.
    """
    return {"value": value, "ac": code, "av": version, "ad": description}


def without_nulls(value: Any) -> Any:
    """Reported properties treat null as delete, so acknowledged values leave unset fields out."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def merge_patch(document: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Merge a twin patch into `document` in place as IoT Hub does: objects merge, null deletes, `$` keys ignored."""
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            document.pop(key, None)
        elif isinstance(value, Mapping):
            target = document.get(key)
            if not isinstance(target, dict):
                target = document[key] = {}
            merge_patch(target, value)
        else:
            document[key] = copy.deepcopy(value)


def replacing(held: Any, value: Any) -> Any:
    """The merge patch that turns `held` into `value`: every field of `value`, and a null for each field of `held`
    (at any depth) that `value` no longer has."""
    if not isinstance(value, dict) or not isinstance(held, dict):
        return value
    patch: dict[str, Any] = {key: None for key in held if key not in value and not key.startswith("$")}
    for key, item in value.items():
        patch[key] = replacing(held.get(key), item)
    return patch
