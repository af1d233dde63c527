"""Get catalog files into the cache: from a local mirror first, else their public URL; always verified."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from visionedge.download import DownloadPolicy, download, sha256_file, verify_file
from visionedge.errors import FetchError, ModelError
from visionedge.models.catalog import (
    ASSETS,
    Asset,
    assets_for,
    builtin_manifest,
    builtin_names,
    default_mirrors,
)
from visionedge.models.manifest import ModelManifest, load_manifest

log = logging.getLogger(__name__)

MIRROR_ENV = "VISIONEDGE_MIRROR"


def mirrors_from_env(env: dict[str, str] | None = None) -> list[Path]:
    """Mirror folders from VISIONEDGE_MIRROR (path-separated), else the workplace's shared folders."""
    value = (os.environ if env is None else env).get(MIRROR_ENV, "")
    if value:
        return [Path(p) for p in value.split(os.pathsep) if p]
    return default_mirrors()


class Fetcher:
    """Cache of verified assets; a file is hashed once per process, then trusted by size and mtime."""

    def __init__(self, cache_dir: Path, mirrors: list[Path], policy: DownloadPolicy | None = None) -> None:
        self.cache_dir = cache_dir
        self.mirrors = mirrors
        self.policy = policy or DownloadPolicy()
        self._verified: dict[Path, tuple[int, float]] = {}

    def path(self, asset: Asset) -> Path:
        """Where an asset lives in the cache."""
        return self.cache_dir / asset.kind / asset.name

    def in_mirror(self, asset: Asset) -> bool:
        """Whether some mirror folder holds a copy (verified only when it is fetched)."""
        return any((mirror / asset.name).is_file() for mirror in self.mirrors)

    def ensure(self, asset: Asset) -> Path:
        """The verified cached file, fetching it when absent or damaged."""
        target = self.path(asset)
        if target.is_file() and self._is_good(target, asset):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target.with_name(f".{target.name}.lock")):
            # Another process sharing this cache may have fetched it while this one waited for the lock.
            if target.is_file() and self._is_good(target, asset):
                return target
            return self._fetch(asset, target)

    def _fetch(self, asset: Asset, target: Path) -> Path:
        """Copy from the first mirror that has the file, else download; verified before it takes the cache name."""
        for mirror in self.mirrors:
            candidate = mirror / asset.name
            if candidate.is_file():
                part = target.with_name(target.name + ".part")
                try:
                    shutil.copyfile(candidate, part)
                except OSError as err:  # a full disk at first start: no half copy left behind
                    part.unlink(missing_ok=True)
                    raise FetchError(f"cannot copy {asset.name} from mirror {mirror} into {target.parent}: "
                                     f"{err.strerror or err}") from err
                verify_file(part, sha256=asset.sha256, size=asset.size, what=f"{candidate} (mirror)")
                os.replace(part, target)
                log.info("fetched %s from mirror %s", asset.name, mirror)
                return self._remember(target)
        if asset.url is None:
            where = ", ".join(str(m) for m in self.mirrors) or "none configured"
            raise FetchError(f"{asset.name} has no public download URL and is not in any mirror ({where}); "
                             f"copy it into a mirror folder and pass --mirror DIR or set {MIRROR_ENV}")
        log.info("downloading %s from %s", asset.name, asset.url)
        download(asset.url, target, self.policy, sha256=asset.sha256, size=asset.size)
        return self._remember(target)

    def _is_good(self, path: Path, asset: Asset) -> bool:
        stat = path.stat()
        if self._verified.get(path) == (stat.st_size, stat.st_mtime):
            return True
        if stat.st_size == asset.size and sha256_file(path) == asset.sha256:
            self._remember(path)
            return True
        log.warning("cached %s does not verify; fetching it again", path)
        return False

    def _remember(self, path: Path) -> Path:
        stat = path.stat()
        self._verified[path] = (stat.st_size, stat.st_mtime)
        return path

    def media(self, name: str) -> Path:
        """A catalog media file, e.g. the sample video."""
        return self.ensure(ASSETS[name])


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an advisory lock on `lock` (one fetch of a file at a time across processes sharing the cache: they would
    otherwise write the same .part)."""
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A manifest with the concrete files it names."""

    manifest: ModelManifest
    model_path: Path
    labels_path: Path


def resolve_model(spec: str, fetcher: Fetcher, manifest_path: Path | None = None) -> ResolvedModel:
    """A built-in name, an .onnx path (manifest beside it or given), or a manifest .yaml path."""
    path = Path(spec)
    if manifest_path is None and spec in builtin_names() and not path.exists():
        manifest = builtin_manifest(spec)
        files = {a.name: fetcher.ensure(a) for a in assets_for(manifest)}
        return ResolvedModel(manifest, files[manifest.file], files[manifest.labels])
    if path.suffix.lower() in (".yaml", ".yml") and manifest_path is None:
        manifest_path, path = path, Path()
    elif path.suffix.lower() != ".onnx" and not path.exists():
        raise ModelError(f"unknown model {spec!r}: built-in models are {', '.join(builtin_names())}, "
                         "or give a path to an .onnx file with a manifest beside it")
    if manifest_path is None:
        manifest_path = path.with_suffix(".yaml")
        if not manifest_path.is_file():
            raise ModelError(f"no manifest for {path}: put {manifest_path.name} beside it or pass --manifest FILE")
    if not manifest_path.exists():  # a FIFO or device is refused by the reader, with that reason
        raise ModelError(f"model manifest {manifest_path} does not exist")
    manifest = load_manifest(manifest_path)
    model_path = path if path != Path() else manifest_path.parent / manifest.file
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} does not exist")
    labels_path = manifest_path.parent / manifest.labels
    if not labels_path.exists() and manifest.labels in ASSETS:
        labels_path = fetcher.ensure(ASSETS[manifest.labels])
    if not labels_path.exists():
        raise ModelError(f"labels file {labels_path} named by {manifest_path} does not exist")
    return ResolvedModel(manifest, model_path, labels_path)
