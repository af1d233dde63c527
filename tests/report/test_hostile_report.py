"""Hostile input to `visionedge report`: outputs that name an input, odd records, many labels, spreadsheet formulas."""

from __future__ import annotations

import os

import pytest

from .conftest import write_jsonl


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
