"""The outbox's SQLite file: opening it (a corrupt one moved aside), its schema and epoch, the steady-clock rebase
after a reboot, transactions under one lock, the small key-value table, and closing."""

from __future__ import annotations

import functools
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from visionedge.durable import move_aside
from visionedge.errors import VisionEdgeError

log = logging.getLogger(__name__)

FILENAME: Final = "outbox.sqlite"
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
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class OutboxClosed(VisionEdgeError):
    """The outbox was closed; the caller (the sender thread) should stop."""


class OutboxError(VisionEdgeError):
    """The outbox cannot be opened (unwritable data_dir, disk error); telemetry cannot be made durable."""


class _CorruptDatabase(Exception):
    """PRAGMA quick_check found damage."""


class OutboxFile:
    """One SQLite file in WAL mode with synchronous=FULL, used under one lock from any thread."""

    def __init__(self, data_dir: Path, clock: Callable[[], float], steady: Callable[[], float],
                 on_rollback: Callable[[sqlite3.Connection], None]) -> None:
        self.path = data_dir / FILENAME
        self.lock = threading.RLock()
        self.on_rollback = on_rollback
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self.conn: sqlite3.Connection | None = self._open()
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(f"cannot open the telemetry outbox {self.path}: {err}") from err
        _rebase_steady(self.conn, steady(), clock())
        self.epoch = str(self.conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])

    def live(self) -> sqlite3.Connection:
        """The open connection, or OutboxClosed."""
        if self.conn is None:
            raise OutboxClosed("the outbox is closed")
        return self.conn

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock (fsync'd unless not durable); on error roll back and let the
        owner of the in-memory counts recount them (`on_rollback`)."""
        with self.lock:
            conn = self.live()
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
                    self.on_rollback(conn)
                    raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    def get_meta(self, key: str) -> str | None:
        """A small persisted value (the budget keeps its day and usage here)."""
        with self.lock:
            row = self.live().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the database; later calls raise OutboxClosed."""
        with self.lock:
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.close()

    def _open(self) -> sqlite3.Connection:
        """Open (creating if needed); a corrupt file is moved aside and replaced by an empty one, and counted."""
        try:
            return self._connect()
        except (sqlite3.DatabaseError, _CorruptDatabase) as err:
            if isinstance(err, sqlite3.DatabaseError) and \
                    (getattr(err, "sqlite_errorcode", 0) & 0xFF) not in _CORRUPT_CODES:
                raise
            aside = move_aside(self.path, ("-wal", "-shm"))  # kept for a post-mortem
            log.error("outbox %s is corrupt (%s): moved it to %s and started an empty outbox; the events it held "
                      "are lost", self.path, err, aside)
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        bump(conn, "corrupt_resets", 1)
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


def set_meta(conn: sqlite3.Connection, values: Mapping[str, str]) -> None:
    """Store small values inside the caller's transaction."""
    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))


def bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    """Add to a persisted counter inside the caller's transaction."""
    if by:
        conn.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                     (name, by, by))


def _rebase_steady(conn: sqlite3.Connection, now: float, wall: float) -> None:
    """Carry the rows' steady times over a reboot (or from a file written before they were stored)."""
    boot = _boot_id()
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('steady.boot', 'steady.last')"))
    last = float(meta.get("steady.last", now))
    conn.execute("BEGIN IMMEDIATE")
    if meta.get("steady.boot", boot) != boot or last > now:
        conn.execute("UPDATE events SET steady = steady + ?", (now - last,))
    conn.execute("UPDATE events SET steady = ? - max(0, ? - created) WHERE steady IS NULL", (now, wall))
    set_meta(conn, {"steady.boot": boot, "steady.last": repr(now)})
    conn.execute("COMMIT")


def _boot_id() -> str:
    """This boot's id (Linux); the steady clock restarts with each boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


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
