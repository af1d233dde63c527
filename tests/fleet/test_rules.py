"""The rules underneath the fleet commands: the query language subset, ring assignment and plan checks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from visionedge.fleet.plan import PlanError, build_plan, check_against_hub, check_model_block, load_model_block
from visionedge.fleet.rings import RingError, bucket, parse_rings, ring_of
from visionedge_devhub.fleet import base_deployment, base_desired
from visionedge_devhub.query import QueryError, parse_condition, parse_query, parse_target_condition

from tests.deployment.conftest import _find_schemas_dir as find_schemas_dir

TWINS = [
    {"deviceId": "a", "tags": {"ring": "canary", "n": 3}, "properties": {"reported": {"model": {"ac": 200}}},
     "configurations": {"my-id.v2": {"status": "Applied"}}},
    {"deviceId": "b", "tags": {"ring": "it's"}, "properties": {"reported": {"model": {"ac": 400}}}},
    {"deviceId": "c", "tags": {}},
]


@pytest.mark.parametrize(("condition", "expected"), [
    ("tags.ring = 'canary'", ["a"]),
    ("tags.ring = 'it''s'", ["b"]),
    ("tags.ring != 'canary'", ["b"]),
    ("NOT tags.ring = 'canary'", ["b", "c"]),
    ("properties.reported.model.ac IN [400, 500]", ["b"]),
    ("tags.n >= 3 AND tags.n < 4.5", ["a"]),
    ("tags.n = '3'", []),
    ("IS_DEFINED(tags.ring) AND (deviceId = 'a' OR deviceId = 'b')", ["a", "b"]),
    ("NOT_IS_DEFINED(tags.ring)", ["c"]),
    ("configurations.[[my-id.v2]].status = 'Applied'", ["a"]),
    ("*", ["a", "b", "c"]),
])
def test_conditions_follow_iot_hub_semantics(condition: str, expected: list[str]) -> None:
    """A missing property or a different type never matches; [[...]] names keys with dots."""
    predicate = parse_condition(condition)
    assert [t["deviceId"] for t in TWINS if predicate(t)] == expected


def test_select_projection_and_count() -> None:
    """SELECT paths AS names, and COUNT() AS name."""
    rows = parse_query("SELECT deviceId, tags.ring AS ring FROM devices WHERE IS_DEFINED(tags.ring)").run(TWINS)
    assert rows == [{"deviceId": "a", "ring": "canary"}, {"deviceId": "b", "ring": "it's"}]
    assert parse_query("select count() as n from devices.modules").run(TWINS) == [{"n": 3}]


@pytest.mark.parametrize("text", ["SELECT * FROM jobs", "SELECT * FROM devices WHERE tags.x =",
                                  "SELECT * FROM devices WHERE tags.x LIKE 'a'", "SELECT * FROM devices x"])
def test_unsupported_queries_are_refused_with_the_place(text: str) -> None:
    """Anything outside the subset is a QueryError, never a silent match."""
    with pytest.raises(QueryError):
        parse_query(text)


def test_ring_assignment_is_a_pure_function_of_the_device_id() -> None:
    """Same id, same ring; about the requested share of 2,000 ids per ring; growing a ring moves only devices into
    it."""
    rings = parse_rings("canary=5,early=20,broad=75")
    ids = [f"camera-{i}" for i in range(2000)]
    first = {d: ring_of(d, rings) for d in ids}
    assert first == {d: ring_of(d, rings) for d in ids}
    share = sum(1 for r in first.values() if r == "canary") / len(ids)
    assert 0.03 < share < 0.07
    wider = parse_rings("canary=10,early=15,broad=75")
    moved = {d for d in ids if ring_of(d, wider) != first[d]}
    assert moved
    assert all(ring_of(d, wider) == "canary" and first[d] == "early" for d in moved)
    assert all(0 <= bucket(d) < 100 for d in ids[:50])


@pytest.mark.parametrize(("text", "reason"), [
    ("canary=5,broad=90", "add up to 95"),
    ("canary=5,canary=95", "repeat"),
    ("Canary=5,broad=95", "NAME=PERCENT"),
    ("canary:5,broad=95", "NAME=PERCENT"),
])
def test_bad_ring_specifications_say_how_to_write_them(text: str, reason: str) -> None:
    """One line that names the mistake."""
    with pytest.raises(RingError, match=reason):
        parse_rings(text)


GOOD_BLOCK = {"name": "custom", "version": "2", "url": "https://models.example/m.onnx", "sha256": "a" * 64,
              "manifest": {"task": "classify", "input_name": "data_0", "width": 224, "height": 224,
                           "labels": "imagenet_labels.txt", "decoder": {"type": "classification"}}}


@pytest.mark.parametrize(("change", "reason"), [
    ({"url": "http://models.example/m.onnx"}, "https"),
    ({"sha256": None}, "sha256 is required"),
    ({"version": None}, "version"),
    ({"colour": "blue"}, "colour"),
    ({"manifest": {"task": "classify", "pad": "x" * 5000}}, "4096"),
    ({"manifest": {**GOOD_BLOCK["manifest"], "in.put": 1}}, "IoT Hub would refuse the block.*'in.put'"),
    ({"manifest": {**GOOD_BLOCK["manifest"], "$x": 1}}, "IoT Hub would refuse the block"),
    ({"manifest": {**GOOD_BLOCK["manifest"], "width": 2**60}}, "outside -2\\^52"),
])
def test_plan_refuses_a_block_the_module_or_the_hub_would_refuse(change: dict[str, Any], reason: str,
                                                                 tmp_path: Path) -> None:
    """The module's own checks and the hub's 4 KB limit, before anything is created."""
    block = {k: v for k, v in {**GOOD_BLOCK, **change}.items() if v is not None}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(block), encoding="utf-8")
    with pytest.raises(PlanError, match=reason):
        load_model_block(path)


def hub_state(**base_changes: Any) -> list[dict[str, Any]]:
    """What the hub holds: one base deployment (with changes)."""
    return [{**base_deployment(base_desired(1.0)), **base_changes}]


def test_plan_checks_against_the_hub() -> None:
    """Base must rank below the layers, the first ring must have devices, 100 deployments at most, and the base
    with the layer must validate against the SchemaStore manifest schema."""
    plan = build_plan(check_model_block(GOOD_BLOCK), ["canary", "early", "broad"])
    sizes = {"canary": 2, "early": 5, "broad": 0}
    schemas = find_schemas_dir()
    warnings = check_against_hub(plan, hub_state(), sizes, schemas)
    assert warnings == ["ring 'broad' has no device"]
    with pytest.raises(PlanError, match="must rank above every base"):
        check_against_hub(plan, hub_state(priority=95), sizes, schemas)
    with pytest.raises(PlanError, match="ring 'canary' has no device"):
        check_against_hub(plan, hub_state(), {**sizes, "canary": 0}, schemas)
    crowded = hub_state() + [{"id": f"other-{i}", "labels": {}} for i in range(97)]
    with pytest.raises(PlanError, match="limit of 100"):
        check_against_hub(plan, crowded, sizes, schemas)
    broken = hub_state()
    del broken[0]["content"]["modulesContent"]["$edgeHub"]
    with pytest.raises(PlanError, match=r"azure-iot-edge-deployment-2.0.json.*\$edgeHub"):
        check_against_hub(plan, broken, sizes, schemas)
    with pytest.raises(PlanError, match="no base deployment"):
        check_against_hub(plan, [], sizes, schemas)
    older = hub_state()
    older[0]["content"]["modulesContent"]["$edgeAgent"]["properties.desired"]["schemaVersion"] = "1.0"
    with pytest.raises(PlanError, match=r"schemaVersion '1\.0'"):
        check_against_hub(plan, older, sizes, schemas)


def test_every_deployment_of_a_plan_is_one_iot_hub_accepts() -> None:
    """$edgeAgent in every layer (restating the base's schemaVersion), no IN in a target condition (IoT Hub answers
    InvalidConfigurationTargetCondition), ids of lowercase letters, digits and -+%_*!', labels strings."""
    plan = build_plan(check_model_block(GOOD_BLOCK), ["canary", "early", "broad"])
    for deployment in (*plan.waves, plan.current):
        assert deployment["content"]["modulesContent"]["$edgeAgent"] == {"properties.desired.schemaVersion": "1.1"}
        parse_target_condition(deployment["targetCondition"])
        assert re.fullmatch(r"[a-z0-9\-+%_*!']{1,128}", deployment["id"])
        assert all(isinstance(v, str) for v in deployment["labels"].values())
    assert plan.current["targetCondition"] == ("tags.visionedge.ring='canary' OR tags.visionedge.ring='early' OR "
                                               "tags.visionedge.ring='broad'")
