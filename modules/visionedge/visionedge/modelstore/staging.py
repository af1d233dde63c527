"""Fill one staging folder: verified downloads first, then manifest and labels, then a full Model check."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from visionedge.config import RuntimeSettings, YamlTooBig, parse_yaml
from visionedge.download import DownloadCancelled, DownloadPolicy, TransferError, download, verify_file
from visionedge.errors import AcceleratorError, FetchError, ModelError
from visionedge.models.catalog import ASSETS, Asset
from visionedge.models.fetch import Fetcher
from visionedge.models.manifest import ModelManifest
from visionedge.models.model import Model
from visionedge.models.variants import Timer, open_model, time_models
from visionedge.modelstore.errors import UpdateCancelled, UpdateFailed, UpdateRejected
from visionedge.modelstore.refs import (
    MANIFEST_FILE,
    MODEL_FILE,
    Resolved,
    build_manifest,
    labels_file_for,
    labels_source,
)
from visionedge.urls import redact_url

log = logging.getLogger(__name__)

StageProgress = Callable[[str, float | None], None]
"""(phase, fraction done or None): phases are 'downloading' and 'validating'."""

MANIFEST_MAX_BYTES = 1 << 20


def fill(resolved: Resolved, directory: Path, policy: DownloadPolicy, fetcher: Fetcher | None,
         runtime: RuntimeSettings, progress: StageProgress, cancel: threading.Event,
         variants_dir: Path | None = None, timer: Timer = time_models) -> Model:
    """Put model, labels and manifest into directory; return the Model whose construction validated them."""
    ref = resolved.ref
    model_path = directory / MODEL_FILE
    if resolved.builtin is not None:
        labels_path = directory / labels_file_for(resolved.builtin.labels)
        progress("downloading", None)
        _copy_asset(fetcher, ASSETS[resolved.builtin.file], model_path)
        _copy_asset(fetcher, ASSETS[resolved.builtin.labels], labels_path)
        manifest = resolved.builtin.model_copy(update={"file": MODEL_FILE, "labels": labels_path.name})
    else:
        assert ref.url is not None  # resolve() guarantees url-based blocks carry url, sha256 and a manifest
        _fetch(ref.url, model_path, policy, cancel, sha256=ref.sha256, size=ref.size,
               progress=lambda done, total: progress("downloading", done / total if total else None))
        _check(cancel)
        if ref.manifest is not None:
            data, origin = ref.manifest, "model.manifest"
        else:
            assert ref.manifest_url is not None
            data, origin = _fetch_manifest(ref.manifest_url, directory, policy, cancel), redact_url(ref.manifest_url)
        source = labels_source(ref, data)
        manifest = build_manifest(data, ref, origin, source)
        labels_path = directory / manifest.labels
        if ref.labels_url is not None:
            _fetch(ref.labels_url, labels_path, policy, cancel, sha256=ref.labels_sha256)
        else:
            _copy_asset(fetcher, ASSETS[source], labels_path)
    _check(cancel)
    progress("validating", None)
    model = construct(manifest, model_path, labels_path, runtime, variants_dir, timer)
    _write_manifest(directory / MANIFEST_FILE, manifest)
    return model


def construct(manifest: ModelManifest, model_path: Path, labels_path: Path, runtime: RuntimeSettings,
              variants_dir: Path | None = None, timer: Timer = time_models) -> Model:
    """Model(...) loads, checks the signature and labels, and runs the finite smoke inference; failures are 400s.
    With `variants_dir`, the variant `runtime.variant` asks for is chosen (timed by `timer` when `auto`)."""
    try:
        return open_model(manifest, model_path, labels_path, runtime, variants_dir, timer)
    except (ModelError, AcceleratorError) as err:
        raise UpdateRejected(str(err)) from err
    except Exception as err:  # a decoder or preprocess bug on an odd model must reject it, not kill the manager
        log.warning("model %s@%s failed validation unexpectedly", manifest.name, manifest.version, exc_info=True)
        raise UpdateRejected(f"model failed its validation inference: {type(err).__name__}: {err}") from err


def _check(cancel: threading.Event) -> None:
    """Stop between steps once a newer version, a rollback or shutdown has taken over."""
    if cancel.is_set():
        raise UpdateCancelled("cancelled")


def _fetch(url: str, dest: Path, policy: DownloadPolicy, cancel: threading.Event, *, sha256: str | None,
           size: int | None = None, progress: Callable[[int, int | None], None] | None = None) -> None:
    """download() into the staging folder, cancellable between chunks."""
    with _sorted_errors(dest.name):
        download(url, dest, policy, sha256=sha256, size=size, progress=progress, should_stop=cancel.is_set)


def _fetch_manifest(url: str, directory: Path, policy: DownloadPolicy, cancel: threading.Event) -> dict[str, Any]:
    """A manifest is configuration, not code: capped at 1 MiB and only ever parsed with yaml.safe_load."""
    small = dataclasses.replace(policy, max_bytes=min(policy.max_bytes, MANIFEST_MAX_BYTES))
    source = directory / "manifest.source"
    _fetch(url, source, small, cancel, sha256=None)
    try:
        data = parse_yaml(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, YamlTooBig) as err:
        raise UpdateRejected(f"model manifest {redact_url(url)} is not valid YAML: {err}") from err
    finally:
        source.unlink(missing_ok=True)
    if not isinstance(data, dict):
        raise UpdateRejected(f"model manifest {redact_url(url)} must be a mapping")
    return data


def _copy_asset(fetcher: Fetcher | None, asset: Asset, dest: Path) -> None:
    """A built-in file from the Fetcher's verified cache (mirror or pinned URL), re-verified after the copy."""
    if fetcher is None:
        raise UpdateFailed(f"built-in model file {asset.name} needs the model cache, and this store has none")
    with _sorted_errors(asset.name):
        source = fetcher.ensure(asset)
        shutil.copyfile(source, dest)
        verify_file(dest, sha256=asset.sha256, size=asset.size, what=f"{asset.name} (copied from the cache)")


@contextmanager
def _sorted_errors(file: str) -> Iterator[None]:
    """Fetch errors by what the operator must do: refusals and bad content are 400, transfer and disk trouble 500."""
    try:
        yield
    except DownloadCancelled as err:
        raise UpdateCancelled(str(err)) from err
    except TransferError as err:
        raise UpdateFailed(str(err)) from err
    except FetchError as err:
        raise UpdateRejected(str(err)) from err
    except OSError as err:
        raise UpdateFailed(f"cannot write {file} in the model store: {err.strerror or err}") from err


def _write_manifest(path: Path, manifest: ModelManifest) -> None:
    """The validated manifest, with our file names, is what a restart loads: offline and without the twin."""
    text = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False)
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
