"""The outbox: order, live-first, durability across kill -9, bounds and their counters, corruption."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from visionedge import outputs
from visionedge.config import OutboxSettings
from visionedge.telemetry.events import Event, Sequencer
from visionedge.telemetry.outbox import FILENAME, Outbox, OutboxError, OutboxItem

from .conftest import OpenOutbox
from .support import Clock, record

REPO_ROOT = Path(__file__).resolve().parents[2]


def results(sequencer: Sequencer, source: str, n: int, clock: Clock, step: float = 0.1,
            counts: dict[str, int] | None = None) -> list[Event]:
    """`n` result events for `source`, `step` seconds apart."""
    return [sequencer.make("result", source, record(counts or {"person": 2, "car": 1}, source_id=source),
                           clock.advance(step)) for _ in range(n)]


def seqs(items: list[OutboxItem]) -> list[tuple[str, int]]:
    """(source, seq) of each item, in order."""
    return [(i.event.source_id, i.event.seq) for i in items]


def test_events_come_out_in_order_per_source(tmp_path: Path, clock: Clock, open_outbox: OpenOutbox) -> None:
    """Interleaved sources come back oldest first, each in seq order, with bodies intact."""
    outbox = open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    for _ in range(5):
        outbox.put(results(sequencer, "a", 2, clock) + results(sequencer, "b", 1, clock))
    items = outbox.next_batch(100, live_first=False)
    assert [s for s in seqs(items) if s[0] == "a"] == [("a", n) for n in range(1, 11)]
    assert [s for s in seqs(items) if s[0] == "b"] == [("b", n) for n in range(1, 6)]
    assert items[0].event.body["counts"] == {"person": 2, "car": 1}
    assert outbox.next_batch(4, live_first=False) == items[:4]


def test_live_events_go_before_the_backlog_after_an_outage(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """After mark_link_up, events put since go first (oldest first), then the backlog oldest first."""
    outbox = open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    outbox.put(results(sequencer, "cam", 5, clock))
    outbox.mark_link_up()
    outbox.put(results(sequencer, "cam", 2, clock))
    assert [s for _, s in seqs(outbox.next_batch(100, live_first=True))] == [6, 7, 1, 2, 3, 4, 5]
    assert [s for _, s in seqs(outbox.next_batch(3, live_first=True))] == [6, 7, 1]
    assert [s for _, s in seqs(outbox.next_batch(100, live_first=False))] == [1, 2, 3, 4, 5, 6, 7]


def test_acked_events_are_gone_and_counted_and_state_survives_a_restart(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """Ack deletes; depth, counters, epoch and last seqs persist across reopening the file."""
    outbox = Outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    outbox.put(results(sequencer, "cam", 10, clock))
    outbox.ack([i.row_id for i in outbox.next_batch(4, live_first=False)])
    epoch = outbox.epoch
    outbox.close()

    reopened = open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady)
    stats = reopened.stats()
    assert (stats.depth, stats.sent, stats.dropped) == (6, 4, 0)
    assert reopened.epoch == epoch
    assert reopened.last_seqs() == {"cam": 10}
    assert [s for _, s in seqs(reopened.next_batch(100, live_first=True))] == [5, 6, 7, 8, 9, 10]


def test_the_database_is_in_wal_mode(tmp_path: Path) -> None:
    """Another connection sees journal_mode wal."""
    Outbox(tmp_path, OutboxSettings()).close()
    with closing(sqlite3.connect(tmp_path / FILENAME)) as conn:  # a Connection's `with` commits, it does not close
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_every_committed_event_survives_kill_9(tmp_path: Path, open_outbox: OpenOutbox) -> None:
    """A child prints each seq after put returned; after SIGKILL every printed seq is in the database."""
    with subprocess.Popen([sys.executable, "-m", "tests.telemetry.children", "outbox-writer", str(tmp_path)],
                          cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        printed = [int(child.stdout.readline()) for _ in range(300)]
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        printed += [int(line) for line in child.stdout.read().split()]

    outbox = open_outbox(tmp_path, OutboxSettings())
    stored = {i.event.seq for i in outbox.next_batch(100_000, live_first=False)}
    assert set(printed) <= stored
    assert printed == list(range(1, len(printed) + 1))
    assert outbox.last_seqs()["cam"] >= printed[-1]


def test_a_full_outbox_compacts_old_results_into_aggregates(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """Over max_mb, the oldest results become per-window aggregates: counted, and no detection is lost."""
    outbox = open_outbox(tmp_path, OutboxSettings(max_mb=0.05), compact_window_s=60, clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    for _ in range(40):
        outbox.put(results(sequencer, "cam", 10, clock, step=1.0))
    stats = outbox.stats()
    assert stats.compacted > 0
    assert stats.dropped == 0
    assert stats.bytes <= 0.05 * 1024 * 1024
    items = outbox.next_batch(100_000, live_first=False)
    aggregates = [i.event for i in items if i.event.kind == "aggregate"]
    assert aggregates
    assert all(e.output == outputs.AGGREGATES for e in aggregates)
    assert all(e.body["window_s"] == 60 and e.body["compacted"] == e.body["frames"] for e in aggregates)
    merged = sum(e.body["compacted"] for e in aggregates)
    assert merged == stats.compacted
    assert merged + sum(1 for i in items if i.event.kind == "result") == 400
    person = sum(e.body["labels"]["person"]["count"] for e in aggregates)
    assert person == 2 * merged
    covered = sorted(n for e in aggregates for n in range(e.seq, e.body["seq_last"] + 1))
    assert covered == list(range(1, merged + 1))


def test_drop_oldest_drops_and_counts(tmp_path: Path, clock: Clock, open_outbox: OpenOutbox) -> None:
    """With overflow drop-oldest the oldest events go, the newest stay, and every drop is counted."""
    outbox = open_outbox(tmp_path, OutboxSettings(max_mb=0.05, overflow="drop-oldest"), clock=clock,
                         steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    for _ in range(40):
        outbox.put(results(sequencer, "cam", 10, clock))
    stats = outbox.stats()
    kept = [s for _, s in seqs(outbox.next_batch(100_000, live_first=False))]
    assert stats.dropped > 0
    assert stats.compacted == 0
    assert stats.dropped + stats.depth == 400
    assert kept == list(range(stats.dropped + 1, 401))


def test_a_full_outbox_drops_heartbeats_then_results_and_keeps_the_loss_notice(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """Under a cap that compaction cannot meet, stale heartbeats go first, then results, then aggregates; the rare
    events (a state change, the dropped-telemetry notice) are kept even though they are the oldest."""
    outbox = open_outbox(tmp_path, OutboxSettings(max_mb=0.03, overflow="drop-oldest"), clock=clock,
                         steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    outbox.put([sequencer.make("event", "cam", {"event": "telemetry-dropped", "dropped": 1}, clock.advance(0.1)),
                sequencer.make("event", "cam", {"event": "source_state", "state": "lost"}, clock.advance(0.1))])
    outbox.put([sequencer.make("heartbeat", "cam", {"uptime_s": n}, clock.advance(0.1)) for n in range(5)])
    for _ in range(40):
        outbox.put(results(sequencer, "cam", 10, clock))
    kinds = Counter(i.event.kind for i in outbox.next_batch(100_000, live_first=False))
    stats = outbox.stats()
    assert stats.dropped == 5 + 400 - kinds["result"]
    assert (kinds["event"], kinds["heartbeat"]) == (2, 0)
    assert 0 < kinds["result"] < 400


def test_a_batch_in_flight_bigger_than_the_cap_does_not_make_every_new_event_go(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """During an outage the sender holds a batch (up to 200 events) that may alone exceed a small cap; it is not
    counted while in flight, so events stored meanwhile (the loss notice among them) are kept within the cap."""
    outbox = open_outbox(tmp_path, OutboxSettings(max_mb=1), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    outbox.put(results(sequencer, "cam", 200, clock))
    leased = outbox.next_batch(200, live_first=False)
    outbox.update(OutboxSettings(max_mb=0.03))
    assert sum(i.size for i in leased) > 0.03 * 1024 * 1024
    outbox.put([sequencer.make("event", "cam", {"event": "telemetry-dropped", "compacted": 1}, clock.advance(0.1))])
    outbox.put(results(sequencer, "cam", 20, clock))
    kept = outbox.next_batch(100_000, live_first=False)
    assert [i.event.kind for i in kept].count("event") == 1
    assert sum(1 for i in kept if i.event.kind == "result") == 220
    assert outbox.stats().dropped == 0


def test_events_older_than_max_age_are_dropped_and_counted(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """Past max_age_h an event is dropped, counted as dropped and as expired."""
    outbox = open_outbox(tmp_path, OutboxSettings(max_age_h=1), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    outbox.put(results(sequencer, "cam", 3, clock))
    clock.advance(1800)
    outbox.put(results(sequencer, "cam", 2, clock))
    clock.advance(1801)
    assert [s for _, s in seqs(outbox.next_batch(100, live_first=False))] == [4, 5]
    stats = outbox.stats()
    assert (stats.depth, stats.dropped, stats.expired) == (2, 3, 3)


def test_events_in_flight_are_neither_compacted_nor_dropped(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """Rows handed to the sender stay untouched by the bounds until acknowledged, so an ack never removes others."""
    outbox = open_outbox(tmp_path, OutboxSettings(max_mb=0.05), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    outbox.put(results(sequencer, "cam", 5, clock))
    leased = outbox.next_batch(5, live_first=False)
    for _ in range(40):
        outbox.put(results(sequencer, "cam", 10, clock))
    current = {i.row_id: i for i in outbox.next_batch(100_000, live_first=False)}
    assert all(current[i.row_id] == i for i in leased)


def test_a_corrupt_database_is_moved_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, open_outbox: OpenOutbox
) -> None:
    """Garbage in outbox.sqlite: it is renamed, the reason is logged, a fresh outbox with a new epoch works."""
    (tmp_path / FILENAME).write_bytes(b"this is not a database" * 200)
    with caplog.at_level(logging.ERROR):
        outbox = open_outbox(tmp_path, OutboxSettings())
    aside = list(tmp_path.glob(f"{FILENAME}.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    assert f"outbox {tmp_path / FILENAME} is corrupt (file is not a database): moved it to {aside[0]}" in caplog.text
    assert outbox.stats().corrupt_resets == 1
    sequencer = Sequencer(outbox.epoch)
    outbox.put([sequencer.make("heartbeat", "cam", {}, time.time())])
    assert outbox.stats().depth == 1


def test_an_unusable_data_dir_is_reported_with_the_path(tmp_path: Path) -> None:
    """A data_dir that is a file: OutboxError naming the outbox path and the OS reason."""
    (tmp_path / "data").write_text("not a folder", encoding="utf-8")
    with pytest.raises(OutboxError) as caught:
        Outbox(tmp_path / "data", OutboxSettings())
    assert str(caught.value) == (f"cannot open the telemetry outbox {tmp_path / 'data' / FILENAME}: "
                                 f"[Errno 17] File exists: '{tmp_path / 'data'}'")


def test_outbox_bytes_track_the_rows(tmp_path: Path, clock: Clock, open_outbox: OpenOutbox) -> None:
    """The in-memory depth and byte count equal a fresh count after mixed puts, acks, compaction and drops."""
    outbox = Outbox(tmp_path, OutboxSettings(max_mb=0.05), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    for n in range(30):
        outbox.put(results(sequencer, "cam", 7, clock, step=2.0, counts={"dog": n % 3}))
        if n % 4 == 0:
            outbox.ack([i.row_id for i in outbox.next_batch(3, live_first=True)])
    before = outbox.stats()
    outbox.close()
    after = open_outbox(tmp_path, OutboxSettings(max_mb=0.05), clock=clock, steady=clock.steady).stats()
    assert (before.depth, before.bytes) == (after.depth, after.bytes)
    assert Counter({"sent": before.sent}) == Counter({"sent": after.sent})


def test_compaction_never_folds_two_models_into_one_aggregate(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """Results of model a, then b, then a again in one window become three aggregates, one model each."""
    outbox = open_outbox(tmp_path, OutboxSettings(), compact_window_s=60, clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    for model in ("a", "b", "a"):
        outbox.put([sequencer.make("result", "cam", record({"person": 1}, model=model), clock.advance(0.1))
                    for _ in range(100)])
    outbox.update(OutboxSettings(max_mb=0.02))
    aggregates = [i.event for i in outbox.next_batch(1000, live_first=False) if i.event.kind == "aggregate"]
    assert [(e.body["model"]["name"], e.seq, e.body["seq_last"]) for e in aggregates][:3] == [
        ("a", 1, 100), ("b", 101, 200), ("a", 201, 300)]
