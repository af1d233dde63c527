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
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from visionedge import outputs
from visionedge.config import OutboxSettings
from visionedge.errors import VisionEdgeError
from visionedge.result import SCHEMA_VERSION
from visionedge.telemetry.events import Event, WindowSummary, dumps, message_id

log = logging.getLogger(__name__)

FILENAME: Final = "outbox.sqlite"
ROW_OVERHEAD: Final = 96
"""Bytes counted per row on top of its body: ids, seq, timestamps, index entries."""
LOW_WATER: Final = 0.9
"""Shrink to this share of the cap, so a full outbox is not compacted again on every put."""
COMPACT_CHUNK: Final = 1000
"""Result events merged per compaction pass."""
DROP_ORDER: Final = ("heartbeat", "result", "aggregate", "event")
"""What a full outbox drops first: a stale heartbeat says least (the next one supersedes it), then single results,
then aggregates (each stands for many results), and last the rare events, the dropped-telemetry notice among them,
so the cloud still learns what was lost."""
LOSS_LOG_INTERVAL_S: Final = 60.0
"""A full outbox loses events on every put: say so at most once a minute, with the totals since."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    output TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created REAL NOT NULL,
    steady REAL,
    size INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
CREATE TABLE IF NOT EXISTS sources (source_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_SELECT = "SELECT id, output, body, message_id, source_id, seq, created, size FROM events "
_ANY_KIND = "(?1 IS NULL OR kind IN (SELECT value FROM json_each(?1)))"
_LIVE = _SELECT + "WHERE id > ?2 AND " + _ANY_KIND + " ORDER BY id LIMIT ?3"
_BACKLOG = _SELECT + "WHERE id <= ?2 AND " + _ANY_KIND + " ORDER BY id LIMIT ?3"
_OLDEST_RESULTS = _SELECT + "WHERE kind = 'result' ORDER BY id LIMIT ?"
_OLDEST_OF_KIND = "SELECT id, size FROM events WHERE kind = ? ORDER BY id"
_SIZE_OF_IDS = "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM events WHERE id IN (SELECT value FROM json_each(?))"
_DELETE_IDS = "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))"
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class OutboxClosed(VisionEdgeError):
    """The outbox was closed; the caller (the sender thread) should stop."""


class OutboxError(VisionEdgeError):
    """The outbox cannot be opened (unwritable data_dir, disk error); telemetry cannot be made durable."""


class _CorruptDatabase(Exception):
    """PRAGMA quick_check found damage."""


@dataclass(frozen=True)
class OutboxItem:
    """An event handed to the sender, with the row id it acknowledges."""

    row_id: int
    event: Event
    size: int


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
        self.path = data_dir / FILENAME
        self.settings = settings
        self.compact_window_s = compact_window_s
        self.clock = clock
        self.steady = steady
        self._lock = threading.RLock()
        self._new = threading.Event()
        self._leased: set[int] = set()
        self._unlogged: dict[str, int] = defaultdict(int)
        self._last_loss_log = -LOSS_LOG_INTERVAL_S
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = self._open()
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(f"cannot open the telemetry outbox {self.path}: {err}") from err
        conn = self._conn
        self._rebase_steady(conn)
        self.epoch = str(conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        self._rows, self._bytes = self._count(conn)
        self._mark = self._last_id(conn)
        log.info("outbox %s: %d events waiting, %.1f MB, epoch %s", self.path, self._rows, self._bytes / 1e6,
                 self.epoch)

    # -- producer side -------------------------------------------------------------------------------------------

    def put(self, events: Sequence[Event], meta: Mapping[str, str] | None = None) -> None:
        """Store events (and `meta` values in the same commit); committed (fsync'd) before returning, then the size and
        age bounds are enforced."""
        if not events and not meta:
            return
        rows = []
        steady = self.steady()
        for event in events:
            text = event.payload().decode("utf-8")
            rows.append((event.source_id, event.seq, event.kind, event.output, event.message_id, event.created,
                         len(text.encode("utf-8")), text, steady))
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO events (source_id, seq, kind, output, message_id, created, size, body, steady) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('steady.last', ?)", (repr(steady),))
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list((meta or {}).items()))
            conn.executemany(
                "INSERT INTO sources VALUES (?, ?) "
                "ON CONFLICT(source_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                [(e.source_id, e.seq) for e in events])
            self._rows += len(rows)
            self._bytes += sum(r[6] + ROW_OVERHEAD for r in rows)
            self._expire(conn)
            self._enforce_size(conn)
        if events:
            self._new.set()

    def last_seqs(self) -> dict[str, int]:
        """The highest seq ever stored per source, so numbering continues after a restart."""
        with self._lock:
            rows = self._live().execute("SELECT source_id, last_seq FROM sources").fetchall()
        return {str(source): int(seq) for source, seq in rows}

    # -- consumer side -------------------------------------------------------------------------------------------

    def next_batch(self, limit: int, live_first: bool, kinds: Collection[str] | None = None) -> list[OutboxItem]:
        """Up to `limit` unacknowledged events in sending order (see the module docstring)."""
        with self._lock:
            self._new.clear()
            with self._transaction() as conn:
                self._expire(conn)
            conn = self._live()
            wanted = None if kinds is None else json.dumps(list(kinds))
            mark = self._mark if live_first else -1
            rows = conn.execute(_LIVE, (wanted, mark, limit)).fetchall()
            if live_first and len(rows) < limit:
                rows += conn.execute(_BACKLOG, (wanted, mark, limit - len(rows))).fetchall()
            items = [_item(row) for row in rows]
            self._leased = {item.row_id for item in items}
            return items

    def hold(self, row_ids: Iterable[int]) -> None:
        """Narrow the rows in flight to these (the message being retried): the rest of the batch may be compacted or
        dropped again, and the caller must not send or acknowledge it without a new next_batch."""
        with self._lock:
            self._leased &= set(row_ids)

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
        with self._lock:
            self._mark = self._last_id(self._live())

    def wait(self, timeout: float) -> bool:
        """Block until an event was put since the last `next_batch`, or timeout; True if one was."""
        return self._new.wait(timeout)

    # -- state ---------------------------------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Depth, age of the oldest event, accounted bytes and the persisted loss/sent counters (cheap: indexed)."""
        with self._lock:
            conn = self._live()
            oldest = conn.execute("SELECT MIN(steady) FROM events").fetchone()[0]
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            depth, size = self._rows, self._bytes
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
        with self._transaction() as conn:
            self.settings = settings
            if compact_window_s is not None:
                self.compact_window_s = compact_window_s
            self._expire(conn)
            self._enforce_size(conn)

    def meta_like(self, prefix: str) -> dict[str, str]:
        """Every persisted value whose key starts with `prefix` (the scene output keeps one per source)."""
        with self._lock:
            rows = self._live().execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
                                        (len(prefix), prefix)).fetchall()
        return {str(k): str(v) for k, v in rows}

    def get_meta(self, key: str) -> str | None:
        """A small persisted value (the budget keeps its day and usage here)."""
        with self._lock:
            row = self._live().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: Mapping[str, str]) -> None:
        """Persist small values in one transaction."""
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def close(self) -> None:
        """Close the database; later calls raise OutboxClosed."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
        self._new.set()

    # -- internals -----------------------------------------------------------------------------------------------

    def _live(self) -> sqlite3.Connection:
        """The open connection, or OutboxClosed."""
        if self._conn is None:
            raise OutboxClosed("the outbox is closed")
        return self._conn

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock (fsync'd unless not durable); on error roll back and recount."""
        with self._lock:
            conn = self._live()
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")  # inside: a COMMIT refused (disk full) must not leave counts it never made
                except BaseException:
                    if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
                        conn.execute("ROLLBACK")
                    self._rows, self._bytes = self._count(conn)
                    raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    def _remove(self, ids: list[int], counter: str, meta: Mapping[str, str] | None = None,
                durable: bool = True) -> None:
        """Delete rows by id and add how many went to `counter` (sent or dropped), with optional meta values."""
        if not ids:
            return
        with self._transaction(durable) as conn:
            if meta:
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))
            wanted = json.dumps(ids)
            size, count = conn.execute(_SIZE_OF_IDS, (wanted,)).fetchone()
            conn.execute(_DELETE_IDS, (wanted,))
            self._rows -= int(count)
            self._bytes -= int(size) + int(count) * ROW_OVERHEAD
            _bump(conn, counter, int(count))
            self._leased.difference_update(ids)

    def _expire(self, conn: sqlite3.Connection) -> None:
        """Drop events older than max_age_h (not those in flight), counted as dropped and expired."""
        cutoff = self.steady() - self.settings.max_age_h * 3600.0
        rows = conn.execute("SELECT id, size FROM events WHERE steady < ? ORDER BY id", (cutoff,)).fetchall()
        rows = [(i, s) for i, s in rows if i not in self._leased]
        if not rows:
            return
        conn.executemany("DELETE FROM events WHERE id = ?", [(i,) for i, _ in rows])
        self._rows -= len(rows)
        self._bytes -= sum(s + ROW_OVERHEAD for _, s in rows)
        _bump(conn, "dropped", len(rows))
        _bump(conn, "expired", len(rows))
        self._note_loss("expired", len(rows))

    def _enforce_size(self, conn: sqlite3.Connection) -> None:
        """Shrink below LOW_WATER x max_mb by compaction and/or dropping the oldest, as the overflow policy says."""
        cap = self.settings.max_mb * 1024 * 1024
        if self._bytes <= cap:
            return
        in_flight = self._leased_bytes(conn)
        if self._bytes - in_flight <= cap:
            return
        target = cap * LOW_WATER + in_flight
        while self._bytes > target:
            if self.settings.overflow == "compact":
                merged = self._compact_chunk(conn)
                if merged:
                    self._note_loss("compacted", merged)
                    continue
            removed = self._drop_oldest(conn, self._bytes - target)
            if not removed:
                break
            self._note_loss("dropped", removed)

    def _leased_bytes(self, conn: sqlite3.Connection) -> int:
        """Bytes of the rows in flight: the sender's batch, which neither compaction nor drops may touch, so it does
        not count against the cap (else a batch bigger than the cap would make every new event, the loss notice
        included, be dropped as soon as it is stored)."""
        if not self._leased:
            return 0
        size, count = conn.execute(_SIZE_OF_IDS, (json.dumps(list(self._leased)),)).fetchone()
        return int(size) + int(count) * ROW_OVERHEAD

    def _note_loss(self, kind: str, count: int) -> None:
        """Log compaction, drops and expiry at most once per LOSS_LOG_INTERVAL_S, with the totals since the last."""
        self._unlogged[kind] += count
        now = time.monotonic()
        if now - self._last_loss_log < LOSS_LOG_INTERVAL_S:
            return
        counts, self._unlogged = self._unlogged, defaultdict(int)
        self._last_loss_log = now
        log.warning("outbox (cap %s MB, max age %s h, overflow %s): since the last notice %d result(s) compacted "
                    "into aggregates, %d event(s) dropped for space, %d expired; now %.2f MB",
                    self.settings.max_mb, self.settings.max_age_h, self.settings.overflow, counts["compacted"],
                    counts["dropped"], counts["expired"], self._bytes / 2**20)

    def _compact_chunk(self, conn: sqlite3.Connection) -> int:
        """Merge the oldest result events into one aggregate per source and window; returns results merged."""
        rows = [r for r in conn.execute(_OLDEST_RESULTS, (COMPACT_CHUNK + len(self._leased),)).fetchall()
                if r[0] not in self._leased][:COMPACT_CHUNK]
        if not rows:
            return 0
        groups: dict[tuple[str, int, int], list[OutboxItem]] = defaultdict(list)
        runs: dict[str, tuple[int, Any, int]] = {}
        for row in rows:
            item = _item(row)
            window, model = int(item.event.created // self.compact_window_s), item.event.body.get("model")
            before = runs.get(item.event.source_id)
            run = 0 if before is None else before[2] + (before[:2] != (window, model))
            runs[item.event.source_id] = (window, model, run)
            groups[(item.event.source_id, window, run)].append(item)
        for (source_id, window, _), items in groups.items():
            summary = WindowSummary(window * self.compact_window_s, self.compact_window_s)
            for item in items:
                summary.add(item.event.body)
            first, last = items[0].event, items[-1].event
            body: dict[str, Any] = {"type": "aggregate", "source_id": source_id, "seq": first.seq,
                                    "seq_last": last.seq, "schema_version": SCHEMA_VERSION,
                                    "compacted": len(items), **summary.fields()}
            text = dumps(body).decode("utf-8")
            size = len(text.encode("utf-8"))
            conn.execute("UPDATE events SET kind = 'aggregate', output = ?, message_id = ?, size = ?, body = ? "
                         "WHERE id = ?", (outputs.AGGREGATES, message_id(source_id, self.epoch,
                                                                         f"{first.seq}-{last.seq}"),
                                          size, text, items[0].row_id))
            conn.executemany("DELETE FROM events WHERE id = ?", [(i.row_id,) for i in items[1:]])
            self._rows -= len(items) - 1
            self._bytes += size - sum(i.size for i in items) - (len(items) - 1) * ROW_OVERHEAD
        _bump(conn, "compacted", len(rows))
        return len(rows)

    def _drop_oldest(self, conn: sqlite3.Connection, need: float) -> int:
        """Delete events (not those in flight) until `need` bytes are freed, the least telling kind first and the
        oldest first within a kind (DROP_ORDER); returns how many."""
        ids: list[int] = []
        freed = 0
        by_kind = (conn.execute(_OLDEST_OF_KIND, (kind,)) for kind in DROP_ORDER)
        for row_id, size in itertools.chain.from_iterable(by_kind):
            if row_id in self._leased:
                continue
            ids.append(row_id)
            freed += size + ROW_OVERHEAD
            if freed >= need:
                break
        if ids:
            conn.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in ids])
            self._rows -= len(ids)
            self._bytes -= freed
            _bump(conn, "dropped", len(ids))
        return len(ids)

    def _open(self) -> sqlite3.Connection:
        """Open (creating if needed); a corrupt file is moved aside and replaced by an empty one, and counted."""
        try:
            return self._connect()
        except (sqlite3.DatabaseError, _CorruptDatabase) as err:
            if isinstance(err, sqlite3.DatabaseError) and \
                    (getattr(err, "sqlite_errorcode", 0) & 0xFF) not in _CORRUPT_CODES:
                raise
            aside = self._move_aside()
            log.error("outbox %s is corrupt (%s): moved it to %s and started an empty outbox; the events it held "
                      "are lost", self.path, err, aside)
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        _bump(conn, "corrupt_resets", 1)
        conn.execute("COMMIT")
        return conn

    def _connect(self) -> sqlite3.Connection:
        """Connect, check integrity, set WAL + synchronous=FULL, create the schema and the epoch if new."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise _CorruptDatabase(f"quick_check: {check[0] if check else 'no answer'}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                log.warning("outbox %s: journal mode is %s, not wal", self.path, mode)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=8388608")
            found = {table: columns for table, columns in _columns(conn).items() if columns}
            if found and found != _expected_columns():  # written by another version or program: never misread
                raise _CorruptDatabase(f"unexpected schema {found}")
            conn.executescript(_SCHEMA)
            if "steady" not in {row[1] for row in conn.execute("PRAGMA table_info(events)")}:
                conn.execute("ALTER TABLE events ADD COLUMN steady REAL")
            conn.execute("CREATE INDEX IF NOT EXISTS events_steady ON events (steady)")
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (secrets.token_hex(4),))
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> Path:
        """Rename the database (and its WAL) out of the way, keeping it for a post-mortem."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            extra = Path(f"{self.path}{suffix}")
            if extra.exists():
                os.replace(extra, Path(f"{aside}{suffix}"))
        return aside

    def _rebase_steady(self, conn: sqlite3.Connection) -> None:
        """Carry the rows' steady times over a reboot (or from a file written before they were stored)."""
        now, boot = self.steady(), _boot_id()
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('steady.boot', 'steady.last')"))
        last = float(meta.get("steady.last", now))
        conn.execute("BEGIN IMMEDIATE")
        if meta.get("steady.boot", boot) != boot or last > now:
            conn.execute("UPDATE events SET steady = steady + ?", (now - last,))
        conn.execute("UPDATE events SET steady = ? - max(0, ? - created) WHERE steady IS NULL", (now, self.clock()))
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                         [("steady.boot", boot), ("steady.last", repr(now))])
        conn.execute("COMMIT")

    @staticmethod
    def _count(conn: sqlite3.Connection) -> tuple[int, int]:
        """Rows and accounted bytes, read once at open (and after a rollback); kept up to date in memory after."""
        size, count = conn.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM events").fetchone()
        return int(count), int(size) + int(count) * ROW_OVERHEAD

    @staticmethod
    def _last_id(conn: sqlite3.Connection) -> int:
        """The highest row id ever given (AUTOINCREMENT never reuses one), which `mark_link_up` records."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return 0 if row is None else int(row[0])


def _boot_id() -> str:
    """This boot's id (Linux); the steady clock restarts with each boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    """Add to a persisted counter inside the caller's transaction."""
    if by:
        conn.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                     (name, by, by))


def _item(row: tuple[Any, ...]) -> OutboxItem:
    """An OutboxItem from a row of the _SELECT columns."""
    row_id, output, body, mid, source_id, seq, created, size = row
    return OutboxItem(int(row_id), Event(str(output), json.loads(body), str(mid), str(source_id), int(seq),
                                         float(created)), int(size))


def _columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Column names of the outbox's tables, as this database has them."""
    tables = ("events", "sources", "counters", "meta")
    return {t: [str(row[1]) for row in conn.execute(f"PRAGMA table_info({t})")] for t in tables}


@functools.cache
def _expected_columns() -> dict[str, list[str]]:
    """The columns _SCHEMA creates: a file written by another version or program is set aside, not misread."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        return _columns(conn)
    finally:
        conn.close()
