"""Messages per hour that a recorded video costs under each telemetry policy, replayed with a simulated clock.

Records come from `visionedge analyze VIDEO --model MODEL --jsonl records.jsonl`; they are replayed on loop at
`--fps` through the real TelemetryPolicy (ticked every second, as the sink does), and the events are packed into
messages the way the sender does with batching, one send round per second (`--round-s`). For on-change it also
prints how soon the first result leaves and how often the state last sent is a dominant state of the frames of
the last `debounce_s` (the most frequent label set with counts), checked at every frame.

    python -m tests.telemetry.telemetry_rate records.jsonl [--hours 1] [--fps 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionedge.config import TelemetrySettings
from visionedge.telemetry.budget import FREE_TIER_UNIT_BYTES, pack
from visionedge.telemetry.events import Event, Sequencer, label_state
from visionedge.telemetry.outbox import OutboxItem
from visionedge.telemetry.policy import TelemetryPolicy, state_key

T0 = 1_800_000_000.0


@dataclass(frozen=True)
class Rate:
    """What one policy costs per hour."""

    policy: str
    events: Counter[str]
    messages_unbatched: int
    messages_batched: int
    units_batched: int
    free_tier_units: int
    hours: float

    def per_hour(self, value: float) -> float:
        """Normalise to one hour."""
        return value / self.hours


def replay(records: list[dict[str, Any]], settings: TelemetrySettings, hours: float, fps: float,
           round_s: float) -> Rate:
    """Run the policy over `hours` of simulated time and count events, messages and 4 KB units."""
    policy = TelemetryPolicy(settings, source_id="vtest", sequencer=Sequencer("sim"),
                             heartbeat_fields=lambda: {"fps": fps}, clock=lambda: T0)
    frames = int(hours * 3600 * fps)
    rounds: dict[int, list[Event]] = {}
    next_tick = T0
    for i, record in zip(range(frames), _loop(records), strict=False):
        now = T0 + i / fps
        while next_tick <= now:
            for event in policy.tick(next_tick):
                rounds.setdefault(int((next_tick - T0) // round_s), []).append(event)
            next_tick += 1.0
        for event in policy.offer(record, now):
            rounds.setdefault(int((now - T0) // round_s), []).append(event)
    kinds: Counter[str] = Counter()
    unbatched = batched = units = free_units = 0
    for events in rounds.values():
        items = [OutboxItem(n, e, len(e.payload())) for n, e in enumerate(events)]
        kinds.update(e.kind for e in events)
        unbatched += len(events)
        messages, _ = pack(items, batch=True)
        batched += len(messages)
        units += sum(m.units for m in messages)
        free_units += sum(m.units for m in pack(items, batch=True, unit_bytes=FREE_TIER_UNIT_BYTES)[0])
    return Rate(settings.policy, kinds, unbatched, batched, units, free_units, hours)


@dataclass(frozen=True)
class Fidelity:
    """How well on-change results follow the scene."""

    first_result_s: float | None
    """Seconds from the first frame to the first result."""
    matching: float
    """Share of frames, after the first result, at which the state last sent is a dominant one of the window."""


def fidelity(records: list[dict[str, Any]], settings: TelemetrySettings, hours: float, fps: float) -> Fidelity:
    """Replay on-change and compare, frame by frame, the state last sent with the window's dominant states."""
    policy = TelemetryPolicy(settings, source_id="vtest", sequencer=Sequencer("sim"), clock=lambda: T0)
    window = int(settings.debounce_s * fps)
    keys: list[frozenset[tuple[str, int]]] = []
    sent = None
    first: float | None = None
    checked = matched = 0
    for i, record in zip(range(int(hours * 3600 * fps)), _loop(records), strict=False):
        now = T0 + i / fps
        keys.append(state_key(label_state(record)))
        for event in policy.offer(record, now):
            if event.kind == "result":
                sent = state_key(label_state(event.body))
                first = now - T0 if first is None else first
        if sent is not None:
            held = Counter(keys[-window:])
            checked += 1
            matched += held[sent] == max(held.values())
    return Fidelity(first, matched / checked if checked else 0.0)


def _loop(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    while True:
        yield from records


def main(argv: list[str] | None = None) -> int:
    """Print a table of messages per hour for on-change (default), aggregate and every-frame."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--round-s", type=float, default=1.0, help="send round length (sender linger + poll)")
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(f"{len(records)} records from {args.jsonl}, looped for {args.hours} h at {args.fps} fps")
    print(f"{'policy':<12} {'results/h':>10} {'aggregates/h':>12} {'heartbeats/h':>12} {'msgs/h':>8} "
          f"{'batched/h':>10} {'4KB units/h':>12} {'0.5KB units/h':>14} {'free tier lasts':>16}")
    for policy in ("on-change", "aggregate", "every-frame"):
        rate = replay(records, TelemetrySettings.model_validate({"policy": policy}), args.hours, args.fps,
                      args.round_s)
        free_h = rate.per_hour(rate.free_tier_units)
        lasts = "all day" if free_h * 24 <= 8000 else f"{8000 / free_h:.1f} h"
        print(f"{policy:<12} {rate.per_hour(rate.events['result']):>10.0f} "
              f"{rate.per_hour(rate.events['aggregate']):>12.0f} {rate.per_hour(rate.events['heartbeat']):>12.0f} "
              f"{rate.per_hour(rate.messages_unbatched):>8.0f} {rate.per_hour(rate.messages_batched):>10.0f} "
              f"{rate.per_hour(rate.units_batched):>12.0f} {free_h:>14.0f} {lasts:>16}")
    on_change = TelemetrySettings()
    result = fidelity(records, on_change, args.hours, args.fps)
    first = "never" if result.first_result_s is None else f"{result.first_result_s:.1f} s"
    print(f"on-change (debounce {on_change.debounce_s:g} s): first result after {first}; the state last sent is "
          f"the window's dominant state at {100 * result.matching:.0f} % of frames")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
