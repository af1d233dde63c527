"""The module's scene analytics: reused results are not evidence, a model swap ends tracks, counters survive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from visionedge.analytics.live import SceneAnalytics
from visionedge.analytics.settings import SourceAnalytics
from visionedge.frame import Detection, Frame, Inference
from visionedge.result import result_schema, to_record

DOOR = SourceAnalytics.model_validate({"lines": [{"name": "door", "points": [[0.1, 0.5], [0.9, 0.5]]}]})
IMAGE = np.zeros((48, 64, 3), np.uint8)


def frame_at(i: int, y: float, model: str = "1") -> tuple[Frame, Inference, dict[str, Any]]:
    """Frame i (0.1 s apart) with one person whose bottom centre is at (0.5, y)."""
    frame = Frame(IMAGE, "camera", i, 1000.0 + i * 0.1)
    inference = Inference("yolox-nano", model, "detect", 5.0,
                          detections=(Detection("person", 0.9, (0.45, y - 0.3, 0.55, y)),))
    return frame, inference, to_record(frame, inference)


def walk(scene: SceneAnalytics, start: int = 0, model: str = "1") -> list[dict[str, Any]]:
    """One person walks down through the door; the records as the sinks see them."""
    records = []
    for i in range(26):
        frame, inference, record = frame_at(start + i, 0.3 + 0.02 * i, model)
        scene.observe(frame, inference, record, reused=False)
        records.append(record)
    return records


def test_track_ids_survive_a_kill_without_any_save(tmp_path: Path) -> None:
    """Ids are reserved on disk before they are handed out: a new instance for the same source (the first one never
    closed, as after kill -9) starts past every id the first one gave, and counts nothing itself."""
    first = SceneAnalytics(tmp_path)
    first.configure({"camera": DOOR}, "detect", ["camera"])
    given = {d["track_id"] for r in walk(first) for d in r["detections"] if "track_id" in d}
    second = SceneAnalytics(tmp_path)
    second.configure({"camera": DOOR}, "detect", ["camera"])
    again = {d["track_id"] for r in walk(second, start=100) for d in r["detections"] if "track_id" in d}
    assert given
    assert again
    assert min(again) > max(given)


def test_a_reused_result_is_not_new_evidence() -> None:
    """The gate's reused record carries the last track ids but moves no track: 100 reuses do not confirm, age or
    count anything."""
    scene = SceneAnalytics(None)
    scene.configure({"camera": DOOR}, "detect", ["camera"])
    records = walk(scene)
    hits = scene.engines["camera"].tracker.tracks[0].hits
    for i in range(100):
        frame, inference, record = frame_at(26 + i, 0.8)
        assert scene.observe(frame, inference, record, reused=True) is None
        assert record["detections"][0]["track_id"] == records[-1]["detections"][0]["track_id"]
    assert scene.engines["camera"].tracker.tracks[0].hits == hits


def test_a_model_swap_ends_every_track_and_says_so() -> None:
    """The first frame of a new model version carries tracks_reset naming both; the same person gets a new id."""
    scene = SceneAnalytics(None)
    scene.configure({"camera": DOOR}, "detect", ["camera"])
    before = walk(scene)
    frame, inference, record = frame_at(30, 0.8, model="2")
    swapped = scene.observe(frame, inference, record, reused=False)
    assert swapped is not None
    assert swapped.tracks_reset == "model changed from yolox-nano@1 to yolox-nano@2"
    after = walk(scene, start=40, model="2")
    assert after[-1]["detections"][0]["track_id"] != before[-1]["detections"][0]["track_id"]


def test_refusals_leave_the_settings_in_use() -> None:
    """A classifier or an unknown source id is refused with its reason and the engines stay as they were."""
    scene = SceneAnalytics(None)
    scene.configure({"camera": DOOR}, "detect", ["camera"])
    engine = scene.engines["camera"]
    with pytest.raises(ValueError, match="analytics need a detector; the model in use is a classify model"):
        scene.configure({"camera": SourceAnalytics()}, "classify", ["camera"])
    with pytest.raises(ValueError, match="analytics for unknown source lobby; sources: camera"):
        scene.configure({"lobby": DOOR}, "detect", ["camera"])
    assert scene.engines == {"camera": engine}


def test_a_box_nms_removed_that_holds_a_hidden_track_is_written_occluded_and_not_counted() -> None:
    """Two people, then one behind the other: the record of that frame has the front person's box, plus the hidden
    person's box (one NMS removed) with its track id and `occluded: true`; the counts are the model's own boxes and
    the record keeps to the result schema."""
    scene = SceneAnalytics(None)
    scene.configure({"camera": DOOR}, "detect", ["camera"])
    front, behind = Detection("person", 0.9, (0.30, 0.1, 0.40, 0.4)), Detection("person", 0.8, (0.36, 0.1, 0.46, 0.4))
    ids: list[int] = []
    for i in range(3):
        frame = Frame(IMAGE, "camera", i, 1000.0 + i * 0.1)
        inference = Inference("yolox-nano", "1", "detect", 5.0, detections=(front, behind))
        record = to_record(frame, inference)
        scene.observe(frame, inference, record, reused=False)
        ids = [d["track_id"] for d in record["detections"]]
    frame = Frame(IMAGE, "camera", 3, 1000.3)
    inference = Inference("yolox-nano", "1", "detect", 5.0, detections=(front,), hidden=(behind,))
    record = to_record(frame, inference)
    scene.observe(frame, inference, record, reused=False)
    assert record["detections"] == [
        {"label": "person", "confidence": 0.9, "box": [0.3, 0.1, 0.4, 0.4], "track_id": ids[0]},
        {"label": "person", "confidence": 0.8, "box": [0.36, 0.1, 0.46, 0.4], "track_id": ids[1], "occluded": True}]
    assert record["counts"] == {"person": 1}
    jsonschema.validate(record, result_schema())
