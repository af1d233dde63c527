"""Loading models: a user's own .onnx with a manifest, and the one-line reason for every way it can be wrong."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from visionedge.errors import ModelError
from visionedge.models.catalog import ASSETS, builtin_manifest
from visionedge.models.fetch import resolve_model
from visionedge.models.model import Model


def _manifest_dict(builtin: str, **changes: Any) -> dict[str, Any]:
    data = builtin_manifest(builtin).model_dump(mode="json", exclude_none=True)
    data.update(changes)
    return data


def _user_model(folder: Path, fetcher, builtin: str, stem: str = "mine", labels: str | None = None,
                **changes: Any) -> Path:
    """Copy a built-in model's files into `folder` as STEM.onnx + STEM.yaml (+ labels), like a user would."""
    manifest = builtin_manifest(builtin)
    onnx = folder / f"{stem}.onnx"
    shutil.copyfile(fetcher.ensure(ASSETS[manifest.file]), onnx)
    labels = labels or manifest.labels
    shutil.copyfile(fetcher.ensure(ASSETS[labels]), folder / labels)
    data = _manifest_dict(builtin, name=stem, file=onnx.name, labels=labels, **changes)
    (folder / f"{stem}.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return onnx


def _load(spec: str | Path, fetcher) -> Model:
    resolved = resolve_model(str(spec), fetcher)
    return Model(resolved.manifest, resolved.model_path, resolved.labels_path)


def test_user_onnx_with_yaml_manifest_works_like_the_builtin(tmp_path, fetcher, model, media):
    """A copied yolox_nano.onnx with a YAML manifest beside it gives exactly the built-in model's detections."""
    onnx = _user_model(tmp_path, fetcher, "yolox-nano", stem="my-detector", version="7")
    mine = _load(onnx, fetcher)
    assert (mine.name, mine.version, mine.path) == ("my-detector", "7", onnx)
    frame = cv2.imread(str(media("dog_bicycle_car.jpg")))
    got = mine.infer(frame).detections
    assert [d.label for d in got] == ["dog", "bicycle", "car", "truck"]
    assert got == model("yolox-nano").infer(frame).detections


def test_manifest_yaml_path_is_accepted_as_the_model(tmp_path, fetcher):
    """Giving the manifest .yaml instead of the .onnx loads the file the manifest names."""
    onnx = _user_model(tmp_path, fetcher, "squeezenet-fp32")
    assert _load(onnx.with_suffix(".yaml"), fetcher).path == onnx


def test_labels_missing_beside_a_user_manifest_come_from_the_catalog(tmp_path, fetcher):
    """A manifest naming a catalog labels file that is not beside it uses the verified cached copy."""
    onnx = _user_model(tmp_path, fetcher, "yolox-nano")
    (tmp_path / "coco.names").unlink()
    assert len(_load(onnx, fetcher).labels) == 80


def test_manifest_width_that_does_not_match_the_model_is_refused(tmp_path, fetcher):
    """width: 320 against a 416-wide input names both numbers and the input."""
    onnx = _user_model(tmp_path, fetcher, "yolox-nano", width=320)
    with pytest.raises(ModelError) as err:
        _load(onnx, fetcher)
    assert str(err.value) == "manifest width 320 does not match model input 'images' width 416"


def test_classifier_labels_count_mismatch_is_refused(tmp_path, fetcher):
    """SqueezeNet with coco.names (80 lines) is refused: the model has 1000 classes."""
    onnx = _user_model(tmp_path, fetcher, "squeezenet-fp32", labels="coco.names")
    with pytest.raises(ModelError) as err:
        _load(onnx, fetcher)
    assert str(err.value) == "labels file has 80 labels but the model outputs 1000 classes"


def test_detector_labels_count_mismatch_is_refused(tmp_path, fetcher):
    """YOLOX with voc.names (20) and YOLOv3-tiny with voc.names are refused with the column/channel arithmetic."""
    onnx = _user_model(tmp_path, fetcher, "yolox-nano", labels="voc.names")
    with pytest.raises(ModelError) as err:
        _load(onnx, fetcher)
    assert str(err.value) == "labels file has 20 labels but the yolox output has 85 columns (5 + classes)"
    onnx = _user_model(tmp_path, fetcher, "yolov3-tiny", stem="v3", labels="voc.names")
    with pytest.raises(ModelError) as err:
        _load(onnx, fetcher)
    assert str(err.value) == "output 'yolo_13x13' has 255 channels; 3 anchors x (5 + 20 labels) = 75"


def test_file_that_is_not_onnx_is_refused_in_one_line(tmp_path, fetcher):
    """Random bytes named x.onnx, with a valid manifest beside them, give one line naming the file."""
    (tmp_path / "x.onnx").write_bytes(os.urandom(4096))
    shutil.copyfile(fetcher.ensure(ASSETS["coco.names"]), tmp_path / "coco.names")
    data = _manifest_dict("yolox-nano", name="x", file="x.onnx")
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ModelError) as err:
        _load(tmp_path / "x.onnx", fetcher)
    assert str(err.value).startswith("x.onnx is not a loadable ONNX model: ")
    assert "\n" not in str(err.value)


def test_unknown_model_name_lists_the_builtins(fetcher):
    """A name that is neither built in nor a file lists what is available."""
    with pytest.raises(ModelError) as err:
        resolve_model("resnet-9000", fetcher)
    assert str(err.value) == (
        "unknown model 'resnet-9000': built-in models are squeezenet, squeezenet-fp32, tiny-yolov2, yolov3-tiny, "
        "yolox-nano, or give a path to an .onnx file with a manifest beside it"
    )


def test_user_onnx_without_a_manifest_is_refused(tmp_path, fetcher):
    """An .onnx with no .yaml beside it says which manifest file to add."""
    onnx = tmp_path / "lonely.onnx"
    shutil.copyfile(fetcher.ensure(ASSETS["yolox_nano.onnx"]), onnx)
    with pytest.raises(ModelError) as err:
        resolve_model(str(onnx), fetcher)
    assert str(err.value) == f"no manifest for {onnx}: put lonely.yaml beside it or pass --manifest FILE"


def test_manifest_with_a_misspelt_key_names_the_key(tmp_path, fetcher):
    """An unknown manifest key (colour for color) is an error naming the file and the key, not silently ignored."""
    onnx = _user_model(tmp_path, fetcher, "yolox-nano", colour="RGB")
    with pytest.raises(ModelError) as err:
        resolve_model(str(onnx), fetcher)
    manifest = onnx.with_suffix(".yaml")
    assert str(err.value) == f"invalid model manifest {manifest}: colour: Extra inputs are not permitted"


def test_plain_grey_frame_gives_no_detections(model):
    """A featureless grey frame (what a covered lens sends) decodes to no detections at all."""
    grey = np.full((480, 640, 3), 127, dtype=np.uint8)
    assert model("yolox-nano").infer(grey).detections == ()
    assert model("yolov3-tiny").infer(grey).detections == ()
