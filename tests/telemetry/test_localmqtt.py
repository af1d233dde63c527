"""The local MQTT publisher against a real Mosquitto: topics, retained availability, last will, no secrets logged."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from visionedge.config import LocalMqttSettings
from visionedge.telemetry.events import Sequencer
from visionedge.telemetry.localmqtt import LocalMqttPublisher
from visionedge_devhub.broker import Broker

from tests.support import wait_until

from .support import Recorder, record

REPO_ROOT = Path(__file__).resolve().parents[2]


def status(recorder: Recorder) -> list[tuple[str, bool]]:
    """(payload, retained) of every status message seen."""
    return [(m.body, m.retained) for m in recorder.snapshot() if m.topic == "site/status"]


def test_subscribers_see_events_and_a_retained_online(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """Events land on <prefix>/<source>/<output>; status is a retained "online"; the password is never logged."""
    caplog.set_level(logging.DEBUG)
    publisher = LocalMqttPublisher(LocalMqttSettings(enabled=True, port=broker.plain_port, host="127.0.0.1",
                                                     topic_prefix="site"),
                                   username="dashboard", password="s3cret-pw")
    publisher.start()
    wait_until(lambda: publisher.connected, what="publisher connected")
    sequencer = Sequencer("e")
    live = Recorder(broker.plain_port, "site/#", client_id="live-viewer")
    publisher.publish(sequencer.make("result", "cam", record({"dog": 1}), time.time()))
    publisher.publish(sequencer.make("heartbeat", "cam", {"fps": 10}, time.time()))
    wait_until(lambda: len(live.snapshot()) >= 3, what="status and two events")
    by_topic = {m.topic: m for m in live.snapshot()}
    assert by_topic["site/status"].body == "online"
    assert by_topic["site/status"].retained
    assert by_topic["site/cam/results"].body["counts"] == {"dog": 1}
    assert by_topic["site/cam/heartbeat"].body["seq"] == 2

    publisher.close()
    wait_until(lambda: status(live)[-1:] == [("offline", False)], what="offline on close")
    late = Recorder(broker.plain_port, "site/status", client_id="late-viewer")
    wait_until(lambda: status(late) == [("offline", True)], what="retained offline for a late subscriber")
    live.close()
    late.close()
    assert "s3cret-pw" not in caplog.text
    assert f"local MQTT: connected to 127.0.0.1:{broker.plain_port}" in caplog.text


def test_the_last_will_says_offline_when_the_publisher_is_killed(broker: Broker) -> None:
    """kill -9 of the process: the broker publishes the retained "offline" will."""
    with subprocess.Popen([sys.executable, "-m", "tests.telemetry.children", "local-publisher",
                           str(broker.plain_port), "site"], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            viewer = Recorder(broker.plain_port, "site/#", client_id="viewer")
            wait_until(lambda: status(viewer) == [("online", True)], what="retained online")
            child.send_signal(signal.SIGKILL)
            wait_until(lambda: status(viewer)[-1:] == [("offline", False)], what="last will")
            viewer.close()
            late = Recorder(broker.plain_port, "site/status", client_id="late-viewer")
            wait_until(lambda: status(late) == [("offline", True)], what="retained will")
            late.close()
        finally:
            child.kill()


def test_publishing_never_blocks_while_the_broker_is_away(broker: Broker) -> None:
    """With the broker down, publish returns at once; queued events arrive after it comes back."""
    publisher = LocalMqttPublisher(LocalMqttSettings(enabled=True, port=broker.plain_port, host="127.0.0.1",
                                                     topic_prefix="site"), client_id="pub")
    publisher.start()
    wait_until(lambda: publisher.connected, what="connected")
    viewer = Recorder(broker.plain_port, "site/cam/#", client_id="viewer")
    broker.stop()
    wait_until(lambda: not publisher.connected, what="disconnect noticed")
    sequencer = Sequencer("e")
    started = time.monotonic()
    for _ in range(20):
        publisher.publish(sequencer.make("result", "cam", record({"car": 1}), time.time()))
    assert time.monotonic() - started < 0.1
    broker.start()
    wait_until(lambda: {m.body["seq"] for m in viewer.snapshot()} == set(range(1, 21)), timeout=15,
               what="queued events after the broker came back")
    publisher.close()
    viewer.close()
