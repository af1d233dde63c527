"""Scene figures on a real Mosquitto: retained occupancy and counts topics, Home Assistant discovery in and out."""

from __future__ import annotations

import json
import time
from pathlib import Path

from visionedge.config import LocalMqttSettings, OutboxSettings, TelemetrySettings
from visionedge.telemetry.localmqtt import LocalMqttPublisher
from visionedge.telemetry.scene import LineSpec, SceneLayout, ZoneSpec
from visionedge.telemetry.sink import TelemetrySink
from visionedge_devhub.broker import Broker

from tests.support import wait_until

from .support import Recorder, crossing, scene, zone_event

DOOR = LineSpec("door", classes=("person",))
QUEUE = ZoneSpec("queue", classes=("person",))


def sink_for(tmp_path: Path, broker: Broker, *layouts: SceneLayout) -> TelemetrySink:
    """A sink publishing to the broker under `site`, discovery on, node `cam-module`."""
    local = LocalMqttPublisher(LocalMqttSettings(enabled=True, host="127.0.0.1", port=broker.plain_port,
                                                 topic_prefix="site", discovery=True), client_id="cam-module")
    sink = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=tmp_path, source_id="cam", local=local,
                         local_client_id="cam-module")
    sink.set_layouts(list(layouts))
    sink.start()
    wait_until(lambda: local.connected, what="the local broker connection")
    return sink


def retained(broker: Broker, name: str) -> dict[str, str]:
    """What a newcomer subscribing now gets as retained scene and discovery topics (topic -> payload)."""
    seen = Recorder(broker.plain_port, "#", client_id=name)
    wait_until(lambda: any(m.topic == "site/status" for m in seen.snapshot()), what="the retained status")
    count = -1
    while count != len(seen.snapshot()):  # the broker sends retained topics in no promised order: until quiet
        count = len(seen.snapshot())
        time.sleep(0.2)
    seen.close()
    return {m.topic: m.body if isinstance(m.body, str) else json.dumps(m.body)
            for m in seen.snapshot() if m.retained and m.topic != "site/status"}


def test_occupancy_and_counts_are_retained_beside_the_event_topics(tmp_path: Path, local_broker: Broker) -> None:
    """Two people in, one still in the queue: a newcomer reads 2 / 0 on the line and 1 person in the zone."""
    sink = sink_for(tmp_path, local_broker, SceneLayout("cam", (DOOR,), (QUEUE,)))
    t = 1.8e9
    sink.scene_frame(scene(t, {"queue": {"person": 1}}, crossing(at=t), zone_event("enter", at=t)))
    sink.scene_frame(scene(t + 1, {"queue": {"person": 1}}, crossing(track_id=2, at=t + 1)))
    wait_until(lambda: retained(local_broker, "probe").get("site/cam/door/in") == "2", what="the door count")
    now = retained(local_broker, "newcomer")
    assert {k: v for k, v in now.items() if k.startswith("site/")} == {
        "site/cam/door/in": "2", "site/cam/door/out": "0", "site/cam/queue/person": "1", "site/cam/queue/all": "1"}
    config = json.loads(now["homeassistant/sensor/cam-module/cam_door_in/config"])
    assert (config["state_topic"], config["unique_id"], config["availability_topic"]) == (
        "site/cam/door/in", "cam-module_cam_door_in", "site/status")
    assert config["device"]["identifiers"] == ["cam-module"]
    assert set(now) >= {"homeassistant/sensor/cam-module/cam_queue_all/config",
                        "homeassistant/sensor/cam-module/cam_queue_person/config",
                        "homeassistant/sensor/cam-module/cam_door_out/config"}
    sink.close()


def test_a_removed_zone_leaves_home_assistant_now_and_after_a_restart(tmp_path: Path, local_broker: Broker) -> None:
    """The zone removed live: its config and state topics are cleared; a line removed while the module was down is
    cleared by the next run."""
    sink = sink_for(tmp_path, local_broker, SceneLayout("cam", (DOOR, LineSpec("exit")), (QUEUE,)))
    wait_until(lambda: "homeassistant/sensor/cam-module/cam_queue_all/config" in retained(local_broker, "a"),
               what="the zone's discovery config")
    sink.set_layouts([SceneLayout("cam", (DOOR, LineSpec("exit")))])
    wait_until(lambda: not any("queue" in t for t in retained(local_broker, "b")), what="the zone to be removed")
    sink.close()

    again = sink_for(tmp_path, local_broker, SceneLayout("cam", (DOOR,)))
    wait_until(lambda: not any("exit" in t for t in retained(local_broker, "c")), what="the exit line to go")
    left = retained(local_broker, "d")
    assert set(left) == {"site/cam/door/in", "site/cam/door/out", "homeassistant/sensor/cam-module/cam_door_in/config",
                         "homeassistant/sensor/cam-module/cam_door_out/config"}
    again.close()
