"""The reported `modelHealth` block: a compact, numeric verdict about the last model considered, shaped for IoT Hub
queries such as `SELECT deviceId FROM devices.modules WHERE properties.reported.modelHealth.verdict = 'rejected'`.

The shape is a contract with the fleet rollout (`visionedge fleet`); change it only together with that side.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

from visionedge.compare import Figures
from visionedge.durable import read_json, write_json_atomic

Phase = Literal["idle", "downloading", "validating", "shadow", "probation"]
Verdict = Literal["none", "pending", "promoted", "rejected", "rolledBack"]
Calibrating = Literal["off", "sampling", "quantizing", "shadow", "int8", "slower", "refused", "failed"]
"""On-device calibration of the serving model's int8 variant (modelstore/calibrating.py): in progress, then one of
int8 (switched), slower (agreed, but the deployed file runs faster here), refused (disagreed: fp kept) or failed."""
VARIANT_REASON_CHARS = 120
"""The variant's reason shares modelHealth's 4 KB with the update's own (its verdicts are one short line)."""
CALIBRATING = get_args(Calibrating)
REASON_CHARS = 200
HealthFn = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VariantHealth:
    """Where the serving model's calibrated int8 variant stands: reported as `modelHealth.variant` and in status."""

    state: Calibrating = "off"
    frames: int = 0
    agreement: float | None = None
    latency_ratio: float | None = None
    calibration_s: float | None = None
    """Seconds from the first kept frame to the quantized file (sampling and quantizing)."""
    reason: str = ""

    def reported(self) -> dict[str, Any]:
        """The `variant` block of modelHealth."""
        return {"state": self.state, "frames": self.frames, "agreement": _finite(self.agreement),
                "latencyRatio": _finite(self.latency_ratio), "calibrationS": _finite(self.calibration_s),
                "reason": self.reason[:VARIANT_REASON_CHARS]}

    @classmethod
    def restored(cls, data: Any) -> VariantHealth:
        """A block saved by reported(); anything unreadable is a fresh one."""
        if not isinstance(data, dict) or data.get("state") not in CALIBRATING:
            return cls()
        return cls(data["state"], int(data.get("frames", 0) or 0), _number(data.get("agreement")),
                   _number(data.get("latencyRatio")), _number(data.get("calibrationS")),
                   str(data.get("reason", ""))[:VARIANT_REASON_CHARS])


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
    variant: VariantHealth = VariantHealth()

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
            "variant": self.variant.reported(),
        }

    def considering(self, candidate: tuple[str, str], rollout: str | None, phase: Phase,
                    desired_version: int) -> ModelHealth:
        """A new candidate enters the pipeline: its figures start empty and the verdict is pending."""
        return ModelHealth(self.active, candidate, rollout, phase, "pending", desired_version=desired_version,
                           variant=self.variant)

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
                VariantHealth.restored(data.get("variant")),
            )
        except (KeyError, TypeError, ValueError):
            return fresh


class HealthBook:
    """modelHealth as the model manager keeps it: changed under one lock, persisted beside the store (so a rejection
    stays visible and a candidate that was in shadow when the process died is distrusted), reported on each change."""

    def __init__(self, path: Path, active: tuple[str, str], report: HealthFn | None) -> None:
        self._path = path
        self._report = report
        self._lock = threading.Lock()
        self._shadowing: str | None = None
        data = read_json(path) or {}
        shadowing = data.get("shadowing")
        self.interrupted = shadowing if isinstance(shadowing, str) else None
        """The candidate that was in its shadow phase when the module stopped unexpectedly: never tried again."""
        self._health = ModelHealth.restored(data.get("health"), active)
        if self.interrupted is not None:
            log.warning("%s was in its shadow phase when the module stopped unexpectedly; it will not be tried again",
                        self.interrupted)
            if self._health.verdict == "pending":
                self._health = replace(self._health, verdict="rejected",
                                       reason="the module stopped unexpectedly during the shadow phase")

    def get(self) -> ModelHealth:
        """The value now (any thread)."""
        with self._lock:
            return self._health

    def change(self, **fields: Any) -> None:
        """Change some fields (ModelHealth's names), then report and persist the whole block."""
        self.update(lambda health: replace(health, **fields))

    def update(self, step: Callable[[ModelHealth], ModelHealth], *, publish: bool = True) -> None:
        """Replace the value by step(value); publish=False when a later change reports it anyway."""
        with self._lock:
            self._health = step(self._health)
        if publish:
            self.publish()

    def publish(self) -> None:
        """Report the block (best effort, like acknowledgements) and keep it for the next start."""
        with self._lock:
            block = self._health.reported()
        self._save()
        if self._report is None:
            return
        try:
            self._report(block)
        except Exception:  # reporting is best effort; the next change or status refresh repeats it
            log.warning("reporting modelHealth failed", exc_info=True)

    def mark_shadowing(self, key: str | None) -> None:
        """Persist which candidate is in its shadow phase (None: none); only a crash leaves the mark behind."""
        with self._lock:
            self._shadowing = key
        self._save()

    def _save(self) -> None:
        with self._lock:
            data = {"shadowing": self._shadowing, "health": self._health.reported()}
        try:
            write_json_atomic(self._path, data)
        except OSError as err:
            log.warning("cannot persist modelHealth: %s", err)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
