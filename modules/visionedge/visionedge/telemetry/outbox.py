"""The durable local queue between the policy and the sender: SQLite in WAL mode, bounded by size and age.

Durability: `put` commits before it returns, with `synchronous=FULL`, so an event survives kill -9 *and* a power
cut (NORMAL in WAL mode survives kill -9 but may lose the last commits on power loss, and edge devices lose power).
The cost, one fsync per `put`, is small because the policy lets through at most a few events per second.

Order (`next_batch`): oldest first by insertion, which is in seq order per source. With `live_first`, events put
after the last `mark_link_up()` (the sender calls it before each retry after a failed send; opening the outbox
marks too, so a previous run's events are backlog) go first, oldest first; then the backlog drains oldest first.
Per source, seq order therefore holds within the live part and within the backlog, not across them: consumers
order by seq.

Bounds: `bytes` counts stored JSON bodies plus ~96 B per row; SQLite pages and indexes make the file somewhat larger,
and free pages are reused rather than returned to the file system. Past `max_mb` the outbox shrinks to 90 % of it
(the rows in flight, at most one sender batch, do not count until acknowledged: they can be neither compacted nor
dropped): with overflow "compact" it first merges the oldest result events into one aggregate per source and window
(counts and max confidence per label, `compacted` = how many results, `seq`..`seq_last` = the range replaced; a model
swap starts a new aggregate, so none mixes models), then drops events if compaction is not enough; with "drop-oldest"
it drops. Drops take heartbeats first, then results, then aggregates, then events (state changes, model updates, the
dropped-telemetry notice), oldest first within each, so what summarises the loss survives it. Events older than
`max_age_h` are dropped (they are counted as dropped and as expired). Every loss is counted in persisted counters.

Age is measured on the steady (monotonic) clock, never the wall clock, so NTP setting a clock that booted at 1970
does not expire the queue, and a clock stepped back does not keep events forever. Each row stores its steady
time; after a reboot (a new boot id, or a steady clock behind the last one stored) the stored times are shifted so
that ages continue from where they were: time powered off does not age events.

A database that SQLite reports corrupt is moved aside (`outbox.sqlite.corrupt-<UTC time>`) and a fresh one created;
the fresh one gets a new epoch, so message ids never repeat those of the lost file.

This module is the queue protocol and the API; the jobs behind it live beside it: `outbox_file.py` (the SQLite
file's life, transactions, the key-value table), `outbox_rows.py` (the one place rows are inserted, rewritten and
deleted, with the counts that follow), `outbox_retention.py` (expiry, the size cap, drop order, the loss log) and
`outbox_compaction.py` (results merged into aggregates).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from visionedge.config import OutboxSettings
from visionedge.telemetry.events import Event
from visionedge.telemetry.outbox_compaction import COMPACT_CHUNK, Compactor
from visionedge.telemetry.outbox_file import FILENAME, OutboxClosed, OutboxError, OutboxFile, set_meta
from visionedge.telemetry.outbox_retention import DROP_ORDER, LOSS_LOG_INTERVAL_S, LOW_WATER, Retention
from visionedge.telemetry.outbox_rows import ROW_OVERHEAD, SELECT, OutboxItem, Rows, item

__all__ = ["COMPACT_CHUNK", "DROP_ORDER", "FILENAME", "LOSS_LOG_INTERVAL_S", "LOW_WATER", "ROW_OVERHEAD", "Outbox",
           "OutboxClosed", "OutboxError", "OutboxItem", "OutboxStats"]

log = logging.getLogger(__name__)

_ANY_KIND: Final = "(?1 IS NULL OR kind IN (SELECT value FROM json_each(?1)))"
_LIVE: Final = SELECT + "WHERE id > ?2 AND " + _ANY_KIND + " ORDER BY id LIMIT ?3"
_BACKLOG: Final = SELECT + "WHERE id <= ?2 AND " + _ANY_KIND + " ORDER BY id LIMIT ?3"


@dataclass(frozen=True)
class OutboxStats:
    """Depth and loss counters for heartbeats, metrics and the reported twin."""

    depth: int
    oldest_age_s: float
    bytes: int
    dropped: int
    expired: int
    compacted: int
    sent: int
    corrupt_resets: int


class Outbox:
    """Durable FIFO of events with persisted seqs, counters and small metadata; safe to use from any thread."""

    def __init__(self, data_dir: Path, settings: OutboxSettings, *, compact_window_s: float = 60.0,
                 clock: Callable[[], float] = time.time, steady: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.steady = steady
        self._new = threading.Event()
        self._file = OutboxFile(data_dir, clock, steady, on_rollback=lambda conn: self._rows.recount(conn))
        self.path, self.epoch = self._file.path, self._file.epoch
        conn = self._file.live()
        self._rows = Rows(conn)
        self._compactor = Compactor(self._rows, self.epoch, compact_window_s)
        self._retention = Retention(self._rows, self._compactor, settings, steady)
        self._mark = _last_id(conn)
        log.info("outbox %s: %d events waiting, %.1f MB, epoch %s", self.path, self._rows.rows,
                 self._rows.bytes / 1e6, self.epoch)

    @property
    def settings(self) -> OutboxSettings:
        """The size and age bounds in force."""
        return self._retention.settings

    @property
    def compact_window_s(self) -> float:
        """The window compaction merges results into."""
        return self._compactor.window_s

    @property
    def _conn(self) -> sqlite3.Connection | None:
        """The SQLite connection (None once closed), for tests that make the disk misbehave."""
        return self._file.conn

    # -- producer side -------------------------------------------------------------------------------------------

    def put(self, events: Sequence[Event]) -> None:
        """Store events; committed (fsync'd) before returning, then the size and age bounds are enforced."""
        if not events:
            return
        steady = self.steady()
        with self._file.transaction() as conn:
            self._rows.insert(conn, events, steady)
            set_meta(conn, {"steady.last": repr(steady)})
            self._retention.enforce(conn)
        self._new.set()

    def last_seqs(self) -> dict[str, int]:
        """The highest seq ever stored per source, so numbering continues after a restart."""
        with self._file.lock:
            rows = self._file.live().execute("SELECT source_id, last_seq FROM sources").fetchall()
        return {str(source): int(seq) for source, seq in rows}

    # -- consumer side -------------------------------------------------------------------------------------------

    def next_batch(self, limit: int, live_first: bool, kinds: Collection[str] | None = None) -> list[OutboxItem]:
        """Up to `limit` unacknowledged events in sending order (see the module docstring)."""
        with self._file.lock:
            self._new.clear()
            with self._file.transaction() as conn:
                self._retention.expire(conn)
            wanted = None if kinds is None else json.dumps(list(kinds))
            mark = self._mark if live_first else -1
            rows = conn.execute(_LIVE, (wanted, mark, limit)).fetchall()
            if live_first and len(rows) < limit:
                rows += conn.execute(_BACKLOG, (wanted, mark, limit - len(rows))).fetchall()
            items = [item(row) for row in rows]
            self._rows.leased = {one.row_id for one in items}
            return items

    def hold(self, row_ids: Iterable[int]) -> None:
        """Narrow the rows in flight to these (the message being retried): the rest of the batch may be compacted or
        dropped again, and the caller must not send or acknowledge it without a new next_batch."""
        with self._file.lock:
            self._rows.leased &= set(row_ids)

    def ack(self, row_ids: Iterable[int], meta: Mapping[str, str] | None = None) -> None:
        """Delete delivered events (only after the transport confirmed them), storing `meta` in the same commit.

        Not fsync'd (synchronous=NORMAL for this commit): a power cut may undo the last acks, which only repeats
        those messages, as at-least-once allows; the next durable commit fsyncs them anyway.
        """
        self._remove(list(row_ids), "sent", meta, durable=False)

    def discard(self, row_ids: Iterable[int], reason: str) -> None:
        """Delete events that can never be sent (e.g. larger than a message may be), counting them as dropped."""
        ids = list(row_ids)
        if ids:
            log.warning("outbox: dropping %d event(s): %s", len(ids), reason)
            self._remove(ids, "dropped")

    def mark_link_up(self) -> None:
        """Everything stored so far becomes backlog; events put from now on are live."""
        with self._file.lock:
            self._mark = _last_id(self._file.live())

    def wait(self, timeout: float) -> bool:
        """Block until an event was put since the last `next_batch`, or timeout; True if one was."""
        return self._new.wait(timeout)

    # -- state ---------------------------------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Depth, age of the oldest event, accounted bytes and the persisted loss/sent counters (cheap: indexed)."""
        with self._file.lock:
            conn = self._file.live()
            oldest = conn.execute("SELECT MIN(steady) FROM events").fetchone()[0]
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            depth, size = self._rows.rows, self._rows.bytes
        return OutboxStats(
            depth=depth,
            oldest_age_s=max(0.0, self.steady() - float(oldest)) if oldest is not None else 0.0,
            bytes=size,
            dropped=int(counters.get("dropped", 0)),
            expired=int(counters.get("expired", 0)),
            compacted=int(counters.get("compacted", 0)),
            sent=int(counters.get("sent", 0)),
            corrupt_resets=int(counters.get("corrupt_resets", 0)),
        )

    def update(self, settings: OutboxSettings, compact_window_s: float | None = None) -> None:
        """Apply new bounds at once (a smaller cap compacts or drops now)."""
        with self._file.transaction() as conn:
            self._retention.settings = settings
            if compact_window_s is not None:
                self._compactor.window_s = compact_window_s
            self._retention.enforce(conn)

    def get_meta(self, key: str) -> str | None:
        """A small persisted value (the budget keeps its day and usage here)."""
        return self._file.get_meta(key)

    def set_meta(self, values: Mapping[str, str]) -> None:
        """Persist small values in one transaction."""
        with self._file.transaction() as conn:
            set_meta(conn, values)

    def close(self) -> None:
        """Close the database; later calls raise OutboxClosed."""
        self._file.close()
        self._new.set()

    # -- internals -----------------------------------------------------------------------------------------------

    def _remove(self, ids: list[int], counter: str, meta: Mapping[str, str] | None = None,
                durable: bool = True) -> None:
        """Delete rows by id and add how many went to `counter` (sent or dropped), with optional meta values."""
        if not ids:
            return
        with self._file.transaction(durable) as conn:
            if meta:
                set_meta(conn, meta)
            self._rows.delete(conn, ids, (counter,))


def _last_id(conn: sqlite3.Connection) -> int:
    """The highest row id ever given (AUTOINCREMENT never reuses one), which `mark_link_up` records."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return 0 if row is None else int(row[0])
