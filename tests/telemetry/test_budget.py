"""IoT Hub 4 KB units: batching that saves units, and the persisted daily budget with its UTC-midnight reset."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from visionedge.config import OutboxSettings
from visionedge.telemetry.budget import (
    FREE_TIER_UNIT_BYTES,
    MAX_MESSAGE_BYTES,
    UNIT_BYTES,
    DailyBudget,
    heartbeat_reserve,
    pack,
    properties_for,
    properties_size,
    units,
)
from visionedge.telemetry.events import Event, Sequencer
from visionedge.telemetry.outbox import Outbox, OutboxItem

from .conftest import OpenOutbox
from .support import Clock

DAY = 86400.0


def item(row_id: int, event: Event) -> OutboxItem:
    """An outbox item as next_batch would return it."""
    return OutboxItem(row_id, event, len(event.payload()))


def padded(sequencer: Sequencer, size: int, kind: str = "result", source: str = "cam") -> Event:
    """An event whose body is about `size` bytes."""
    return sequencer.make(kind, source, {"model": {"name": "m"}, "pad": "x" * size}, 0.0)  # type: ignore[arg-type]


def test_unit_math() -> None:
    """IoT Hub bills per started 4 KB (0.5 KB on the free tier), at least one unit per message, with properties."""
    assert [units(n) for n in (0, 1, 4096, 4097, 8192, 262144)] == [1, 1, 1, 2, 2, 64]
    assert [units(n, FREE_TIER_UNIT_BYTES) for n in (0, 512, 513, 4096)] == [1, 1, 2, 8]
    props = properties_for({"schema_version": "1.0", "model": {"name": "yolox-nano"}, "source_id": "cam"}, "result")
    assert props == {"schema_version": "1.0", "model": "yolox-nano", "source_id": "cam", "type": "result"}
    assert properties_size(props) == len("schema_version1.0modelyolox-nanosource_idcamtyperesult")


def test_small_events_share_one_unit() -> None:
    """Ten ~350-byte events: one batch message of at most 4 KB instead of ten messages."""
    sequencer = Sequencer("e")
    items = [item(n, padded(sequencer, 250)) for n in range(10)]
    messages, oversize = pack(items, batch=True)
    assert oversize == []
    assert [(m.kind, m.events, m.units) for m in messages] == [("result", 10, 1)]
    body = json.loads(messages[0].payload)
    assert (body["type"], body["source_id"], body["seq"]) == ("batch", "cam", 1)
    assert [e["seq"] for e in body["events"]] == list(range(1, 11))
    assert [e["message_id"] for e in body["events"]] == [f"cam:e:{n}" for n in range(1, 11)]
    assert messages[0].properties["type"] == "batch"
    assert messages[0].size <= UNIT_BYTES
    free, _ = pack(items, batch=True, unit_bytes=FREE_TIER_UNIT_BYTES)
    assert [m.units for m in free] == [8]
    assert sum(units(len(i.event.payload()) + properties_size(properties_for(i.event.body, "result")))
               for i in items) == 10


def test_batches_keep_outputs_and_sources_apart_and_lone_events_plain() -> None:
    """Different outputs or sources never share a message; a batch of one is sent as the plain event."""
    sequencer = Sequencer("e")
    items = [item(1, padded(sequencer, 100)), item(2, padded(sequencer, 100, "heartbeat")),
             item(3, padded(sequencer, 100, source="door")), item(4, padded(sequencer, 100))]
    messages, _ = pack(items, batch=True)
    assert [(m.output, m.row_ids, m.kind) for m in messages] == [
        ("results", (1, 4), "result"), ("heartbeat", (2,), "heartbeat"), ("results", (3,), "result")]
    assert json.loads(messages[1].payload)["type"] == "heartbeat"
    assert messages[1].message_id == items[1].event.message_id


def test_big_events_go_alone_and_too_big_ones_are_refused() -> None:
    """An event over 4 KB is its own message; one over 256 KB cannot be sent at all."""
    sequencer = Sequencer("e")
    items = [item(1, padded(sequencer, 100)), item(2, padded(sequencer, 10_000)), item(3, padded(sequencer, 100)),
             item(4, padded(sequencer, MAX_MESSAGE_BYTES))]
    messages, oversize = pack(items, batch=True)
    assert [(m.row_ids, m.units) for m in messages] == [((1,), 1), ((2,), 3), ((3,), 1)]
    assert [i.row_id for i in oversize] == [4]


@given(st.lists(st.tuples(st.integers(0, 6000), st.sampled_from(["result", "aggregate"]),
                          st.sampled_from(["a", "b"])), max_size=60))
def test_batching_never_costs_more_and_keeps_every_event_in_order(specs: list[tuple[int, str, str]]) -> None:
    """Batches are within one unit (unless of one event), lose nothing, keep order, and cost no more units."""
    sequencer = Sequencer("e")
    items = [item(n, padded(sequencer, size, kind, source)) for n, (size, kind, source) in enumerate(specs)]
    batched, _ = pack(items, batch=True)
    plain, _ = pack(items, batch=False)
    free_batched, _ = pack(items, batch=True, unit_bytes=FREE_TIER_UNIT_BYTES)
    free_plain, _ = pack(items, batch=False, unit_bytes=FREE_TIER_UNIT_BYTES)
    assert sum(m.units for m in free_batched) <= sum(m.units for m in free_plain)
    assert all(m.events == 1 or m.size <= UNIT_BYTES for m in batched)
    assert sorted(r for m in batched for r in m.row_ids) == list(range(len(items)))
    for key in {(i.event.output, i.event.source_id) for i in items}:
        order = [r for m in batched for r in m.row_ids
                 if (items[r].event.output, items[r].event.source_id) == key]
        assert order == sorted(order)
    assert sum(m.units for m in batched) <= sum(m.units for m in plain)
    assert len(plain) == len(items)


def test_usage_survives_a_restart(tmp_path: Path, clock: Clock, open_outbox: OpenOutbox) -> None:
    """Messages and units sent today are persisted in the outbox database."""
    outbox = Outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    budget = DailyBudget(100, outbox, clock=clock)
    for cost in (1, 1, 3):
        budget.record(cost)
    outbox.close()
    reopened = open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    again = DailyBudget(100, reopened, clock=clock).stats()
    assert (again.messages_sent_today, again.units_used_today, again.budget_remaining) == (3, 5, 95)


def test_the_budget_resets_at_utc_midnight(tmp_path: Path, clock: Clock, open_outbox: OpenOutbox) -> None:
    """Spent at 23:59:59 UTC, it allows sending again at 00:00:00, also after a restart across midnight."""
    clock.now = (clock.now // DAY + 1) * DAY - 1
    outbox = open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    budget = DailyBudget(2, outbox, clock=clock)
    budget.record(2)
    assert not budget.allows(1, heartbeat=True)
    assert budget.seconds_to_reset() == 1
    clock.advance(1)
    restarted = DailyBudget(2, outbox, clock=clock)
    assert restarted.allows(2, heartbeat=False)
    assert restarted.stats().units_used_today == 0


def test_heartbeats_keep_a_reserve_and_nothing_exceeds_the_budget(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """Results stop at limit minus the heartbeat reserve; heartbeats go on until the limit, then nothing."""
    assert heartbeat_reserve(8000, 300) == 288
    assert heartbeat_reserve(1000, 60) == 100
    assert heartbeat_reserve(0, 60) == 0
    outbox = open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    budget = DailyBudget(10, outbox, reserve=2, clock=clock)
    budget.record(8)
    assert not budget.allows(1, heartbeat=False)
    assert budget.allows(2, heartbeat=True)
    assert not budget.allows(3, heartbeat=True)
    assert budget.stats().budget_remaining == 2
    assert DailyBudget(0, budget.store, clock=clock).allows(10**6, heartbeat=False)


def test_a_batch_never_mixes_models() -> None:
    """Results of two models (a swap mid-round) go in separate messages, each one's `model` property naming them."""
    sequencer = Sequencer("e")

    def result(model: str) -> Event:
        return sequencer.make("result", "cam", {"model": {"name": model, "version": "1"}}, 0.0)

    items = [item(n, result(model)) for n, model in enumerate(["a", "a", "b", "b", "a"], start=1)]
    messages, _ = pack(items, batch=True)
    assert [(m.properties["model"], m.row_ids) for m in messages] == [("a", (1, 2, 5)), ("b", (3, 4))]
    for message in messages:
        body = json.loads(message.payload)
        assert {e["model"]["name"] for e in body["events"]} == {message.properties["model"]}
