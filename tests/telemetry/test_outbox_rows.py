"""The outbox's one delete path: every way a row leaves (ack, discard, expiry, drop for space, compaction) keeps the
in-memory depth and bytes equal to the file and moves its persisted counter by exactly the rows it removed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from visionedge.config import OutboxSettings
from visionedge.telemetry.events import Event, Sequencer
from visionedge.telemetry.outbox import FILENAME, ROW_OVERHEAD, Outbox, OutboxStats

from .support import Clock, record


def in_file(folder: Path) -> tuple[int, int]:
    """Rows and accounted bytes as a second connection reads them from the file."""
    conn = sqlite3.connect(folder / FILENAME)
    try:
        count, size = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events").fetchone()
    finally:
        conn.close()
    return int(count), int(size) + int(count) * ROW_OVERHEAD


def events(sequencer: Sequencer, clock: Clock, n: int) -> list[Event]:
    """`n` result events from one camera, 2 s apart."""
    return [sequencer.make("result", "cam", record({"person": i % 3}), clock.advance(2.0)) for i in range(n)]


def ack_four(outbox: Outbox, clock: Clock) -> None:
    """The sender's acknowledgement of a batch."""
    outbox.ack([i.row_id for i in outbox.next_batch(4, live_first=False)])


def discard_three(outbox: Outbox, clock: Clock) -> None:
    """The sender gives up on events that can never be sent."""
    outbox.discard([i.row_id for i in outbox.next_batch(3, live_first=False)], "too large")


def expire_all(outbox: Outbox, clock: Clock) -> None:
    """Every stored event passes max_age_h."""
    clock.advance(2 * 3600.0)
    outbox.next_batch(1, live_first=False)


def drop_for_space(outbox: Outbox, clock: Clock) -> None:
    """A smaller cap with overflow drop-oldest."""
    outbox.update(OutboxSettings(max_mb=0.004, max_age_h=1, overflow="drop-oldest"))


def compact(outbox: Outbox, clock: Clock) -> None:
    """A smaller cap with overflow compact: results merged into aggregates, the merged rows deleted."""
    outbox.update(OutboxSettings(max_mb=0.004, max_age_h=1, overflow="compact"))


@pytest.mark.parametrize(("action", "counter", "removed"), [
    (ack_four, "sent", lambda before, after: 4),
    (discard_three, "dropped", lambda before, after: 3),
    (expire_all, "expired", lambda before, after: before.depth),
    (drop_for_space, "dropped", lambda before, after: before.depth - after.depth),
    (compact, "compacted", lambda before, after: after.compacted),
], ids=["ack", "discard", "expiry", "drop-oldest", "compaction"])
def test_each_delete_path_keeps_the_counts_equal_to_the_file(
        tmp_path: Path, clock: Clock, action: Callable[[Outbox, Clock], None], counter: str,
        removed: Callable[[OutboxStats, OutboxStats], int]) -> None:
    """After the action, depth and bytes equal the file's, and the counter rose by the rows the action removed."""
    outbox = Outbox(tmp_path, OutboxSettings(max_age_h=1), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    outbox.put(events(sequencer, clock, 60))
    before = outbox.stats()
    assert (before.depth, before.bytes) == in_file(tmp_path) == (60, before.bytes)
    action(outbox, clock)
    after = outbox.stats()
    assert (after.depth, after.bytes) == in_file(tmp_path)
    gone = removed(before, after)
    assert gone > 0
    assert getattr(after, counter) - getattr(before, counter) == gone
    if counter != "compacted":  # compaction leaves aggregates behind; every other path removes rows outright
        assert after.depth == before.depth - gone
    else:
        assert 0 < after.depth < before.depth
    outbox.close()


def test_an_event_acknowledged_twice_counts_once(tmp_path: Path, clock: Clock) -> None:
    """A repeated ack (a retry whose first confirmation arrived late) deletes nothing more and counts nothing more."""
    outbox = Outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    outbox.put(events(Sequencer(outbox.epoch), clock, 5))
    ids = [i.row_id for i in outbox.next_batch(2, live_first=False)]
    outbox.ack(ids)
    outbox.ack(ids)
    stats = outbox.stats()
    assert (stats.depth, stats.sent) == (3, 2)
    assert (stats.depth, stats.bytes) == in_file(tmp_path)
    outbox.close()
