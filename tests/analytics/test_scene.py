"""Tracks, lines and zones on synthetic scenes whose ground truth is exact: boxes moved along known paths."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from pydantic import ValidationError
from visionedge.analytics.engine import SceneEngine
from visionedge.analytics.events import Crossing, SceneFrame, ZoneEvent
from visionedge.analytics.settings import SourceAnalytics
from visionedge.frame import Detection

DOOR = {"name": "door", "points": [[0.1, 0.5], [0.9, 0.5]], "directions": ["in", "out"]}
DT = 0.1


def person(cx: float, bottom: float, score: float = 0.9, label: str = "person") -> Detection:
    """A 0.1 x 0.3 box whose bottom centre (the default anchor) is at (cx, bottom)."""
    return Detection(label, score, (cx - 0.05, bottom - 0.3, cx + 0.05, bottom))


def engine(**settings: object) -> SceneEngine:
    return SceneEngine("camera", SourceAnalytics.model_validate(settings))


def play(scene: SceneEngine, frames: Iterable[list[Detection]], start: float = 0.0) -> list[SceneFrame]:
    return [scene.update(dets, start + i * DT, "yolox-nano@1") for i, dets in enumerate(frames)]


def crossings(frames: list[SceneFrame]) -> list[Crossing]:
    return [e for f in frames for e in f.events if isinstance(e, Crossing)]


def zone_events(frames: list[SceneFrame], kind: str | None = None) -> list[ZoneEvent]:
    return [e for f in frames for e in f.events if isinstance(e, ZoneEvent) and kind in (None, e.kind)]


def test_one_object_walking_down_through_the_line_counts_once_as_the_first_direction() -> None:
    """Bottom centre moves from y=0.3 to y=0.8: one `in` crossing, nothing else."""
    scene = engine(lines=[DOOR])
    frames = play(scene, ([person(0.5, 0.3 + 0.02 * i)] for i in range(26)))
    got = crossings(frames)
    assert [(c.line, c.direction, c.label) for c in got] == [("door", "in", "person")]


def test_walking_up_counts_the_second_direction() -> None:
    """The same path reversed is one `out`."""
    scene = engine(lines=[DOOR])
    frames = play(scene, ([person(0.5, 0.8 - 0.02 * i)] for i in range(26)))
    assert [c.direction for c in crossings(frames)] == ["out"]


def test_standing_on_the_line_with_jitter_counts_once() -> None:
    """Walk to the line, jitter on it (+-0.015, inside the 0.02 hysteresis) for 4 s, walk on: exactly one count."""
    scene = engine(lines=[DOOR])
    path = [0.3 + 0.02 * i for i in range(10)]
    path += [0.5 + (0.015 if i % 2 else -0.015) for i in range(40)]
    path += [0.52 + 0.02 * i for i in range(15)]
    frames = play(scene, ([person(0.5, y)] for y in path))
    assert [c.direction for c in crossings(frames)] == ["in"]


def test_jitter_on_the_line_alone_counts_nothing() -> None:
    """Someone who stands on the line and never leaves it has not crossed."""
    scene = engine(lines=[DOOR])
    frames = play(scene, ([person(0.5, 0.5 + (0.015 if i % 2 else -0.015))] for i in range(50)))
    assert crossings(frames) == []


def test_passing_beside_the_segment_is_not_a_crossing() -> None:
    """The anchor crosses the line's extension at x=0.95, outside the segment [0.1, 0.9]."""
    scene = engine(lines=[DOOR])
    frames = play(scene, ([person(0.95, 0.3 + 0.02 * i)] for i in range(26)))
    assert crossings(frames) == []


def test_class_filter_counts_only_the_listed_labels() -> None:
    """A car crossing a people-only line is not counted."""
    scene = engine(lines=[{**DOOR, "classes": ["person"]}])
    frames = play(scene, ([person(0.5, 0.3 + 0.02 * i, label="car")] for i in range(26)))
    assert crossings(frames) == []


def test_two_objects_crossing_paths_keep_their_ids() -> None:
    """A walks right, B walks left on the same row; they overlap mid-frame and each keeps its id through it."""
    scene = engine()
    frames = play(scene, ([person(0.1 + 0.02 * i, 0.6), person(0.9 - 0.02 * i, 0.62)] for i in range(40)))
    ids = [f.track_ids for f in frames[2:]]
    assert all(None not in pair for pair in ids)
    assert len({pair for pair in ids}) == 1
    assert ids[0][0] != ids[0][1]


def test_a_frame_gap_keeps_the_track() -> None:
    """0.6 s without the object (dropped frames): the same id comes back where the motion says."""
    scene = engine()
    first = [scene.update([person(0.1 + 0.2 * t, 0.6)], t, "m@1") for t in (0.0, 0.1, 0.2, 0.3)]
    later = [scene.update([person(0.1 + 0.2 * t, 0.6)], t, "m@1") for t in (0.9, 1.0)]
    assert first[-1].track_ids == later[-1].track_ids == later[0].track_ids


def test_a_person_hidden_for_most_of_a_second_comes_back_with_its_own_id() -> None:
    """A walks right and goes unseen for 0.8 s (hidden behind B, who walks left in front); seen again 0.18 further on,
    A's track, extrapolated over the whole gap, takes it back, and B's track is not handed A's box."""
    scene = engine()
    frames = [[person(0.78 - 0.02 * i, 0.62)] + ([] if 11 <= i <= 18 else [person(0.1 + 0.02 * i, 0.6)])
              for i in range(25)]
    got = play(scene, frames)
    b_ids = {f.track_ids[0] for f in got}
    a_ids = {f.track_ids[1] for f in got if len(f.track_ids) == 2}
    assert len(a_ids) == len(b_ids) == 1
    assert a_ids != b_ids


def test_a_track_seen_in_the_last_frame_keeps_its_person_before_a_lost_one_is_matched() -> None:
    """B walks left and stops; A, walking right behind B, was last seen a frame earlier and its prediction lands right
    on B (better than B's own, which expected B to walk on): B keeps its id all the same."""
    scene = engine()
    frames = [[person(0.70 - 0.02 * min(i, 10), 0.6)] + ([person(0.28 + 0.02 * i, 0.6)] if i < 10 else [])
              for i in range(16)]
    got = play(scene, frames)
    assert len({f.track_ids[0] for f in got}) == 1


def test_dwell_is_measured_within_a_frame_interval_and_long_stays_alarm_once() -> None:
    """Enter at 1.0 s, stay, leave at 4.0 s: dwell 3.0 s +- 0.1 s, one dwell alarm after max_dwell_s."""
    zone = {"name": "counter", "points": [[0.3, 0.4], [0.7, 0.4], [0.7, 0.9], [0.3, 0.9]], "max_dwell_s": 2.0}
    scene = engine(zones=[zone])
    path = [0.05 + 0.025 * i for i in range(10)]  # x from 0.05: outside until 0.3 + hysteresis
    path += [0.5] * 30 + [0.5 + 0.05 * i for i in range(1, 10)]
    frames = play(scene, ([person(x, 0.6)] for x in path))
    enter, = zone_events(frames, "enter")
    leave, = zone_events(frames, "exit")
    assert leave.dwell_s is not None
    assert abs(leave.dwell_s - (leave.timestamp - enter.timestamp)) < 1e-6
    inside = [f.timestamp for f in frames if f.occupancy["counter"].get("person")]
    assert abs(leave.dwell_s - (inside[-1] - inside[0])) <= DT + 1e-6
    dwell, = zone_events(frames, "dwell")
    assert dwell.alarm
    assert 2.0 < dwell.dwell_s <= 2.0 + DT + 1e-6
    assert [(e.kind, e.label) for e in zone_events(frames) if e.kind != "dwell"] == [("enter", "person"),
                                                                                     ("exit", "person")]
    assert frames[-1].occupancy == {"counter": {}}


def test_forbidden_class_entering_is_an_alarm() -> None:
    """A dog walks into a people zone that forbids dogs: enter plus a forbidden alarm."""
    zone = {"name": "kitchen", "points": [[0.3, 0.4], [0.7, 0.4], [0.7, 0.9], [0.3, 0.9]],
            "classes": ["person"], "forbidden": ["dog"]}
    scene = engine(zones=[zone])
    frames = play(scene, ([person(0.1 + 0.04 * i, 0.6, label="dog")] for i in range(12)))
    forbidden, = zone_events(frames, "forbidden")
    assert (forbidden.zone, forbidden.label, forbidden.alarm) == ("kitchen", "dog", True)


def test_occupancy_counts_each_class_in_every_frame() -> None:
    """Two people and a dog standing in the zone: occupancy {person: 2, dog: 1}; an empty zone still appears."""
    zone = {"name": "hall", "points": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]}
    empty = {"name": "yard", "points": [[0.0, 0.0], [0.05, 0.0], [0.05, 0.05]]}
    scene = engine(zones=[zone, empty])
    dets = [person(0.3, 0.6), person(0.5, 0.6), person(0.7, 0.6, label="dog")]
    frames = play(scene, [dets] * 5)
    assert frames[-1].occupancy == {"hall": {"person": 2, "dog": 1}, "yard": {}}


def test_a_model_swap_ends_every_track_and_says_so() -> None:
    """After reset the next frame names the reason, zones report the old track's exit (then the new one enters, its
    0.9 box confident enough for an id at once), new ids start."""
    zone = {"name": "hall", "points": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]}
    scene = engine(zones=[zone])
    before = play(scene, [[person(0.5, 0.6)]] * 3)
    scene.reset("model changed")
    after = play(scene, [[person(0.5, 0.6)]] * 3, start=1.0)
    assert after[0].tracks_reset == "model changed"
    assert [e.kind for e in after[0].events if isinstance(e, ZoneEvent)] == ["exit", "enter"]
    assert after[-1].track_ids[0] != before[-1].track_ids[0]


def test_a_track_gets_its_id_from_enough_evidence() -> None:
    """A 0.9 box gets an id at once; a person first seen weakly (0.4, 0.45, 0.5) gets one when a 0.7 box joins the
    track; a lone 0.65 box, seen once, never gets one."""
    ids = [f.track_ids[0] for f in play(engine(), [[person(0.5, 0.6, 0.9)]])]
    assert ids[0] is not None
    ids = [f.track_ids[0] for f in play(engine(), ([person(0.5, 0.6, p)] for p in (0.4, 0.45, 0.5, 0.7, 0.5)))]
    assert ids[:3] == [None, None, None]
    assert ids[3] is not None
    assert ids[4] == ids[3]
    once = engine()
    frames = play(once, [[person(0.5, 0.6, 0.65)], [], []])
    assert all(i is None for f in frames for i in f.track_ids)
    assert once.tracker.next_id == 1  # no id burned


def test_tracker_thresholds_out_of_order_are_refused_with_the_reason() -> None:
    """An instant-id score below the birth score, or a low stage above the high one, would contradict itself."""
    for tracker, reason in (({"birth": 0.9}, "tracker.confirm_score must not be below tracker.birth"),
                            ({"low": 0.6}, "tracker.low must not exceed tracker.high")):
        with pytest.raises(ValidationError, match=reason):
            SourceAnalytics.model_validate({"tracker": tracker})


def test_a_new_engine_hands_out_ids_from_where_it_is_told() -> None:
    """Ids go on from `next_id` (the reserved ids of a previous run), so an old id never names a new object."""
    scene = engine(lines=[DOOR])
    play(scene, ([person(0.5, 0.3 + 0.02 * i)] for i in range(26)))
    again = SceneEngine("camera", SourceAnalytics.model_validate({"lines": [DOOR]}), scene.tracker.next_id)
    frames = play(again, ([person(0.5, 0.3 + 0.02 * i)] for i in range(26)), start=100.0)
    assert len(crossings(frames)) == 1
    assert min(i for f in frames for i in f.track_ids if i is not None) == scene.tracker.next_id


def test_a_track_that_vanishes_inside_a_zone_exits_at_its_last_sighting() -> None:
    """Occlusion past max_lost_s ends the track; its exit carries the time it was last seen inside."""
    zone = {"name": "hall", "points": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]}
    scene = engine(zones=[zone])
    play(scene, [[person(0.5, 0.6)]] * 10)
    gone = play(scene, [[]] * 15, start=1.0)
    leave, = zone_events(gone, "exit")
    assert leave.timestamp == 0.9
    assert leave.dwell_s is not None
    assert abs(leave.dwell_s - 0.9) < 1e-6  # inside from its first frame (a 0.9 box gets its id at once)


def test_a_person_behind_another_is_held_by_the_box_nms_removed_and_ends_when_only_that_is_left() -> None:
    """Two people walk side by side, then one steps behind the other: the model gives one box, and the second's box
    survives only as one NMS removed. That box holds the hidden person's track (same id, written as occluded) but
    does not move it or cross the line for it, and it cannot keep the track alive past max_lost_s."""
    scene = engine(lines=[{"name": "gate", "points": [[0.8, 0.0], [0.8, 1.0]], "directions": ["left", "right"]}])
    together = [scene.update([person(0.30 + 0.01 * i, 0.8), person(0.42 + 0.01 * i, 0.8, 0.85)], i * DT, "m@1")
                for i in range(5)]
    front, behind = together[-1].track_ids
    assert front is not None
    assert behind not in (None, front)
    held = []
    for i in range(5, 25):  # 2 s behind: the front person's box, and the hidden one's among the boxes NMS removed
        hidden = person(0.42 + 0.01 * i, 0.8, 0.6)
        frame = scene.update([person(0.30 + 0.01 * i, 0.8)], i * DT, "m@1", [hidden])
        assert frame.track_ids == (front,)
        held.append([track_id for _, track_id in frame.occluded])
    assert held[:10] == [[behind]] * 10, held  # held until 1 s (max_lost_s) after its last box of its own
    assert held[10:] == [[]] * 10, held
    track = {t.id: t for t in scene.tracker.tracks}
    assert behind not in track  # ended: a removed box is evidence of presence, not a box of its own
    assert crossings(together) == []


def test_the_occluded_stage_can_be_turned_off() -> None:
    """occluded: false ignores the boxes NMS removed: the hidden person's track is only lost."""
    scene = engine(tracker={"occluded": False})
    for i in range(5):
        scene.update([person(0.30, 0.8), person(0.42, 0.8, 0.85)], i * DT, "m@1")
    frame = scene.update([person(0.30, 0.8)], 5 * DT, "m@1", [person(0.42, 0.8, 0.6)])
    assert frame.occluded == ()
