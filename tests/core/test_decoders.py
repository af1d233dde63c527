"""Decoders on hand-built tensors: Tiny-YOLOv2 region output (no real weights exist here) and NMS properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from visionedge.frame import Geometry
from visionedge.models.catalog import ASSETS, builtin_manifest
from visionedge.models.decoders import Thresholds, YoloAnchorDecoder, classwise_nms, nms
from visionedge.models.model import read_labels

GRID = 13
SIZE = 416
ANCHORS = [(1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52)]
BACKGROUND_OBJ = -20.0
CLASS_LOGIT = 4.0


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _softmax_top(logit: float, n_classes: int) -> float:
    """Probability of the one class at `logit` when the other classes are at 0."""
    return math.exp(logit) / (math.exp(logit) + n_classes - 1)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class Region:
    """A 1x125x13x13 Tiny-YOLOv2 output with every cell background until a box is placed."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.tensor = np.zeros((1, 5 * (5 + n_classes), GRID, GRID), dtype=np.float32)
        for a in range(5):
            self.tensor[0, a * (5 + n_classes) + 4] = BACKGROUND_OBJ

    def place(self, anchor: int, gx: int, gy: int, *, cls: int, obj: float,
              tx: float = 0.0, ty: float = 0.0, tw: float = 0.0, th: float = 0.0) -> None:
        """Put raw values for one anchor in one cell; obj is the objectness probability."""
        base = anchor * (5 + self.n_classes)
        self.tensor[0, base:base + 5, gy, gx] = [tx, ty, tw, th, _logit(obj)]
        self.tensor[0, base + 5 + cls, gy, gx] = CLASS_LOGIT


def _expected_box(anchor: int, gx: int, gy: int, tx: float = 0.0, ty: float = 0.0,
                  tw: float = 0.0, th: float = 0.0) -> tuple[float, float, float, float]:
    """The darknet region box, in 0..1 of the frame: centre (sigmoid(t) + cell) / 13, size exp(t) * anchor / 13."""
    cx = (_sigmoid(tx) + gx) / GRID
    cy = (_sigmoid(ty) + gy) / GRID
    w = math.exp(tw) * ANCHORS[anchor][0] / GRID
    h = math.exp(th) * ANCHORS[anchor][1] / GRID
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@pytest.fixture(scope="module")
def tiny_yolov2(fetcher):
    """YoloAnchorDecoder built from the shipped tiny-yolov2 manifest and the real VOC label file."""
    manifest = builtin_manifest("tiny-yolov2")
    labels = read_labels(fetcher.ensure(ASSETS["voc.names"]))
    assert len(labels) == 20
    decoder = YoloAnchorDecoder(manifest.decoder, labels, {"grid": (1, 125, GRID, GRID)}, SIZE, SIZE)
    thresholds = Thresholds(manifest.confidence, manifest.iou, manifest.top_k)
    return decoder, labels, thresholds


def test_tiny_yolov2_manifest_describes_the_voc_region_layer():
    """The built-in manifest has the five VOC anchors in grid units, softmax classes and a 0.3 threshold."""
    manifest = builtin_manifest("tiny-yolov2")
    assert manifest.decoder.type == "yolo"
    assert manifest.decoder.anchor_units == "grid"
    assert manifest.decoder.class_activation == "softmax"
    assert [tuple(a) for a in manifest.decoder.heads[0].anchors] == ANCHORS
    assert (manifest.color, manifest.scale, manifest.resize) == ("RGB", 1.0, "stretch")
    assert (manifest.confidence, manifest.iou) == (0.3, 0.45)


def test_tiny_yolov2_decodes_hand_placed_boxes(tiny_yolov2):
    """Each placed box comes back with its label, sigmoid(obj) x softmax(class) score and its exact geometry."""
    decoder, labels, thresholds = tiny_yolov2
    dog, person = labels.index("dog"), labels.index("person")
    region = Region(len(labels))
    region.place(2, 6, 6, cls=dog, obj=0.9)
    region.place(0, 11, 1, cls=person, obj=0.7, tx=1.0, ty=-1.0, tw=0.5, th=-0.25)
    geometry = Geometry(640, 480, SIZE / 640, SIZE / 480)  # a 640x480 frame stretched to 416x416

    got = decoder({"grid": region.tensor}, geometry, thresholds)

    p = _softmax_top(CLASS_LOGIT, len(labels))
    assert [d.label for d in got] == ["dog", "person"]
    assert got[0].confidence == pytest.approx(0.9 * p, abs=1e-5)
    assert got[1].confidence == pytest.approx(0.7 * p, abs=1e-5)
    # Anchor 2 (6.63 x 11.38 cells) centred in cell (6, 6): centre (6.5/13, 6.5/13), size (6.63/13, 11.38/13).
    assert got[0].box == pytest.approx((0.5 - 6.63 / 26, 0.5 - 11.38 / 26, 0.5 + 6.63 / 26, 0.5 + 11.38 / 26), abs=1e-5)
    assert got[1].box == pytest.approx(_expected_box(0, 11, 1, 1.0, -1.0, 0.5, -0.25), abs=1e-5)
    # In 416-pixel input units the dog's box is centred at (208, 208) and is 212.16 x 364.16.
    x1, y1, x2, y2 = (v * SIZE for v in got[0].box)
    assert ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1) == pytest.approx((208, 208, 212.16, 364.16), abs=1e-3)


def test_tiny_yolov2_classes_are_softmax_not_sigmoid(tiny_yolov2):
    """A class logit of 4 against nineteen zeros scores softmax (0.742), not sigmoid (0.982), times objectness."""
    decoder, labels, thresholds = tiny_yolov2
    region = Region(len(labels))
    region.place(1, 3, 3, cls=labels.index("car"), obj=0.99)
    got = decoder({"grid": region.tensor}, Geometry(SIZE, SIZE, 1.0, 1.0), thresholds)
    assert len(got) == 1
    assert got[0].confidence == pytest.approx(0.99 * _softmax_top(CLASS_LOGIT, 20), abs=1e-5)
    assert got[0].confidence < 0.99 * _sigmoid(CLASS_LOGIT) - 0.1


def test_tiny_yolov2_nms_is_classwise(tiny_yolov2):
    """Identical boxes of two classes both survive; an overlapping weaker box of the same class is suppressed, and kept
    apart as removed (a tracker's evidence, not a result)."""
    decoder, labels, thresholds = tiny_yolov2
    dog, cat = labels.index("dog"), labels.index("cat")
    region = Region(len(labels))
    region.place(2, 6, 6, cls=dog, obj=0.9)
    # Anchor 1 stretched to anchor 2's size: the same box, another class.
    region.place(1, 6, 6, cls=cat, obj=0.8, tw=math.log(6.63 / 3.42), th=math.log(11.38 / 4.41))
    # Anchor 3 stretched to anchor 2's size and nudged: the same class, IoU about 0.97, weaker.
    region.place(3, 6, 6, cls=dog, obj=0.7, tx=0.2, tw=math.log(6.63 / 9.42), th=math.log(11.38 / 5.11))
    # A weak dog elsewhere: not overlapping, so it stays.
    region.place(0, 1, 11, cls=dog, obj=0.6)

    got = decoder({"grid": region.tensor}, Geometry(SIZE, SIZE, 1.0, 1.0), thresholds)

    p = _softmax_top(CLASS_LOGIT, len(labels))
    assert [(d.label, round(d.confidence, 4)) for d in got] == [
        ("dog", round(0.9 * p, 4)), ("cat", round(0.8 * p, 4)), ("dog", round(0.6 * p, 4))
    ]
    assert got[0].box == pytest.approx(got[1].box, abs=1e-5)
    assert got[2].box == pytest.approx(_expected_box(0, 1, 11), abs=1e-5)
    found = decoder.boxes({"grid": region.tensor}, Geometry(SIZE, SIZE, 1.0, 1.0), thresholds)
    assert found.kept == got
    assert [(d.label, round(d.confidence, 4)) for d in found.removed] == [("dog", round(0.7 * p, 4))]
    inference = decoder.inference({"grid": region.tensor}, Geometry(SIZE, SIZE, 1.0, 1.0), thresholds,
                                  model=("tiny-yolov2", "1"), inference_ms=1.0)
    assert inference.detections == got
    assert inference.hidden == found.removed


def test_tiny_yolov2_drops_boxes_below_the_threshold(tiny_yolov2):
    """A box scoring 0.4 x 0.742 = 0.297 is under the manifest's 0.3 and is dropped; all-background gives nothing."""
    decoder, labels, thresholds = tiny_yolov2
    region = Region(len(labels))
    assert decoder({"grid": region.tensor}, Geometry(SIZE, SIZE, 1.0, 1.0), thresholds) == ()
    region.place(4, 6, 6, cls=labels.index("horse"), obj=0.4)
    assert 0.4 * _softmax_top(CLASS_LOGIT, 20) < thresholds.confidence
    assert decoder({"grid": region.tensor}, Geometry(SIZE, SIZE, 1.0, 1.0), thresholds) == ()
    region.place(4, 6, 6, cls=labels.index("horse"), obj=0.5)
    got = decoder({"grid": region.tensor}, Geometry(SIZE, SIZE, 1.0, 1.0), thresholds)
    assert [d.label for d in got] == ["horse"]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0) * max(b[3] - b[1], 0) - inter
    return float(inter / max(union, 1e-9))


@st.composite
def box_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to 40 boxes (corners may be negative, as decoded boxes at a frame edge are), scores and classes."""
    n = draw(st.integers(0, 40))
    coords = st.floats(-60, 500, allow_nan=False, width=32)
    sizes = st.floats(0.5, 300, allow_nan=False, width=32)
    xy = draw(arrays(np.float64, (n, 2), elements=coords))
    wh = draw(arrays(np.float64, (n, 2), elements=sizes))
    scores = draw(arrays(np.float64, (n,), elements=st.floats(0.0, 1.0, allow_nan=False, width=32)))
    classes = draw(arrays(np.int64, (n,), elements=st.integers(0, 3)))
    return np.concatenate([xy, xy + wh], axis=1), scores, classes


def _check_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, keep: np.ndarray, iou: float) -> None:
    kept = [int(k) for k in keep]
    assert len(set(kept)) == len(kept)
    assert all(scores[a] >= scores[b] for a, b in itertools.pairwise(kept)), "not sorted by score"
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            if classes[a] == classes[b]:
                assert _iou(boxes[a], boxes[b]) <= iou + 1e-6, f"kept {a} and {b} overlap"
    for d in set(range(len(boxes))) - set(kept):
        assert any(
            classes[k] == classes[d] and scores[k] >= scores[d] and _iou(boxes[k], boxes[d]) > iou - 1e-6
            for k in kept
        ), f"box {d} was dropped without a stronger overlapping box of its class"


def test_classwise_nms_keeps_other_classes_with_negative_corners():
    """Boxes of different classes never suppress each other, even with corners left of or above the frame."""
    boxes = np.array([[0, 0, 1, 1], [-2, -2, -1, -1], [-2, -2, -1, -1]], dtype=np.float32)
    keep = classwise_nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]), 0.45)
    assert keep.tolist() == [0, 1]


@settings(max_examples=300, deadline=None)
@given(box_sets(), st.floats(0.1, 0.9))
@example((np.array([[0, 0, 1, 1], [-2, -2, -1, -1]], dtype=np.float64), np.array([0.9, 0.8]), np.array([0, 1])), 0.45)
def test_classwise_nms_keeps_only_non_overlapping_boxes_per_class(data, iou):
    """Kept boxes of one class never overlap above the IoU threshold, every drop has a cause, order is by score."""
    boxes, scores, classes = data
    keep = classwise_nms(boxes, scores, classes, iou)
    _check_nms(boxes, scores, classes, keep, iou)


@settings(max_examples=200, deadline=None)
@given(box_sets(), st.floats(0.1, 0.9))
def test_nms_keeps_only_non_overlapping_boxes(data, iou):
    """Plain NMS: no two kept boxes overlap above the threshold, and the result is sorted by descending score."""
    boxes, scores, _ = data
    same = np.zeros(len(boxes), dtype=np.int64)
    _check_nms(boxes, scores, same, nms(boxes, scores, iou), iou)


def test_a_decoder_type_change_merged_by_the_twin_drops_the_old_decoders_keys_but_not_typos():
    """IoT Hub merges a patch key by key: yolox -> classification leaves `strides`; that residue is dropped, a typo is
    still refused with the key named."""
    from pydantic import TypeAdapter, ValidationError
    from visionedge.models.decoders import ClassificationSpec, DecoderSpec, YoloxSpec

    specs = TypeAdapter(DecoderSpec)
    merged = {"type": "classification", "softmax": True, "strides": [8, 16, 32], "multi_label": True}
    assert specs.validate_python(merged) == ClassificationSpec(type="classification", softmax=True)
    back = {"type": "yolox", "strides": [8, 16, 32], "multi_label": False, "softmax": True}
    assert specs.validate_python(back) == YoloxSpec(type="yolox", strides=[8, 16, 32], multi_label=False)
    with pytest.raises(ValidationError, match=r"classification\.softmx"):
        specs.validate_python({"type": "classification", "softmx": True})
