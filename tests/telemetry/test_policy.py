"""The telemetry policy: which records become events, with a simulated clock."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from visionedge import outputs
from visionedge.config import TelemetrySettings
from visionedge.telemetry.events import Event, Sequencer
from visionedge.telemetry.policy import TelemetryPolicy

from .support import Clock, record
from .telemetry_rate import replay

T0 = 1_800_000_000.0
FPS = 10
STEP = 1 / FPS

count_dicts = st.dictionaries(st.sampled_from(["person", "car", "dog"]), st.integers(0, 3), max_size=3)


def make_policy(clock: Clock | None = None, heartbeat: dict[str, Any] | None = None,
                **overrides: Any) -> TelemetryPolicy:
    """A policy for source "cam" with default settings except `overrides`."""
    clock = clock or Clock(T0)
    fields = heartbeat or {}
    return TelemetryPolicy(TelemetrySettings(**overrides), source_id="cam", sequencer=Sequencer("e1"),
                           heartbeat_fields=lambda: fields, clock=clock,
                           steady=clock.steady)


def feed(policy: TelemetryPolicy, counts_per_frame: list[dict[str, int]], start: float = T0) -> list[Event]:
    """Offer one record per frame at 10 fps and return every event."""
    events: list[Event] = []
    for i, counts in enumerate(counts_per_frame):
        events += policy.offer(record(counts, frame_index=i), now=start + i * STEP)
    return events


def results(events: list[Event]) -> list[Event]:
    """Only the result events."""
    return [e for e in events if e.kind == "result"]


@given(st.lists(count_dicts, max_size=200))
def test_every_frame_turns_each_record_into_one_numbered_result(frames: list[dict[str, int]]) -> None:
    """every-frame: one result per record, seq 1..n, each body carrying type, source_id and seq; no aggregates."""
    events = feed(make_policy(policy="every-frame"), frames)
    assert [e.kind for e in events] == ["result"] * len(frames)
    assert [e.seq for e in events] == list(range(1, len(frames) + 1))
    for event, counts in zip(events, frames, strict=True):
        assert event.output == outputs.RESULTS
        assert (event.body["type"], event.body["source_id"], event.body["seq"]) == ("result", "cam", event.seq)
        assert event.body["counts"] == {k: v for k, v in counts.items() if v}
        assert event.message_id == f"cam:e1:{event.seq}"


def test_on_change_sends_a_lasting_change_once_it_holds_most_of_the_debounce_window() -> None:
    """The first state goes 2 s (the debounce) after the first frame; a new one once it holds most of the last 2 s."""
    policy = make_policy()
    frames = [{"person": 1}] * 30 + [{"person": 2}] * 50
    sent = results(feed(policy, frames))
    assert [e.body["counts"] for e in sent] == [{"person": 1}, {"person": 2}]
    assert [round(e.created - T0, 1) for e in sent] == [2.0, 4.0]


@given(base=count_dicts, flicker=count_dicts, flicker_frames=st.integers(1, 9), after=st.integers(0, 50))
def test_on_change_never_sends_a_flicker_shorter_than_half_the_debounce(
        base: dict[str, int], flicker: dict[str, int], flicker_frames: int, after: int) -> None:
    """A state that lasts under 1 s (half the debounce) and gives way to the sent one is never sent."""
    frames = [base] * 30 + [flicker] * flicker_frames + [base] * after
    sent = results(feed(make_policy(), frames))
    assert [e.body["counts"] for e in sent] == [{k: v for k, v in base.items() if v}]


def test_a_busy_scene_whose_top_label_flickers_still_reports_what_it_mostly_shows() -> None:
    """Top label changing every frame or two, "patio" 60 % of the time: the first result (patio) goes at 2 s."""
    pattern = [{"patio": 1}, {"golfcart": 1}, {"patio": 1}, {"croquet ball": 1}, {"patio": 1}]
    sent = results(feed(make_policy(), pattern * 40))
    assert [e.body["counts"] for e in sent] == [{"patio": 1}]
    assert round(sent[0].created - T0, 1) == 2.0


def test_a_model_swap_starts_on_change_over() -> None:
    """After a swap the first result is the new model's, debounce_s after its first record, whatever was sent."""
    policy = make_policy()
    events = [e for i in range(40) for e in policy.offer(record({"person": 1}, model="a"), now=T0 + i * STEP)]
    events += [e for i in range(40, 80) for e in policy.offer(record({"person": 1}, model="b"), now=T0 + i * STEP)]
    sent = results(events)
    assert [(e.body["model"]["name"], round(e.created - T0, 1)) for e in sent] == [("a", 2.0), ("b", 6.0)]


@settings(max_examples=200)
@given(st.lists(st.tuples(count_dicts, st.integers(1, 40)), min_size=1, max_size=20))
def test_on_change_sends_only_dominant_states_at_most_once_per_debounce(
        runs: list[tuple[dict[str, int], int]]) -> None:
    """Every result's counts were held by the most frames of the 2 s before it, and results are >= 2 s apart."""
    frames = [{k: v for k, v in counts.items() if v} for counts, length in runs for _ in range(length)]
    sent = results(feed(make_policy(), frames))
    times = [round((e.created - T0) / STEP) for e in sent]
    for event, frame in zip(sent, times, strict=True):
        assert frame >= 20
        window = [json.dumps(f, sort_keys=True) for j, f in enumerate(frames[:frame + 1])
                  if T0 + j * STEP > T0 + frame * STEP - 2.0]
        held = Counter(window)
        assert held[json.dumps(event.body["counts"], sort_keys=True)] == max(held.values())
    assert all(b - a >= 20 for a, b in itertools.pairwise(times))


def test_on_change_sends_a_confidence_move_beyond_the_delta_only() -> None:
    """Same counts: a top confidence moving 0.1 is not news, moving 0.3 (> min_confidence_delta 0.2) is."""
    policy = make_policy()
    events = []
    for i, confidence in enumerate([0.5] * 30 + [0.6] * 30 + [0.9] * 30):
        events += policy.offer(record({"dog": 1}, confidence), now=T0 + i * STEP)
    sent = results(events)
    assert [e.body["detections"][0]["confidence"] for e in sent] == [0.5, 0.9]


@given(st.lists(st.tuples(st.integers(0, 299_999).map(lambda ms: ms / 1000), count_dicts), max_size=100))
def test_aggregates_add_up_per_window(frames: list[tuple[float, dict[str, int]]]) -> None:
    """Counts, peaks and frames per label per 60 s window match the records; aggregate mode sends no results."""
    policy = make_policy(policy="aggregate")
    frames = sorted(frames, key=lambda f: f[0])
    events = []
    for offset, counts in frames:
        events += policy.offer(record(counts), now=T0 + offset)
    events += policy.flush(now=T0 + 301)
    assert all(e.kind == "aggregate" and e.output == outputs.AGGREGATES for e in events)
    for event in events:
        start = int(event.body["window_start"][14:16]) * 60
        inside = [c for t, c in frames if start <= t < start + 60]
        assert event.body["frames"] == len(inside)
        totals: Counter[str] = Counter()
        for counts in inside:
            totals.update(counts)
        assert {k: v["count"] for k, v in event.body["labels"].items()} == {k: v for k, v in totals.items() if v}
        assert {k: v["peak"] for k, v in event.body["labels"].items()} == {
            k: max(c.get(k, 0) for c in inside) for k, v in totals.items() if v}
    assert sum(e.body["frames"] for e in events) == len(frames)


def test_on_change_also_sends_window_summaries_with_max_confidence() -> None:
    """In on-change mode a window's aggregate goes out when the next window's first frame arrives."""
    policy = make_policy()
    events = feed(policy, [{"person": 2}] * 600 + [{"car": 1}], start=T0)
    aggregates = [e for e in events if e.kind == "aggregate"]
    assert len(aggregates) == 1
    body = aggregates[0].body
    assert (body["window_start"], body["window_end"], body["frames"]) == (
        "2027-01-15T08:00:00.000Z", "2027-01-15T08:01:00.000Z", 600)
    assert body["labels"] == {"person": {"count": 1200, "peak": 2, "frames": 600, "max_confidence": 0.9}}


def test_a_model_swap_closes_the_window_so_no_aggregate_mixes_models() -> None:
    """Model a for 10 s, then b: a's aggregate ends at the swap, b's starts there and ends on the usual boundary."""
    policy = make_policy(policy="aggregate")
    events = [e for i in range(100) for e in policy.offer(record({"car": 1}, model="a"), now=T0 + i * STEP)]
    events += [e for i in range(100, 200) for e in policy.offer(record({"car": 1}, model="b"), now=T0 + i * STEP)]
    events += policy.tick(now=T0 + 60)
    aggregates = [e.body for e in events if e.kind == "aggregate"]
    assert [(a["model"]["name"], a["frames"], a["window_start"][17:23], a["window_end"][17:23]) for a in aggregates] \
        == [("a", 100, "00.000", "10.000"), ("b", 100, "10.000", "00.000")]


def test_tick_closes_a_window_when_frames_stop() -> None:
    """A source that goes quiet still gets its window summary once the window ends."""
    policy = make_policy()
    feed(policy, [{"car": 1}] * 10)
    assert [e.kind for e in policy.tick(now=T0 + 59)] == ["heartbeat"]
    assert [e.kind for e in policy.tick(now=T0 + 60)] == ["aggregate"]


def test_heartbeat_cadence_and_caller_fields() -> None:
    """Heartbeats on the first tick then every heartbeat_s, even with no records, carrying the caller's fields."""
    policy = make_policy(heartbeat={"fps": 9.5}, heartbeat_s=300)
    beats = [e for s in range(0, 1000) for e in policy.tick(now=T0 + s) if e.kind == "heartbeat"]
    assert [round(e.created - T0) for e in beats] == [0, 300, 600, 900]
    assert all(e.output == outputs.HEARTBEAT and e.body["fps"] == 9.5 and e.source_id == "cam" for e in beats)


def test_a_late_tick_sends_one_heartbeat_not_a_burst() -> None:
    """After the process stalled for 20 minutes, one heartbeat is sent and the cadence restarts from then."""
    policy = make_policy(heartbeat_s=300)
    policy.tick(now=T0)
    assert len(policy.tick(now=T0 + 1200)) == 1
    assert policy.tick(now=T0 + 1400) == []
    assert len(policy.tick(now=T0 + 1500)) == 1


def test_update_closes_open_windows_when_the_window_changes() -> None:
    """A new aggregate_window_s ends the current window at once, so no aggregate mixes two window sizes."""
    policy = make_policy()
    feed(policy, [{"car": 1}] * 100)
    flushed = policy.update(TelemetrySettings(aggregate_window_s=10), now=T0 + 10)
    assert [(e.kind, e.body["frames"], e.body["window_s"]) for e in flushed] == [("aggregate", 100, 10.0)]
    assert policy.update(TelemetrySettings(aggregate_window_s=10), now=T0 + 11) == []


def test_sequence_numbers_continue_from_the_last_stored_seq() -> None:
    """A sequencer seeded from the outbox's last seqs carries on, per source."""
    policy = TelemetryPolicy(TelemetrySettings(policy="every-frame"), source_id="cam",
                             sequencer=Sequencer("e1", {"cam": 41}), clock=Clock(T0))
    assert [e.seq for e in feed(policy, [{}, {}])] == [42, 43]
    assert [e.seq for e in policy.offer(record({}, source_id="door"))] == [1]


def test_rate_helper_counts_messages_per_hour() -> None:
    """The telemetry_rate helper: a still scene costs one result, window summaries and heartbeats per hour."""
    still = [record({"person": 2}, frame_index=i) for i in range(50)]
    quiet = replay(still, TelemetrySettings(), hours=0.1, fps=FPS, round_s=1.0)
    assert (quiet.events["result"], quiet.events["aggregate"], quiet.events["heartbeat"]) == (1, 5, 2)
    busy = replay(still, TelemetrySettings(policy="every-frame"), hours=0.1, fps=FPS, round_s=1.0)
    assert busy.events["result"] == 3600
    assert busy.messages_batched < busy.messages_unbatched
