"""A twin `model` block normalised: its version key, the block to report back, and a content fingerprint."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from visionedge.acks import without_nulls
from visionedge.config import ModelRef
from visionedge.download import DownloadPolicy, check_url
from visionedge.errors import FetchError, ModelError
from visionedge.models.catalog import ASSETS, builtin_manifest, builtin_names
from visionedge.models.manifest import ModelManifest, parse_manifest
from visionedge.modelstore.errors import UpdateRejected

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.yaml"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_FILE_FIELDS = ("sha256", "size", "manifest", "manifest_url", "labels_url", "labels_sha256")


def version_key(name: str, version: str) -> str:
    """The folder name and pointer entry of one model version, e.g. 'yolox-nano@0.1.1-coco'."""
    return f"{name}@{version}"


def split_key(key: str) -> dict[str, str]:
    """{'name', 'version'} of a version key (names never contain '@')."""
    name, _, version = key.partition("@")
    return {"name": name, "version": version}


def block_of(ref: ModelRef) -> dict[str, Any]:
    """The twin block as the user wrote it, nulls left out at every depth (a reported null deletes the key)."""
    block: dict[str, Any] = without_nulls(ref.model_dump())
    return block


def canonical(ref: ModelRef) -> str:
    """One string per distinct block, to recognise re-deliveries of the same desired value."""
    return json.dumps(block_of(ref), sort_keys=True, separators=(",", ":"))


def labels_file_for(source: str) -> str:
    """Stored labels name: read_labels parses .json as JSON and anything else as one label per line."""
    return "labels.json" if PurePosixPath(urlsplit(source).path).suffix.lower() == ".json" else "labels.txt"


@dataclass(frozen=True, slots=True)
class Resolved:
    """Everything decided about a block before any byte is downloaded."""

    ref: ModelRef
    key: str
    block: dict[str, Any]
    fingerprint: dict[str, Any]
    """What makes two blocks the same content (hashes, manifest), independent of where the files are hosted."""
    builtin: ModelManifest | None
    """The shipped manifest when the block names a built-in model (no url)."""


def resolve(ref: ModelRef, policy: DownloadPolicy) -> Resolved:
    """Static checks of a block (names, required fields, URL policy, inline manifest); raises UpdateRejected."""
    _check_safe("name", ref.name)
    if ref.version is not None:
        _check_safe("version", ref.version)
    if ref.url is None:
        return _resolve_builtin(ref)
    if ref.version is None:
        raise UpdateRejected("model.version is required with model.url: every result names the version "
                             "that produced it")
    if ref.sha256 is None:
        raise UpdateRejected("model.sha256 is required with model.url: the module runs only files it has verified")
    if ref.manifest is not None and ref.manifest_url is not None:
        raise UpdateRejected("give model.manifest or model.manifest_url, not both")
    if ref.manifest is None and ref.manifest_url is None:
        raise UpdateRejected("model.manifest (fields) or model.manifest_url is required with model.url")
    for url in (ref.url, ref.manifest_url, ref.labels_url):
        if url is not None:
            try:
                check_url(url, policy)
            except FetchError as err:
                raise UpdateRejected(str(err)) from err
    if ref.manifest is not None:
        if ref.labels_url is None:
            catalog_labels(ref.manifest)
        build_manifest(ref.manifest, ref, "model.manifest", labels_source(ref, ref.manifest))
    fingerprint = {
        "sha256": ref.sha256.lower(),
        "manifest": ref.manifest if ref.manifest is not None else ref.manifest_url,
        "labels": ref.labels_sha256.lower() if ref.labels_sha256 else ref.labels_url,
    }
    return Resolved(ref, version_key(ref.name, ref.version), block_of(ref), fingerprint, None)


def _resolve_builtin(ref: ModelRef) -> Resolved:
    """A url-less block names a shipped model, whose files come pinned from the catalog."""
    if ref.name not in builtin_names():
        raise UpdateRejected(f"unknown model {ref.name!r}: built-in models are {', '.join(builtin_names())}; "
                             "any other model needs url and sha256")
    given = [f"model.{name}" for name in _FILE_FIELDS if getattr(ref, name) is not None]
    if given:
        raise UpdateRejected(f"{', '.join(given)} need model.url: built-in model {ref.name!r} brings its own files")
    try:
        manifest = builtin_manifest(ref.name)
    except ModelError as err:
        raise UpdateRejected(str(err)) from err
    if ref.version is not None and ref.version != manifest.version:
        raise UpdateRejected(f"built-in model {ref.name!r} is version {manifest.version!r}, not {ref.version!r}; "
                             "other versions need url and sha256")
    asset = ASSETS[manifest.file]
    fingerprint = {"builtin": ref.name, "sha256": asset.sha256, "labels": ASSETS[manifest.labels].sha256}
    return Resolved(ref, version_key(manifest.name, manifest.version), block_of(ref), fingerprint, manifest)


def _check_safe(field: str, value: str) -> None:
    """Names and versions become folder names: no separators, no '..', no hidden files."""
    if not _SAFE.match(value) or ".." in value:
        raise UpdateRejected(f"model.{field} {value!r} may use only letters, digits and '.', '_', '+', '-' "
                             "(it names a folder on the device)")


def catalog_labels(manifest: Mapping[str, Any]) -> str:
    """The built-in labels file a manifest names when no labels_url is given; raises UpdateRejected otherwise."""
    name = manifest.get("labels")
    labels = sorted(a.name for a in ASSETS.values() if a.kind == "models" and not a.name.endswith(".onnx"))
    if not isinstance(name, str) or name not in labels:
        raise UpdateRejected(f"model.labels_url is required unless the manifest's labels names a built-in labels "
                             f"file ({', '.join(labels)})")
    return name


def labels_source(ref: ModelRef, manifest: Mapping[str, Any]) -> str:
    """Where the labels come from: the labels_url, else the built-in labels file the manifest names."""
    return ref.labels_url if ref.labels_url is not None else catalog_labels(manifest)


def build_manifest(data: Mapping[str, Any], ref: ModelRef, origin: str, labels_from: str) -> ModelManifest:
    """The stored manifest: the user's fields, with name and version from the twin block and our file names."""
    for field in ("name", "version"):
        given, wanted = data.get(field), getattr(ref, field)
        if given is not None and str(given) != wanted:
            raise UpdateRejected(f"manifest {origin} names {field} {given!r} but the twin block asks for {wanted!r}")
    merged = {**data, "name": ref.name, "version": ref.version, "file": MODEL_FILE,
              "labels": labels_file_for(labels_from)}
    try:
        return parse_manifest(merged, origin)
    except ModelError as err:
        raise UpdateRejected(str(err)) from err
