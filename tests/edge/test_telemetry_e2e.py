"""Telemetry from a real module process through the real SDK into devhub: outputs, properties, bodies."""

from __future__ import annotations

import jsonschema
import pytest
from visionedge.result import result_schema
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import StartModule

pytestmark = pytest.mark.timeout(120)


def test_results_arrive_on_the_results_output_with_properties_and_a_valid_body(
    hub: DevHub, start_module: StartModule
) -> None:
    """Every-frame results are JSON messages on `results`, with routing properties and a stable message id."""
    start_module(hub)
    messages = hub.emulator.wait_for_telemetry(lambda m: m.output == "results", timeout=60, count=5)
    validator = jsonschema.Draft202012Validator(result_schema())
    for message in messages:
        assert message.content_type == "application/json"
        assert message.content_encoding == "utf-8"
        body = message.json
        validator.validate(body)
        assert body["type"] == "result"
        assert message.message_id == f"camera:{message.message_id.split(':')[1]}:{body['seq']}"
        assert dict(message.properties) == {"schema_version": "1.0", "model": "squeezenet", "source_id": "camera",
                                            "type": "result"}
        assert len(body["classifications"]) == 5
        assert "image" not in body
    seqs = [m.json["seq"] for m in messages]
    assert seqs == sorted(seqs)


def test_on_change_policy_sends_far_fewer_messages_and_window_aggregates(
    hub: DevHub, start_module: StartModule
) -> None:
    """The default on-change policy sends changes only, plus per-window aggregates with counts per label."""
    hub.set_desired({"telemetry": {"policy": "on-change", "aggregate_window_s": 3, "batch": False, "debounce_s": 0,
                                   "min_confidence_delta": 1.0}})
    start_module(hub)
    aggregates = hub.emulator.wait_for_telemetry(lambda m: m.output == "aggregates", timeout=60, count=2)
    body = max((a.json for a in aggregates), key=lambda b: b["frames"])
    assert body["type"] == "aggregate"
    assert body["frames"] >= 1
    assert body["labels"]
    results = [m for m in hub.emulator.telemetry() if m.output == "results"]
    status, payload = hub.emulator.call_method("getStatus", {})
    assert status == 200
    assert 0 < len(results) < payload["frames"]
