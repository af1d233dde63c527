"""Golden outputs: the built-in models reproduce the reference values in shared/models (MANIFEST.md)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

CLASSIFIER_IMAGES = {
    # image: (top-1 label, probability) as MANIFEST.md states them; the full top-5 comes from expected_outputs.json.
    "kitten_224.png": ("tabby, tabby cat", 0.9315),
    "fish_224.png": ("tench, Tinca tinca", 0.7377),
    "golden_retriever.jpg": ("golden retriever", 0.9747),
}
PROB_TOL = 0.002
SCORE_TOL = 0.005
BOX_TOL_PX = 2.0


def _classify(model: Any, path: Any) -> list[tuple[str, float]]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return [(c.label, c.confidence) for c in model.infer(image).classifications]


@pytest.mark.parametrize("image", sorted(CLASSIFIER_IMAGES))
def test_squeezenet_fp16_matches_reference_top5(image, model, media, expected_outputs):
    """The default fp16 SqueezeNet gives the reference top-5, in order, each probability within 0.002."""
    got = _classify(model("squeezenet"), media(image))
    want = [(e["label"], e["confidence"]) for e in expected_outputs["squeezenet"][image]]
    assert [label for label, _ in got] == [label for label, _ in want]
    for (label, p), (_, q) in zip(got, want, strict=True):
        assert p == pytest.approx(q, abs=PROB_TOL), label
    top_label, top_p = CLASSIFIER_IMAGES[image]
    assert got[0][0] == top_label
    assert got[0][1] == pytest.approx(top_p, abs=PROB_TOL)


@pytest.mark.parametrize("image", sorted(CLASSIFIER_IMAGES))
def test_squeezenet_fp32_agrees_with_fp16(image, model, media):
    """The fp32 upcast gives the same top-5 as the fp16 file, probabilities within 0.002."""
    fp16 = _classify(model("squeezenet"), media(image))
    fp32 = _classify(model("squeezenet-fp32"), media(image))
    assert [label for label, _ in fp32] == [label for label, _ in fp16]
    assert np.allclose([p for _, p in fp32], [p for _, p in fp16], atol=PROB_TOL)


def test_squeezenet_fp16_input_dtype_is_read_from_the_model(model):
    """The fp16 file's input is float16, read from the ONNX signature, so frames are fed as float16."""
    squeezenet = model("squeezenet")
    assert squeezenet.signature.dtype == np.float16
    assert squeezenet.signature.width == squeezenet.signature.height == 224
    assert model("squeezenet-fp32").signature.dtype == np.float32


@pytest.mark.parametrize("name", ["yolox-nano", "yolov3-tiny"])
@pytest.mark.parametrize("image", ["dog_bicycle_car.jpg", "person_dog_horse.jpg"])
def test_detector_matches_reference_detections(name, image, model, media, expected_outputs):
    """Same labels in score order, scores within 0.005 and boxes within 2 px of the reference, in original pixels."""
    frame = cv2.imread(str(media(image)), cv2.IMREAD_COLOR)
    h, w = frame.shape[:2]
    scale = np.array([w, h, w, h], dtype=np.float64)
    got = model(name).infer(frame).detections
    want = expected_outputs[name][image]
    assert [d.label for d in got] == [e["label"] for e in want]
    for det, ref in zip(got, want, strict=True):
        assert det.confidence == pytest.approx(ref["confidence"], abs=SCORE_TOL), det.label
        # The reference boxes are not clipped; ours are clipped to the frame, so clip theirs the same way.
        ref_px = np.clip(np.asarray(ref["box"], dtype=np.float64), 0.0, 1.0) * scale
        got_px = np.asarray(det.box, dtype=np.float64) * scale
        assert np.abs(got_px - ref_px).max() <= BOX_TOL_PX, f"{det.label}: {got_px.round(1)} vs {ref_px.round(1)}"
