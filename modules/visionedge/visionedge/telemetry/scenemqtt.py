"""The scene's retained local MQTT topics, in the convention Frigate and Home Assistant users know.

- `<prefix>/<source>/<zone>/<class>`: how many of that class are in the zone now, and `<prefix>/<source>/<zone>/all`;
- `<prefix>/<source>/<line>/<direction>`: crossings in that direction since the last reset (all classes);
- with discovery on, one retained `<discovery_prefix>/sensor/<node>/<object>/config` per line direction and per zone
  (and per configured class of a zone), so each appears in Home Assistant as a sensor without YAML; a removed line or
  zone gets an empty retained config, which removes the sensor. The publisher also clears, after a restart, configs
  under this node that the current geometry no longer has (see `LocalMqttPublisher.retain`).
Topic levels and object ids are names with MQTT's and Home Assistant's special characters replaced by `_`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from visionedge.telemetry.events import dumps
from visionedge.telemetry.localmqtt import LocalMqttPublisher
from visionedge.telemetry.scene import SceneLayout, SceneOutput, SceneTotals

ALL: Final = "all"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def level(name: str) -> str:
    """A name as one topic level / object id part."""
    return _UNSAFE.sub("_", name) or "_"


def state_topics(prefix: str, layouts: Iterable[SceneLayout],
                 totals: Mapping[str, SceneTotals]) -> dict[str, bytes]:
    """Every retained state value now: every configured line direction and zone (zeros included)."""
    values: dict[str, bytes] = {}
    for layout in layouts:
        source = totals.get(layout.source_id) or SceneTotals()
        base = f"{prefix}/{level(layout.source_id)}"
        for line in layout.lines:
            counted = source.lines.get(line.name, {})
            for direction in line.directions:
                values[f"{base}/{level(line.name)}/{level(direction)}"] = \
                    str(sum(counted.get(direction, {}).values())).encode()
        for zone in layout.zones:
            inside = source.occupancy.get(zone.name, {})
            for label in {*zone.classes, *zone.forbidden, *inside, *source.entries.get(zone.name, {})}:
                values[f"{base}/{level(zone.name)}/{level(label)}"] = str(inside.get(label, 0)).encode()
            values[f"{base}/{level(zone.name)}/{ALL}"] = str(sum(inside.values())).encode()
    return values


def discovery_topics(discovery_prefix: str, prefix: str, node: str,
                     layouts: Iterable[SceneLayout]) -> dict[str, bytes]:
    """Home Assistant discovery configs for every configured line direction and zone class (and zone total)."""
    node = level(node)
    device = {"identifiers": [node], "name": f"visionedge {node}", "manufacturer": "visionedge"}
    configs: dict[str, bytes] = {}

    def sensor(source: str, name: str, part: str, title: str, extra: Mapping[str, Any]) -> None:
        object_id = f"{level(source)}_{level(name)}_{level(part)}"
        configs[f"{discovery_prefix}/sensor/{node}/{object_id}/config"] = dumps({
            "name": title, "unique_id": f"{node}_{object_id}",
            "state_topic": f"{prefix}/{level(source)}/{level(name)}/{level(part)}",
            "availability_topic": f"{prefix}/status", "device": device, **extra})

    for layout in layouts:
        sid = layout.source_id
        for line in layout.lines:
            for direction in line.directions:
                sensor(sid, line.name, direction, f"{sid} {line.name} {direction}",
                       {"state_class": "total_increasing", "icon": "mdi:counter"})
        for zone in layout.zones:
            for label in (ALL, *zone.classes, *zone.forbidden):
                sensor(sid, zone.name, label, f"{sid} {zone.name} {label}",
                       {"state_class": "measurement", "icon": "mdi:account-group"})
    return configs


def owned_filters(discovery_prefix: str | None, prefix: str, node: str) -> tuple[str, ...]:
    """Subscriptions that match every retained topic these functions make, and no other topic of the module's."""
    scene = f"{prefix}/+/+/+"
    return (scene,) if discovery_prefix is None else (scene, f"{discovery_prefix}/sensor/{level(node)}/+/config")


class RetainedScene:
    """The retained scene topics of one local MQTT node; discovery configs are remade only when the geometry or the
    MQTT settings change, never per frame."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.configured = False
        """False until the first geometry arrives: before it, an empty layout must not clear what a restart kept."""
        self._discovery: dict[str, bytes] = {}

    def publish(self, local: LocalMqttPublisher | None, scene: SceneOutput, rediscover: bool = False) -> None:
        """Retain the scene's topics as they are now (and remake the discovery configs when `rediscover`)."""
        if local is None or not self.configured:
            return
        settings = local.settings
        layouts = list(scene.layouts.values())
        discovery = settings.discovery_prefix if settings.discovery else None
        if rediscover:
            self._discovery = {} if discovery is None else discovery_topics(discovery, settings.topic_prefix,
                                                                            self.node, layouts)
        values = state_topics(settings.topic_prefix, layouts, scene.totals())
        values.update(self._discovery)
        local.retain(values, owned_filters(discovery, settings.topic_prefix, self.node))
