"""Count windows and alarms from SceneFrames with exact ground truth: what a window holds, when it closes."""

from __future__ import annotations

from typing import Any

from visionedge import outputs
from visionedge.telemetry.events import Event, Sequencer
from visionedge.telemetry.scene import LineSpec, SceneLayout, SceneOutput, ZoneSpec, layout_of

from .support import Clock, crossing, scene, zone_event

T0 = 1_800_000_000.0
"""A minute boundary (the Clock's start)."""


def output(clock: Clock, window_s: float = 60.0, **layout: Any) -> SceneOutput:
    """A scene output with one source `cam` and the given layout fields."""
    return SceneOutput(window_s, sequencer=Sequencer("e"), clock=clock, steady=clock.steady,
                       layouts=[SceneLayout("cam", **layout)])


def feed(out: SceneOutput, clock: Clock, frames: list[tuple[float, Any]]) -> list[Event]:
    """Offer (seconds after T0, SceneFrame builder args) in order, moving the clocks with them."""
    events: list[Event] = []
    for offset, (occupancy, happened) in frames:
        clock.advance(T0 + offset - clock.now)
        events += out.offer(scene(T0 + offset, occupancy, *happened))
    return events


def test_a_window_counts_crossings_per_line_direction_and_class_and_zone_figures() -> None:
    """Three in, one out, a zone visited by two people: one counts event with exactly those figures."""
    clock = Clock()
    out = output(clock, lines=(LineSpec("door"),), zones=(ZoneSpec("queue"),))
    frames = [
        (1.0, ({"queue": {"person": 1}}, [crossing(at=T0 + 1), zone_event("enter", at=T0 + 1)])),
        (2.0, ({"queue": {"person": 2}}, [crossing(track_id=2, at=T0 + 2), zone_event("enter", track_id=2)])),
        (3.0, ({"queue": {"person": 1}}, [crossing(label="dog", track_id=3, at=T0 + 3),
                                          zone_event("exit", track_id=2, dwell_s=1.0)])),
        (4.0, ({"queue": {}}, [crossing("door", "out", track_id=4), zone_event("exit", dwell_s=3.0)])),
    ]
    assert feed(out, clock, frames) == []
    clock.advance(60)
    [counts] = out.tick()
    body = counts.body
    assert counts.output == outputs.AGGREGATES
    assert (body["type"], body["seq"], body["window_s"], body["frames"]) == ("counts", 1, 60.0, 4)
    assert body["window_start"] == "2027-01-15T08:00:00.000Z"
    assert body["lines"] == {"door": {"in": {"dog": 1, "person": 2}, "out": {"person": 1}}}
    queue = body["zones"]["queue"]
    assert queue["occupancy"] == {"person": [0, 1.0, 2, 0]}
    assert (queue["entries"], queue["exits"]) == ({"person": 2}, {"person": 2})
    assert queue["dwell_s"] == [2.0, 2.9, 3.0, 2]
    assert out.tick() == []


def test_alarms_leave_at_once_with_track_class_time_and_geometry() -> None:
    """An alarm-line crossing, a forbidden entry and an overstay: three alarm events from the frames they came in."""
    clock = Clock()
    out = output(clock, lines=(LineSpec("gate", alarm=True),), zones=(ZoneSpec("yard", forbidden=("person",)),))
    events = feed(out, clock, [
        (1.0, ({"yard": {}}, [crossing("gate", "in", track_id=7, at=T0 + 1, alarm=True)])),
        (2.0, ({"yard": {"person": 1}}, [zone_event("forbidden", "yard", track_id=8, at=T0 + 2, alarm=True)])),
        (9.0, ({"yard": {"person": 1}}, [zone_event("dwell", "yard", track_id=8, at=T0 + 9, dwell_s=7.0,
                                                    alarm=True)])),
    ])
    assert [e.kind for e in events] == ["alarm"] * 3
    assert all(e.output == outputs.EVENTS for e in events)
    first, forbidden, dwell = (e.body for e in events)
    assert {k: first[k] for k in ("alarm", "line", "direction", "label", "track_id", "timestamp")} == {
        "alarm": "crossing", "line": "gate", "direction": "in", "label": "person", "track_id": 7,
        "timestamp": "2027-01-15T08:00:01.000Z"}
    assert (forbidden["alarm"], forbidden["zone"], forbidden["track_id"]) == ("forbidden", "yard", 8)
    assert (dwell["alarm"], dwell["dwell_s"], dwell["geometry"], dwell["model"]) == ("dwell", 7.0, "g1",
                                                                                    "yolox-nano@1")
    assert [e.seq for e in events] == [1, 2, 3]


def test_a_geometry_change_closes_the_window_at_the_frame_that_brings_it() -> None:
    """Crossings before and after a geometry change never share a window; the next one ends on the boundary."""
    clock = Clock()
    out = output(clock, lines=(LineSpec("door"),))
    feed(out, clock, [(5.0, ({}, [crossing(at=T0 + 5)])), (6.0, ({}, [crossing(track_id=2, at=T0 + 6)]))])
    clock.advance(4)
    [closed] = out.offer(scene(T0 + 10, {}, crossing(track_id=3, at=T0 + 10), geometry="g2"))
    assert (closed.body["geometry"], closed.body["lines"], closed.body["window_s"]) == (
        "g1", {"door": {"in": {"person": 2}}}, 10.0)
    clock.advance(52)  # past the end and the grace
    [after] = out.tick()
    assert (after.body["geometry"], after.body["lines"], after.body["window_s"]) == (
        "g2", {"door": {"in": {"person": 1}}}, 50.0)
    assert after.body["window_start"] == "2027-01-15T08:00:10.000Z"


def test_a_model_swap_closes_the_window_too() -> None:
    """A new model starts a new window, so no count window mixes two models."""
    clock = Clock()
    out = output(clock)
    feed(out, clock, [(1.0, ({}, [crossing(at=T0 + 1)]))])
    clock.advance(1)
    [closed] = out.offer(scene(T0 + 2, {}, model="yolox-s@2"))
    assert closed.body["model"] == "yolox-nano@1"
    assert out.flush(T0 + 3)[0].body["model"] == "yolox-s@2"


def test_windows_fold_longer_while_the_budget_runs_low() -> None:
    """fold = 4 makes the next window four times the configured one, aligned on its own length."""
    clock = Clock()
    out = output(clock)
    out.fold = 4
    feed(out, clock, [(1.0, ({}, [crossing(at=T0 + 1)]))])
    clock.advance(200)
    assert out.tick() == []
    clock.advance(42)
    [counts] = out.tick()
    assert counts.body["window_s"] == 240.0


def test_classes_outside_the_configured_ones_are_counted_as_other() -> None:
    """A line filtered to person and car counts a bicycle under `other`: the labels stay bounded."""
    clock = Clock()
    out = output(clock, lines=(LineSpec("door", classes=("person", "car")),))
    feed(out, clock, [(1.0, ({}, [crossing(label="bicycle"), crossing(label="car", track_id=2)]))])
    assert out.totals()["cam"].lines == {"door": {"in": {"other": 1, "car": 1}}}


def test_state_survives_a_restart_and_a_reset_zeroes_one_line() -> None:
    """The open window and totals come back from `state`; `reset` zeroes one line and says what it held."""
    clock = Clock()
    out = output(clock, lines=(LineSpec("door"), LineSpec("exit")))
    feed(out, clock, [(1.0, ({}, [crossing(), crossing("exit", "out", track_id=2)]))])
    again = output(clock, lines=(LineSpec("door"), LineSpec("exit")))
    again.restore(out.state())
    assert again.reset("cam", "door") == {"kind": "line", "before": {"in": {"person": 1}}}
    assert again.reset("cam", "nowhere") is None
    assert again.totals()["cam"].lines == {"exit": {"out": {"person": 1}}}
    clock.advance(62)
    [counts] = again.tick()
    assert counts.body["lines"] == {"door": {"in": {"person": 1}}, "exit": {"out": {"person": 1}}}


def test_layout_of_reads_the_analytics_section_tolerantly() -> None:
    """The section as plain data: directions default to in/out, unknown keys are ignored."""
    layout = layout_of("cam", {"lines": [{"name": "door", "points": [[0, 0], [1, 1]], "classes": ["person"],
                                          "alarm": True}],
                               "zones": [{"name": "yard", "polygon": [], "forbidden": ["person"],
                                          "max_dwell_s": 30}], "window_s": 300, "extra": 1})
    assert layout == SceneLayout("cam", (LineSpec("door", ("in", "out"), ("person",), True),),
                                 (ZoneSpec("yard", (), ("person",), 30.0, False),), 300.0)
    assert layout.alarms


def test_a_removed_line_leaves_the_totals_but_not_the_open_window() -> None:
    """The running totals forget a line no longer configured; the window it was counted in still reports it."""
    clock = Clock()
    out = output(clock, lines=(LineSpec("door"), LineSpec("exit")))
    feed(out, clock, [(1.0, ({}, [crossing(), crossing("exit", "out", track_id=2)]))])
    out.set_layouts([SceneLayout("cam", (LineSpec("door"),))])
    assert out.totals()["cam"].lines == {"door": {"in": {"person": 1}}}
    clock.advance(62)
    [counts] = out.tick()
    assert counts.body["lines"] == {"door": {"in": {"person": 1}}, "exit": {"out": {"person": 1}}}


def test_a_frame_captured_before_the_end_but_handed_on_after_it_stays_in_its_window() -> None:
    """An ordered source's queue hands on a frame stamped 59.5 s at 61 s: it joins the window it was captured in;
    the window closes on the next frame stamped past the end, or CLOSE_GRACE_S after the end without frames."""
    clock = Clock()
    out = output(clock)
    feed(out, clock, [(1.0, ({}, [crossing(at=T0 + 1)]))])
    clock.advance(60)
    assert out.tick() == []
    assert out.offer(scene(T0 + 59.5, {}, crossing(track_id=2, at=T0 + 59.5))) == []
    [closed] = out.offer(scene(T0 + 60.1, {}))
    assert (closed.body["lines"], closed.body["frames"]) == ({"door": {"in": {"person": 2}}}, 2)
