"""int8 variants from `models quantize`, and the choice of variant at load: fastest here among those that agree."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml
from visionedge.config import RuntimeSettings
from visionedge.download import sha256_file
from visionedge.errors import ModelError
from visionedge.models.catalog import ASSETS
from visionedge.models.fetch import resolve_model
from visionedge.models.manifest import load_manifest
from visionedge.models.model import Model
from visionedge.models.variants import Candidate, choose, open_model, time_models, variants_folder
from visionedge.quantize import RECIPES, correct_biases, float_nodes, picked_frames, sample_frames


@pytest.fixture(scope="module")
def squeezenet(fetcher):
    """The default SqueezeNet (the fp16 file) as resolved from the mirror."""
    return resolve_model("squeezenet", fetcher)


@pytest.fixture(scope="module")
def variants(run_cli, squeezenet, tmp_path_factory) -> Path:
    """`visionedge models quantize squeezenet` on a small calibration set, into a private variants root."""
    root = tmp_path_factory.mktemp("variants")
    out = variants_folder(root, squeezenet.model_path)
    done = run_cli("models", "quantize", "squeezenet", "--frames", "6", "--measure-frames", "30", "--out", out,
                   timeout=240)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"int8  {out / 'int8.yaml'}"
    assert "top-1 agreement with squeezenet1.1_fp16.onnx: " in lines[1]
    assert "over 30 frames; latency p50" in lines[1]
    assert lines[2] == f"fp32  {out / 'fp32.yaml'}", "an fp16 model is upcast first, and that fp32 graph kept"
    return root


def test_quantize_writes_an_int8_qdq_model_with_a_manifest_saying_how_it_was_made(variants, squeezenet):
    """The manifest names the exact source file, the calibration frames and settings, and the measured agreement."""
    folder = variants_folder(variants, squeezenet.model_path)
    manifest = load_manifest(folder / "int8.yaml")
    info = manifest.variant
    assert info is not None
    assert info.kind == "int8"
    assert (info.reference_file, info.reference_sha256) == ("squeezenet1.1_fp16.onnx",
                                                            sha256_file(squeezenet.model_path))
    assert info.calibration[0] == "vtest.avi"
    assert len(info.calibration) == 8, "by default every sample image and the sample video calibrate"
    assert info.calibration_frames == 13, "6 spread over the video, and each of the 7 images"
    assert info.settings == {"format": "QDQ", "per_channel": True, "weights": "QInt8", "activations": "QUInt8",
                             "calibration": "MinMax", "opset": 13, "float_stem_convs": 4, "float_tail": True,
                             "float_nodes": 14, "concat_shared_range": True, "bias_correction": True}, \
        "conv1 to fire2's concat (4 convolutions, their Relus, a MaxPool, the Concat), pool..softmax"
    assert info.agreement_frames == 30
    assert (manifest.name, manifest.version, manifest.task) == ("squeezenet", "1.1-winml-fp16", "classify")
    graph = onnx.load(str(folder / manifest.file))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    dequantized = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    float_convs = [n for n in graph.graph.node if n.op_type == "Conv" and n.input[1] not in dequantized]
    assert len(float_convs) == 4, "the stem through the first fire module (fed raw 0..255 pixels) stays in float"
    scale = {t.name: float(onnx.numpy_helper.to_array(t)) for t in graph.graph.initializer if not t.dims}
    concat_scales = [{scale[n.input[1]] for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in
                      [*c.input, *c.output]} for c in graph.graph.node if c.op_type == "Concat"]
    assert [len(scales) for scales in concat_scales] == [1] * 8, "each fire module's Concat and what it quantizes of "\
        "its inputs: one scale (fire2's Concat is float, only its output is quantized)"
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 13
    fp32 = load_manifest(folder / "fp32.yaml").variant
    assert fp32 is not None
    assert fp32.agreement == 1.0, "upcasting fp16 weights to fp32 must not change a single top-1"


def test_a_quantized_model_loads_and_agrees_with_the_original(variants, squeezenet, media):
    """The int8 SqueezeNet loads like any model and names the same top-1 as the fp16 file on most frames."""
    folder = variants_folder(variants, squeezenet.model_path)
    int8 = open_model(squeezenet.manifest, squeezenet.model_path, squeezenet.labels_path,
                      RuntimeSettings(variant="int8"), variants)
    assert int8.path == folder / "int8.onnx"
    assert int8.variant is not None
    assert int8.variant.chosen == "int8"
    info = int8.manifest.variant
    assert info is not None
    assert info.agreement is not None
    assert info.agreement >= 0.7, f"int8 agreement {info.agreement} over {info.agreement_frames} frames"
    original = Model(squeezenet.manifest, squeezenet.model_path, squeezenet.labels_path)
    for name in ("kitten_224.png", "golden_retriever.jpg"):
        image = cv2.imread(str(media(name)))
        assert int8.infer(image).labels()[0] == original.infer(image).labels()[0], name


def test_each_int8_bias_holds_the_mean_its_rounded_weights_take_from_the_output(variants, squeezenet, fetcher):
    """Every quantized convolution's bias is the float one plus what rounding its weights takes from its output on the
    calibration frames: put back to the float biases and corrected again on those frames, the graph gets them back."""
    folder = variants_folder(variants, squeezenet.model_path)
    int8, fp32 = (onnx.load(str(folder / f"{kind}.onnx")) for kind in ("int8", "fp32"))
    floats = {t.name: onnx.numpy_helper.to_array(t) for t in fp32.graph.initializer}
    float_bias = {n.name: floats[n.input[2]] for n in fp32.graph.node if n.op_type == "Conv"}
    made_by = {n.output[0]: n for n in int8.graph.node if n.op_type == "DequantizeLinear"}
    stored = {t.name: t for t in int8.graph.initializer}
    corrected = {}
    for conv in [n for n in int8.graph.node if n.op_type == "Conv" and n.input[1] in made_by]:
        bias, scale = (stored[name] for name in made_by[conv.input[2]].input[:2])
        corrected[bias.name] = onnx.numpy_helper.to_array(bias)
        rounded = np.round(float_bias[conv.name] / onnx.numpy_helper.to_array(scale)).astype(np.int32)
        assert np.abs(corrected[bias.name] - rounded).max() > 1, f"{conv.name}: the bias moved beyond rounding"
        bias.CopyFrom(onnx.numpy_helper.from_array(rounded, bias.name))
    reference = Model(squeezenet.manifest, squeezenet.model_path, squeezenet.labels_path)
    media = [fetcher.ensure(a) for a in ASSETS.values() if a.kind == "media"]
    feeds = [{reference.signature.input_name: reference.prepare(f.image)[0].astype(np.float32)}
             for f in sample_frames(media, 6)]
    assert correct_biases(int8, fp32.graph, feeds) == len(corrected) == 22, "fire3's squeeze .. conv10"
    for name, expected in corrected.items():
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(stored[name]), expected, name)


def fixed(timings: Mapping[str, float]):
    """A timer that reports known milliseconds per variant instead of measuring."""
    return lambda models: {kind: timings[kind] for kind in models}


@pytest.mark.parametrize(("min_agreement", "timings", "expected"), [
    (0.5, {"fp16": 10.0, "fp32": 8.0, "int8": 3.0}, "int8"),   # int8 agrees enough and is fastest
    (1.0, {"fp16": 10.0, "fp32": 8.0, "int8": 3.0}, "fp32"),   # int8 does not qualify; fp32 (agreement 1.0) does
    (1.0, {"fp16": 7.0, "fp32": 8.0, "int8": 3.0}, "fp16"),    # the deployed file is fastest of those qualifying
])
def test_auto_runs_the_fastest_variant_that_agrees_enough(variants, squeezenet, min_agreement, timings, expected):
    """Known timings in, the variant that should win loads, and status can say why."""
    runtime = RuntimeSettings(variant="auto", min_variant_agreement=min_agreement)
    model = open_model(squeezenet.manifest, squeezenet.model_path, squeezenet.labels_path, runtime, variants,
                       timer=fixed(timings))
    assert model.variant is not None
    assert model.variant.chosen == expected
    assert model.variant.timings_ms == timings
    expected_file = "squeezenet1.1_fp16.onnx" if expected == "fp16" else f"{expected}.onnx"
    assert model.path.name == expected_file == model.variant.file
    assert model.variant.reason.startswith("fastest qualifying: ")


def test_choose_never_takes_a_variant_whose_agreement_is_unknown_or_low():
    """Only the deployed file qualifies without a recorded agreement; the reason names what was refused."""
    cands = [Candidate("int8", None, Path("int8.onnx"), Path("l"), None),  # type: ignore[arg-type]
             Candidate("fp32", None, Path("fp32.onnx"), Path("l"), 0.90)]  # type: ignore[arg-type]
    best, reason = choose("fp16", cands, {"fp16": 9.0, "int8": 1.0, "fp32": 2.0}, 0.95)
    assert best == "fp16"
    assert "int8 (agreement undefined < 0.95)" in reason
    assert "fp32 (agreement 0.900 < 0.95)" in reason


def test_on_this_cpu_auto_leaves_no_faster_qualifying_variant_unused(variants, squeezenet):
    """Timed for real here: whatever wins, no qualifying variant measured faster than the one chosen."""
    runtime = RuntimeSettings(variant="auto", min_variant_agreement=0.0)
    model = open_model(squeezenet.manifest, squeezenet.model_path, squeezenet.labels_path, runtime, variants,
                       timer=lambda models: time_models(models, runs=12))
    assert model.variant is not None
    timings = model.variant.timings_ms
    assert set(timings) == {"fp16", "fp32", "int8"}
    assert timings[model.variant.chosen] == min(timings.values())


def test_asking_for_a_variant_that_does_not_exist_says_how_to_make_one(squeezenet, tmp_path):
    """runtime.variant int8 without a quantized file is a one-line error naming the command."""
    with pytest.raises(ModelError) as err:
        open_model(squeezenet.manifest, squeezenet.model_path, squeezenet.labels_path,
                   RuntimeSettings(variant="int8"), tmp_path)
    assert str(err.value) == ("runtime.variant int8: squeezenet 1.1-winml-fp16 has no int8 variant of "
                              "squeezenet1.1_fp16.onnx (here: fp16; `visionedge models quantize` makes one)")


def test_a_detector_keeps_one_float_stem_its_first_three_convolutions_with_their_silus(fetcher):
    """YOLOX-nano's stem stays float as one region from the input, so one QuantizeLinear follows it and no Q/DQ pair
    sits between float and int8 nodes further on (scattered float nodes made int8 slower than fp32)."""
    graph = onnx.load(str(resolve_model("yolox-nano", fetcher).model_path)).graph
    kept = float_nodes(graph, RECIPES["detect"])
    assert kept == [node.name for node in graph.node[:len(kept)]], "a prefix of the graph"
    ops = Counter(node.op_type for node in graph.node if node.name in kept)
    assert (ops["Conv"], ops["Sigmoid"], ops["Mul"], ops["Concat"]) == (3, 3, 3, 1), "Focus, then 3 x conv + SiLU"


def test_a_variant_of_another_file_is_never_used(variants, squeezenet, tmp_path):
    """Variants are keyed by the source file's sha256: after a model update they no longer apply."""
    folder = variants_folder(variants, squeezenet.model_path)
    manifest = yaml.safe_load((folder / "int8.yaml").read_text(encoding="utf-8"))
    manifest["variant"]["reference_sha256"] = "0" * 64
    (folder / "int8.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    try:
        model = open_model(squeezenet.manifest, squeezenet.model_path, squeezenet.labels_path,
                           RuntimeSettings(min_variant_agreement=0.0), variants,
                           timer=fixed({"fp16": 5.0, "fp32": 4.0, "int8": 1.0}))
        assert model.variant is not None
        assert set(model.variant.timings_ms) == {"fp16", "fp32"}
    finally:
        manifest["variant"]["reference_sha256"] = sha256_file(squeezenet.model_path)
        (folder / "int8.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")


def test_agreement_is_measured_only_on_frames_the_calibration_never_saw(street, media):
    """A short clip (179 frames) calibrated on 20 of its frames still gives its share of 100 measuring frames, none
    calibrated on; a photo calibrates and is then used up (before, picks "between" those gave a short clip none)."""
    photo = media("kitten_224.png")
    calibrated = list(sample_frames([street, photo], 20))
    seen = picked_frames([street, photo], calibrated)
    assert len(seen) == 21, "20 spread over the clip, and the photo"
    assert (photo, 0) in seen
    measured = list(sample_frames([street, photo], 100, seen))
    assert len(measured) == 99, "the clip's share of 100 (179 of 180 frames); before, none"
    assert not picked_frames([street, photo], measured) & seen
    assert all(f.source_id == "media0" for f in measured), "the photo was calibrated on: nothing of it is left"
    assert len({f.index for f in measured}) == 99
