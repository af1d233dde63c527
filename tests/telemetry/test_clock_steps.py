"""Wall-clock steps (NTP fixing a 1970 boot, a clock set back): ages, cadence and budget follow steady time."""

from __future__ import annotations

import itertools
from pathlib import Path

from visionedge.config import OutboxSettings, TelemetrySettings
from visionedge.telemetry.budget import DailyBudget
from visionedge.telemetry.events import Sequencer
from visionedge.telemetry.outbox import Outbox
from visionedge.telemetry.policy import TelemetryPolicy

from .conftest import OpenOutbox
from .support import Clock, record

YEARS_56 = 56 * 365 * 86400.0
DAY = 86400.0


def put(outbox: Outbox, sequencer: Sequencer, clock: Clock, n: int) -> None:
    """Store `n` results, one second apart."""
    for _ in range(n):
        outbox.put([sequencer.make("result", "cam", record({"person": 1}), clock.advance(1.0))])


def test_ntp_setting_a_1970_clock_expires_nothing(tmp_path: Path, open_outbox: OpenOutbox) -> None:
    """Booted at 1970, 30 events queued, then NTP jumps the clock 56 years: all 30 wait, aged seconds, not years."""
    clock = Clock(now=3600.0)
    outbox = open_outbox(tmp_path, OutboxSettings(max_age_h=1), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    put(outbox, sequencer, clock, 30)
    clock.step(YEARS_56)
    put(outbox, sequencer, clock, 1)
    stats = outbox.stats()
    assert (stats.depth, stats.expired) == (31, 0)
    assert 29 <= stats.oldest_age_s <= 31


def test_a_clock_set_back_still_expires_on_time(tmp_path: Path, open_outbox: OpenOutbox) -> None:
    """Clock set back a day: events older than max_age_h (in steady time) still expire."""
    clock = Clock()
    outbox = open_outbox(tmp_path, OutboxSettings(max_age_h=1), clock=clock, steady=clock.steady)
    sequencer = Sequencer(outbox.epoch)
    put(outbox, sequencer, clock, 5)
    clock.step(-DAY)
    clock.advance(3601)
    put(outbox, sequencer, clock, 1)
    assert (outbox.stats().depth, outbox.stats().expired) == (1, 5)


def test_ages_continue_across_a_reboot(tmp_path: Path, open_outbox: OpenOutbox) -> None:
    """After a reboot the steady clock starts again near zero: queued events keep the age they had, no more."""
    clock = Clock()
    clock.mono = 50_000.0
    outbox = Outbox(tmp_path, OutboxSettings(max_age_h=1), clock=clock, steady=clock.steady)
    put(outbox, Sequencer(outbox.epoch), clock, 10)
    outbox.close()
    clock.mono = 12.0
    reopened = open_outbox(tmp_path, OutboxSettings(max_age_h=1), clock=clock, steady=clock.steady)
    assert 9 <= reopened.stats().oldest_age_s <= 10
    clock.advance(3600)
    put(reopened, Sequencer(reopened.epoch, reopened.last_seqs()), clock, 1)
    assert (reopened.stats().depth, reopened.stats().expired) == (1, 10)


def test_heartbeats_and_aggregates_keep_their_cadence_through_steps_both_ways() -> None:
    """A heartbeat every 60 s and an aggregate at least every 60 s (windows realign on the new wall time), whatever
    the wall clock does: set back an hour, then on a day."""
    clock = Clock()
    policy = TelemetryPolicy(TelemetrySettings(heartbeat_s=60, aggregate_window_s=60), source_id="cam",
                             sequencer=Sequencer("e"), clock=clock, steady=clock.steady)
    kinds: list[tuple[int, str]] = []
    for second in range(300):
        if second == 100:
            clock.step(-3630)
        if second == 200:
            clock.step(DAY + 17)
        kinds += [(second, e.kind) for e in policy.offer(record({"car": 1})) + policy.tick()]
        clock.advance(1.0)
    assert [s for s, kind in kinds if kind == "heartbeat"] == [0, 60, 120, 180, 240]
    aggregates = [s for s, kind in kinds if kind == "aggregate"]
    assert aggregates[:2] == [60, 120]
    assert all(0 < b - a <= 60 for a, b in itertools.pairwise(aggregates))
    assert aggregates[-1] >= 240


def test_a_clock_set_back_does_not_re_grant_a_spent_budget(tmp_path: Path, open_outbox: OpenOutbox) -> None:
    """Budget of 3 spent; the clock goes back two days: nothing more may go until the next real UTC day."""
    clock = Clock()
    budget = DailyBudget(3, open_outbox(tmp_path, OutboxSettings(), clock=clock, steady=clock.steady), clock=clock)
    for _ in range(3):
        budget.record(1)
    clock.step(-2 * DAY)
    assert not budget.allows(1, heartbeat=True)
    clock.step(3 * DAY)
    assert budget.allows(1, heartbeat=True)
