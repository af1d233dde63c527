"""`visionedge compare --report`: the figures, per-label counts and the worst frames side by side, in a browser."""

from __future__ import annotations

import json

from .conftest import copy_artifact


def test_two_detectors_side_by_side(run_cli, short_clip, open_report, tmp_path):
    """YOLOX-nano against YOLOv3-tiny on a real clip: figures as the command prints them, pairs of pictures."""
    out = tmp_path / "diff.html"
    done = run_cli("compare", short_clip, "--model", "yolox-nano", "--against", "yolov3-tiny", "--max-frames", "20",
                   "--worst", "3", "--json", "--report", out)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    seen = open_report(out)
    copy_artifact(out)
    assert seen.problems == []
    assert seen.requests == [out.as_uri()]
    assert seen.charts == 2  # label counts of each model, agreement along the input
    worst = figures["worst_frames"]
    assert len(worst) == 3
    assert seen.side_by_side == 2 * len(worst)  # active and candidate picture per frame
    for frame in worst:
        assert f"{frame['source_id']} frame {frame['frame']}: agreement {frame['agreement']:.2f}" in seen.text
    assert "yolox-nano 0.1.1-coco vs yolov3-tiny 3-tiny-coco" in seen.text
    assert f"frames compared\t{figures['frames']}" in seen.text
    assert f"F1 (same label, IoU >= 0.5), mean over frames\t{figures['agreement']:.4f}" in seen.text
    biggest = next(iter(figures["count_drift"]))  # the chart lists the largest drift first
    assert biggest in seen.text


def test_classifier_against_detector_says_agreement_is_undefined(run_cli, media, open_report, tmp_path):
    """Across tasks there is no agreement figure: the view says why and shows no worst frames, not a made-up one."""
    out = tmp_path / "undefined.html"
    done = run_cli("compare", media("dog_bicycle_car.jpg"), "--model", "squeezenet", "--against", "yolox-nano",
                   "--report", out)
    assert done.returncode == 0, done.stderr
    seen = open_report(out)
    assert seen.problems == []
    assert "Agreement is undefined: tasks differ (classify -> detect)." in seen.text
    assert "No frame where they disagree." in seen.text
    assert seen.side_by_side == 0
