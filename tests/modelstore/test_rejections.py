"""Bad updates are refused with their own one-line reason while the old model keeps producing results."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge.config import RollbackSettings
from visionedge.download import DownloadPolicy
from visionedge.models.catalog import builtin_manifest
from visionedge.models.fetch import Fetcher
from visionedge.modelstore import ModelStore
from visionedge_devhub.certs import CertBundle

from .conftest import Refs
from .support import Harness, ModelServer, manifest_fields

LIMIT = 8 * 1024 * 1024
SQUEEZENET = "squeezenet@1.1-winml-fp16"
SQ = "squeezenet1.1_fp16.onnx"
SQ_MANIFEST = manifest_fields(builtin_manifest("squeezenet"))
VERSIONS = itertools.count(100)

Block = Callable[[Refs, ModelServer], dict[str, Any]]
Reason = Callable[[ModelServer, ModelStore, dict[str, Any]], str]


@pytest.fixture(scope="module")
def rejecting(tmp_path_factory: pytest.TempPathFactory, certs: CertBundle, fetcher: Fetcher,
              video: Path) -> Iterator[Harness]:
    """A pipeline on the built-in SqueezeNet whose store allows 8 MiB from localhost only."""
    policy = DownloadPolicy(ca_bundle=certs.ca_cert, connect_timeout_s=5.0, read_timeout_s=1.0, max_bytes=LIMIT,
                            allowed_hosts=("localhost",))
    harness = Harness(tmp_path_factory.mktemp("rejecting") / "models", policy, fetcher,
                      RollbackSettings(watch_frames=10, watch_s=10.0), video)
    yield harness
    harness.stop()


def _not_onnx(s: ModelServer, store: ModelStore, block: dict[str, Any]) -> str:
    path = store.staging_dir / f"{block['name']}@{block['version']}" / "model.onnx"
    return (f"model.onnx is not a loadable ONNX model: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : "
            f"Load model from {path} failed:Protobuf parsing failed.")


CASES: list[tuple[str, Block, int, Reason]] = [
    ("wrong-sha256",
     lambda r, s: r("squeezenet", "1", sha256="0" * 64, size=None), 400,
     lambda s, st, b: f"{s.url(SQ)}: sha256 21f25e3d9254… does not match the pinned 000000000000…"),
    ("truncated-file",
     lambda r, s: r("squeezenet", "1", url=s.url(SQ, kind="truncated")), 400,
     lambda s, st, b: f"{s.url(SQ, kind='truncated')}: size 1242045 bytes, expected 2484091"),
    ("not-onnx",
     lambda r, s: r("not-a-model", "1"), 400, _not_onnx),
    ("input-shape-not-as-manifest",
     lambda r, s: r("squeezenet", "1", manifest={**SQ_MANIFEST, "width": 320}), 400,
     lambda s, st, b: "manifest width 320 does not match model input 'data_0' width 224"),
    ("labels-count-mismatch",
     lambda r, s: r("squeezenet", "1", labels_url=s.url("coco.names"), labels_sha256=None), 400,
     lambda s, st, b: "labels file has 80 labels but the model outputs 1000 classes"),
    ("larger-than-the-limit",
     lambda r, s: r("yolov3", "1", size=None), 400,
     lambda s, st, b: f"{s.url('yolov3-tiny-coco.onnx')} is 35401646 bytes, over the limit of 8388608 bytes"),
    ("declared-larger-than-the-limit",
     lambda r, s: r("yolov3", "1"), 400,
     lambda s, st, b: "declared size 35401646 bytes exceeds the download limit of 8388608 bytes"),
    ("plain-http",
     lambda r, s: r("squeezenet", "1", url=s.url(SQ, scheme="http")), 400,
     lambda s, st, b: f"plain http is not allowed ({s.url(SQ, scheme='http')}): use https, or set "
                      "local.allow_insecure_http for development"),
    ("host-not-allowed",
     lambda r, s: r("squeezenet", "1", url=s.url(SQ, host="127.0.0.1")), 400,
     lambda s, st, b: "host '127.0.0.1' is not in the allowed hosts (localhost)"),
    ("http-404",
     lambda r, s: r("squeezenet", "1", url=s.url("missing.onnx")), 500,
     lambda s, st, b: f"HTTP 404 Not Found for {s.url('missing.onnx')}"),
    ("server-stalls",
     lambda r, s: r("squeezenet", "1", url=s.url(SQ, kind="stall")), 500,
     lambda s, st, b: f"timed out downloading {s.url(SQ, kind='stall')} (connect 5 s, read 1 s)"),
    ("outputs-nan",
     lambda r, s: r("nan", "1"), 400,
     lambda s, st, b: "model output 'prob' is not finite (NaN or inf) on a probe input"),
    ("invalid-manifest",
     lambda r, s: r("squeezenet", "1", manifest={"task": "classify"}), 400,
     lambda s, st, b: "invalid model manifest model.manifest: decoder: Field required"),
    ("invalid-manifest-url",
     lambda r, s: r("squeezenet", "1", manifest=None, manifest_url=s.url("bad-manifest.yaml")), 400,
     lambda s, st, b: f"invalid model manifest {s.url('bad-manifest.yaml')}: layout: Input should be 'NCHW' "
                      "or 'NHWC'"),
    ("manifest-names-another-model",
     lambda r, s: r("squeezenet", "1", manifest={**SQ_MANIFEST, "name": "other"}), 400,
     lambda s, st, b: "manifest model.manifest names name 'other' but the twin block asks for 'squeezenet-custom'"),
    ("labels-sha256",
     lambda r, s: r("squeezenet", "1", labels_sha256="f" * 64), 400,
     lambda s, st, b: f"{s.url('imagenet_labels.txt')}: sha256 4eb3da435cf5… does not match the pinned "
                      "ffffffffffff…"),
    ("no-sha256",
     lambda r, s: r("squeezenet", "1", sha256=None), 400,
     lambda s, st, b: "model.sha256 is required with model.url: the module runs only files it has verified"),
    ("unknown-built-in",
     lambda r, s: {"name": "nope"}, 400,
     lambda s, st, b: "unknown model 'nope': built-in models are squeezenet, squeezenet-fp32, tiny-yolov2, "
                      "yolov3-tiny, yolox-nano; any other model needs url and sha256"),
    ("active-version-with-other-content",
     lambda r, s: r("squeezenet", "1.1-winml-fp16", name="squeezenet"), 400,
     lambda s, st, b: f"{SQUEEZENET} is already installed with different content; give changed content a new "
                      "version"),
    ("not-a-model-setting",
     lambda r, s: {"name": "x", "sha256": "abc", "colour": "blue"}, 400,
     lambda s, st, b: "invalid model setting: model.sha256: String should match pattern '^[0-9a-fA-F]{64}$'; "
                      "model.colour: Extra inputs are not permitted"),
    ("unsafe-name",
     lambda r, s: r("squeezenet", "1", name="../etc"), 400,
     lambda s, st, b: "model.name '../etc' may use only letters, digits and '.', '_', '+', '-' (it names a folder "
                      "on the device)"),
]


@pytest.mark.parametrize(("block", "code", "reason"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_update_is_refused_with_its_reason_while_results_keep_flowing(
        rejecting: Harness, refs: Refs, server: ModelServer, block: Block, code: int, reason: Reason) -> None:
    """The acknowledgement names the reason, the old model keeps analysing, nothing is left on disk."""
    h = rejecting
    av = next(VERSIONS)
    desired = block(_versioned(refs, av), server)
    start = h.wait_records(3)
    assert h.request(desired, av)
    assert h.outcome(av) == {"value": {"name": "squeezenet"}, "ac": code, "av": av,
                             "ad": reason(server, h.store, desired)}
    h.wait_records(5)
    assert {(r["model"]["name"], r["model"]["version"]) for r in h.records[start:]} == {
        ("squeezenet", "1.1-winml-fp16")}
    assert list(h.store.staging_dir.iterdir()) == []
    assert h.store.installed() == [SQUEEZENET]
    assert h.swaps == []


def _versioned(refs: Refs, av: int) -> Refs:
    """refs() with each case's version made unique, so no case can reuse another's staging folder."""

    def make(which: str, version: str, **override: Any) -> dict[str, Any]:
        return refs(which, version if version == "1.1-winml-fp16" else f"{version}.{av}", **override)

    return make


def test_the_matrix_has_a_distinct_reason_per_case() -> None:
    """Each bad input is told apart from the others (at least 12 of them)."""
    assert len(CASES) >= 12
    assert len({c[0] for c in CASES}) == len(CASES)
