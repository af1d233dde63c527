"""`visionedge report` and `analyze --report`: one offline HTML file a person opens in a real browser, and exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from visionedge.report.day import HEAT_GRID, Timeline
from visionedge.report.export import COLUMNS, EXPORT_SCHEMA

from .conftest import copy_artifact, write_jsonl

MAX_DAY_BYTES = 10 * 1024 * 1024


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _day(records: list[dict[str, Any]], start: float, step_s: float, count: int) -> list[dict[str, Any]]:
    """A day of one camera: the real records replayed round and round, one every step_s seconds from start."""
    from visionedge.result import iso_utc

    day = []
    for i in range(count):
        record = dict(records[i % len(records)])
        record["frame_index"] = i
        record["timestamp"] = iso_utc(start + i * step_s)
        day.append(record)
    return day


def test_analyze_report_opens_offline_with_charts_and_key_frames(detector_run, open_report):
    """analyze --report on a real clip: every chart draws, key frames show with boxes, no request leaves the page."""
    report = detector_run / "report.html"
    seen = open_report(report)
    copy_artifact(report)
    assert seen.problems == []
    assert seen.requests == [report.as_uri()]
    assert seen.charts == 3  # timeline, label totals, heat maps
    assert seen.pictures >= 6
    assert "These moments have no pictures" not in seen.text
    for heading in ("Summary", "Over time", "Labels", "Where in the frame", "Key frames", "Most objects",
                    "First sighting of each label", "Biggest changes"):
        assert heading in seen.text
    assert "yolox-nano" in seen.text
    assert "CPUExecutionProvider" in seen.text
    assert "Counts per label, per second" in seen.text
    records = _records(detector_run / "day.jsonl")
    assert f"Frames\t{len(records)}" in seen.text
    people = sum(r["counts"].get("person", 0) for r in records)
    assert f"person\t{people}\t" in seen.text  # the labels table totals what the records say


def test_report_from_jsonl_is_the_same_day_without_pictures(detector_run, run_cli, open_report, tmp_path):
    """`report` from the JSONL alone shows the same sections and says why there are no pictures."""
    out = tmp_path / "from-jsonl.html"
    done = run_cli("report", detector_run / "day.jsonl", "-o", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith(f"120 records; wrote {out}")
    seen = open_report(out)
    assert seen.problems == []
    assert seen.requests == [out.as_uri()]
    assert seen.charts == 3
    assert seen.pictures == 0
    assert "These moments have no pictures" in seen.text
    assert "not recorded in result files" in seen.text  # providers are not in the records


def test_a_day_of_one_camera_stays_small_and_bins_per_minute(detector_run, run_cli, open_report, tmp_path):
    """24 h of a camera at one record a second (86,400 real records replayed) gives a report under 10 MB."""
    day = _day(_records(detector_run / "day.jsonl"), start=1_790_000_000.0, step_s=1.0, count=86_400)
    source = write_jsonl(tmp_path / "camera-day.jsonl", day)
    out = tmp_path / "camera-day.html"
    done = run_cli("report", source, "-o", out, "--title", "Front gate, one day", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size < MAX_DAY_BYTES
    seen = open_report(out)
    assert seen.problems == []
    assert seen.charts == 3
    assert "Counts per label, per minute" in seen.text
    assert "Front gate, one day" in seen.text
    assert "(24.0 h)" in seen.text


def test_classifier_day_has_no_heat_map(run_cli, media, open_report, tmp_path):
    """A SqueezeNet day: timeline as share of frames, label table, no heat map (no boxes), pictures of key frames."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("kitten_224.png", "fish_224.png", "golden_retriever.jpg", "squirrel.jpg"):
        (folder / name).write_bytes(media(name).read_bytes())
    out = tmp_path / "classifier.html"
    done = run_cli("analyze", folder, "--no-progress", "--jsonl", tmp_path / "c.jsonl", "--report", out)
    assert done.returncode == 0, done.stderr
    seen = open_report(out)
    assert seen.problems == []
    assert seen.charts == 2  # timeline and totals; no heat map
    assert "No boxes: the records come from a classifier." in seen.text
    assert "share of frames (top-1)" in seen.text
    assert "tabby" in seen.text
    assert seen.pictures >= 4  # each photo is the first sighting of its label


def test_empty_input_says_there_is_nothing(run_cli, open_report, tmp_path):
    """An empty JSONL file gives a report that says so, not an error or a broken page."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    out = tmp_path / "empty.html"
    done = run_cli("report", empty, "-o", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    seen = open_report(out)
    assert seen.problems == []
    assert seen.charts == 0
    assert "The input holds no result records: nothing to show." in seen.text


def test_corrupt_lines_are_skipped_counted_and_named(detector_run, run_cli, open_report, tmp_path):
    """Bad lines are skipped and counted; stderr and the report name where they are. Labels cannot inject script."""
    records = _records(detector_run / "day.jsonl")[:20]
    records[5] = {**records[5], "counts": {"<img src=x onerror=alert(1)>": 1},
                  "detections": [{"label": "<img src=x onerror=alert(1)>", "confidence": 0.9, "box": [0, 0, 1, 1]}]}
    source = write_jsonl(tmp_path / "cam.jsonl", records, {3: '{"schema_version": "1.0", "frame_in', 8: "not json"})
    out = tmp_path / "corrupt.html"
    done = run_cli("report", source, "-o", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1
    assert "skipped 2 line(s) that are not result records: cam.jsonl:3: " in warning[0]
    assert "cam.jsonl:8: " in warning[0]
    assert done.stderr.strip().endswith(f"20 records; wrote {out}")
    seen = open_report(out)
    assert seen.problems == []  # no alert dialog, no error
    assert seen.requests == [out.as_uri()]  # the injected <img src=x> never loaded
    assert "skipped 2 line(s)" in seen.text
    assert "<img src=x onerror=alert(1)>" in seen.text  # shown as text


def test_csv_and_parquet_exports_have_one_row_per_item(detector_run):
    """CSV and Parquet hold the same rows: one per detection (or a `none` row), with the record's fields."""
    records = _records(detector_run / "day.jsonl")
    with (detector_run / "day.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == sum(max(len(r["detections"]), 1) for r in records)
    first = records[0]
    got = [r for r in rows if r["frame_index"] == "0"]
    assert [r["label"] for r in got] == [d["label"] for d in first["detections"]]
    assert got[0]["export_schema"] == EXPORT_SCHEMA
    assert got[0]["timestamp"] == first["timestamp"]
    assert (got[0]["model_name"], got[0]["model_version"]) == (first["model"]["name"], first["model"]["version"])
    assert [float(got[0][k]) for k in ("x1", "y1", "x2", "y2")] == first["detections"][0]["box"]
    assert got[0]["kind"] == "detection"
    assert got[0]["rank"] == "1"
    table = pq.read_table(detector_run / "day.parquet")
    assert table.schema.names == list(COLUMNS)
    assert table.schema.metadata[b"visionedge.export_schema"] == EXPORT_SCHEMA.encode()
    assert table.num_rows == len(rows)
    assert table.column("label").to_pylist() == [r["label"] for r in rows]
    assert table.column("confidence").to_pylist() == [float(r["confidence"]) for r in rows]


def test_bad_invocations_get_one_line_reasons(run_cli, tmp_path):
    """A missing input, or no output asked for, is a one-line error with exit code 1."""
    missing = run_cli("report", tmp_path / "nope.jsonl", "-o", tmp_path / "r.html")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"visionedge: error: {tmp_path / 'nope.jsonl'}: not a file"
    (tmp_path / "a.jsonl").write_text("", encoding="utf-8")
    nothing = run_cli("report", tmp_path / "a.jsonl")
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == ("visionedge: error: nothing to write: "
                                      "give -o REPORT.html, --csv FILE or --parquet FILE")


@pytest.mark.parametrize(("span_s", "width"), [(600, 1), (3 * 3600, 60), (30 * 86400, 3600), (400 * 86400, 86400)])
def test_timeline_bins_stay_bounded_however_long_the_span(span_s, width):
    """The timeline widens its bins as the span grows, so memory depends on the span's bins, not the records."""
    timeline = Timeline()
    for i in range(5000):
        timeline.add(1_790_000_000.0 + span_s * i / 4999, {"person": 1})
    assert timeline.width == width
    assert len(timeline.bins) <= min(5000, span_s // width + 1)
    assert sum(b.frames for b in timeline.bins.values()) == 5000
    assert HEAT_GRID == (32, 24)
