"""Hostile input to `visionedge report`: outputs that name an input, odd records, many labels, spreadsheet formulas."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from visionedge.report import Outputs, report_from_files
from visionedge.report.day import MAX_LABELS, OTHER
from visionedge.report.html import ReportInfo, render

from .conftest import write_jsonl


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _one_line_error(done) -> str:
    """The single `visionedge: error:` line of a failed command (no traceback)."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("visionedge: error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.mark.parametrize(("flag", "target"), [
    ("--csv", "day.jsonl"), ("-o", "day.jsonl"), ("--parquet", "day.jsonl"), ("--csv", "sub/../day.jsonl"),
    ("-o", "link.html"), ("--csv", "hard.csv"),
])
def test_an_output_that_is_an_input_is_refused_before_anything_is_written(detector_run, run_cli, tmp_path, flag,
                                                                          target):
    """`report day.jsonl --csv day.jsonl` (by name, through a symbolic link or as a hard link) exits 1 in one line
    and leaves the input byte for byte as it was."""
    day = tmp_path / "day.jsonl"
    day.write_bytes((detector_run / "day.jsonl").read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.html").symlink_to(day)
    os.link(day, tmp_path / "hard.csv")
    before = day.read_bytes()
    done = run_cli("report", day, flag, tmp_path / target, "--no-progress")
    assert _one_line_error(done) == (f"visionedge: error: output {tmp_path / target} is the input {day}: "
                                     "refusing to overwrite it")
    assert day.read_bytes() == before


def test_the_same_output_twice_and_analyze_onto_its_input_are_refused(run_cli, media, tmp_path):
    """Two outputs naming one file, or `analyze IMAGE --jsonl IMAGE`, exit 1 before anything is opened."""
    day = write_jsonl(tmp_path / "day.jsonl", [])
    out = tmp_path / "out.html"
    done = run_cli("report", day, "-o", out, "--csv", out, "--no-progress")
    assert _one_line_error(done) == (f"visionedge: error: output {out} is also the output {out}: "
                                     "refusing to overwrite it")
    assert not out.exists()
    image = tmp_path / "kitten.png"
    image.write_bytes(media("kitten_224.png").read_bytes())
    before = image.read_bytes()
    done = run_cli("analyze", image, "--jsonl", image, "--no-progress")
    assert _one_line_error(done) == (f"visionedge: error: output {image} is the input {image}: "
                                     "refusing to overwrite it")
    assert image.read_bytes() == before


def _odd_lines(record: dict[str, Any]) -> list[str]:
    """Valid JSON lines that once ended the report with a traceback (issue 27.3), each made from a real record."""
    box = dict(record["detections"][0])
    nan_box = json.dumps({**record, "detections": [{**box, "box": [0.1, 0.1, 0.2, 0.2]}]}).replace(
        "0.2]", "NaN]", 1)
    classification = {k: v for k, v in record.items() if k not in ("detections", "counts")}
    classification["classifications"] = [{"label": "tabby", "confidence": 0.7}]
    return [
        nan_box,
        json.dumps({**record, "detections": [{**box, "box": [0.1, "nan", 0.2, 0.2]}]}),
        json.dumps({**record, "frame_size": [1, 1]}).replace("[1, 1]", "[1e999, 1]"),
        json.dumps(classification),
        json.dumps({**record, "timestamp": "0001-01-01T00:30:00+01:00"}),
        json.dumps({**record, "timestamp": "9999-12-31T23:30:00-01:00"}),
        json.dumps({**record, "frame_index": 10**400}),
        json.dumps({**record, "frame_size": [-640, 480]}),
        json.dumps({**record, "inference_ms": 1}).replace('"inference_ms": 1', '"inference_ms": Infinity'),
    ]


def test_odd_valid_json_lines_are_skipped_and_counted_in_every_output(detector_run, run_cli, open_report, tmp_path):
    """A NaN box (JSON NaN and "nan"), an infinite frame size, a classification without counts, timestamps in
    year 0 or 10000 after their offset, a 401-digit frame index: the HTML, CSV and Parquet are written, the bad
    lines are named, and the classification (whose counts follow from its items) is kept."""
    records = _records(detector_run / "day.jsonl")[:20]
    odd = _odd_lines(records[0])
    source = write_jsonl(tmp_path / "cam.jsonl", records, {2 + 2 * i: line for i, line in enumerate(odd)})
    out = tmp_path / "odd.html"
    done = run_cli("report", source, "-o", out, "--csv", tmp_path / "odd.csv", "--parquet", tmp_path / "odd.parquet",
                   "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert ("skipped 8 line(s) that are not result records: cam.jsonl:2: NaN is not a number JSON allows; "
            "cam.jsonl:4: detections entry with a confidence or box that is not a finite number; "
            "cam.jsonl:6: frame_size is not a finite number; cam.jsonl:10: timestamp 0001-01-01T00:30:00+01:00 is "
            "outside the years 1 to 9999 in UTC; ") in done.stderr
    assert done.stderr.strip().endswith(f"21 records; wrote {out}, {tmp_path / 'odd.csv'}, {tmp_path / 'odd.parquet'}")
    assert pq.read_table(tmp_path / "odd.parquet").column("label").to_pylist().count("tabby") == 1
    seen = open_report(out)
    assert seen.problems == []
    assert "skipped 8 line(s)" in seen.text


# ---- property-based fuzzing of the JSONL reader and the whole report (in process) -------------------------------

FUZZ = dict(derandomize=True, deadline=None, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
EDGE_NUMBERS = [math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**63, 2**63 - 1, -1, 0, -0.0, 1e308, 5e-324,
                "nan", "inf", "-1e999", None, True]
number = st.one_of(st.sampled_from(EDGE_NUMBERS), st.floats(), st.integers(-(10**20), 10**20), st.text(max_size=4))
formula_text = st.one_of(st.text(max_size=12), st.sampled_from(["=1+1", "+cmd", "-2", "@SUM(A1)", "\tx", "\rx", ""]))
timestamp = st.one_of(
    st.builds(lambda y, h, off: f"{y:04d}-01-01T{h:02d}:30:00{off}", st.integers(0, 10000), st.integers(0, 23),
              st.sampled_from(["Z", "+01:00", "-01:00", "+23:59", ""])),
    st.text(max_size=12), number,
)
box = st.lists(number, min_size=0, max_size=5)
detection = st.fixed_dictionaries({"label": formula_text, "confidence": number, "box": box})
classification = st.fixed_dictionaries({"label": formula_text, "confidence": number})
counts = st.dictionaries(formula_text, number, max_size=4)
json_value = st.recursive(st.none() | st.booleans() | number | st.text(max_size=6),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=12)


@st.composite
def records(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any] | Any:
    """A real record with some fields replaced by edge values, some removed, or now and then any JSON at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)
    record = dict(base)
    fields = {"frame_index": number, "frame_size": st.lists(number, max_size=3), "inference_ms": number,
              "timestamp": timestamp, "counts": counts, "source_id": formula_text, "reused": json_value,
              "detections": st.lists(detection, max_size=4), "model": st.fixed_dictionaries(
                  {"name": formula_text, "version": formula_text})}
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
        record[key] = draw(fields[key])
    if draw(st.booleans()):
        record.pop(draw(st.sampled_from(sorted(record))), None)
    if draw(st.integers(0, 3)) == 0:
        record.pop("detections", None)
        record["classifications"] = draw(st.lists(classification, max_size=3))
    return record


def _write_lines(path: Path, values: list[Any]) -> int:
    """JSONL as a broken upstream writes it: NaN/Infinity literals and 400-digit integers included."""
    lines = [json.dumps(v, allow_nan=True) for v in values]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _check_outputs(builder: Any, lines: int, csv_path: Path, parquet_path: Path) -> None:
    """Every line is a record or a counted bad line; the CSV and Parquet hold one row per item of each record."""
    assert builder.stats.frames + builder.bad.count == lines
    with csv_path.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    table = pq.read_table(parquet_path)
    assert len(rows) - 1 == table.num_rows >= builder.stats.frames


@settings(max_examples=120, **FUZZ)
@given(data=st.data())
def test_fuzzed_records_are_kept_or_counted_never_a_traceback(detector_run, tmp_path_factory, data):
    """Any mix of real and mutated records (NaN, ±inf, huge integers, negative sizes, far timestamps, missing
    fields) goes through the reader, the day's statistics, the CSV and the Parquet export without an exception."""
    base = _records(detector_run / "day.jsonl")[0]
    out = tmp_path_factory.mktemp("fuzz")
    values = data.draw(st.lists(st.one_of(st.just(base), records(base)), min_size=1, max_size=6))
    lines = _write_lines(out / "in.jsonl", values)
    builder, _ = report_from_files([out / "in.jsonl"], Outputs(csv=out / "o.csv", parquet=out / "o.parquet"))
    _check_outputs(builder, lines, out / "o.csv", out / "o.parquet")
    builder.stats.heat  # noqa: B018 - the heat grids are binned here
    render(builder.stats, builder.keys, ReportInfo("fuzz", ("in.jsonl",), (), None, False, builder.bad))


@settings(max_examples=15, **FUZZ)
@given(data=st.data())
def test_fuzzed_records_give_a_whole_report_that_opens(detector_run, tmp_path_factory, open_report, data):
    """The whole report (HTML + CSV + Parquet) of fuzzed records is written and opens in Chromium with a clean
    console."""
    base = _records(detector_run / "day.jsonl")[0]
    out = tmp_path_factory.mktemp("fuzzhtml")
    values = data.draw(st.lists(st.one_of(st.just(base), records(base)), min_size=1, max_size=8))
    lines = _write_lines(out / "in.jsonl", values)
    outputs = Outputs(html=out / "r.html", csv=out / "o.csv", parquet=out / "o.parquet")
    builder, written = report_from_files([out / "in.jsonl"], outputs)
    assert written == [out / "r.html", out / "o.csv", out / "o.parquet"]
    _check_outputs(builder, lines, out / "o.csv", out / "o.parquet")
    if builder.stats.frames:
        assert open_report(out / "r.html").problems == []


MANY_LABELS_PEAK_KB = 300 * 1024
"""Before labels were bounded, 10^5 labels took 824 MB (each kept a 32x24 heat grid); now about 150 MB."""
MANY_LABELS_SECONDS = 90
"""About 12 s on the 2-core development machine at load 7; 41 s before."""


def _many_labels(path: Path, base: dict[str, Any], labels: int, per_record: int = 4) -> None:
    """Records whose detections name `labels` distinct labels in all, `per_record` new ones in each."""
    box = base["detections"][0]
    with path.open("w", encoding="utf-8") as stream:
        for i in range(labels // per_record):
            names = [f"label-{i * per_record + j}" for j in range(per_record)]
            record = {**base, "frame_index": i, "counts": dict.fromkeys(names, 1),
                      "detections": [{**box, "label": name} for name in names]}
            stream.write(json.dumps(record) + "\n")


def test_a_hundred_thousand_labels_stay_within_bounded_time_memory_and_page(detector_run, cli_env, open_report,
                                                                               tmp_path):
    """10^5 distinct labels (a broken model's labels file, a hostile upstream): the report is written within a
    bounded time and memory, shows the top labels and says that the rest are counted together as other labels."""
    source = tmp_path / "labels.jsonl"
    _many_labels(source, _records(detector_run / "day.jsonl")[0], 100_000)
    out = tmp_path / "labels.html"
    # VmHWM is this process's own peak: ru_maxrss would carry over the forking pytest process's size across exec
    script = ("import re, sys, time; from pathlib import Path; from visionedge.cli import main; "
              "started = time.monotonic(); code = main(sys.argv[1:]); "
              "peak = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1); "
              "sys.stderr.write(f'peak_kb={peak} seconds={time.monotonic() - started:.1f}\\n'); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, "report", str(source), "-o", str(out), "--csv",
                           str(tmp_path / "labels.csv"), "--no-progress"], capture_output=True, text=True,
                          env=cli_env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    figures = dict(part.split("=") for part in done.stderr.splitlines()[-1].split())
    assert int(figures["peak_kb"]) < MANY_LABELS_PEAK_KB, figures
    assert float(figures["seconds"]) < MANY_LABELS_SECONDS, figures
    assert out.stat().st_size < 8 * 1024 * 1024
    seen = open_report(out)
    assert seen.problems == []
    assert f"labels beyond the first {MAX_LABELS:,} distinct ones are counted together as {OTHER}" in seen.text


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1:A2)", "\tcmd", "\rcmd"]


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_parquet_keeps_them(detector_run, run_cli, tmp_path):
    """Labels, source ids and model names starting with = + - @ tab or CR get a leading quote in the CSV (OWASP);
    the Parquet export holds the raw values; ordinary labels are untouched."""
    base = _records(detector_run / "day.jsonl")[0]
    box = base["detections"][0]
    records = [{**base, "frame_index": i, "source_id": formula, "model": {"name": formula, "version": "1"},
                "counts": {formula: 1, "person": 1},
                "detections": [{**box, "label": formula}, {**box, "label": "person"}]}
               for i, formula in enumerate(FORMULAS)]
    source = write_jsonl(tmp_path / "cam.jsonl", records)
    done = run_cli("report", source, "--csv", tmp_path / "o.csv", "--parquet", tmp_path / "o.parquet",
                   "--no-progress")
    assert done.returncode == 0, done.stderr
    with (tmp_path / "o.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["label"] for r in rows] == [v for f in FORMULAS for v in (f"'{f}", "person")]
    assert [r["source_id"] for r in rows[::2]] == [f"'{f}" for f in FORMULAS]
    assert [r["model_name"] for r in rows[::2]] == [f"'{f}" for f in FORMULAS]
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column("label").to_pylist() == [v for f in FORMULAS for v in (f, "person")]
    assert table.column("source_id").to_pylist()[::2] == FORMULAS
