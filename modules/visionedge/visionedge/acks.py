"""Plug and Play writable-property acknowledgements, shared by the twin handler and the model manager."""

from __future__ import annotations

from typing import Any


def ack(value: Any, code: int, version: int, description: str) -> dict[str, Any]:
    """`{value, ac, av, ad}`: the value in use, the status code, the desired $version it answers, and why."""
    return {"value": without_nulls(value), "ac": code, "av": version, "ad": description}


def without_nulls(value: Any) -> Any:
    """Reported properties treat null as delete, so acknowledged values leave unset fields out."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value
