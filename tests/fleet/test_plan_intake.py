"""`visionedge fleet plan` on hostile MODEL.json: one line, exit 1, within a second, whatever the file is; and a fuzzer
over the plan reader (hypothesis: shapes, NaN, infinities, huge integers, deep nesting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from visionedge.fleet.plan import MAX_MODEL_FILE_BYTES, PlanError, load_model_block

from tests.fleet.test_rules import GOOD_BLOCK

pytestmark = pytest.mark.timeout(120)


def nested(depth: int) -> dict[str, Any]:
    """GOOD_BLOCK with a manifest field nested `depth` objects deep (the block itself is level 1)."""
    inner: Any = "leaf"
    for _ in range(depth - 2):
        inner = {"n": inner}
    return {**GOOD_BLOCK, "manifest": {**GOOD_BLOCK["manifest"], "extra": inner}}


def hostile(tmp_path: Path, case: str) -> Path:
    """The file for one hostile case."""
    path = tmp_path / f"{case}.json"
    if case == "deep-100000":
        path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    elif case == "deep-30000-under-the-size-cap":
        path.write_text('{"a":' * 10_000 + "1" + "}" * 10_000, encoding="utf-8")
    elif case == "eleven-levels":
        path.write_text(json.dumps(nested(11)), encoding="utf-8")
    elif case == "infinite-gate":
        gate = json.dumps({**GOOD_BLOCK, "shadow": {"max_latency_ratio": 2.5}})
        path.write_text(gate.replace("2.5", "1e999"), encoding="utf-8")
    elif case == "nan-literal":
        path.write_text(json.dumps(GOOD_BLOCK).replace('"2"', "NaN"), encoding="utf-8")
    elif case == "fifo-without-writer":
        os.mkfifo(path)
    elif case == "300-mb":
        with path.open("wb") as f:
            f.truncate(300 * 1024 * 1024)
    elif case == "folder":
        path.mkdir()
    return path


CASES = {
    "deep-100000": "larger than 64 KiB",
    "deep-30000-under-the-size-cap": "nested deeper than",
    "eleven-levels": "nested deeper than 10 levels",
    "infinite-gate": "not finite",
    "nan-literal": "not valid JSON",
    "fifo-without-writer": "not a regular file",
    "300-mb": "larger than 64 KiB",
    "folder": "not a regular file",
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_model_files_are_refused_in_one_line_within_a_second(case: str, tmp_path: Path) -> None:
    """Each case: a PlanError naming the reason, in well under a second, without reading the file whole."""
    path = hostile(tmp_path, case)
    started = time.monotonic()
    with pytest.raises(PlanError, match=CASES[case]) as refused:
        load_model_block(path)
    assert time.monotonic() - started < 1.0
    assert "\n" not in str(refused.value)


def test_ten_levels_are_what_a_twin_allows(tmp_path: Path) -> None:
    """The deepest block IoT Hub stores is accepted (the limit is not off by one)."""
    path = tmp_path / "ten.json"
    path.write_text(json.dumps(nested(10)), encoding="utf-8")
    # past the reader's 10-level cap, the module's own schema answers (its inline manifest allows 8 levels)
    with pytest.raises(PlanError, match=r"model\.manifest: ") as refused:
        load_model_block(path)
    assert "deeper than 10 levels" not in str(refused.value)


def test_the_command_says_one_line_and_exits_1_on_a_fifo(tmp_path: Path) -> None:
    """The case that used to hang forever, as the operator runs it."""
    path = hostile(tmp_path, "fifo-without-writer")
    result = subprocess.run([sys.executable, "-m", "visionedge", "fleet", "plan", "--offline", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == f"visionedge fleet: error: MODEL.json {path} is a FIFO, device or socket, not a " \
                            "regular file\n"
    assert result.stdout == ""


@pytest.mark.parametrize("flag", ["--min-applied=nan", "--max-failed=inf", "--soak=-1", "--wave-timeout=1e999",
                                  "--poll=0"])
def test_non_finite_or_out_of_range_gates_are_usage_errors(flag: str, tmp_path: Path) -> None:
    """A gate read from the command line is a finite number in its range, or exit 2 naming it."""
    result = subprocess.run([sys.executable, "-m", "visionedge", "fleet", "rollout", "model.json", flag],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"argument {flag.split('=')[0]}" in result.stderr


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["https://models.example/m.onnx", "a" * 64, "classify", "", "\u0000", "x" * 5000]),
)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.sampled_from([*GOOD_BLOCK, "model", "shadow", "max_latency_ratio", "x"]),
                                           inner, max_size=4), max_leaves=12)
edits = st.dictionaries(st.sampled_from([*GOOD_BLOCK, "model", "max_latency_ratio"]), documents, max_size=3)


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(documents, edits.map(lambda e: {**GOOD_BLOCK, **e}),
                          edits.map(lambda e: {"model": {**GOOD_BLOCK, **e}})))
def test_the_plan_reader_answers_every_document_with_a_block_or_one_line(document: Any, tmp_path: Path) -> None:
    """Whatever JSON (or JSON-like: NaN, Infinity, 400-digit integers) MODEL.json holds: a checked block whose JSON is
    strict and finite, or a PlanError of one line; never another exception."""
    path = tmp_path / "model.json"
    path.write_text(json.dumps(document, allow_nan=True)[:MAX_MODEL_FILE_BYTES + 10], encoding="utf-8")
    try:
        block = load_model_block(path)
    except PlanError as err:
        refusal = str(err)
    else:
        refusal = ""
        json.dumps(block, allow_nan=False)
    assert "\n" not in refusal


def test_plan_prints_a_summary_and_the_deployments_with_json(tmp_path: Path) -> None:
    """`plan` shows one line per deployment; `plan --json` is the JSON docs/fleet.md feeds to `az` (issue: the flag
    the docs named did not exist)."""
    path = tmp_path / "model.json"
    path.write_text(json.dumps(GOOD_BLOCK), encoding="utf-8")
    command = [sys.executable, "-m", "visionedge", "fleet", "plan", "--offline", str(path)]
    summary = subprocess.run(command, capture_output=True, text=True, timeout=60)
    full = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60)
    assert (summary.returncode, full.returncode) == (0, 0), summary.stderr + full.stderr
    plan = json.loads(full.stdout)
    assert [d["labels"]["visionedge.ring"] for d in plan["deployments"]] == ["canary", "early", "broad"]
    lines = summary.stdout.splitlines()
    assert lines[0] == f"rollout {plan['rollout']}: custom 2, one wave per ring"
    assert lines[1:4] == [f"  {d['id']}  priority 100  {d['targetCondition']}" for d in plan["deployments"]]
