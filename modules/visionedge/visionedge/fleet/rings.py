"""Rings: each device gets a ring tag from a hash of its id, so an assignment is repeatable and moves no device.

A device's bucket is a number in [0, 100) from sha256(device id); rings take consecutive slices of that range in
the order given (`canary=5,early=20,broad=75`: buckets below 5 are canary, below 25 early, the rest broad). Adding
devices never moves existing ones; changing the percentages moves only devices whose bucket changes slice.
Edge deployments can target tags only, so the ring is a twin tag: `tags.visionedge.ring`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from visionedge.fleet.hub import FleetHub, HubError

RING_TAG = "tags.visionedge.ring"
DEFAULT_RINGS = "canary=5,early=20,broad=75"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class RingError(ValueError):
    """The ring specification is wrong; the message says how to write it."""


@dataclass(frozen=True)
class Ring:
    """A ring's name and the share of devices it takes."""

    name: str
    percent: float


def parse_rings(text: str) -> list[Ring]:
    """`canary=5,early=20,broad=75` -> rings; the percentages must add up to 100."""
    rings = []
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            percent = float(value)
        except ValueError:
            percent = -1.0
        if not sep or not _NAME.match(name) or not 0 < percent <= 100:
            raise RingError(f"ring {part.strip()!r}: write NAME=PERCENT, e.g. {DEFAULT_RINGS} "
                            "(names: lowercase letters, digits, '-', '_')")
        rings.append(Ring(name, percent))
    if len({r.name for r in rings}) != len(rings):
        raise RingError(f"ring names repeat in {text!r}")
    total = sum(r.percent for r in rings)
    if abs(total - 100) > 1e-6:
        raise RingError(f"ring percentages add up to {total:g}, not 100: {text!r}")
    return rings


def bucket(device_id: str) -> float:
    """The device's fixed place in [0, 100): the first 8 bytes of sha256(device id), scaled."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def ring_of(device_id: str, rings: list[Ring]) -> str:
    """The ring a device belongs to."""
    place, edge = bucket(device_id), 0.0
    for ring in rings:
        edge += ring.percent
        if place < edge:
            return ring.name
    return rings[-1].name


def ring_condition(name: str) -> str:
    """The target condition of one ring."""
    return f"{RING_TAG}='{name}'"


@dataclass(frozen=True)
class Assignment:
    """What `rings assign` did: per ring, the devices in it and how many tags it wrote."""

    members: dict[str, list[str]]
    changed: int


def assign(hub: FleetHub, rings: list[Ring], where: str | None = None, dry_run: bool = False) -> Assignment:
    """Tag the edge devices matching `where` with their ring; a device already tagged right is not written."""
    condition = "capabilities.iotEdge = true" + (f" AND ({where})" if where else "")
    members: dict[str, list[str]] = {r.name: [] for r in rings}
    changed = 0
    for twin in hub.query(f"SELECT * FROM devices WHERE {condition}"):
        device_id = str(twin["deviceId"])
        ring = ring_of(device_id, rings)
        members[ring].append(device_id)
        current = ((twin.get("tags") or {}).get("visionedge") or {}).get("ring")
        if current == ring:
            continue
        changed += 1
        if not dry_run:
            try:
                hub.set_tags(device_id, {"visionedge": {"ring": ring}}, str(twin.get("etag") or "*"))
            except HubError as err:
                raise HubError(f"{err} (re-run `visionedge fleet rings assign`: tags already written stay)",
                               err.status) from None
    return Assignment({name: sorted(ids) for name, ids in members.items()}, changed)


def members(hub: FleetHub, ring: str) -> list[str]:
    """Device ids carrying one ring tag."""
    return sorted(str(t["deviceId"]) for t in hub.query(f"SELECT * FROM devices WHERE {ring_condition(ring)}"))
