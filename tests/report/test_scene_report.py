"""The report's scene section in a real headless Chromium: crossings, occupancy, dwell, the picture with trails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
from visionedge.report import Outputs, ReportBuilder
from visionedge.result import iso_utc

from .conftest import copy_artifact, write_jsonl

T0 = 1_800_000_000.0
GEOMETRY = {"lines": [{"name": "door", "points": [[0.2, 0.5], [0.8, 0.5]], "directions": ["in", "out"]}],
            "zones": [{"name": "queue", "points": [[0.1, 0.6], [0.5, 0.6], [0.5, 0.95], [0.1, 0.95]]}]}
PEOPLE = 12
"""One person every 20 s walks down through the door line (crossing `in`) into the queue, staying 10 + i s."""


def door_day(geometry: bool = True) -> tuple[list[dict[str, Any]], int]:
    """One record per second for 300 s with exact ground truth, shaped as `analyze --analytics` writes them (a
    `scene` block; the geometry in it only when asked): every person crosses once; returns (records, crossings)."""
    records = []
    crossings = 0
    for second in range(300):
        detections, crossed, events = [], [], []
        inside = 0
        for person in range(PEOPLE):
            age = second - 20 * person
            if not 0 <= age < 30 + person:
                continue
            y = min(0.9, 0.2 + 0.05 * age)
            detections.append({"label": "person", "confidence": 0.9, "track_id": person + 1,
                               "box": [0.3, y - 0.2, 0.4, y]})
            if 0.2 + 0.05 * (age - 1) < 0.5 <= y:
                crossed.append({"kind": "crossing", "line": "door", "direction": "in", "label": "person",
                                "track_id": person + 1, "alarm": False})
            if y >= 0.6:
                inside += 1
            if age == 29 + person:
                events.append({"kind": "exit", "zone": "queue", "label": "person", "track_id": person + 1,
                               "dwell_s": 22.0 + person, "alarm": False})
        crossings += len(crossed)
        records.append({"schema_version": "1.0", "source_id": "door-cam", "frame_index": second,
                        "timestamp": iso_utc(T0 + second), "frame_size": [768, 576],
                        "model": {"name": "yolox-nano", "version": "1"}, "inference_ms": 20.0,
                        "detections": detections, "counts": {"person": len(detections)} if detections else {},
                        "scene": {"events": crossed + events, "occupancy": {"queue": {"person": inside}},
                                  **({"geometry": GEOMETRY} if geometry else {})}})
    return records, crossings


def test_a_door_day_shows_crossings_occupancy_dwell_and_the_picture(run_cli, open_report, tmp_path: Path) -> None:
    """`visionedge report` on a day of tracked records: four scene charts draw offline, the table has the exact
    crossings, and a record with a broken analytics part costs only that part."""
    records, crossings = door_day()
    records[3]["scene"] = "not an object"
    records[4]["scene"] = {"events": [{"kind": "crossing", "line": 1}, 7], "occupancy": [], "geometry": {"lines": "x"}}
    path = write_jsonl(tmp_path / "door.jsonl", records)
    done = run_cli("report", path, "-o", tmp_path / "door.html", "--no-progress")
    assert done.returncode == 0, done.stderr
    copy_artifact(tmp_path / "door.html")
    seen = open_report(tmp_path / "door.html")
    assert seen.problems == []
    assert seen.requests == [(tmp_path / "door.html").as_uri()]
    assert "Scene: lines, zones and tracks" in seen.text
    assert f"door\tin\t{crossings}" in seen.text
    assert crossings == PEOPLE
    page = (tmp_path / "door.html").read_text(encoding="utf-8")
    for div in ("scene-picture-0", "scene-crossings-0", "scene-occupancy-0", "scene-dwell-0"):
        assert f'id="{div}"' in page


def test_analyze_style_report_draws_the_geometry_on_a_real_frame(media, open_report, tmp_path: Path) -> None:
    """Records added with their frame and the geometry given to the builder (as analyze --analytics --report can):
    the source's picture is that frame with the line and zone drawn, in the page."""
    capture = cv2.VideoCapture(str(media("vtest.avi")))
    ok, frame = capture.read()
    capture.release()
    assert ok
    records, _ = door_day(geometry=False)
    builder = ReportBuilder(Outputs(html=tmp_path / "framed.html"), ("vtest.avi",))
    builder.scene.set_geometry("door-cam", GEOMETRY)
    for record in records[:60]:
        builder.add_record(json.loads(json.dumps(record)), frame)
    builder.finish()
    seen = open_report(tmp_path / "framed.html")
    assert seen.problems == []
    page = (tmp_path / "framed.html").read_text(encoding="utf-8")
    picture = page[page.index('id="scene-picture-0"'):]
    compact = picture.replace(" ", "")
    assert '"source":"data:image\\u002fjpeg;base64,' in compact  # plotly escapes the slash
    assert '"name":"door"' in compact
    assert '"name":"queue"' in compact


def test_analyze_with_analytics_reports_the_scene_on_a_real_clip(run_cli, short_clip, open_report, tmp_path) -> None:
    """`analyze --analytics --report` on the real clip: the scene section draws the line on a frame of the clip over
    the trails of the real tracks, and the crossings table matches the records' crossings."""
    geometry = tmp_path / "middle.yaml"
    geometry.write_text("lines:\n  - name: middle\n    points: [[0.5, 0.05], [0.5, 0.95]]\n"
                        "    directions: [east, west]\n", encoding="utf-8")
    done = run_cli("analyze", short_clip, "--model", "yolox-nano", "--analytics", geometry, "--no-progress",
                   "--jsonl", tmp_path / "scene.jsonl", "--report", tmp_path / "scene.html", timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "scene.jsonl").read_text(encoding="utf-8").splitlines()]
    crossed: dict[str, int] = {}
    for record in records:
        for event in record["scene"]["events"]:
            if event["kind"] == "crossing":
                crossed[event["direction"]] = crossed.get(event["direction"], 0) + 1
    assert any("track_id" in d for r in records for d in r["detections"])
    seen = open_report(tmp_path / "scene.html")
    assert seen.problems == []
    for direction, n in crossed.items():
        assert f"middle\t{direction}\t{n}" in seen.text
    picture = (tmp_path / "scene.html").read_text(encoding="utf-8")
    picture = picture[picture.index('id="scene-picture-0"'):].replace(" ", "")
    assert '"name":"middle"' in picture
    assert '"source":"data:image\\u002fjpeg;base64,' in picture
