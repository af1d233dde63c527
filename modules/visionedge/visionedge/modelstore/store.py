"""Model versions on the data volume: a staging area, immutable installed versions and an atomic pointer.

Layout under <data_dir>/models:
    versions/<name>@<version>/   model.onnx, manifest.yaml, labels.txt|labels.json, version.json
    staging/                     downloads in progress (same volume, so installing is one atomic rename)
    active.json                  {"history": [..., previous, active], "trial": key on probation or null,
                                  "suspect": key that was on probation when the process died, or null}
    updates.json                 the manager's memory of handled desired versions (survives restarts)
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from visionedge.config import ModelRef, ModuleConfig, RuntimeSettings
from visionedge.download import DownloadPolicy, sha256_file, verify_file
from visionedge.durable import (
    TMP_PREFIX,
    fsync_dir,
    fsync_tree,
    read_json,
    remove_tree,
    write_json_atomic,
)
from visionedge.errors import FetchError, ModelError, VisionEdgeError
from visionedge.models.catalog import DEFAULT_MODEL
from visionedge.models.fetch import Fetcher
from visionedge.models.manifest import load_manifest
from visionedge.models.model import Model
from visionedge.models.variants import Timer, time_models, variants_root
from visionedge.modelstore.errors import UpdateCancelled, UpdateFailed, UpdateRejected
from visionedge.modelstore.refs import MANIFEST_FILE, MODEL_FILE, Resolved, resolve
from visionedge.modelstore.staging import StageProgress, construct, fill

log = logging.getLogger(__name__)

POINTER_FILE = "active.json"
INFO_FILE = "version.json"
UPDATES_FILE = "updates.json"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class Staged:
    """A downloaded, verified and validated model waiting in staging; install() publishes it."""

    resolved: Resolved
    directory: Path
    model: Model
    """Built from the staged files; onnxruntime holds the weights in memory, so it survives the install rename."""

    @property
    def key(self) -> str:
        """Version key, e.g. 'yolox-nano@0.1.1-coco'."""
        return self.resolved.key


def _now() -> str:
    """UTC timestamp for the files people inspect on the volume."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ignore_progress(phase: str, fraction: float | None) -> None:
    """Default progress sink."""


class ModelStore:
    """Owns versions/, staging/ and the pointer; one writer (the manager thread), readers from any thread."""

    def __init__(self, root: Path, policy: DownloadPolicy | None = None, fetcher: Fetcher | None = None,
                 keep: int = 3, variants_dir: Path | None = None, timer: Timer = time_models) -> None:
        self.root = root
        self.variants_dir = variants_dir
        """Where `models quantize` put variants of model files; None = run the installed file as it is."""
        self.timer = timer
        """How `runtime.variant: auto` times the variants of a file it loads (tests time a measured-slow one)."""
        self.versions_dir = root / "versions"
        self.staging_dir = root / "staging"
        self.fetcher = fetcher
        self.policy = policy or (fetcher.policy if fetcher is not None else DownloadPolicy())
        self.keep = max(keep, 2)
        self.load_errors: list[str] = []
        """Why versions named by the pointer could not be loaded at start-up (shown in status)."""
        self._lock = threading.Lock()
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._history, self._trial, self._suspect = self._read_pointer()

    @classmethod
    def for_config(cls, config: ModuleConfig, fetcher: Fetcher) -> ModelStore:
        """The store on <data_dir>/models, downloading under the same policy as the fetcher."""
        return cls(config.local.data_dir / "models", fetcher.policy, fetcher, variants_dir=variants_root(config.local))

    # ---- reading -------------------------------------------------------------------------------------------

    def active(self) -> str | None:
        """The last committed (good) version key; what a restart loads."""
        with self._lock:
            return self._history[-1] if self._history else None

    def previous(self) -> str | None:
        """The version a rollback returns to."""
        with self._lock:
            return self._history[-2] if len(self._history) > 1 else None

    def trial(self) -> str | None:
        """The version swapped in but still watched; a restart ignores it."""
        with self._lock:
            return self._trial

    @property
    def interrupted_trial(self) -> str | None:
        """A version that was on probation when the process died; it may have caused that, so it is not retried
        until another version has been committed."""
        with self._lock:
            return self._suspect

    def history(self) -> tuple[str, ...]:
        """Committed versions, oldest first; the last one is active."""
        with self._lock:
            return self._history

    def installed(self) -> list[str]:
        """Version keys present under versions/."""
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def info(self, key: str) -> dict[str, Any] | None:
        """version.json of an installed version: the twin block, fingerprint and file hashes."""
        return read_json(self.versions_dir / key / INFO_FILE)

    def block(self, key: str) -> dict[str, Any]:
        """The twin block that installed key (what acknowledgements report as the model in use)."""
        info = self.info(key)
        block = info.get("block") if info else None
        if isinstance(block, dict):
            return block
        name, _, version = key.partition("@")
        return {"name": name, "version": version}

    def has(self, resolved: Resolved) -> bool:
        """Whether exactly this content is installed already (no download needed)."""
        info = self.info(resolved.key)
        return info is not None and info.get("fingerprint") == resolved.fingerprint

    # ---- staging and installing ----------------------------------------------------------------------------

    def resolve(self, ref: ModelRef) -> Resolved:
        """Static checks of a twin block under this store's download policy; raises UpdateRejected."""
        return resolve(ref, self.policy)

    def check_conflict(self, resolved: Resolved) -> None:
        """Versions in use are immutable: the same name@version with other content is refused."""
        with self._lock:
            protected = set(self._history) | ({self._trial} if self._trial else set())
        info = self.info(resolved.key)
        if resolved.key in protected and info is not None and info.get("fingerprint") != resolved.fingerprint:
            raise UpdateRejected(f"{resolved.key} is already installed with different content; give changed "
                                 "content a new version")

    def stage(self, ref: ModelRef | Resolved, runtime: RuntimeSettings, progress: StageProgress | None = None,
              cancel: threading.Event | None = None) -> Staged:
        """Download, verify and validate into staging/<key>; on any failure the staged files are removed."""
        resolved = ref if isinstance(ref, Resolved) else self.resolve(ref)
        cancel = cancel or threading.Event()
        directory = self.staging_dir / resolved.key
        remove_tree(directory, self.staging_dir)
        try:
            directory.mkdir()
            model = fill(resolved, directory, self.policy, self.fetcher, runtime, progress or _ignore_progress,
                         cancel, self.variants_dir, self.timer)
            if cancel.is_set():
                raise UpdateCancelled("cancelled")
            self._write_info(directory, resolved)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        log.info("staged %s (verified and validated)", resolved.key)
        return Staged(resolved, directory, model)

    def discard(self, staged: Staged) -> None:
        """Drop a staged model that will not be installed (e.g. superseded after validation)."""
        shutil.rmtree(staged.directory, ignore_errors=True)

    def install(self, staged: Staged) -> str:
        """Publish a staged folder as versions/<key> with one atomic rename; returns the key."""
        self.check_conflict(staged.resolved)
        target = self.versions_dir / staged.key
        try:
            remove_tree(target, self.staging_dir)  # an unreferenced or damaged copy of the same key
            fsync_tree(staged.directory)
            os.replace(staged.directory, target)
            fsync_dir(self.versions_dir)
            fsync_dir(self.staging_dir)
        except OSError as err:
            shutil.rmtree(staged.directory, ignore_errors=True)
            raise UpdateFailed(f"cannot install {staged.key} in the model store: {err.strerror or err}") from err
        log.info("installed %s", staged.key)
        return staged.key

    def load(self, key: str, runtime: RuntimeSettings) -> Model:
        """Re-verify an installed version's files against version.json, then build and validate its Model."""
        directory = self.versions_dir / key
        info = self.info(key)
        files = info.get("files") if info else None
        if not isinstance(files, dict) or MODEL_FILE not in files or MANIFEST_FILE not in files:
            raise ModelError(f"installed model {key} is missing or incomplete")
        try:
            for name, meta in files.items():
                verify_file(directory / name, sha256=str(meta["sha256"]), size=int(meta["size"]),
                            what=f"installed {key}/{name}")
        except (FetchError, OSError, KeyError, TypeError, ValueError) as err:
            raise ModelError(f"installed model {key} is damaged: {err}") from err
        manifest = load_manifest(directory / MANIFEST_FILE)
        return construct(manifest, directory / MODEL_FILE, directory / manifest.labels, runtime, self.variants_dir,
                         self.timer)

    # ---- the pointer ---------------------------------------------------------------------------------------

    def begin_trial(self, key: str) -> None:
        """Record key as on probation before it is swapped in: a crash during the watch restarts on active()."""
        with self._lock:
            self._write_pointer(self._history, key, self._suspect)

    def commit(self, key: str) -> None:
        """key passed its watch (or needs none): it becomes active, the old active becomes previous."""
        with self._lock:
            history = (*(k for k in self._history if k != key), key)
            self._write_pointer(history[-self.keep:], None, None)
        self.prune()

    def activate(self, key: str) -> None:
        """Make an installed version active without a watch (start-up default, tools)."""
        if not (self.versions_dir / key).is_dir():
            raise ModelError(f"model version {key} is not installed")
        self.commit(key)

    def abort_trial(self) -> None:
        """The trial failed: the pointer goes back to naming only the committed versions."""
        with self._lock:
            if self._trial is not None:
                self._write_pointer(self._history, None, self._suspect)

    def rollback(self) -> str:
        """The previous version becomes active and the one rolled back from stays, as previous. Returns the key."""
        with self._lock:
            if len(self._history) < 2:
                raise ModelError("no previous model version to roll back to")
            *older, previous, active = self._history
            self._write_pointer((*older, active, previous), None, self._suspect)
            return previous

    def prune(self) -> list[str]:
        """Delete installed versions that neither the history nor a trial names."""
        with self._lock:
            keep = set(self._history) | ({self._trial} if self._trial else set())
        removed = [key for key in self.installed() if key not in keep]
        for key in removed:
            remove_tree(self.versions_dir / key, self.staging_dir)
        if removed:
            log.info("removed model versions no longer needed: %s", ", ".join(removed))
        return removed

    # ---- start-up ------------------------------------------------------------------------------------------

    def cleanup_staging(self) -> list[str]:
        """Remove whatever a crash left behind: partial downloads, staged folders, half-written tmp files."""
        leftovers = [p for p in self.staging_dir.iterdir()]
        leftovers += [p for p in (*self.root.iterdir(), *self.versions_dir.iterdir()) if p.name.startswith(TMP_PREFIX)]
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if leftovers:
            log.info("cleaned %d leftover(s) of an interrupted update: %s", len(leftovers),
                     ", ".join(p.name for p in leftovers))
        return [p.name for p in leftovers]

    def load_active(self, runtime: RuntimeSettings, default: ModelRef | None = None) -> Model:
        """The last good model, offline; else the previous ones; else the built-in default, installed and active."""
        trial = self.trial()
        if trial is not None:
            log.warning("model %s was still on probation when the module stopped unexpectedly; starting on %s",
                        trial, self.active() or "the default")
            with self._lock:
                self._write_pointer(self._history, None, trial)
        history = self.history()
        for index in range(len(history) - 1, -1, -1):
            key = history[index]
            try:
                model = self.load(key, runtime)
            except VisionEdgeError as err:
                self.load_errors.append(f"{key}: {err}")
                log.error("cannot load model %s: %s", key, err)
                continue
            if index != len(history) - 1:
                with self._lock:
                    self._write_pointer(history[: index + 1], None, self._suspect)
                log.warning("came up on %s: the newer version(s) %s could not be loaded", key,
                            ", ".join(history[index + 1:]))
            log.info("active model %s loaded from the store", key)
            self.prune()
            return model
        ref = default or ModelRef(name=DEFAULT_MODEL)
        log.info("no usable model in the store; installing the default %s", ref.name)
        staged = self.stage(ref, runtime)
        key = self.install(staged)
        self.activate(key)
        return staged.model

    # ---- manager memory ------------------------------------------------------------------------------------

    def read_updates(self) -> dict[str, Any]:
        """The manager's persisted memory (last handled desired version, refused blocks)."""
        return read_json(self.root / UPDATES_FILE) or {}

    def write_updates(self, data: dict[str, Any]) -> None:
        """Persist the manager's memory atomically."""
        write_json_atomic(self.root / UPDATES_FILE, data)

    # ---- internals -----------------------------------------------------------------------------------------

    def _read_pointer(self) -> tuple[tuple[str, ...], str | None, str | None]:
        """(history, trial, suspect); an unreadable pointer means starting from the built-in default."""
        path = self.root / POINTER_FILE
        data = read_json(path)
        if data is None:
            if path.exists():
                log.error("model pointer %s is unreadable; starting from the built-in default", path)
            return (), None, None
        history, trial, suspect = data.get("history"), data.get("trial"), data.get("suspect")
        if not isinstance(history, list) or not all(isinstance(k, str) for k in history):
            log.error("model pointer %s has no valid history; starting from the built-in default", path)
            return (), None, None
        return (tuple(history), trial if isinstance(trial, str) else None,
                suspect if isinstance(suspect, str) else None)

    def _write_pointer(self, history: tuple[str, ...], trial: str | None, suspect: str | None) -> None:
        """Caller holds the lock."""
        write_json_atomic(self.root / POINTER_FILE, {"format": FORMAT, "history": list(history), "trial": trial,
                                                     "suspect": suspect, "updated": _now()})
        self._history, self._trial, self._suspect = history, trial, suspect
        log.info("model pointer: active=%s previous=%s trial=%s", history[-1] if history else None,
                 history[-2] if len(history) > 1 else None, trial)

    def _write_info(self, directory: Path, resolved: Resolved) -> None:
        """Hashes of every staged file, so each start-up can re-verify an installed version before running it."""
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(directory.iterdir()) if p.is_file() and p.name != INFO_FILE}
        write_json_atomic(directory / INFO_FILE, {"format": FORMAT, "key": resolved.key, "block": resolved.block,
                                                  "fingerprint": resolved.fingerprint, "files": files,
                                                  "installed": _now()})
