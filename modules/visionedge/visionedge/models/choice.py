"""Which variant file of a model runs and why: a value the model carries and status reports, apart from the
choosing (`models.variants`), so a model needs nothing from the code that chose it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class VariantChoice:
    """What ran, why, and the timings behind it: reported in status and logged at start-up."""

    requested: str
    chosen: str
    file: str
    reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The reported `variant` block."""
        return {"requested": self.requested, "chosen": self.chosen, "file": self.file, "reason": self.reason,
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}, "agreement": self.agreement}
