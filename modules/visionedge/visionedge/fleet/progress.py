"""Per-ring progress from a deployment's metrics, and the live table the operator watches."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from visionedge.fleet.plan import LABEL_RING, LABEL_STATE


@dataclass(frozen=True)
class RingStatus:
    """One ring deployment as the hub reports it: devices targeted, and the custom metric counts."""

    ring: str
    deployment: str
    state: str
    targeted: int
    applied: int
    pending: int
    refused: int
    shadow_rejected: int
    healthy: int

    @property
    def finished(self) -> int:
        """Devices that reached a verdict on the model: applied or refused."""
        return self.applied + self.refused

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RingStatus:
        """Read the labels and the metric results of one ring deployment."""
        labels = config.get("labels") or {}
        system = ((config.get("systemMetrics") or {}).get("results")) or {}
        custom = ((config.get("metrics") or {}).get("results")) or {}
        return cls(
            ring=str(labels.get(LABEL_RING, "?")),
            deployment=str(config["id"]),
            state=str(labels.get(LABEL_STATE, "?")),
            targeted=int(system.get("targetedCount", 0)),
            applied=int(custom.get("applied", 0)),
            pending=int(custom.get("pending", 0)),
            refused=int(custom.get("refused", 0)),
            shadow_rejected=int(custom.get("shadowRejected", 0)),
            healthy=int(custom.get("healthy", 0)),
        )


HEADER = ("ring", "state", "targeted", "applied", "healthy", "pending", "refused", "shadow-rej")


def rows(statuses: list[RingStatus], waiting: list[str]) -> list[tuple[str, ...]]:
    """Table rows: started rings with their counts, then rings not started yet."""
    out: list[tuple[str, ...]] = [
        (s.ring, s.state, str(s.targeted), str(s.applied), str(s.healthy), str(s.pending), str(s.refused),
         str(s.shadow_rejected)) for s in statuses]
    out += [(ring, "not started", "-", "-", "-", "-", "-", "-") for ring in waiting]
    return out


def format_table(table: list[tuple[str, ...]]) -> list[str]:
    """Aligned text lines, header first."""
    widths = [max(len(row[i]) for row in [HEADER, *table]) for i in range(len(HEADER))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [HEADER, *table]]


class LiveTable:
    """Redraws the table in place on a terminal; elsewhere prints it again only when something changed."""

    def __init__(self, title: str, stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._drawn = 0
        self._last: tuple[list[str], str] | None = None

    def show(self, statuses: list[RingStatus], waiting: list[str], note: str) -> None:
        """Draw the current state with a one-line note (what the controller waits for)."""
        lines = format_table(rows(statuses, waiting))
        if self._last == (lines, note):
            return
        self._last = (lines, note)
        stamp = time.strftime("%H:%M:%S")
        block = [f"{self.title}  [{stamp}]", *lines, f"  {note}"]
        if self.tty:
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = len(block)
        self.stream.write("\n".join(block) + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line below the table that stays."""
        self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = 0
