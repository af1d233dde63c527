"""Compaction of a full outbox: the oldest result events merged into one aggregate per source and window (the only
part of the outbox that knows the result schema)."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Any, Final

from visionedge import outputs
from visionedge.result import SCHEMA_VERSION
from visionedge.telemetry.events import Event, WindowSummary, message_id
from visionedge.telemetry.outbox_file import bump
from visionedge.telemetry.outbox_rows import SELECT, OutboxItem, Rows, item

COMPACT_CHUNK: Final = 1000
"""Result events merged per compaction pass."""
_OLDEST_RESULTS = SELECT + "WHERE kind = 'result' ORDER BY id LIMIT ?"


class Compactor:
    """Merges results into aggregates: counts and max confidence per label, `compacted` = how many results,
    `seq`..`seq_last` = the range replaced; a model swap starts a new aggregate, so none mixes models."""

    def __init__(self, rows: Rows, epoch: str, window_s: float) -> None:
        self.rows = rows
        self.epoch = epoch
        self.window_s = window_s

    def chunk(self, conn: sqlite3.Connection) -> int:
        """Merge the oldest result events (not those in flight) into aggregates; returns results merged."""
        leased = self.rows.leased
        found = [r for r in conn.execute(_OLDEST_RESULTS, (COMPACT_CHUNK + len(leased),)).fetchall()
                 if r[0] not in leased][:COMPACT_CHUNK]
        if not found:
            return 0
        for (source_id, window, _), items in self._groups([item(r) for r in found]).items():
            self.rows.rewrite(conn, items[0], self._aggregate(source_id, window, items))
            self.rows.delete(conn, [i.row_id for i in items[1:]])
        bump(conn, "compacted", len(found))
        return len(found)

    def _groups(self, items: list[OutboxItem]) -> dict[tuple[str, int, int], list[OutboxItem]]:
        """Results by (source, window, run), where a run ends when the window or the model changes."""
        groups: dict[tuple[str, int, int], list[OutboxItem]] = defaultdict(list)
        runs: dict[str, tuple[int, Any, int]] = {}
        for one in items:
            window, model = int(one.event.created // self.window_s), one.event.body.get("model")
            before = runs.get(one.event.source_id)
            run = 0 if before is None else before[2] + (before[:2] != (window, model))
            runs[one.event.source_id] = (window, model, run)
            groups[(one.event.source_id, window, run)].append(one)
        return groups

    def _aggregate(self, source_id: str, window: int, items: list[OutboxItem]) -> Event:
        """The aggregate event that stands for `items`, with a message id naming the seq range it replaces."""
        summary = WindowSummary(window * self.window_s, self.window_s)
        for one in items:
            summary.add(one.event.body)
        first, last = items[0].event, items[-1].event
        body: dict[str, Any] = {"type": "aggregate", "source_id": source_id, "seq": first.seq, "seq_last": last.seq,
                                "schema_version": SCHEMA_VERSION, "compacted": len(items), **summary.fields()}
        return Event(outputs.AGGREGATES, body, message_id(source_id, self.epoch, f"{first.seq}-{last.seq}"),
                     source_id, first.seq, first.created)
