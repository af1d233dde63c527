"""Retention of the outbox: events past max_age_h expire, and past max_mb the outbox shrinks by compaction and/or
dropping the least telling events first; every loss is counted and logged at most once a minute."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Final

from visionedge.config import OutboxSettings
from visionedge.telemetry.outbox_compaction import Compactor
from visionedge.telemetry.outbox_rows import ROW_OVERHEAD, Rows

log = logging.getLogger(__name__)

LOW_WATER: Final = 0.9
"""Shrink to this share of the cap, so a full outbox is not compacted again on every put."""
DROP_ORDER: Final = ("heartbeat", "result", "aggregate", "event")
"""What a full outbox drops first: a stale heartbeat says least (the next one supersedes it), then single results,
then aggregates (each stands for many results), and last the rare events, the dropped-telemetry notice among them,
so the cloud still learns what was lost."""
LOSS_LOG_INTERVAL_S: Final = 60.0
"""A full outbox loses events on every put: say so at most once a minute, with the totals since."""
_OLDEST_OF_KIND = "SELECT id, size FROM events WHERE kind = ? ORDER BY id"


class Retention:
    """The age and size bounds, applied inside the caller's transaction; rows in flight are never touched."""

    def __init__(self, rows: Rows, compactor: Compactor, settings: OutboxSettings,
                 steady: Callable[[], float]) -> None:
        self.rows = rows
        self.compactor = compactor
        self.settings = settings
        self.steady = steady
        self._unlogged: dict[str, int] = defaultdict(int)
        self._last_loss_log = -LOSS_LOG_INTERVAL_S

    def enforce(self, conn: sqlite3.Connection) -> None:
        """Both bounds: expire, then shrink to the cap."""
        self.expire(conn)
        self._enforce_size(conn)

    def expire(self, conn: sqlite3.Connection) -> None:
        """Drop events older than max_age_h (not those in flight), counted as dropped and expired."""
        cutoff = self.steady() - self.settings.max_age_h * 3600.0
        ids = [i for (i,) in conn.execute("SELECT id FROM events WHERE steady < ? ORDER BY id", (cutoff,))
               if i not in self.rows.leased]
        self._note_loss("expired", self.rows.delete(conn, ids, ("dropped", "expired")))

    def _enforce_size(self, conn: sqlite3.Connection) -> None:
        """Shrink below LOW_WATER x max_mb by compaction and/or dropping the oldest, as the overflow policy says."""
        cap = self.settings.max_mb * 1024 * 1024
        if self.rows.bytes <= cap:
            return
        in_flight = self.rows.leased_bytes(conn)
        if self.rows.bytes - in_flight <= cap:
            return
        target = cap * LOW_WATER + in_flight
        while self.rows.bytes > target:
            if self.settings.overflow == "compact":
                merged = self.compactor.chunk(conn)
                if merged:
                    self._note_loss("compacted", merged)
                    continue
            removed = self._drop_oldest(conn, self.rows.bytes - target)
            if not removed:
                break
            self._note_loss("dropped", removed)

    def _drop_oldest(self, conn: sqlite3.Connection, need: float) -> int:
        """Delete events (not those in flight) until `need` bytes are freed, the least telling kind first and the
        oldest first within a kind (DROP_ORDER); returns how many."""
        ids: list[int] = []
        freed = 0
        by_kind = (conn.execute(_OLDEST_OF_KIND, (kind,)) for kind in DROP_ORDER)
        for row_id, size in itertools.chain.from_iterable(by_kind):
            if row_id in self.rows.leased:
                continue
            ids.append(row_id)
            freed += size + ROW_OVERHEAD
            if freed >= need:
                break
        return self.rows.delete(conn, ids, ("dropped",))

    def _note_loss(self, kind: str, count: int) -> None:
        """Log compaction, drops and expiry at most once per LOSS_LOG_INTERVAL_S, with the totals since the last."""
        if not count:
            return
        self._unlogged[kind] += count
        now = time.monotonic()
        if now - self._last_loss_log < LOSS_LOG_INTERVAL_S:
            return
        counts, self._unlogged = self._unlogged, defaultdict(int)
        self._last_loss_log = now
        log.warning("outbox (cap %s MB, max age %s h, overflow %s): since the last notice %d result(s) compacted "
                    "into aggregates, %d event(s) dropped for space, %d expired; now %.2f MB",
                    self.settings.max_mb, self.settings.max_age_h, self.settings.overflow, counts["compacted"],
                    counts["dropped"], counts["expired"], self.rows.bytes / 2**20)
