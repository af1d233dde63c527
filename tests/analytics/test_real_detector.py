"""A person cut from the shared MOT sequence, moved along known paths over a plain background, through the real
detector and the scene analytics: the counts are known exactly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from visionedge.analytics.engine import SceneEngine
from visionedge.analytics.events import Crossing, SceneFrame
from visionedge.analytics.settings import SourceAnalytics

from tests.conftest import ModelFactory

W, H = 640, 480
LINE = {"name": "middle", "points": [[0.5, 0.05], [0.5, 0.95]], "directions": ["leftward", "rightward"]}
FPS = 10.0


@pytest.fixture(scope="module")
def walker(mirror_dirs: list[Path]) -> np.ndarray:
    """Ground-truth person 1 of TUD-Stadtmitte's first frame (88, 99, 61 x 218 px), cut out of the video."""
    for folder in mirror_dirs:
        video = folder / "mot" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"
        if video.is_file():
            capture = cv2.VideoCapture(str(video))
            ok, image = capture.read()
            capture.release()
            assert ok
            return np.ascontiguousarray(image[99:317, 88:149])
    pytest.fail("mot/TUD-Stadtmitte/TUD-Stadtmitte.mp4 not found in the mirror folders")


def scene_with(walker: np.ndarray, left: int) -> np.ndarray:
    """A plain grey street with the person's left edge at x = left, feet at y = 400."""
    canvas = np.full((H, W, 3), 128, np.uint8)
    h, w = walker.shape[:2]
    canvas[400 - h:400, left:left + w] = walker
    return canvas


def play(model: ModelFactory, walker: np.ndarray, lefts: list[int]) -> list[SceneFrame]:
    """Each position a frame 0.1 s apart through YOLOX-nano and one engine with the middle line."""
    detector = model("yolox-nano")
    engine = SceneEngine("street", SourceAnalytics.model_validate({"lines": [LINE]}))
    return [engine.update(detector.infer(scene_with(walker, left)).detections, i / FPS, "yolox-nano@1")
            for i, left in enumerate(lefts)]


def test_a_real_person_walking_right_across_the_line_counts_once(model: ModelFactory, walker: np.ndarray) -> None:
    """Left edge from 100 px to 500 px in 20 px steps: one `rightward`, and one track id throughout."""
    frames = play(model, walker, list(range(100, 501, 20)))
    crossings = [e for f in frames for e in f.events if isinstance(e, Crossing)]
    assert [(c.direction, c.label) for c in crossings] == [("rightward", "person")]
    ids = {i for f in frames[2:] for i in f.track_ids if i is not None}
    assert len(ids) == 1


def test_a_real_person_standing_on_the_line_and_swaying_counts_once(model: ModelFactory, walker: np.ndarray) -> None:
    """Walk up to the line, sway +-4 px across it for 3 s, walk on to the left: one `leftward`."""
    centre = W // 2 - walker.shape[1] // 2
    lefts = list(range(centre + 160, centre, -20)) + [centre + (4 if i % 2 else -4) for i in range(30)]
    lefts += list(range(centre - 20, centre - 200, -20))
    frames = play(model, walker, lefts)
    crossings = [e for f in frames for e in f.events if isinstance(e, Crossing)]
    assert [c.direction for c in crossings] == ["leftward"]
