"""Scene output through the real SDK at devhub: routing properties on alarms and counts; the real module's status
block, restored counters and resetCounters."""

from __future__ import annotations

from pathlib import Path

from visionedge.config import OutboxSettings, TelemetrySettings
from visionedge.edge.client import HubClient
from visionedge.edge.transport import HubTransport
from visionedge.telemetry.scene import LineSpec, SceneLayout, ZoneSpec
from visionedge.telemetry.sink import TelemetrySink
from visionedge_devhub.testing import module_client, running_devhub, sdk_nodelay

from tests.edge.conftest import StartModule
from tests.telemetry.support import crossing, scene, zone_event


def test_alarms_and_counts_carry_routing_properties_on_the_real_sdk(tmp_path: Path) -> None:
    """An alarm crossing, a forbidden entry and a closed counts window arrive alone, each with `type` (and for alarms
    `alarm`, `geometry`, `class`), so `type = 'alarm'` and `type = 'counts'` split them without reading bodies."""
    layout = SceneLayout("door-cam", (LineSpec("door", alarm=True),), (ZoneSpec("yard", forbidden=("person",)),))
    with sdk_nodelay(), running_devhub(tmp_path / "hub", desired={}) as hub, \
            module_client(hub, connection_retry_interval=1) as sdk:
        client = HubClient(sdk)
        client.connect()
        sink = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=tmp_path / "data",
                             source_id="door-cam", transport=HubTransport(client))
        sink.set_layouts([layout])
        sink.start()
        t = 1.8e9
        sink.scene_frame(scene(t, {"yard": {}}, crossing(at=t, alarm=True, source_id="door-cam"),
                               source_id="door-cam"))
        sink.scene_frame(scene(t + 1, {"yard": {"person": 1}},
                               zone_event("forbidden", "yard", track_id=2, at=t + 1, alarm=True,
                                          source_id="door-cam"), source_id="door-cam"))
        sink.scene_frame(scene(t + 61, {"yard": {}}, source_id="door-cam"))
        received = hub.emulator.wait_for_telemetry(lambda m: m.properties.get("type") in ("alarm", "counts"),
                                                   count=3, timeout=20)
        sink.close()
    by_type = {(m.properties["type"], m.properties.get("alarm", "")): m for m in received}
    crossed, forbidden, counts = by_type["alarm", "crossing"], by_type["alarm", "forbidden"], by_type["counts", ""]
    assert dict(crossed.properties) == {"type": "alarm", "alarm": "crossing", "geometry": "door", "class": "person",
                                        "source_id": "door-cam", "model": "yolox-nano@1", "schema_version": "1.0"}
    assert (forbidden.properties["geometry"], forbidden.json["track_id"]) == ("yard", 2)
    assert (crossed.output, forbidden.output, counts.output) == ("events", "events", "aggregates")
    assert counts.json["lines"] == {"door": {"in": {"person": 1}}}
    assert counts.content_type == "application/json"


def test_the_real_module_reports_restores_and_resets_scene_counters(start_module: StartModule,
                                                                    tmp_path: Path) -> None:
    """Counters a previous run stored: the restarted module sends their closed window as `type: counts`, shows them
    in the reported status, and resetCounters zeroes the door with a 200 that says what it held."""
    data = tmp_path / "data"
    before = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=data, source_id="camera")
    before.set_layouts([SceneLayout("camera", (LineSpec("door"),))])
    t = 1.8e9
    for i in range(3):
        before.scene_frame(scene(t + i, {}, crossing(track_id=i + 1, at=t + i, source_id="camera"),
                                 source_id="camera"))
    before.close()

    corner = {"name": "door", "points": [[0.0, 0.0], [0.02, 0.0]]}  # along the top edge: nobody crosses it live
    desired = {"source": {"uri": "sample", "fps": 5}, "model": {"name": "yolox-nano"}, "shadow": {"enabled": False},
               "analytics": {"camera": {"lines": [corner]}}}
    with sdk_nodelay(), running_devhub(tmp_path / "hub", desired=desired) as hub:
        start_module(hub, data_dir=data)
        [counts] = hub.emulator.wait_for_telemetry(lambda m: m.properties.get("type") == "counts", timeout=120)
        assert counts.json["lines"] == {"door": {"in": {"person": 3}}}
        doc = hub.emulator.wait_for_reported(lambda r: "scene" in r.get("status", {}), timeout=60)
        assert doc["status"]["scene"] == {"camera": {"lines": {"door": {"in": 3}}, "zones": {}}}
        status, payload = hub.emulator.call_method("resetCounters", {"source": "camera", "name": "door"}, timeout=10)
        assert (status, payload) == (200, {"reset": True, "source": "camera", "name": "door", "kind": "line",
                                           "before": {"in": {"person": 3}}})
        hub.emulator.wait_for_reported(
            lambda r: r.get("status", {}).get("scene", {}).get("camera", {}).get("lines") == {}, timeout=30)
