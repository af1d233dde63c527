"""The helpers every part shares: one retry schedule, one way to cut an error to a line, one durable JSON write, one
way to move a corrupt file aside."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from visionedge.acks import merge_patch, replacing
from visionedge.durable import move_aside, read_json, write_json_atomic
from visionedge.errors import ConfigError, describe_error, first_line, one_line
from visionedge.retry import JITTER, backoff_delay


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap_within_the_jitter() -> None:
    """Retry n waits initial * 2**n give or take 25 %, never over the cap: cameras, sender and hub link follow it."""
    rng = random.Random(7)
    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (6, 30.0), (40, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert min(delays) >= base * (1 - JITTER)
        assert max(delays) <= min(base * (1 + JITTER), 30.0)
        assert max(delays) - min(delays) > base * JITTER / 2  # jittered, so a fleet does not retry in step


def test_first_line_keeps_one_short_line_of_a_long_runtime_error() -> None:
    """Runtime errors carry pages of internals; users and reported properties get their first line."""
    err = RuntimeError("  [ONNXRuntimeError] : 10 : INVALID_GRAPH " + "x" * 300 + "\n  at node 17\n  at ...")
    assert first_line(err) == ("[ONNXRuntimeError] : 10 : INVALID_GRAPH " + "x" * 300)[:200]
    assert first_line(err, 20) == "[ONNXRuntimeError] :"
    assert first_line(ValueError("")) == "ValueError"


def test_one_line_keeps_both_ends_of_a_long_reason() -> None:
    """Refusals and crashed parts say what failed (the start) and the system's reason (the end) in one line."""
    text = "loading model m 1 with the new runtime settings:\n  " + "x" * 400 + " No space left on device"
    line = one_line(text)
    assert len(line) == 300
    assert line.startswith("loading model m 1 with the new runtime settings: xxx")
    assert line.endswith("xxx No space left on device")
    assert "…" in line
    assert "\n" not in line
    assert one_line("  short\n  reason ") == "short reason"
    assert describe_error(ConfigError("bad  value")) == "bad value"
    assert describe_error(KeyError("k")) == "KeyError: 'k'"


def test_move_aside_keeps_a_corrupt_file_and_its_companions(tmp_path: Path) -> None:
    """The saved twin and the outbox move a corrupt file (and SQLite's -wal) out of the way, kept for inspection."""
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"garbage")
    (tmp_path / "outbox.sqlite-wal").write_bytes(b"log")
    aside = move_aside(path, ("-wal", "-shm"))
    assert aside.name.startswith("outbox.sqlite.corrupt-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([aside.name, f"{aside.name}-wal"])
    assert aside.read_bytes() == b"garbage"


def test_write_json_atomic_replaces_the_file_and_leaves_no_temporary_behind(tmp_path: Path) -> None:
    """The twin cache and the model store write their JSON this way: old or new content, never a mix."""
    target = tmp_path / "twin-desired.json"
    write_json_atomic(target, {"version": 1})
    write_json_atomic(target, {"version": 2, "document": {"inference": {"top_k": 3}}})
    assert read_json(target) == {"version": 2, "document": {"inference": {"top_k": 3}}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["twin-desired.json"]


_KEYS = st.sampled_from(["a", "b", "c", "$v"])
_LEAVES = st.one_of(st.integers(), st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=2))
_DOCS = st.recursive(_LEAVES, lambda inner: st.dictionaries(_KEYS, inner, max_size=3), max_leaves=8)


@given(held=st.dictionaries(_KEYS, _DOCS, max_size=3), value=st.dictionaries(_KEYS, _DOCS, max_size=3))
@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_replacing_patch_merged_as_the_hub_merges_gives_exactly_the_new_value(
        held: dict[str, Any], value: dict[str, Any]) -> None:
    """What the reporter sends: merge_patch(held, replacing(held, value)) == value, for any nesting and any field
    that went away (`$` keys are metadata the hub keeps and nobody patches)."""
    def plain(doc: Any) -> Any:
        return {k: plain(v) for k, v in doc.items() if not k.startswith("$")} if isinstance(doc, dict) else doc

    held, value = plain(held), plain(value)
    document = copy.deepcopy(held)
    merge_patch(document, replacing(held, value))
    assert document == _without_nulls(value)


def _without_nulls(doc: Any) -> Any:
    """A value as the twin stores it: a null is no field at all."""
    if not isinstance(doc, dict):
        return doc
    return {k: _without_nulls(v) for k, v in doc.items() if v is not None}
