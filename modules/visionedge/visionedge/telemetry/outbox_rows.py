"""The outbox's rows: the one place they are inserted, rewritten and deleted, and the in-memory row and byte counts
and persisted counters that follow every change, so no caller adjusts a count by hand."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

from visionedge.telemetry.events import Event
from visionedge.telemetry.outbox_file import bump

ROW_OVERHEAD: Final = 96
"""Bytes counted per row on top of its body: ids, seq, timestamps, index entries."""
SELECT: Final = "SELECT id, output, body, message_id, source_id, seq, created, size FROM events "
"""The columns `item` reads."""
_SIZE_OF_IDS = "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM events WHERE id IN (SELECT value FROM json_each(?))"
_DELETE_IDS = "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))"


@dataclass(frozen=True)
class OutboxItem:
    """An event handed to the sender, with the row id it acknowledges."""

    row_id: int
    event: Event
    size: int


def item(row: tuple[Any, ...]) -> OutboxItem:
    """An OutboxItem from a row of the SELECT columns."""
    row_id, output, body, mid, source_id, seq, created, size = row
    return OutboxItem(int(row_id), Event(str(output), json.loads(body), str(mid), str(source_id), int(seq),
                                         float(created)), int(size))


class Rows:
    """Inserts, rewrites and deletes of event rows inside the caller's transaction, with the counts they change.

    `rows` and `bytes` are read from the file once (and again after a rollback) and kept up to date here; `leased`
    are the rows in flight, which only the sender's acknowledgement or discard may delete."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.leased: set[int] = set()
        self.rows, self.bytes = 0, 0
        self.recount(conn)

    def recount(self, conn: sqlite3.Connection) -> None:
        """Rows and accounted bytes as the file has them (at open, and after a rollback undid changes)."""
        size, count = conn.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM events").fetchone()
        self.rows, self.bytes = int(count), int(size) + int(count) * ROW_OVERHEAD

    def insert(self, conn: sqlite3.Connection, events: Sequence[Event], steady: float) -> None:
        """Store events with their steady time, and raise each source's highest seq."""
        rows = []
        for event in events:
            text = event.payload().decode("utf-8")
            rows.append((event.source_id, event.seq, event.kind, event.output, event.message_id, event.created,
                         len(text.encode("utf-8")), text, steady))
        conn.executemany(
            "INSERT INTO events (source_id, seq, kind, output, message_id, created, size, body, steady) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany(
            "INSERT INTO sources VALUES (?, ?) "
            "ON CONFLICT(source_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
            [(e.source_id, e.seq) for e in events])
        self.rows += len(rows)
        self.bytes += sum(r[6] + ROW_OVERHEAD for r in rows)

    def rewrite(self, conn: sqlite3.Connection, row: OutboxItem, event: Event) -> None:
        """Replace a row's event in place (compaction turns the first merged result into the aggregate)."""
        text = event.payload().decode("utf-8")
        size = len(text.encode("utf-8"))
        conn.execute("UPDATE events SET kind = ?, output = ?, message_id = ?, size = ?, body = ? WHERE id = ?",
                     (event.kind, event.output, event.message_id, size, text, row.row_id))
        self.bytes += size - row.size

    def delete(self, conn: sqlite3.Connection, ids: Collection[int], counters: Sequence[str] = ()) -> int:
        """Delete rows by id, adding how many went to each persisted counter (sent, dropped, expired); returns how
        many rows were deleted. The only DELETE of event rows."""
        if not ids:
            return 0
        wanted = json.dumps(list(ids))
        size, count = conn.execute(_SIZE_OF_IDS, (wanted,)).fetchone()
        conn.execute(_DELETE_IDS, (wanted,))
        self.rows -= int(count)
        self.bytes -= int(size) + int(count) * ROW_OVERHEAD
        for counter in counters:
            bump(conn, counter, int(count))
        self.leased.difference_update(ids)
        return int(count)

    def leased_bytes(self, conn: sqlite3.Connection) -> int:
        """Bytes of the rows in flight: the sender's batch, which neither compaction nor drops may touch, so it does
        not count against the cap (else a batch bigger than the cap would make every new event, the loss notice
        included, be dropped as soon as it is stored)."""
        if not self.leased:
            return 0
        size, count = conn.execute(_SIZE_OF_IDS, (json.dumps(list(self.leased)),)).fetchone()
        return int(size) + int(count) * ROW_OVERHEAD
