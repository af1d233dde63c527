"""The sender against a real Mosquitto through a real paho transport: outages, budget, stop, fatal errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from visionedge.config import OutboxSettings
from visionedge.telemetry.budget import DailyBudget
from visionedge.telemetry.events import EventType, Sequencer
from visionedge.telemetry.outbox import Outbox
from visionedge.telemetry.sender import FatalSendError, Sender, SenderOptions
from visionedge_devhub.broker import Broker

from tests.support import wait_until

from .conftest import OpenOutbox
from .support import PahoTransport, Recorder, record

FAST = SenderOptions(send_timeout_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.5, linger_s=0.05,
                     budget_poll_s=0.1)


class Rig:
    """Outbox + sender + paho transport + hub-side recorder, all on one broker."""

    def __init__(self, data_dir: Path, broker: Broker, *, limit: int = 0, batch: bool = True,
                 options: SenderOptions = FAST, outbox: OutboxSettings | None = None) -> None:
        self.recorder = Recorder(broker.plain_port, "hub/#")
        self.transport = PahoTransport(broker.plain_port)
        self.outbox = Outbox(data_dir, outbox or OutboxSettings())
        self.budget = DailyBudget(limit, self.outbox)
        self.sender = Sender(self.outbox, self.transport, self.budget, batch=batch, options=options)
        self.sequencer = Sequencer(self.outbox.epoch)

    def put(self, n: int, pause: float = 0.0, kind: EventType = "result") -> None:
        """Store `n` events, one put each."""
        for _ in range(n):
            self.outbox.put([self.sequencer.make(kind, "cam", record({"person": 1}), time.time())])
            time.sleep(pause)

    def delivered(self) -> set[int]:
        """Seqs of results the hub side has seen."""
        return {body["seq"] for _, body in self.recorder.events() if body["type"] == "result"}

    def close(self) -> None:
        """Stop everything."""
        self.sender.stop()
        self.transport.close()
        self.recorder.close()
        self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path, broker: Broker) -> Iterator[Rig]:
    """A sender draining into the broker, not started yet."""
    made = Rig(tmp_path / "data", broker)
    yield made
    made.close()


def test_every_event_arrives_across_a_broker_outage(rig: Rig, broker: Broker) -> None:
    """Broker down for 3 s while events keep coming: all arrive after it is back; repeats keep their message_id."""
    rig.sender.start()
    rig.put(50, pause=0.01)
    wait_until(lambda: len(rig.delivered()) == 50, what="first 50 events")
    assert rig.sender.stats().link == "up"

    broker.stop()
    rig.put(100, pause=0.02)
    wait_until(lambda: rig.sender.stats().link == "down", what="link down")
    assert rig.outbox.stats().depth > 0
    time.sleep(1)
    broker.start()
    rig.put(50, pause=0.01)
    wait_until(lambda: rig.delivered() == set(range(1, 201)), timeout=30, what="all 200 events after the outage")

    by_seq: dict[int, set[str]] = {}
    bodies: dict[str, dict[str, object]] = {}
    for mid, body in rig.recorder.events():
        by_seq.setdefault(int(body["seq"]), set()).add(mid)
        assert bodies.setdefault(mid, body) == body
    assert all(ids == {f"cam:{rig.outbox.epoch}:{seq}"} for seq, ids in by_seq.items())
    wait_until(lambda: rig.outbox.stats().depth == 0, what="outbox drained")
    stats = rig.sender.stats()
    assert stats.link == "up"
    assert stats.failed_attempts > 0
    assert stats.sent_events >= 200
    assert rig.outbox.stats().sent == 200


def covered(rig: Rig) -> set[int]:
    """Seqs the hub side received, alone or inside an aggregate's range."""
    seqs: set[int] = set()
    for _, body in rig.recorder.events():
        seqs.update(range(int(body["seq"]), int(body.get("seq_last", body["seq"])) + 1))
    return seqs


def test_while_the_link_is_down_only_the_retried_message_is_held_so_a_small_outbox_compacts(
        tmp_path: Path, broker: Broker) -> None:
    """A retry holds one message's rows, not the whole batch it read (up to 200 events, more than a small cap), so
    the backlog behind it is compacted within the cap; after the outage every seq arrives, alone or in an aggregate."""
    rig = Rig(tmp_path / "data", broker, outbox=OutboxSettings(max_mb=0.03))
    try:
        rig.sender.start()
        broker.stop()
        wait_until(lambda: not rig.transport.client.is_connected(), timeout=30, what="transport disconnected")
        rig.put(300, pause=0.005)
        wait_until(lambda: rig.sender.stats().failed_attempts > 1, timeout=30, what="a retry")
        rig.put(1)
        stats = rig.outbox.stats()
        assert stats.compacted > 0
        assert stats.dropped == 0
        assert stats.bytes < 0.03 * 1024 * 1024 + 4096  # the cap plus at most the one 4 KB message being retried
        broker.start()
        wait_until(lambda: rig.outbox.stats().depth == 0, timeout=30, what="outbox drained")
        # the broker's PUBACK empties the outbox a moment before the hub side receives the last messages
        wait_until(lambda: covered(rig) >= set(range(1, 302)), timeout=30, what="every seq at the hub",
                   detail=lambda: sorted(set(range(1, 302)) - covered(rig))[:20])
    finally:
        rig.close()


def test_messages_carry_json_content_type_and_string_properties(rig: Rig) -> None:
    """Each message has its message id, application/json utf-8, and schema, model, source and type properties."""
    rig.put(1)
    rig.sender.start()
    wait_until(lambda: rig.recorder.snapshot(), what="one message")
    message = rig.recorder.snapshot()[0]
    assert message.output == "results"
    assert message.properties == {"$.mid": f"cam:{rig.outbox.epoch}:1", "$.ct": "application/json", "$.ce": "utf-8",
                                  "schema_version": "1.0", "model": "yolox-nano", "source_id": "cam",
                                  "type": "result"}


def test_a_spent_budget_stops_sending_and_keeps_the_rest(tmp_path: Path, broker: Broker) -> None:
    """With 5 units a day, 5 messages go and 15 events wait in the outbox; a larger budget lets them go."""
    rig = Rig(tmp_path / "data", broker, limit=5, batch=False)
    try:
        rig.put(20)
        rig.sender.start()
        wait_until(lambda: len(rig.delivered()) == 5, what="five messages")
        time.sleep(0.5)
        assert len(rig.delivered()) == 5
        assert rig.outbox.stats().depth == 15
        budget = rig.sender.stats().budget
        assert (budget.messages_sent_today, budget.units_used_today, budget.budget_remaining) == (5, 5, 0)
        assert DailyBudget(5, rig.outbox).stats().units_used_today == 5
        rig.budget.update(100, 0)
        wait_until(lambda: rig.delivered() == set(range(1, 21)), what="the rest after raising the budget")
    finally:
        rig.close()


def test_heartbeats_still_go_when_results_have_spent_their_share(tmp_path: Path, broker: Broker) -> None:
    """Budget 5 with 2 reserved for heartbeats: 3 results go, later heartbeats go past the waiting results."""
    rig = Rig(tmp_path / "data", broker, limit=5, batch=False)
    try:
        rig.budget.update(5, 2)
        rig.put(10)
        rig.sender.start()
        wait_until(lambda: len(rig.delivered()) == 3, what="three results")
        rig.put(2, kind="heartbeat")
        wait_until(lambda: len(rig.recorder.snapshot()) == 5, what="two heartbeats")
        assert [m.body["type"] for m in rig.recorder.snapshot()] == ["result"] * 3 + ["heartbeat"] * 2
        assert rig.outbox.stats().depth == 7
    finally:
        rig.close()


def test_stop_is_prompt_while_the_link_is_down(tmp_path: Path, broker: Broker) -> None:
    """Retrying with long backoff, the sender still stops within about a second."""
    rig = Rig(tmp_path / "data", broker, options=SenderOptions(backoff_initial_s=5, send_timeout_s=0.5))
    try:
        broker.stop()
        rig.put(3)
        rig.sender.start()
        wait_until(lambda: rig.sender.stats().failed_attempts > 0, what="a failed attempt")
        started = time.monotonic()
        rig.sender.stop()
        assert time.monotonic() - started < 1.2
        assert not rig.sender.alive
        assert rig.outbox.stats().depth == 3
    finally:
        rig.close()


class RefusedTransport:
    """A transport whose credentials were rejected, as the SDK reports with CredentialError."""

    def __init__(self) -> None:
        self.calls = threading.Semaphore(0)

    def send(self, output: str, payload: bytes, message_id: str, properties: Mapping[str, str],
             timeout: float) -> None:
        """Refuse."""
        self.calls.release()
        raise FatalSendError("IoT Hub rejected the module's credentials")


def test_a_fatal_error_stops_the_sender_and_is_reported(tmp_path: Path, open_outbox: OpenOutbox) -> None:
    """No retry after a fatal error; the reason is in the stats and the events stay in the outbox."""
    outbox = open_outbox(tmp_path, OutboxSettings())
    outbox.put([Sequencer(outbox.epoch).make("result", "cam", record({}), time.time())])
    sender = Sender(outbox, RefusedTransport(), DailyBudget(0, outbox), options=FAST)
    sender.start()
    wait_until(lambda: not sender.alive, what="sender stopped")
    stats = sender.stats()
    assert (stats.fatal, stats.link, stats.sent_events) == ("IoT Hub rejected the module's credentials", "down", 0)
    assert outbox.stats().depth == 1


def test_link_up_cuts_the_backoff_short_and_live_events_go_first(tmp_path: Path, broker: Broker) -> None:
    """Backing off for ~10 s, the sender retries as soon as it hears the link is back, and sends live events first."""
    rig = Rig(tmp_path / "data", broker, options=SenderOptions(backoff_initial_s=20, backoff_max_s=20,
                                                               send_timeout_s=0.5, linger_s=0.3))
    try:
        broker.stop()
        wait_until(lambda: not rig.transport.client.is_connected(), what="transport disconnected")
        rig.put(5)
        rig.sender.start()
        wait_until(lambda: rig.sender.stats().failed_attempts > 0, what="a failed attempt")
        broker.start()
        wait_until(rig.transport.client.is_connected, what="transport reconnected")
        started = time.monotonic()
        rig.sender.link_up()
        time.sleep(0.1)
        rig.put(1)
        wait_until(lambda: len(rig.delivered()) == 6, timeout=5, what="all six events")
        assert time.monotonic() - started < 3
        assert rig.recorder.events()[0][1]["seq"] == 6
    finally:
        rig.close()
