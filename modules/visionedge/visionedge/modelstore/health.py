"""The reported `modelHealth` block: a compact, numeric verdict about the last model considered, shaped for IoT Hub
queries such as `SELECT deviceId FROM devices.modules WHERE properties.reported.modelHealth.verdict = 'rejected'`.

The shape is a contract with the fleet rollout (`visionedge fleet`); change it only together with that side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from visionedge.compare import Figures

Phase = Literal["idle", "downloading", "validating", "shadow", "probation"]
Verdict = Literal["none", "pending", "promoted", "rejected", "rolledBack"]
REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class ModelHealth:
    """What the model manager last concluded; every view (twin, metrics, status) reads this one value."""

    active: tuple[str, str]
    candidate: tuple[str, str] | None = None
    rollout: str | None = None
    phase: Phase = "idle"
    verdict: Verdict = "none"
    frames: int = 0
    agreement: float | None = None
    latency_ratio: float | None = None
    reason: str = ""
    desired_version: int = 0

    def reported(self) -> dict[str, Any]:
        """properties.reported.modelHealth, exactly as the fleet side queries it."""
        return {
            "active": {"name": self.active[0], "version": self.active[1]},
            "candidate": {"name": self.candidate[0], "version": self.candidate[1]} if self.candidate else None,
            "rollout": self.rollout,
            "phase": self.phase,
            "verdict": self.verdict,
            "frames": self.frames,
            "agreement": _finite(self.agreement),
            "latencyRatio": _finite(self.latency_ratio),
            "reason": self.reason[:REASON_CHARS],
            "desiredVersion": self.desired_version,
        }

    def considering(self, candidate: tuple[str, str], rollout: str | None, phase: Phase,
                    desired_version: int) -> ModelHealth:
        """A new candidate enters the pipeline: its figures start empty and the verdict is pending."""
        return ModelHealth(self.active, candidate, rollout, phase, "pending", desired_version=desired_version)

    def with_figures(self, figures: Figures, reason: str = "") -> ModelHealth:
        """The shadow comparison's figures so far."""
        return replace(self, frames=figures.frames, agreement=figures.agreement, latency_ratio=figures.latency_ratio,
                       reason=reason or self.reason)

    @classmethod
    def restored(cls, data: Any, active: tuple[str, str]) -> ModelHealth:
        """The last verdict saved before a restart (so a rejection stays visible), about the model active now; a
        phase that was in progress is over, and a pending verdict stays pending until the block is applied again."""
        fresh = cls(active)
        if not isinstance(data, dict):
            return fresh
        try:
            candidate = data.get("candidate")
            return cls(
                active,
                (str(candidate["name"]), str(candidate["version"])) if isinstance(candidate, dict) else None,
                str(data["rollout"]) if data.get("rollout") is not None else None,
                "idle",
                data["verdict"] if data.get("verdict") in ("none", "pending", "promoted", "rejected", "rolledBack")
                else "none",
                int(data.get("frames", 0)),
                _number(data.get("agreement")),
                _number(data.get("latencyRatio")),
                str(data.get("reason", ""))[:REASON_CHARS],
                int(data.get("desiredVersion", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return fresh


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
