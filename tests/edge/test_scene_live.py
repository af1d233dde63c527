"""The real module with scene analytics on the sample video: count windows and the status block reach devhub."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from visionedge_devhub.testing import running_devhub, sdk_nodelay

from tests.edge.conftest import StartModule
from tests.support import wait_until


def test_a_line_on_the_sample_video_sends_count_windows_and_reports_counts(
        tmp_path: Path, start_module: StartModule) -> None:
    """yolox-nano on the pedestrians of vtest.avi with a line across the pavement: counts windows arrive with the
    routing type, and the reported status carries the line's running counts."""
    desired: dict[str, Any] = {
        "source": {"uri": "sample", "fps": 5},
        "model": {"name": "yolox-nano"},
        "shadow": {"enabled": False},  # the first model: nothing to shadow against that matters here
        "analytics": {"camera": {"lines": [{"name": "middle", "points": [[0.5, 0.05], [0.5, 0.95]],
                                            "directions": ["east", "west"]}],
                                 "zones": [{"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}],
                                 "window_s": 5}},
    }
    with sdk_nodelay(), running_devhub(tmp_path / "hub", desired=desired) as hub:
        start_module(hub)
        windows = hub.emulator.wait_for_telemetry(lambda m: m.properties.get("type") == "counts", count=3,
                                                  timeout=120)
        bodies = [m.json for m in windows]
        assert all(b["window_s"] <= 5 and "left" in b["zones"] and b["model"].startswith("yolox-nano@")
                   for b in bodies)
        assert len({b["geometry"] for b in bodies}) == 1
        hub.emulator.wait_for_reported(
            lambda r: sum(r.get("status", {}).get("scene", {}).get("camera", {}).get("lines", {})
                          .get("middle", {}).values()) > 0, timeout=120)


def test_counts_at_the_hub_add_up_to_offline_analyze_across_an_outage(
        tmp_path: Path, start_module: StartModule, vtest_clip: Any, run_cli: Any) -> None:
    """The same clip through `analyze --analytics` and through the module with the hub down for 8 s in the middle:
    the crossings in the count windows that reach the hub are exactly the offline ones, every frame counted once."""
    clip = vtest_clip(120, 10.0)
    analytics = {"camera": {"lines": [{"name": "middle", "points": [[0.5, 0.05], [0.5, 0.95]],
                                       "directions": ["east", "west"]}], "window_s": 5}}
    geometry = tmp_path / "middle.yaml"
    geometry.write_text(yaml.safe_dump(analytics["camera"]), encoding="utf-8")  # analyze: one source's section
    done = run_cli("analyze", clip, "--model", "yolox-nano", "--analytics", geometry, "--jsonl", tmp_path / "o.jsonl",
                   "--no-progress", timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    offline = Counter(e["direction"] for r in records for e in r["scene"]["events"] if e["kind"] == "crossing")
    assert sum(offline.values()) > 0

    still = vtest_clip(1, 10.0, 700)  # a frame for the default classifier to chew on until the detector serves
    desired: dict[str, Any] = {
        "source": {"uri": str(still), "realtime": False, "loop": False},
        "model": {"name": "yolox-nano"}, "shadow": {"enabled": False},
        "inference": {"gate": {"mode": "off"}}, "analytics": analytics,
    }
    with sdk_nodelay(), running_devhub(tmp_path / "hub", desired=desired) as hub:
        start_module(hub)
        hub.emulator.wait_for_reported(  # the detector serves before the clip starts, as in analyze
            lambda r: (r.get("status", {}).get("model") or {}).get("name") == "yolox-nano", timeout=120)
        time.sleep(2)  # tracks of the still frame end (max_lost_s 1 s)
        hub.set_desired({"source": {"uri": str(clip), "realtime": False, "loop": False}})
        hub.emulator.wait_for_telemetry(lambda m: m.properties.get("type") == "counts", timeout=120)
        hub.front.set_down(True)
        hub.front.drop()
        time.sleep(8)
        hub.front.set_down(False)

        def windows() -> list[dict[str, Any]]:
            unique = {m.message_id: m.json for m in hub.emulator.telemetry() if m.properties.get("type") == "counts"}
            return list(unique.values())

        wait_until(lambda: sum(w["frames"] for w in windows()) >= len(records), timeout=180,
                   what="count windows covering every frame", detail=lambda: [w["frames"] for w in windows()])
        live: Counter[str] = Counter()
        for window in windows():
            for direction, classes in window["lines"].get("middle", {}).items():
                live[direction] += sum(classes.values())
        assert sum(w["frames"] for w in windows()) == len(records)  # the still went through the classifier
        assert live == offline, [w["lines"] for w in windows()]


def test_a_kill_9_after_crossings_loses_no_count_and_the_status_agrees_with_the_hub(
        tmp_path: Path, start_module: StartModule) -> None:
    """The module counts people crossing the middle of the sample video and is killed (SIGKILL); restarted on the
    same data with the line moved where nobody crosses (same name), the reported running totals equal the crossings
    in the count windows that reached the hub, the window open at the kill included."""
    middle = {"name": "middle", "points": [[0.5, 0.05], [0.5, 0.95]], "directions": ["east", "west"]}
    desired: dict[str, Any] = {
        "source": {"uri": "sample", "fps": 5}, "model": {"name": "yolox-nano"}, "shadow": {"enabled": False},
        "analytics": {"camera": {"lines": [middle], "window_s": 5}},
    }

    def crossings(reported: dict[str, Any]) -> dict[str, int]:
        return dict(reported.get("status", {}).get("scene", {}).get("camera", {}).get("lines", {}).get("middle", {}))

    with sdk_nodelay(), running_devhub(tmp_path / "hub", desired=desired) as hub:
        first = start_module(hub)
        hub.emulator.wait_for_reported(lambda r: sum(crossings(r).values()) > 0, timeout=120)
        first.stop(signal.SIGKILL)
        killed_geometry = {m.json["geometry"] for m in hub.emulator.telemetry() if m.properties.get("type") == "counts"}
        quiet = {**middle, "points": [[0.0, 0.0], [0.02, 0.0]]}  # along the top edge: nobody crosses it
        hub.set_desired({"analytics": {"camera": {"lines": [quiet], "window_s": 5}}})
        start_module(hub, data_dir=first.data_dir)

        def windows() -> list[dict[str, Any]]:
            unique = {m.message_id: m.json for m in hub.emulator.telemetry() if m.properties.get("type") == "counts"}
            return list(unique.values())

        wait_until(lambda: any(w["geometry"] not in killed_geometry for w in windows()), timeout=120,
                   what="a count window of the restarted module (the one open at the kill is delivered before it)")
        delivered: Counter[str] = Counter()
        for window in windows():
            for direction, classes in window["lines"].get("middle", {}).items():
                delivered[direction] += sum(classes.values())
        assert sum(delivered.values()) > 0
        hub.emulator.wait_for_reported(lambda r: crossings(r) == dict(delivered), timeout=30)
