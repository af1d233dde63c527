"""The one comparison of two models: figures on real models and media, the rules behind them, and the command."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
import yaml
from visionedge.compare import Comparison, Subject, compare_frames, detection_f1, undefined_reason
from visionedge.config import ShadowSettings
from visionedge.frame import Classification, Detection, Inference
from visionedge.models.catalog import builtin_manifest
from visionedge.models.fetch import resolve_model
from visionedge.models.model import Model, read_labels
from visionedge.modelstore.shadow import Shadow
from visionedge.pipeline import Pipeline
from visionedge.sources import ImageSource

IMAGES = ["dog_bicycle_car.jpg", "person_dog_horse.jpg", "golden_retriever.jpg", "squirrel.jpg", "messi5.jpg",
          "kitten_224.png", "fish_224.png"]


def _det(label: str, box: tuple[float, float, float, float], confidence: float = 0.9) -> Detection:
    return Detection(label, confidence, box)


def _detect(*detections: Detection, ms: float = 10.0) -> Inference:
    return Inference("m", "1", "detect", ms, detections=detections)


def _classify(*labels: str, ms: float = 5.0) -> Inference:
    return Inference("m", "1", "classify", ms,
                     classifications=tuple(Classification(lb, 1.0 / (i + 2)) for i, lb in enumerate(labels)))


@pytest.fixture(scope="module")
def image_folder(media, tmp_path_factory) -> Path:
    """The staged still images in one folder, as `compare` and a folder source read them."""
    folder = tmp_path_factory.mktemp("images")
    for name in IMAGES:
        (folder / name).symlink_to(media(name))
    return folder


@pytest.fixture(scope="module")
def shuffled_yolox(fetcher, model, tmp_path_factory) -> Path:
    """A manifest for the YOLOX-nano weights with the COCO label file shuffled: healthy, fast and wrong."""
    folder = tmp_path_factory.mktemp("shuffled")
    reference = model("yolox-nano")
    labels = list(reference.labels)
    random.Random(11).shuffle(labels)
    (folder / "coco-shuffled.names").write_text("\n".join(labels) + "\n", encoding="utf-8")
    manifest = builtin_manifest("yolox-nano").model_dump(mode="json")
    manifest.update(version="0.1.1-shuffled", file=str(reference.path), labels="coco-shuffled.names")
    path = folder / "yolox-shuffled.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return path


def test_f1_matches_same_label_boxes_greedily():
    """Same label and IoU >= 0.5 match, each active box once; a different label or a shifted box does not."""
    person = _det("person", (0.1, 0.1, 0.3, 0.5))
    assert detection_f1((person,), (person,)) == 1.0
    assert detection_f1((), ()) == 1.0
    assert detection_f1((person,), ()) == 0.0
    assert detection_f1((person,), (_det("dog", person.box),)) == 0.0
    assert detection_f1((person,), (_det("person", (0.2, 0.1, 0.4, 0.5)),)) == 0.0  # IoU 1/3
    # Two candidate boxes on one active box: one matches, the duplicate counts against precision.
    assert detection_f1((person,), (person, _det("person", (0.1, 0.12, 0.3, 0.5), 0.5))) == pytest.approx(2 / 3)


def test_classifier_figures_top1_top5_confidence_and_latency():
    """Top-1 agreement, top-5 overlap, mean top confidence and p50/p95 ratio over the frames added."""
    subject = Subject("a", "1", "classify", ("x", "y", "z", "u", "v", "w"))
    comparison = Comparison(subject, Subject("b", "2", "classify", subject.labels))
    comparison.add(_classify("x", "y", "z", "u", "v", ms=4.0), _classify("x", "y", "z", "u", "v", ms=8.0), 0)
    comparison.add(_classify("x", "y", "z", "u", "v", ms=4.0), _classify("y", "x", "z", "u", "w", ms=8.0), 1)
    figures = comparison.figures()
    assert (figures.frames, figures.agreement, figures.top5_overlap) == (2, 0.5, 0.9)
    assert figures.active_confidence == figures.candidate_confidence == 0.5
    assert figures.latency_ratio == figures.latency_ratio_p50 == 2.0
    assert [f.frame for f in figures.worst] == [1]
    assert figures.describe() == "agreement 0.50 over 2 frames (top-5 overlap 0.90); latency p95 2.0x"


def test_detector_figures_count_drift_by_label():
    """Detectors report mean F1 and, per label, how many each model found, largest change first."""
    subject = Subject("a", "1", "detect", ("person", "car"))
    comparison = Comparison(subject, Subject("b", "2", "detect", ("car", "person")))
    person, car = _det("person", (0.1, 0.1, 0.3, 0.5)), _det("car", (0.5, 0.5, 0.9, 0.9))
    comparison.add(_detect(person, car), _detect(person, car))
    comparison.add(_detect(person, car), _detect(car))
    figures = comparison.figures()
    assert figures.agreement == pytest.approx((1.0 + 2 / 3) / 2)
    assert figures.top5_overlap is None
    assert figures.count_drift == {"person": (2, 1), "car": (2, 2)}


def test_agreement_is_undefined_across_tasks_and_label_sets(mirror_dirs):
    """A classifier replaced by a detector, or COCO by VOC: no agreement figure, and the reason says why."""
    coco = tuple(read_labels(next(d / "coco.names" for d in mirror_dirs if (d / "coco.names").is_file())))
    voc = tuple(read_labels(next(d / "voc.names" for d in mirror_dirs if (d / "voc.names").is_file())))
    detector, classifier = Subject("y", "1", "detect", coco), Subject("s", "1", "classify", ("a", "b"))
    assert undefined_reason(classifier, detector) == "tasks differ (classify -> detect)"
    assert undefined_reason(detector, Subject("v", "1", "detect", voc)) == \
        "label sets differ (80 -> 20 labels, 20 shared)"
    comparison = Comparison(detector, Subject("v", "1", "detect", voc))
    comparison.add(_detect(_det("person", (0, 0, 1, 1))), _detect(_det("person", (0, 0, 1, 1))))
    figures = comparison.figures()
    assert (figures.agreement, figures.worst, figures.frames) == (None, (), 1)
    assert figures.describe() == ("agreement undefined: label sets differ (80 -> 20 labels, 20 shared); 1 frames; "
                                  "latency p95 1.0x")


def test_fp16_and_fp32_squeezenet_agree_on_the_staged_images(model, image_folder):
    """The two SqueezeNet files are the same network: top-1 agreement and top-5 overlap >= 0.98."""
    frames = ImageSource(image_folder, "images").frames(threading.Event())
    figures = compare_frames(model("squeezenet-fp32"), model("squeezenet"), frames).figures()
    assert figures.frames == len(IMAGES)
    assert figures.agreement is not None
    assert figures.agreement >= 0.98
    assert figures.top5_overlap is not None
    assert figures.top5_overlap >= 0.98
    assert figures.worst == ()


def test_shuffled_labels_are_caught_by_agreement(model, fetcher, image_folder, shuffled_yolox):
    """The same weights with a shuffled label file load, run and look healthy, yet agree on almost nothing."""
    resolved = resolve_model(str(shuffled_yolox), fetcher)
    shuffled = Model(resolved.manifest, resolved.model_path, resolved.labels_path)
    frames = ImageSource(image_folder, "images").frames(threading.Event())
    figures = compare_frames(model("yolox-nano"), shuffled, frames).figures()
    assert figures.agreement is not None
    assert figures.agreement < 0.2
    assert figures.worst
    assert figures.worst[0].agreement == 0.0


def test_compare_command_prints_figures_and_worst_frames(run_cli, image_folder, shuffled_yolox, tmp_path):
    """`visionedge compare DIR --model A --against B --json --jsonl OUT`: figures on stdout, one row per frame."""
    out = tmp_path / "frames.jsonl"
    done = run_cli("--log-level", "WARNING", "compare", image_folder, "--model", "yolox-nano",
                   "--against", shuffled_yolox, "--json", "--jsonl", out, "--worst", "2")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["active"] == {"name": "yolox-nano", "version": "0.1.1-coco"}
    assert figures["candidate"] == {"name": "yolox-nano", "version": "0.1.1-shuffled"}
    assert figures["frames"] == len(IMAGES)
    assert figures["agreement"] < 0.2
    assert len(figures["worst_frames"]) == 2
    assert figures["worst_frames"][0]["source_id"] in IMAGES
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["source_id"] for r in rows] == sorted(IMAGES)
    text = run_cli("--log-level", "WARNING", "compare", image_folder, "--model", "squeezenet-fp32",
                   "--against", "yolox-nano")
    assert text.returncode == 0, text.stderr
    assert "agreement  undefined: tasks differ (classify -> detect)" in text.stdout.splitlines()


def test_compare_command_refuses_bad_options_in_one_line(run_cli, image_folder):
    """A zero sampling step is a one-line error and exit 1."""
    done = run_cli("compare", image_folder, "--model", "squeezenet", "--against", "squeezenet-fp32", "--every", "0")
    assert done.returncode == 1
    assert done.stderr.strip() == ("visionedge: error: --every and --max-frames must be at least 1 "
                                   "and --worst at least 0")


def test_compare_gives_the_figures_of_the_device_gate_on_the_same_frames(model, image_folder, run_cli):
    """The staged images through the pipeline with a shadow (every frame sampled) and through `visionedge compare`:
    the same frames, the same agreement, per-label counts and confidences."""
    folder = image_folder
    active, candidate = model("yolox-nano"), model("yolov3-tiny")
    pipeline = Pipeline(ImageSource(folder, "images"), active, [_Discard()], workers=1)
    shadow = Shadow(active, candidate, ShadowSettings(frames=len(IMAGES), min_frames=1, max_cost=1.0))
    pipeline.shadow = shadow
    pipeline.run(threading.Event())
    device = shadow.verdict().figures.as_dict()
    done = run_cli("--log-level", "WARNING", "compare", folder, "--model", "yolox-nano", "--against", "yolov3-tiny",
                   "--json")
    assert done.returncode == 0, done.stderr
    offline = json.loads(done.stdout)
    same = ("frames", "agreement", "agreement_undefined", "top5_overlap", "count_drift", "confidence")
    assert {k: device[k] for k in same} == {k: offline[k] for k in same}
    assert device["frames"] == len(IMAGES)
    assert 0.0 < device["agreement"] < 1.0


class _Discard:
    """A sink that keeps nothing: the comparison is what this test reads."""

    name = "discard"

    def publish(self, record):
        """Drop the record."""

    def close(self):
        """Nothing to release."""
