"""Fixtures for the model-store tests: a TLS model server over the real models, refs to them, harnesses."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge.config import RollbackSettings, ShadowSettings
from visionedge.download import DownloadPolicy
from visionedge.models.catalog import ASSETS, builtin_manifest
from visionedge.models.fetch import Fetcher
from visionedge_devhub.certs import CertBundle, generate_certs

from .support import TINY_LABELS, TINY_MANIFEST, Harness, ModelServer, manifest_fields, slower, tiny_classifier

REAL_FILES = ("squeezenet1.1_fp16.onnx", "yolox_nano.onnx", "yolov3-tiny-coco.onnx", "coco.names",
              "imagenet_labels.txt")
Refs = Callable[..., dict[str, Any]]
MakeHarness = Callable[..., Harness]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """A throw-away CA and a server certificate for localhost and 127.0.0.1, made by the openssl CLI."""
    return generate_certs(tmp_path_factory.mktemp("tls"), "127.0.0.1", ("localhost",))


@pytest.fixture(scope="session")
def served(mirror_dirs: list[Path]) -> dict[str, bytes]:
    """What the model server holds: the real models and labels from the mirror, plus hand-built bad files."""
    files: dict[str, bytes] = {}
    for name in REAL_FILES:
        files[name] = next(d / name for d in mirror_dirs if (d / name).is_file()).read_bytes()
    files["nan.onnx"] = tiny_classifier("nan")
    files["bright.onnx"] = tiny_classifier("bright")
    files["labels10.txt"] = TINY_LABELS
    files["not-a-model.onnx"] = b"this is not an ONNX model\n" * 40
    fp32 = next(d / "squeezenet1.1_fp32.onnx" for d in mirror_dirs if (d / "squeezenet1.1_fp32.onnx").is_file())
    files["squeezenet-slow.onnx"] = slower(fp32.read_bytes())
    # about 5x SqueezeNet's work: well past a 2x ratio gate, yet fast enough for its 10% share to compare the full
    # 150 default frames in about 45 s (the 150-MatMul one gets fewer and waits out the 120 s max_s)
    files["squeezenet-slow50.onnx"] = slower(fp32.read_bytes(), matmuls=50)
    coco = files["coco.names"].decode().splitlines()  # shuffled so that no label keeps its place
    files["coco-shuffled.names"] = "".join(f"{label}\n" for label in coco[1:] + coco[:1]).encode()
    files["bad-manifest.yaml"] = b"task: classify\ndecoder: {type: classification}\nlayout: CHWN\n"
    return files


@pytest.fixture(scope="session")
def server(certs: CertBundle, served: dict[str, bytes]) -> Iterator[ModelServer]:
    """The HTTPS model server (TLS verified by the client against the test CA)."""
    srv = ModelServer(certs, served)
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def video(media: Callable[[str], Path]) -> Path:
    """vtest.avi from the mirror (sha256-verified)."""
    return media("vtest.avi")


@pytest.fixture
def policy(certs: CertBundle) -> DownloadPolicy:
    """Download limits as the device would have them, trusting the test CA; short read timeout and retry
    backoff for stalls."""
    return DownloadPolicy(ca_bundle=certs.ca_cert, connect_timeout_s=5.0, read_timeout_s=1.0, retry_initial_s=0.1)


@pytest.fixture(scope="session")
def refs(server: ModelServer, served: dict[str, bytes]) -> Refs:
    """`refs("yolox", "2")`: a twin `model` block for a served model; keyword arguments override fields."""

    def sha(name: str) -> str:
        return hashlib.sha256(served[name]).hexdigest()

    def make(which: str, version: str, **override: Any) -> dict[str, Any]:
        if which == "squeezenet":
            block = {"name": "squeezenet-custom", "url": server.url("squeezenet1.1_fp16.onnx"),
                     "sha256": ASSETS["squeezenet1.1_fp16.onnx"].sha256, "size": ASSETS["squeezenet1.1_fp16.onnx"].size,
                     "manifest": manifest_fields(builtin_manifest("squeezenet")),
                     "labels_url": server.url("imagenet_labels.txt"),
                     "labels_sha256": ASSETS["imagenet_labels.txt"].sha256}
        elif which in ("yolox", "yolov3"):
            file, builtin = (("yolox_nano.onnx", "yolox-nano") if which == "yolox"
                             else ("yolov3-tiny-coco.onnx", "yolov3-tiny"))
            block = {"name": builtin, "url": server.url(file), "sha256": ASSETS[file].sha256,
                     "size": ASSETS[file].size, "manifest": manifest_fields(builtin_manifest(builtin)),
                     "labels_url": server.url("coco.names")}
        else:
            file = f"{which}.onnx"
            block = {"name": f"tiny-{which}", "url": server.url(file), "sha256": sha(file),
                     "manifest": dict(TINY_MANIFEST), "labels_url": server.url("labels10.txt")}
        block["version"] = version
        block.update(override)
        return {k: v for k, v in block.items() if v is not None}

    return make


@pytest.fixture
def make_harness(tmp_path: Path, policy: DownloadPolicy, fetcher: Fetcher) -> Iterator[MakeHarness]:
    """`make_harness(video=..., watch_frames=...)`: a store on a fresh data dir (or `root`, to start again on one),
    its manager, maybe a pipeline; `wiring` goes to Harness (runtime, variants_dir, timer, calibration)."""
    made: list[Harness] = []

    def make(video: Path | None = None, policy_: DownloadPolicy | None = None, shadow: ShadowSettings | None = None,
             first_boot: bool = False, root: Path | None = None, wiring: dict[str, Any] | None = None,
             **rollback: Any) -> Harness:
        settings = RollbackSettings(**{"watch_frames": 0, "watch_s": 0.0, **rollback})
        harness = Harness(root or tmp_path / f"models{len(made)}", policy_ or policy, fetcher, settings, video, shadow,
                          first_boot, **(wiring or {}))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop()
