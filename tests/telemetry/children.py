"""Child processes the telemetry tests kill with SIGKILL: an outbox writer and a local MQTT publisher.

Run as `python -m tests.telemetry.children <role> ...` from the repository root.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from visionedge.config import LocalMqttSettings, OutboxSettings, TelemetrySettings
from visionedge.telemetry.events import Sequencer
from visionedge.telemetry.localmqtt import LocalMqttPublisher
from visionedge.telemetry.outbox import Outbox
from visionedge.telemetry.scene import LineSpec, SceneLayout
from visionedge.telemetry.sink import TelemetrySink

from .support import PahoTransport, crossing, record, scene


def outbox_writer(data_dir: str) -> None:
    """Put one event at a time, printing each seq only after put returned (committed)."""
    outbox = Outbox(Path(data_dir), OutboxSettings())
    sequencer = Sequencer(outbox.epoch, outbox.last_seqs())
    while True:
        event = sequencer.make("result", "cam", record({"person": 1}), time.time())
        outbox.put([event])
        sys.stdout.write(f"{event.seq}\n")
        sys.stdout.flush()


def local_publisher(port: str, prefix: str) -> None:
    """Connect, publish one event, say "ready", then idle until killed."""
    publisher = LocalMqttPublisher(LocalMqttSettings(enabled=True, host="127.0.0.1", port=int(port),
                                                     topic_prefix=prefix), client_id="child-publisher")
    publisher.start()
    while not publisher.connected:
        time.sleep(0.01)
    publisher.publish(Sequencer("child").make("heartbeat", "cam", {}, time.time()))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(1)


def scene_writer(data_dir: str, port: str) -> None:
    """A sink at default settings sending to a hub broker on `port` (down: an outage), fed one crossing per frame
    (every fifth on the alarm line), printing each crossing only after scene_frame returned."""
    sink = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=Path(data_dir), source_id="cam",
                         transport=PahoTransport(int(port)))
    sink.set_layouts([SceneLayout("cam", (LineSpec("door"), LineSpec("gate", alarm=True)))])
    sink.start()
    n = 0
    while True:
        n += 1
        now = time.time()
        alarm = n % 5 == 0
        sink.scene_frame(scene(now, {}, crossing("gate" if alarm else "door", track_id=n, at=now, alarm=alarm)))
        sys.stdout.write(f"{'gate' if alarm else 'door'} {n}\n")
        sys.stdout.flush()
        time.sleep(0.002)


if __name__ == "__main__":
    if sys.argv[1] == "outbox-writer":
        outbox_writer(sys.argv[2])
    elif sys.argv[1] == "scene-writer":
        scene_writer(sys.argv[2], sys.argv[3])
    else:
        local_publisher(sys.argv[2], sys.argv[3])
