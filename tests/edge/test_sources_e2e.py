"""Several sources through the twin, in a real module process: per-source results, status, metrics and isolation."""

from __future__ import annotations

import re
from typing import Any

import pytest
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import StartModule
from tests.edge.test_twin_methods import reported_ack, scrape

pytestmark = pytest.mark.timeout(150)


def _sources_status(hub: DevHub, predicate: Any, timeout: float = 60) -> list[dict[str, Any]]:
    doc = hub.emulator.wait_for_reported(lambda r: predicate(r.get("status", {}).get("sources", [])), timeout=timeout)
    sources: list[dict[str, Any]] = doc["status"]["sources"]
    return sources


def test_a_sources_list_in_the_twin_runs_every_camera_with_its_own_results_status_and_metrics(
    hub: DevHub, start_module: StartModule
) -> None:
    """`sources: [door, yard, lost]` at 5 fps: door and yard send results with their own id and seq; `lost` (a
    camera that never answers) retries without stalling them; status and metrics show each source."""
    module = start_module(hub)
    version = hub.set_desired({"sources": [
        {"id": "door", "url": "sample", "fps": 5},
        {"id": "yard", "url": "sample", "fps": 5},
        {"id": "lost", "url": "http://127.0.0.1:9/none", "reconnect_initial_s": 0.2, "reconnect_max_s": 0.5},
    ]})
    assert reported_ack(hub, "sources", version)["ac"] == 200

    def flowing(sources: list[dict[str, Any]]) -> bool:
        by_id = {s["id"]: s for s in sources}
        return (by_id.keys() == {"door", "yard", "lost"} and by_id["door"]["frames"] >= 5
                and by_id["yard"]["frames"] >= 5 and by_id["lost"]["state"] == "retrying")

    sources = {s["id"]: s for s in _sources_status(hub, flowing)}
    assert sources["lost"]["frames"] == 0
    assert "cannot open" in sources["lost"]["reason"]

    messages = hub.emulator.wait_for_telemetry(
        lambda m: m.output == "results" and isinstance(m.json, dict) and m.json.get("source_id") in ("door", "yard"),
        timeout=60, count=10)
    seqs: dict[str, list[int]] = {}
    for message in messages:
        body = message.json
        assert message.properties["source_id"] == body["source_id"]
        seqs.setdefault(body["source_id"], []).append(body["seq"])
    assert set(seqs) == {"door", "yard"}
    for numbers in seqs.values():
        assert numbers == sorted(numbers)

    _, text = scrape(module.metrics_port)
    for source in ("door", "yard", "lost"):
        assert re.search(rf'visionedge_frames_analyzed_total{{[^}}]*source="{source}"', text), source
    assert re.search(r'visionedge_source_state{[^}]*source="lost",state="retrying"} 1.0', text)
