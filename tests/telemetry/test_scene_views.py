"""The scene's running figures in the reported status, the metrics on :9600 and the resetCounters method."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from visionedge.config import OutboxSettings, TelemetrySettings
from visionedge.edge.client import HubClient
from visionedge.edge.methods import DirectMethods
from visionedge.metrics import LABELS, ModuleCollector
from visionedge.state import ModuleSnapshot, SourceSnapshot, status_view
from visionedge.telemetry.events import dumps
from visionedge.telemetry.scene import MAX_CLASSES, LineSpec, SceneLayout, SceneTotals, ZoneSpec
from visionedge.telemetry.sceneviews import STATUS_MAX_BYTES, status_block
from visionedge.telemetry.sink import TelemetrySink

from .conftest import OpenOutbox
from .support import Clock, crossing, scene, zone_event

LAYOUT = SceneLayout("cam", (LineSpec("door"),), (ZoneSpec("queue", classes=("person",)),))


def snapshot(scene_totals: dict[str, SceneTotals]) -> ModuleSnapshot:
    """A module snapshot with one source and the given scene figures."""
    return ModuleSnapshot(module_version="0", instance="i", started_at=0.0, desired_version=1, last_error="",
                          hub_connected=True, sources=(SourceSnapshot(id="cam", uri="0", state=None),), model=None,
                          model_update=None, telemetry=None, scene=scene_totals)


def busy_sink(tmp_path: Path, clock: Clock) -> TelemetrySink:
    """A sink that saw two people in (one stayed 12 s in the queue, one is in it now) and a dog out."""
    sink = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=tmp_path, source_id="cam", clock=clock,
                         steady=clock.steady)
    sink.set_layouts([LAYOUT])
    t = clock.now
    sink.scene_frame(scene(t, {"queue": {"person": 1}}, crossing(at=t), zone_event("enter", at=t)))
    sink.scene_frame(scene(t + 1, {"queue": {"person": 2}}, crossing(track_id=2, at=t + 1),
                           zone_event("enter", track_id=2, at=t + 1)))
    sink.scene_frame(scene(t + 12, {"queue": {"person": 1}}, crossing("door", "out", label="dog", track_id=3),
                           zone_event("exit", at=t + 12, dwell_s=12.0)))
    return sink


def test_the_status_shows_counts_and_occupancy_per_source(tmp_path: Path, clock: Clock) -> None:
    """Crossings per direction and who is in each zone now, with entries and exits since the last reset."""
    sink = busy_sink(tmp_path, clock)
    assert status_view(snapshot(sink.scene_totals()))["scene"] == {
        "cam": {"lines": {"door": {"in": 2, "out": 1}},
                "zones": {"queue": {"now": {"person": 1}, "in": 2, "out": 1}}}}
    assert "scene" not in status_view(snapshot({}))
    sink.close()


def test_the_status_block_stays_small_in_the_worst_case() -> None:
    """8 sources x 32 lines and 32 zones with 64-character names and every class counted: at most 2 KB, and what
    was left out is counted."""
    classes = [f"class-{i:02d}" for i in range(MAX_CLASSES)]
    totals = {}
    for s in range(8):
        name = f"source-{s}-" + "s" * 54
        totals[name] = SceneTotals(
            lines={f"line-{i}-" + "l" * 56: {"in": {c: 10**9 for c in classes}, "out": {c: 10**9 for c in classes}}
                   for i in range(32)},
            occupancy={f"zone-{i}-" + "z" * 56: {c: 999 for c in classes} for i in range(32)},
            entries={f"zone-{i}-" + "z" * 56: {c: 10**9 for c in classes} for i in range(32)})
    block = status_block(totals)
    assert len(dumps(block)) <= STATUS_MAX_BYTES
    shown = sum(len(v["lines"]) + len(v["zones"]) for k, v in block.items() if k != "truncated")
    assert shown >= 1
    assert shown + block["truncated"] == 8 * 64


def test_metrics_count_crossings_occupancy_and_dwell_with_bounded_labels(tmp_path: Path, clock: Clock) -> None:
    """The scrape has crossings per line, direction and class, occupancy per zone and class, a dwell histogram."""
    sink = busy_sink(tmp_path, clock)
    registry = CollectorRegistry()
    registry.register(ModuleCollector(dict.fromkeys(LABELS, "x"), lambda: snapshot(sink.scene_totals())))
    samples = {(m.name, s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in LABELS))): s.value
               for m in text_string_to_metric_families(generate_latest(registry).decode()) for s in m.samples}
    cam = (("source", "cam"),)
    assert samples["visionedge_line_crossings", "visionedge_line_crossings_total",
                   (("class", "person"), ("direction", "in"), ("line", "door"), *cam)] == 2
    assert samples["visionedge_line_crossings", "visionedge_line_crossings_total",
                   (("class", "dog"), ("direction", "out"), ("line", "door"), *cam)] == 1
    assert samples["visionedge_zone_occupancy", "visionedge_zone_occupancy",
                   (("class", "person"), *cam, ("zone", "queue"))] == 1
    dwell = {dict(labels)["le"]: v for (family, name, labels), v in samples.items()
             if name == "visionedge_zone_dwell_seconds_bucket"}
    assert (dwell["5.0"], dwell["15.0"], dwell["+Inf"]) == (0, 1, 1)
    assert samples["visionedge_zone_dwell_seconds", "visionedge_zone_dwell_seconds_sum", (*cam, ("zone", "queue"))] \
        == 12
    sink.close()


def test_reset_counters_answers_with_what_it_zeroed_and_survives_a_restart(
    tmp_path: Path, clock: Clock, open_outbox: OpenOutbox
) -> None:
    """resetCounters on the door: 200 with the counts it held, the reset announced, the door still zero after a
    restart; an unknown name 404, a bad payload 400."""
    sink = busy_sink(tmp_path, clock)
    methods = DirectMethods(HubClient(object()), status=dict, latest=lambda _: None, manager=lambda: None,
                            snapshot_dir=tmp_path, reset_counters=sink.reset_counters)
    assert methods.handlers["resetCounters"]({"source": "cam", "name": "door"}) == (200, {
        "reset": True, "source": "cam", "name": "door", "kind": "line",
        "before": {"in": {"person": 2}, "out": {"dog": 1}}})
    assert methods.reset_counters({"source": "cam", "name": "stairs"}) == (
        404, {"error": "source 'cam' has no line or zone 'stairs'"})
    assert methods.reset_counters({"name": "door"})[0] == 400
    assert methods.reset_counters({"source": "cam", "name": "queue"})[1]["before"] == {
        "entries": {"person": 2}, "exits": {"person": 1}}
    sink.close()
    events = [i.event.body for i in open_outbox(tmp_path, OutboxSettings()).next_batch(100, False)
              if i.event.body.get("event") == "counters-reset"]
    assert [e["name"] for e in events] == ["door", "queue"]
    again = TelemetrySink(TelemetrySettings(), OutboxSettings(), data_dir=tmp_path, source_id="cam", clock=clock,
                          steady=clock.steady)
    assert again.scene_totals() == {}  # no view shows a source before its analytics are configured
    again.set_layouts([LAYOUT])
    assert again.scene_totals()["cam"].lines == {}
    assert again.scene_totals()["cam"].entries == {}
    again.close()
