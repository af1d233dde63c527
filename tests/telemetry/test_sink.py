"""The telemetry sink end to end: records in, IoT Hub stand-in and local broker out, across a hub outage."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from visionedge.config import LocalMqttSettings, LocalSettings, ModuleConfig, OutboxSettings, TelemetrySettings
from visionedge.telemetry.localmqtt import LocalMqttPublisher
from visionedge.telemetry.sender import SenderOptions
from visionedge.telemetry.sink import TelemetrySink, heartbeat_telemetry
from visionedge_devhub.broker import Broker

from tests.support import wait_until

from .conftest import OpenOutbox
from .support import Clock, PahoTransport, Recorder, record

FAST = SenderOptions(send_timeout_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.5, linger_s=0.05)


def feed(sink: TelemetrySink, counts: dict[str, int], seconds: float, fps: float = 50) -> None:
    """Publish the same detections at `fps` for `seconds` of real time, as the pipeline would."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sink.publish(record(counts))
        time.sleep(1 / fps)


def kinds(bodies: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Bodies of one type."""
    return [b for b in bodies if b["type"] == kind]


def test_results_reach_the_local_broker_during_a_hub_outage_and_the_hub_after(
        tmp_path: Path, broker: Broker, local_broker: Broker) -> None:
    """Hub down: the local dashboard still gets the change live; hub back: it gets everything, in seq order."""
    hub = Recorder(broker.plain_port, "hub/#")
    dashboard = Recorder(local_broker.plain_port, "site/#", client_id="dashboard")
    transport = PahoTransport(broker.plain_port)
    local = LocalMqttPublisher(LocalMqttSettings(enabled=True, host="127.0.0.1", port=local_broker.plain_port,
                                                 topic_prefix="site"))
    sink = TelemetrySink(TelemetrySettings(debounce_s=0.3, aggregate_window_s=1.0, heartbeat_s=1.0),
                         OutboxSettings(), data_dir=tmp_path, source_id="cam", transport=transport, local=local,
                         heartbeat_fields=lambda: {"fps": 50.0}, tick_s=0.1, sender_options=FAST)
    sink.start()
    assert {"telemetry-tick", "telemetry-sender", "local-mqtt"} <= {t.name for t in threading.enumerate()}
    feed(sink, {"person": 1}, 0.6)
    wait_until(lambda: kinds([b for _, b in hub.events()], "result"), what="first result at the hub")

    broker.stop()
    feed(sink, {"dog": 1}, 0.6)
    wait_until(lambda: any(m.topic == "site/cam/results" and m.body["counts"] == {"dog": 1}
                           for m in dashboard.snapshot()), what="the dog on the local broker")
    assert not any(b.get("counts") == {"dog": 1} for _, b in hub.events())
    assert sink.stats().outbox.depth > 0

    broker.start()
    wait_until(lambda: any(b.get("counts") == {"dog": 1} for _, b in hub.events()), timeout=20,
               what="the dog at the hub after the outage")
    sink.close(drain_s=3)

    unique = {mid: body for mid, body in hub.events()}
    hub_bodies = sorted(unique.values(), key=lambda b: int(b["seq"]))
    local_seqs = {m.body["seq"] for m in dashboard.snapshot() if m.topic.startswith("site/cam/")}
    assert {b["seq"] for b in hub_bodies} == local_seqs
    assert [b["counts"] for b in kinds(hub_bodies, "result")] == [{"person": 1}, {"dog": 1}]
    assert kinds(hub_bodies, "aggregate")
    beat = kinds(hub_bodies, "heartbeat")[0]
    assert beat["fps"] == 50.0
    assert beat["policy"] == "on-change"
    assert set(beat["outbox"]) >= {"depth", "dropped"}
    assert sink.stats().lost == 0
    assert any(m.body == "offline" for m in dashboard.snapshot() if m.topic == "site/status")
    hub.close()
    dashboard.close()
    transport.close()


def test_close_flushes_the_open_window_into_the_outbox(tmp_path: Path, clock: Clock, open_outbox: OpenOutbox) -> None:
    """Records mid-window, then close: the partial aggregate is stored for the next run to send."""
    sink = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=tmp_path, source_id="cam", clock=clock,
                         steady=clock.steady)
    for _ in range(25):
        clock.advance(0.1)
        sink.publish(record({"car": 2}))
    sink.emit("model-swapped", {"from": "a", "to": "b"})
    sink.close()
    reopened = open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    bodies = [i.event.body for i in reopened.next_batch(100, False)]
    assert [b["type"] for b in bodies] == ["result", "event", "aggregate"]
    assert bodies[1]["event"] == "model-swapped"
    assert bodies[1]["to"] == "b"
    assert (bodies[2]["frames"], bodies[2]["labels"]["car"]["count"], bodies[2]["window_s"]) == (25, 50, 2.5)


def test_a_full_disk_loses_events_with_a_reason_and_never_raises(
        tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite says the disk is full: publish returns normally, the loss is logged and counted, later puts work."""
    sink = TelemetrySink(TelemetrySettings(policy="every-frame"), OutboxSettings(), data_dir=tmp_path,
                         source_id="cam", clock=clock, steady=clock.steady)
    sink.publish(record({"cat": 1}))
    conn = sink.outbox._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for _ in range(20):
        sink.publish(record({"cat": 1, "dog": 2, "person": 5}))
    lost = sink.stats().lost
    assert lost > 1
    losses = [r.getMessage() for r in caplog.records if "could not store" in r.getMessage()]
    assert losses == [  # once for the whole streak, not once per frame
        "telemetry: could not store 1 event(s) in the outbox: database or disk is full (1 lost so far)"]
    clock.advance(61.0)
    sink.publish(record({"cat": 1, "dog": 2, "person": 5}))
    assert [r.getMessage() for r in caplog.records if "could not store" in r.getMessage()][1:] == [
        f"telemetry: could not store 1 event(s) in the outbox: database or disk is full ({lost + 1} lost so far)"]
    conn.execute("PRAGMA max_page_count = 1073741823")
    sink.publish(record({"cat": 1}))
    assert f"the outbox stores events again ({lost + 1} lost so far)" in caplog.text
    assert sink.stats().outbox.depth == 22 - (lost + 1) + 1
    sink.close()


def test_twin_updates_apply_at_once(tmp_path: Path, clock: Clock) -> None:
    """Switching to every-frame makes each record an event from the next record on."""
    sink = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=tmp_path, source_id="cam", clock=clock,
                         steady=clock.steady)
    sink.publish(record({"car": 1}))
    sink.update(TelemetrySettings(policy="every-frame"))
    for _ in range(5):
        sink.publish(record({"car": 1}))
    assert sink.stats().outbox.depth == 1 + 5
    sink.close()


def test_a_heartbeat_given_whole_reads_the_outbox_once(tmp_path: Path, clock: Clock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The module hands the sink its whole heartbeat (a snapshot view carrying the outbox figures): a heartbeat
    reads the outbox once, through that snapshot, and carries exactly what the view gave."""
    sink = TelemetrySink(TelemetrySettings(heartbeat_s=60.0), OutboxSettings(), data_dir=tmp_path, source_id="cam",
                         clock=clock, steady=clock.steady,
                         heartbeat=lambda: {"fps": 2.0, **heartbeat_telemetry(sink.stats())})
    reads: list[int] = []
    real = sink.outbox.stats

    def counted() -> Any:
        reads.append(1)
        return real()

    monkeypatch.setattr(sink.outbox, "stats", counted)
    sink.tick(clock.steady())  # a heartbeat is due
    with_beat = len(reads)
    sink.tick(clock.steady() + 1.0)  # none is
    beats = [i.event.body for i in sink.outbox.next_batch(10, False) if i.event.body["type"] == "heartbeat"]
    assert len(beats) == 1
    assert (beats[0]["fps"], beats[0]["outbox"]["depth"]) == (2.0, 0)
    assert with_beat - (len(reads) - with_beat) == 1
    sink.close()


def test_the_outbox_losing_events_is_announced_on_the_events_output(tmp_path: Path, clock: Clock) -> None:
    """When the outbox compacts or drops, a "telemetry-dropped" event says how many."""
    sink = TelemetrySink(TelemetrySettings(policy="every-frame"), OutboxSettings(max_mb=0.02, overflow="drop-oldest"),
                         data_dir=tmp_path, source_id="cam", clock=clock, steady=clock.steady)
    for _ in range(100):
        clock.advance(0.1)
        sink.publish(record({"person": 3}))
    sink.tick()
    notices = [i.event.body for i in sink.outbox.next_batch(1000, False) if i.event.kind == "event"]
    assert len(notices) == 1
    assert notices[0]["event"] == "telemetry-dropped"
    assert notices[0]["dropped"] == notices[0]["dropped_total"] > 0
    assert sink.stats().outbox.dropped >= notices[0]["dropped"]
    sink.close()


def test_local_mqtt_follows_the_twin(tmp_path: Path, local_broker: Broker) -> None:
    """Enabling local_mqtt starts publishing, the same settings again change nothing, disabling says offline."""
    sink = TelemetrySink(TelemetrySettings(policy="every-frame"), OutboxSettings(), data_dir=tmp_path,
                         source_id="cam", local_client_id="dev-local")
    dashboard = Recorder(local_broker.plain_port, "site/#", client_id="dashboard")
    settings = LocalMqttSettings(enabled=True, host="127.0.0.1", port=local_broker.plain_port, topic_prefix="site")
    sink.replace_local(settings, LocalSettings(data_dir=tmp_path))
    publisher = sink.local
    assert publisher is not None
    wait_until(lambda: publisher.connected, what="local MQTT connected")
    sink.replace_local(settings, LocalSettings(data_dir=tmp_path))
    assert sink.local is publisher
    sink.publish(record({"cat": 1}))
    wait_until(lambda: any(m.topic == "site/cam/results" for m in dashboard.snapshot()), what="the event")
    sink.replace_local(settings.model_copy(update={"enabled": False}), LocalSettings(data_dir=tmp_path))
    assert sink.local is None
    wait_until(lambda: [m.body for m in dashboard.snapshot() if m.topic == "site/status"][-1:] == ["offline"],
               what="offline")
    sink.close()
    dashboard.close()


def test_from_config_wires_outbox_source_and_local_mqtt(tmp_path: Path) -> None:
    """The module's config gives the data dir, source id and (when enabled) a local publisher."""
    config = ModuleConfig.model_validate({"desired": {"source": {"id": "door"}, "local_mqtt": {"enabled": True}},
                                          "local": {"data_dir": str(tmp_path), "local_mqtt_username": "u"}})
    sink = TelemetrySink.from_config(config, None)
    assert sink.policy.source_id == "door"
    assert sink.outbox.path == tmp_path / "outbox.sqlite"
    assert sink.local is not None
    assert sink.local.settings.port == 1883
    sink.outbox.close()
