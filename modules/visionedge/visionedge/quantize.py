"""The `models quantize` tool: int8 variants of a model by static QDQ quantization with onnxruntime, calibrated on
real frames, then measured against the original with the one model comparison (visionedge.compare).

Steps: fp16 weights are upcast to fp32 (onnxruntime quantizes float32 graphs; that fp32 graph is kept as the `fp32`
variant), the opset is raised to 13 where lower (per-channel QDQ needs it), unnamed nodes get names (the WinML
SqueezeNet has none, so no node could be kept in float), onnxruntime's pre-processing (shape inference, graph
optimisation) runs, then `quantize_static` with per-channel int8 weights and uint8 activations and the task's
`Recipe`: which nodes stay in float, how the activation ranges are calibrated and whether the convolutions' biases are
corrected for their weights' rounding afterwards, chosen from the levers measured in docs/benchmarks.md. Each variant
gets a manifest beside it that records the reference file and its sha256, the calibration set, the settings and the
measured agreement.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visionedge.compare import Figures, compare_frames
from visionedge.config import RuntimeSettings, SourceSettings
from visionedge.download import sha256_file
from visionedge.errors import ModelError, VisionEdgeError
from visionedge.frame import Frame
from visionedge.models.fetch import ResolvedModel
from visionedge.models.manifest import ModelManifest, VariantInfo
from visionedge.models.model import Model
from visionedge.sources import open_source

log = logging.getLogger(__name__)

MIN_OPSET = 13
"""Per-channel QuantizeLinear/DequantizeLinear need opset 13."""
MEASURE_FRAMES = 300
"""Agreement is measured on this many unseen frames: on 100 one frame is a point and the spread +-2-3 points, enough
to put the same variant either side of `auto`'s 0.95 (SqueezeNet recorded 0.960 and 0.939 on two sets of 99)."""
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger", "DynamicQuantizeLinear"})
"""Operators only a quantized graph has."""


@dataclass(frozen=True, slots=True)
class Recipe:
    """How one model family is quantized: what stays in float and how activation ranges are calibrated."""

    stem_convs: int
    """The graph before the (stem_convs + 1)-th convolution stays in float, activations included: it sees raw 0..255
    pixels, whose wide range one uint8 scale crushes, and its error would run through every later layer."""
    float_tail: bool = True
    """Nodes after the last convolution (pooling, softmax, YOLOX's sigmoid/concat/reshape decode) kept in float."""
    calibration: str = "MinMax"
    percentile: float = 99.999
    concat_shared_range: bool = True
    """A quantized Concat's inputs get the Concat's own calibrated range: one scale through it, so no second rounding
    and no requantization in QLinearConcat (SqueezeNet: 8 % faster, same agreement)."""
    bias_correction: bool = False
    """Each quantized convolution's bias gets back the mean that rounding its weights takes from its output on the
    calibration frames (`correct_biases`): a shift every later layer would carry; same graph, same speed."""

    def settings(self, float_nodes: int) -> dict[str, str | int | float | bool]:
        """What the variant's manifest records about how it was made."""
        made: dict[str, str | int | float | bool] = {
            "format": "QDQ", "per_channel": True, "weights": "QInt8", "activations": "QUInt8",
            "calibration": self.calibration, "opset": MIN_OPSET, "float_stem_convs": self.stem_convs,
            "float_tail": self.float_tail, "float_nodes": float_nodes,
            "concat_shared_range": self.concat_shared_range, "bias_correction": self.bias_correction}
        if self.calibration == "Percentile":
            made["percentile"] = self.percentile
        return made


RECIPES: dict[str, Recipe] = {
    "classify": Recipe(stem_convs=4, bias_correction=True),
    "detect": Recipe(stem_convs=3, float_tail=False),
}
"""Per task, from the levers measured in docs/benchmarks.md: SqueezeNet keeps its stem through the first fire module
in float (the convolutions that lose the most SQNR, and a first convolution slower in int8 than in float) and corrects
its biases (top-1 agreement on 300 unseen vtest frames 0.950 -> 0.973), YOLOX-nano its first three convolutions with
their SiLUs (detection F1 0.91 -> 0.98 at the same speed)."""


def float_nodes(graph: Any, recipe: Recipe) -> list[str]:
    """Names of the nodes `recipe` keeps in float: the stem, and what follows the last convolutions."""
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    stem_end = [n.name for n in graph.node].index(convs[recipe.stem_convs]) if recipe.stem_convs < len(convs) else None
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_conv: set[str] = set()
    for node in reversed(graph.node):  # topological order: consumers are decided first
        if any(c.op_type == "Conv" or c.name in feeds_conv for o in node.output for c in consumers.get(o, [])):
            feeds_conv.add(node.name)
    kept = [n.name for n in graph.node[:stem_end]] if recipe.stem_convs else []
    if recipe.float_tail:
        fused = ("Conv", "Relu")  # a Relu after the last convolution is quantized fused into it
        kept += [n.name for n in graph.node if n.op_type not in fused and n.name not in feeds_conv]
    return kept


def concat_overrides(graph: Any, ranges: Any, kept: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides giving each quantized Concat's inputs the range calibrated for its output."""
    overrides: dict[str, list[dict[str, Any]]] = {}
    for node in graph.node:
        if node.op_type == "Concat" and node.name not in kept and node.output[0] in ranges:
            low, high = (np.float32(np.asarray(v).item()) for v in ranges[node.output[0]].range_value)
            for name in [*node.input, node.output[0]]:
                overrides[name] = [{"rmin": low, "rmax": high}]
    return overrides


def correct_biases(model: Any, float_graph: Any, feeds: Sequence[dict[str, np.ndarray]]) -> int:
    """Add to each quantized Conv's int32 bias the mean over `feeds` of conv(x, W - dequantized W) per channel (bias
    correction, Nagel et al. 2019), Conv after Conv with x its input in `model`, so behind the corrections before it;
    `float_graph` has W under the same Conv names. Returns how many biases were corrected."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    stored = {t.name: t for t in model.graph.initializer}
    made_by = {o: n for n in model.graph.node for o in n.output}
    weights = {t.name: t for t in float_graph.initializer}
    float_weight = {n.name: n.input[1] for n in float_graph.node if n.op_type == "Conv"}
    corrected = 0
    for conv in [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3]:
        weight_dq, bias_dq = made_by.get(conv.input[1]), made_by.get(conv.input[2])
        if weight_dq is None or bias_dq is None or {weight_dq.op_type, bias_dq.op_type} != {"DequantizeLinear"}:
            continue  # a Conv kept in float
        w = numpy_helper.to_array(weights[float_weight[conv.name]])
        q, scale, zero = (numpy_helper.to_array(stored[name]) for name in weight_dq.input)
        shape = (-1,) + (1,) * (w.ndim - 1)
        rounding = w - (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.initializer.append(numpy_helper.from_array(rounding, "rounding"))
        node = helper.make_node("Conv", [conv.input[0], "rounding"], ["rounding_error"])
        node.attribute.extend(conv.attribute)
        probe.graph.node.append(node)
        del probe.graph.output[:]
        probe.graph.output.append(helper.make_tensor_value_info("rounding_error", TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # on-device calibration is pinned to one core: more threads only contend
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        shift = np.mean([session.run(None, feed)[0].mean(axis=(0, 2, 3)) for feed in feeds], axis=0)
        bias = stored[bias_dq.input[0]]
        steps = np.round(shift / numpy_helper.to_array(stored[bias_dq.input[1]])).astype(np.int64)
        moved = np.clip(numpy_helper.to_array(bias).astype(np.int64) + steps, -2**31, 2**31 - 1)
        bias.CopyFrom(numpy_helper.from_array(moved.astype(np.int32), bias.name))
        corrected += 1
    return corrected


def float_graph(source: Path, dest: Path) -> bool:
    """Write `source` as an fp32 graph at opset >= 13 with every node named to `dest`; True when it had fp16 tensors
    (upcast). A graph already quantized is refused: quantizing it again makes an invalid model (duplicate names)."""
    import onnx
    from onnx import TensorProto, numpy_helper, version_converter

    try:
        model = onnx.load(str(source))
    except Exception as err:
        raise ModelError(f"{source.name} is not a readable ONNX model: {str(err)[:200]}") from err
    quantized = next((n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS), None)
    if quantized is not None:
        raise ModelError(f"{source.name} is already quantized (it has {quantized} nodes): nothing to calibrate")
    upcast = False
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
            upcast = True
    for info in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT16:
            info.type.tensor_type.elem_type = TensorProto.FLOAT
            upcast = True
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT
                upcast = True
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]  # old IR listed weights as inputs
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 7)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset < MIN_OPSET:
        model = version_converter.convert_version(model, MIN_OPSET)
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{index}"
    onnx.save(model, str(dest))
    return upcast


def sample_frames(paths: Sequence[Path], count: int, skip: Collection[tuple[Path, int]] = ()) -> Iterator[Frame]:
    """About `count` frames spread evenly over images, folders and videos, at least one from each file with a frame
    left, never one of `skip` ((file, frame index) pairs: the calibration frames, when measuring agreement)."""
    stop = threading.Event()
    sources = [open_source(SourceSettings(uri=str(p), id=f"media{i}"), for_analysis=True) for i, p in enumerate(paths)]
    for path, source in zip(paths, sources, strict=True):
        if source.live:
            raise VisionEdgeError(f"{path}: calibration and measurement media must be image or video files")
    totals = [getattr(s, "total", None) or len(getattr(s, "paths", [])) or 1 for s in sources]
    seen = {(Path(p).resolve(), index) for p, index in skip}
    for path, source, total in zip(paths, sources, totals, strict=True):
        resolved = path.resolve()
        left = [i for i in range(total) if (resolved, i) not in seen]
        quota = min(len(left), max(1, round(count * total / sum(totals))))
        if not quota:
            continue  # a single image, or a clip, used up by the calibration
        every = max(1, len(left) // quota)
        wanted = {left[k * every] for k in range(quota)}
        for frame in source.frames(stop):
            if frame.index in wanted:
                yield frame
                wanted.discard(frame.index)
                if not wanted:
                    break


def picked_frames(paths: Sequence[Path], frames: Sequence[Frame]) -> set[tuple[Path, int]]:
    """The (file, frame index) of frames from `sample_frames(paths, ...)`: what measuring must skip."""
    return {(paths[int(f.source_id.removeprefix("media"))], f.index) for f in frames}


@dataclass(frozen=True, slots=True)
class Made:
    """One variant written: its manifest path and how it compared with the reference."""

    kind: str
    manifest_path: Path
    figures: Figures


def quantize(resolved: ResolvedModel, out_dir: Path, calibration: Sequence[Path], *, frames: int = 20,
             measure: Sequence[Path] = (), measure_frames: int = MEASURE_FRAMES,
             runtime: RuntimeSettings | None = None) -> list[Made]:
    """Write the int8 variant (and the fp32 one when the model is fp16) of `resolved` into `out_dir`, measured."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        create_calibrator,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    runtime = runtime or RuntimeSettings()
    reference = Model(resolved.manifest, resolved.model_path, resolved.labels_path, runtime)
    reference_sha = sha256_file(resolved.model_path)
    picked = list(sample_frames(calibration, frames))
    tensors = [reference.prepare(f.image)[0].astype(np.float32) for f in picked]
    seen = picked_frames(calibration, picked)
    files = {file for file, _ in seen}
    used = [p.name for p in calibration if p in files]
    if not tensors:
        raise VisionEdgeError(f"no calibration frames in {', '.join(map(str, calibration))}")
    input_name = reference.signature.input_name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        """Hands quantize_static one preprocessed calibration frame at a time."""

        def __init__(self) -> None:
            self._next = iter(tensors)

        def get_next(self) -> dict[str, np.ndarray] | None:
            tensor = next(self._next, None)
            return None if tensor is None else {input_name: tensor}

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = out_dir / resolved.labels_path.name
    if not labels.exists():
        shutil.copyfile(resolved.labels_path, labels)
    made: list[Made] = []
    with tempfile.TemporaryDirectory(prefix="visionedge-quantize-") as work:
        fp32 = Path(work) / "fp32.onnx"
        upcast = float_graph(resolved.model_path, fp32)
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        int8 = Path(work) / "int8.onnx"
        recipe = RECIPES[resolved.manifest.task]
        graph = onnx.load(str(prepared)).graph
        kept = float_nodes(graph, recipe)
        method = CalibrationMethod[recipe.calibration]
        extra: dict[str, Any] = {"CalibPercentile": recipe.percentile}
        chatter = io.StringIO()  # the histogram calibrators print progress; stdout is the command's result
        with contextlib.redirect_stdout(chatter):
            if recipe.concat_shared_range:  # quantize_static takes no ranges, only overrides: calibrate once first
                calibrator = create_calibrator(str(prepared), augmented_model_path=str(Path(work) / "ranges.onnx"),
                                               calibrate_method=method,
                                               extra_options={"percentile": recipe.percentile})
                calibrator.collect_data(Reader())
                extra["TensorQuantOverrides"] = concat_overrides(graph, calibrator.compute_data().data, kept)
            quantize_static(str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            calibrate_method=method, nodes_to_exclude=kept, extra_options=extra)
        log.debug("calibration: %s", chatter.getvalue().strip())
        if recipe.bias_correction:
            model = onnx.load(str(int8))
            corrected = correct_biases(model, graph, [{input_name: t} for t in tensors])
            onnx.save(model, str(int8))
            log.debug("bias correction: %d convolutions", corrected)
        outputs = [("int8", int8, recipe.settings(len(kept)))]
        outputs += [("fp32", fp32, {"upcast_from": "fp16"})] if upcast else []
        for kind, path, settings in outputs:
            target = out_dir / f"{kind}.onnx"
            shutil.copyfile(path, target)
            info: dict[str, Any] = {"kind": kind, "reference_file": resolved.model_path.name,
                                    "reference_sha256": reference_sha, "settings": settings}
            if kind == "int8":
                info |= {"calibration": used, "calibration_frames": len(tensors)}
            made.append(_measure(reference, resolved, target, labels, info, measure or calibration,
                                 measure_frames, runtime, seen))
    return made


def _measure(reference: Model, resolved: ResolvedModel, path: Path, labels: Path, info: dict[str, Any],
             media: Sequence[Path], frames: int, runtime: RuntimeSettings, seen: Collection[tuple[Path, int]]) -> Made:
    """Load the variant, compare it with the reference on frames the calibration never saw, write its manifest."""
    data = resolved.manifest.model_dump(mode="json") | {"file": path.name, "labels": labels.name, "variant": None}
    variant = Model(ModelManifest.model_validate(data), path, labels, runtime)
    comparison = compare_frames(reference, variant, sample_frames(media, frames, seen))
    figures = comparison.figures()
    info |= {"agreement": figures.agreement, "agreement_frames": figures.frames, "latency_ratio": figures.latency_ratio}
    manifest = ModelManifest.model_validate(data | {"variant": VariantInfo.model_validate(info).model_dump()})
    manifest_path = path.with_suffix(".yaml")
    manifest_path.write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_none=True), sort_keys=False),
                             encoding="utf-8")
    log.info("%s variant of %s: %s", info["kind"], resolved.manifest.name, figures.describe())
    return Made(str(info["kind"]), manifest_path, figures)
