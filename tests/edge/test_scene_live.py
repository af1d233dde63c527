"""The real module with scene analytics on the sample video: count windows and the status block reach devhub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionedge_devhub.testing import running_devhub, sdk_nodelay

from tests.edge.conftest import StartModule


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
