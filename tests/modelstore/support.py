"""Real parts the model-store tests drive: an HTTPS model server, hand-built ONNX models, a store+manager+pipeline."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from visionedge.config import RollbackSettings, RuntimeSettings, ShadowSettings
from visionedge.download import DownloadPolicy, sha256_file
from visionedge.frame import Frame
from visionedge.models.fetch import Fetcher
from visionedge.models.model import Model
from visionedge.models.variants import Timer, time_models
from visionedge.modelstore import ModelManager, ModelStore
from visionedge.modelstore.calibration import Limits
from visionedge.modelstore.shadow import Shadow
from visionedge.pipeline import Pipeline
from visionedge.sources import VideoFileSource
from visionedge_devhub.certs import CertBundle

from tests.core.support import serve

RUNTIME = RuntimeSettings(providers=["cpu"], intra_op_threads=1)
SLOW_CHUNK = 16 * 1024


class ModelServer:
    """HTTPS file server with Range support, for the store's real downloads.

    Paths: /files/NAME (whole file, or from a Range), /slow/RATE/NAME (RATE bytes per second),
    /stall/NAME (headers and 1 KiB, then silence), /truncated/NAME (the first half, announced as complete);
    anything else is a 404. `hits` counts requests per path.
    """

    def __init__(self, certs: CertBundle, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: Counter[str] = Counter()
        self._closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.hits[self.path] += 1
                parts = self.path.strip("/").split("/")
                kind, name = parts[0], parts[-1]
                if kind not in ("files", "slow", "stall", "truncated") or name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                if kind == "truncated":
                    data = data[: len(data) // 2]
                start, status = 0, 200
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes="):
                    start, status = int(ranged[6:].split("-")[0]), 206
                    if start >= len(data):
                        self.send_error(416)
                        return
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                try:
                    if kind == "stall":
                        self.wfile.write(body[:1024])
                        self.wfile.flush()
                        server._closing.wait(20)
                    elif kind == "slow":
                        for offset in range(0, len(body), SLOW_CHUNK):
                            if server._closing.is_set():
                                return
                            self.wfile.write(body[offset:offset + SLOW_CHUNK])
                            self.wfile.flush()
                            time.sleep(SLOW_CHUNK / int(parts[1]))
                    else:
                        self.wfile.write(body)
                except (OSError, ssl.SSLError):
                    return
                self.close_connection = True

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        self._httpd = serve(Handler, "model-server", tls=context)
        self.port = self._httpd.server_address[1]

    def url(self, name: str, kind: str = "files", host: str = "localhost", scheme: str = "https") -> str:
        """e.g. https://localhost:PORT/files/yolox_nano.onnx or .../slow/200000/yolox_nano.onnx."""
        return f"{scheme}://{host}:{self.port}/{kind}/{name}"

    def close(self) -> None:
        """Release stalled and throttled handlers, then stop."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def tiny_classifier(kind: str) -> bytes:
    """A 16x16 classifier with 10 classes that fails in a chosen way.

    "nan": every output is NaN (Log of a negative number), so the probe inference rejects it.
    "bright": fine on the mid-grey probe, but a frame with any pixel above 127.5 makes Reshape fail at run time,
    so it passes validation and then fails its watch on real video.
    """
    weights = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.01, (768, 10)).astype(np.float32), "w")
    nodes = [helper.make_node("Flatten", ["data"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    consts = [weights]
    if kind == "nan":
        consts.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"))
        nodes += [helper.make_node("Abs", ["logits"], ["a"]), helper.make_node("Add", ["a", "one"], ["b"]),
                  helper.make_node("Neg", ["b"], ["c"]), helper.make_node("Log", ["c"], ["prob"])]
    elif kind == "bright":
        consts += [numpy_helper.from_array(np.array(127.5, dtype=np.float32), "mid"),
                   numpy_helper.from_array(np.array(2, dtype=np.int64), "two"),
                   numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
                   numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
                   numpy_helper.from_array(np.array([-1], dtype=np.int64), "rest")]
        nodes += [helper.make_node("ReduceMax", ["data"], ["max"], keepdims=0),
                  helper.make_node("Greater", ["max", "mid"], ["bright"]),
                  helper.make_node("Cast", ["bright"], ["flag"], to=TensorProto.INT64),
                  helper.make_node("Mul", ["flag", "two"], ["twice"]),
                  helper.make_node("Add", ["twice", "one"], ["rows"]),
                  helper.make_node("Unsqueeze", ["rows", "axis0"], ["rows1"]),
                  helper.make_node("Concat", ["rows1", "rest"], ["shape"], axis=0),
                  helper.make_node("Reshape", ["logits", "shape"], ["prob"])]
    else:
        raise ValueError(kind)
    graph = helper.make_graph(
        nodes, f"tiny-{kind}",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["rows", "classes"])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def slower(model_bytes: bytes, matmuls: int = 150) -> bytes:
    """The same model plus a chain of MatMuls on its input feeding an extra output: identical answers, only slower.

    The matrices are orthogonal, so the chain's values stay finite (a non-finite output would be refused as such).
    """
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    data = graph.input[0]
    dims = [d.dim_value for d in data.type.tensor_type.shape.dim]
    width = dims[-1]
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(width, width)))
    graph.initializer.extend([numpy_helper.from_array(q.astype(np.float32), "slow_w"),
                              numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "slow_shape")])
    graph.node.append(helper.make_node("Reshape", [data.name, "slow_shape"], ["slow_0"]))
    for i in range(matmuls):
        graph.node.append(helper.make_node("MatMul", [f"slow_{i}", "slow_w"], [f"slow_{i + 1}"]))
    graph.output.append(helper.make_tensor_value_info(f"slow_{matmuls}", TensorProto.FLOAT, [None, width]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


TINY_MANIFEST: dict[str, Any] = {"task": "classify", "decoder": {"type": "classification", "softmax": True},
                                 "confidence": 0.0, "top_k": 3}
TINY_LABELS = "".join(f"class{i}\n" for i in range(10)).encode()


def manifest_fields(manifest: Any) -> dict[str, Any]:
    """A built-in manifest as the inline `manifest` fields of a twin block (name, version, files and nulls left out:
    a twin document holds no nulls)."""
    data: dict[str, Any] = manifest.model_dump(mode="json", exclude_none=True)
    for key in ("name", "version", "file", "labels"):
        data.pop(key)
    return data


class Harness:
    """Store, manager and (optionally) a real pipeline on vtest.avi, wired the way the module wires them."""

    def __init__(self, root: Path, policy: DownloadPolicy, fetcher: Fetcher, rollback: RollbackSettings,
                 video: Path | None = None, shadow: ShadowSettings | None = None, first_boot: bool = False, *,
                 runtime: RuntimeSettings = RUNTIME, variants_dir: Path | None = None, timer: Timer = time_models,
                 calibration: Limits | None = None, realtime: bool = False) -> None:
        """With `shadow` (and a video), candidates run in shadow on the pipeline's frames before the swap. Unless
        `first_boot`, the twin already asked for the built-in default it starts on (as devhub's twin does). With
        `variants_dir`, `runtime.variant: auto` looks there (timed by `timer`), and `runtime.calibrate: on-device`
        samples the pipeline's frames within the `calibration` limits. `realtime` paces the video at its frame rate,
        as a camera delivers it, instead of as fast as the model runs."""
        self.store = ModelStore(root, policy, fetcher, variants_dir=variants_dir, timer=timer)
        self.store.cleanup_staging()
        if not first_boot:
            self.store.write_updates({"served": True})
        self.initial = self.store.load_active(runtime)
        self.acks: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.swaps: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self.health: list[dict[str, Any]] = []
        attach = self._attach if shadow is not None and video is not None else None
        self.manager = ModelManager(self.store, self.initial, swap=self._swap, report=self._report, runtime=runtime,
                                    rollback=rollback, shadow=shadow, attach_shadow=attach,
                                    report_health=self.health.append, latest_frame=self._latest,
                                    calibration=calibration)
        if video is not None:
            source = VideoFileSource(video, "vtest", loop=True, realtime=realtime)
            self.pipeline = Pipeline(source, lambda: self.manager.model, [self], on_record=self.manager.observe_record,
                                     on_inference_error=self.manager.observe_error)
            self._thread = threading.Thread(target=self.pipeline.run, args=(self._stop,), name="test-pipeline",
                                            daemon=True)
            self._thread.start()
        self.manager.start()

    # the pipeline sink protocol
    name = "harness"

    def publish(self, record: dict[str, Any]) -> None:
        """Keep every record (called on the pipeline's publish thread)."""
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to release."""

    def _latest(self) -> Frame | None:
        """The pipeline's newest analysed frame, as the module hands it to the calibration."""
        latest = self.pipeline.latest if self.pipeline is not None else None
        return latest[0] if latest is not None else None

    def _swap(self, model: Model) -> None:
        self.swaps.append(f"{model.name}@{model.version}")

    def _attach(self, shadow: Shadow | None) -> None:
        assert self.pipeline is not None
        self.pipeline.shadow = shadow

    def _report(self, ack: dict[str, Any]) -> None:
        with self._cond:
            self.acks.append(ack)
            self._cond.notify_all()

    def request(self, block: dict[str, Any], av: int) -> bool:
        """What the twin handler does with a desired `model` block: hand over the raw dict and $version."""
        return self.manager.request(block, av)

    def outcome(self, av: int, timeout: float = 60.0) -> dict[str, Any]:
        """The first non-202 acknowledgement for desired version av."""
        with self._cond:
            found = self._cond.wait_for(lambda: any(a["av"] == av and a["ac"] != 202 for a in self.acks), timeout)
            assert found, f"no final acknowledgement for version {av} within {timeout} s; acks: {self.acks}"
            return next(a for a in self.acks if a["av"] == av and a["ac"] != 202)

    def wait_records(self, more: int, timeout: float = 30.0) -> int:
        """Wait until `more` records beyond the current count arrive; returns the count before."""
        with self._cond:
            start = len(self.records)
            assert self._cond.wait_for(lambda: len(self.records) >= start + more, timeout), (
                f"records stopped flowing: {len(self.records) - start} of {more} in {timeout} s")
            return start

    def stop(self) -> None:
        """Stop the manager and the pipeline."""
        self.manager.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def file_entry(path: Path) -> dict[str, Any]:
    """url-less facts of a served file: its size and sha256."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}
