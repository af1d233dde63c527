"""Scene analytics in the running module: geometry from the twin applies while frames flow, bad geometry is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge_devhub.hub import DevHub
from visionedge_devhub.testing import running_devhub, sdk_nodelay

from tests.edge.conftest import StartModule, bodies
from tests.edge.test_twin_methods import reported_ack, wait_running
from tests.support import wait_until

pytestmark = pytest.mark.timeout(180)

DOOR = {"name": "door", "points": [[0.1, 0.6], [0.9, 0.6]], "directions": ["in", "out"]}
FLOOR = {"name": "floor", "points": [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]], "max_dwell_s": 30}


@pytest.fixture
def detector_hub(tmp_path: Path) -> Iterator[DevHub]:
    """A hub whose desired document runs YOLOX-nano on the sample video with one counting line."""
    desired = {
        "source": {"uri": "sample", "fps": 5},
        "model": {"name": "yolox-nano", "shadow": False},
        "telemetry": {"policy": "every-frame", "batch": False},
        "analytics": {"camera": {"lines": [DOOR]}},
    }
    with sdk_nodelay(), running_devhub(tmp_path, desired=desired) as devhub:
        yield devhub


def tracked(hub: DevHub) -> int:
    """Detections that arrived with a track id."""
    return sum(1 for body in bodies(hub) for d in body.get("detections", ()) if "track_id" in d)


def scene_zones(reported: dict[str, Any]) -> dict[str, Any]:
    """The camera's zones in the reported status's scene block (the telemetry's running totals)."""
    return dict(reported.get("status", {}).get("scene", {}).get("camera", {}).get("zones", {}))


def test_geometry_patch_applies_while_frames_flow_and_bad_geometry_gets_400(
        detector_hub: DevHub, start_module: StartModule) -> None:
    """Tracks flow with the first line; a patch adds a zone without restarting the camera (frames and track ids keep
    coming, the reported scene status names the zone); each bad geometry is refused with its reason, the zone
    stays."""
    hub = detector_hub
    module = start_module(hub)
    wait_running(hub)
    assert reported_ack(hub, "analytics", hub.emulator.desired["$version"])["ac"] == 200
    wait_until(lambda: tracked(hub) > 0, timeout=60, what="detections with track ids")
    opened = module.log().count("): streaming")
    version = hub.set_desired({"analytics": {"camera": {"lines": [DOOR], "zones": [FLOOR]}}})
    ack = reported_ack(hub, "analytics", version)
    assert ack["ac"] == 200, ack
    assert [z["name"] for z in ack["value"]["camera"]["zones"]] == ["floor"]
    hub.emulator.wait_for_reported(lambda r: "floor" in scene_zones(r), timeout=30)
    assert module.log().count("): streaming") == opened  # the patch did not reopen the camera
    before_frames, before_tracked = len(bodies(hub)), tracked(hub)
    wait_until(lambda: len(bodies(hub)) > before_frames + 3 and tracked(hub) > before_tracked, timeout=30,
               what="frames with track ids after the patch")

    bad: list[tuple[dict[str, Any], str]] = [
        ({"lines": [{"name": "dot", "points": [[0.5, 0.5], [0.5, 0.5]]}]}, "line 'dot' has zero length"),
        ({"zones": [{"name": "bow", "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}]},
         "zone 'bow' intersects itself"),
        ({"lines": [{"name": "far", "points": [[0.1, 0.5], [1.5, 0.5]]}]}, "point [1.5, 0.5] is outside [0, 1]"),
        ({"zones": [{"name": "many", "points": [[0.5 + 0.4 * (i % 2), i / 40] for i in range(40)]}]},
         "List should have at most 32 items"),
    ]
    for settings, reason in bad:
        version = hub.set_desired({"analytics": {"camera": {"lines": [DOOR], "zones": [FLOOR], **settings}}})
        ack = reported_ack(hub, "analytics", version)
        assert ack["ac"] == 400, (settings, ack)
        assert reason in ack["ad"], ack["ad"]
        assert [z["name"] for z in ack["value"]["camera"]["zones"]] == ["floor"]
    camera = {"lines": [DOOR], "zones": [FLOOR]}
    version = hub.set_desired({"analytics": {"camera": camera, "lobby": {"lines": [DOOR]}}})
    ack = reported_ack(hub, "analytics", version)
    assert ack["ac"] == 400
    assert "analytics for unknown source lobby; sources: camera" in ack["ad"]
    frames = len(bodies(hub))
    time.sleep(1.5)
    assert len(bodies(hub)) > frames
    assert "floor" in scene_zones(hub.emulator.reported)


def test_analytics_asked_of_a_classifier_get_400(hub: DevHub, start_module: StartModule) -> None:
    """SqueezeNet has no boxes to track: the section is refused with that reason and nothing else changes."""
    start_module(hub)
    wait_running(hub)
    version = hub.set_desired({"analytics": {"camera": {"lines": [DOOR]}}})
    ack = reported_ack(hub, "analytics", version)
    assert ack["ac"] == 400
    assert "analytics need a detector; the model in use is a classify model" in ack["ad"]
    assert ack["value"] == {}
