"""The on-device calibration phase (`runtime.calibrate: on-device`): the serving model's int8 variant made from the
camera's own frames, shadowed against it with a model update's gates, and switched to only when it agrees.

Driven one short step at a time by the model manager's thread between updates, so an update and a calibration never
overlap: sampling (one live frame a second into calibration.FrameSample), quantizing (the nice-19 child, killed past
`Limits.quantize_max_s`), shadow (shadow.await_verdict; a desired model block interrupts it), then a verdict kept beside
the variants of that exact model file (`<variants root>/<sha256[:16]>/calibration.json`), so a restart neither repeats
nor forgets it. A variant that agreed is moved where `runtime.variant: auto` finds it, with the agreement measured in
shadow, and the serving model is reloaded so auto times it; one that disagreed is deleted. When the serving model file
changes (an update, a rollback) the old file's calibrated variant is deleted and the phase starts over for the new one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from subprocess import Popen
from typing import IO, TYPE_CHECKING, Any

import yaml

from visionedge.durable import read_json, write_json_atomic
from visionedge.errors import VisionEdgeError, first_line
from visionedge.frame import Frame
from visionedge.models.manifest import ModelManifest, load_manifest
from visionedge.models.model import Model
from visionedge.models.variants import kind_of
from visionedge.modelstore.calibration import VARIANT_FILES, FrameSample, Limits, discard_variant, start_quantizer
from visionedge.modelstore.errors import UpdateCancelled
from visionedge.modelstore.health import VariantHealth
from visionedge.modelstore.refs import MANIFEST_FILE, MODEL_FILE
from visionedge.modelstore.shadow import Shadow, await_verdict

if TYPE_CHECKING:
    from visionedge.modelstore.manager import ModelManager

log = logging.getLogger(__name__)

LatestFn = Callable[[], Frame | None]
"""The newest frame the pipeline analysed (any source), or None before the first."""
RECORD = "calibration.json"
PENDING = "calibrated"
"""Sub-folder where the child puts a finished variant until its shadow verdict: not where auto looks."""
SAMPLE_FOLDER = ".calibration-sample"
DONE = ("int8", "slower", "refused", "failed")
OUT_OF_TIME = "quantizing ran out of time"
"""How a time-out's verdict begins: the one failure a restart retries, since a busy hour is not a bad model."""
POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Target:
    """The model file being calibrated for: its installed files and the folder of its variants."""

    key: str
    sha256: str
    directory: Path
    folder: Path

    @property
    def pending(self) -> Path:
        """Where the child moves the finished variant."""
        return self.folder / PENDING


class CalibrationPhase:
    """One calibration at a time, for the model serving now; every state it reaches is modelHealth.variant."""

    def __init__(self, manager: ModelManager, latest: LatestFn | None, limits: Limits | None = None) -> None:
        self.m = manager
        self.latest = latest
        self.limits = limits or Limits()
        self.target: Target | None = None
        self.sample: FrameSample | None = None
        self.child: Popen[bytes] | None = None
        self._child_log: IO[bytes] | None = None
        self._started: float | None = None
        self._child_started = 0.0
        self._calibration_s: float | None = None
        root = manager.store.variants_dir
        if root is not None:  # what a crash (kill -9) left: a sample, a variant without a verdict, a child's scratch
            shutil.rmtree(root / SAMPLE_FOLDER, ignore_errors=True)
            for pending in root.glob(f"*/{PENDING}"):
                shutil.rmtree(pending, ignore_errors=True)

    # ---- the manager's thread --------------------------------------------------------------------------------

    def step(self) -> None:
        """One short step (the shadow step lasts until its verdict, or until a desired model block arrives)."""
        runtime = self.m.serving.runtime
        root = self.m.store.variants_dir
        if runtime.calibrate != "on-device" or root is None or self.latest is None:
            self._off()
            return
        target = self._target(root)
        if target is None:
            return
        if self.target != target:
            self._begin(target)
        state = self.now().state
        if state in ("int8", "slower"):
            self._follow_auto(target)
        if state in DONE:
            return
        if self.child is None:
            self._sample_or_start(target)
        elif self.child.poll() is not None:
            self._quantized(target)
        elif time.monotonic() - self._child_started > self.limits.quantize_max_s:
            self._out_of_time(target)

    def stop(self) -> None:
        """The module stops: end the child and delete the sample (a restart begins again)."""
        self._abandon()

    def fail(self, reason: str) -> None:
        """A bug in a step: said once as the verdict for this model file, never retried in a loop."""
        self._abandon()
        if self.target is not None:
            self._finish(self.target, VariantHealth("failed", reason=reason[:200]))

    def now(self) -> VariantHealth:
        """The state now (any thread)."""
        return self.m.healthbook.get().variant

    # ---- steps -----------------------------------------------------------------------------------------------

    def _target(self, root: Path) -> Target | None:
        """The installed file behind the serving model (sha256 from its version.json: nothing is hashed here)."""
        key = self.m.serving.held.key
        if self.target is not None and self.target.key == key:
            return self.target
        info = self.m.store.info(key) or {}
        files = info.get("files")
        meta = files.get(MODEL_FILE) if isinstance(files, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
            return None
        sha = str(meta["sha256"])
        return Target(key, sha, self.m.store.versions_dir / key, root / sha[:16])

    def _begin(self, target: Target) -> None:
        """A new model file serves: the previous one's calibrated variant goes, this one's record is read."""
        self._abandon()
        for path in target.folder.parent.glob(f"*/{RECORD}"):  # kept only for the file serving now
            made = read_json(path)
            if path.parent != target.folder:
                _discard_calibrated(path.parent)
                log.info("calibrated variant of %s discarded: %s serves now",
                         made.get("model") if isinstance(made, dict) else path.parent.name, target.key)
        self.target = target
        shutil.rmtree(target.pending, ignore_errors=True)  # a variant a crash left before its verdict
        record = read_json(target.folder / RECORD)
        kept = VariantHealth.restored(record) if isinstance(record, dict) and record.get("sha256") == target.sha256 \
            else VariantHealth()
        fresh = VariantHealth("sampling", reason="keeping live frames to calibrate on")
        if kept.state == "failed" and kept.reason.startswith(OUT_OF_TIME):
            log.info("calibration of %s ran out of time before (%s): trying again", target.key, kept.reason)
            kept = fresh
        self._set(kept if kept.state in DONE else fresh)

    def _sample_or_start(self, target: Target) -> None:
        """Keep the newest live frame when one is due; start the quantizer once the sample is full."""
        root = target.folder.parent
        if self.sample is None:
            self.sample = FrameSample(root / SAMPLE_FOLDER, max_frames=self.limits.frames,
                                      every_s=self.limits.every_s)
            self._started = time.monotonic()
        frame = self.latest() if self.latest is not None else None
        if frame is not None:
            self.sample.offer(frame)
        if not self.sample.full:
            return
        manifest = load_manifest(target.directory / MANIFEST_FILE)
        self._child_log = tempfile.TemporaryFile(prefix="visionedge-calibration-")  # noqa: SIM115 - closed by _child_tail
        self.child = start_quantizer(target.directory / MANIFEST_FILE, target.directory / MODEL_FILE,
                                     target.directory / manifest.labels, self.sample, target.pending,
                                     nice=self.limits.nice, log_file=self._child_log)
        self._child_started = time.monotonic()
        log.info("calibrating an int8 variant of %s on %d frames of its own camera (child %d at nice %d)",
                 target.key, self.sample.count, self.child.pid, self.limits.nice)
        self._set(VariantHealth("quantizing", reason=f"quantizing on {self.sample.count} live frames"))

    def _quantized(self, target: Target) -> None:
        """The child ended: the sample goes, then the variant is shadowed (or the failure said)."""
        child, self.child = self.child, None
        assert child is not None
        tail = self._child_tail()
        if self.sample is not None:
            self.sample.discard()
            self.sample = None
        self._calibration_s = time.monotonic() - (self._started or time.monotonic())
        if child.returncode != 0 or not (target.pending / VARIANT_FILES[-1]).is_file():
            self._finish(target, VariantHealth("failed", reason=f"quantizing failed (exit {child.returncode}): "
                                               f"{tail or 'no message'}"))
            return
        try:
            self._shadow(target)
        except UpdateCancelled as why:
            log.info("calibration of %s interrupted: %s; it starts again", target.key, why)
            self._abandon()
            self.target = None
        except VisionEdgeError as err:
            self._finish(target, VariantHealth("failed", reason=f"calibrated variant unusable: {first_line(err)}"))

    def _out_of_time(self, target: Target) -> None:
        """The child outran its bound (a saturated device gives the idle class no CPU): killed, its sample deleted,
        said as the verdict for this model file until the next start, which tries again (the load may have passed)."""
        ran = time.monotonic() - self._child_started
        pid = self.child.pid if self.child is not None else None
        self._abandon()
        log.warning("calibration of %s: the quantizing child %s ran out of time after %.1f s; killed", target.key,
                    pid, ran)
        self._finish(target, VariantHealth("failed", reason=f"{OUT_OF_TIME}: killed after {ran:.1f} s (limit "
                                           f"{self.limits.quantize_max_s:g} s); tried again at the next start"))

    def _shadow(self, target: Target) -> None:
        """The variant beside the serving model on live frames, with a model update's gates (agreement at least
        `runtime.min_variant_agreement`, since `auto` needs it); switch only when it agrees."""
        m = self.m
        runtime = m.serving.runtime
        manifest = load_manifest(target.pending / VARIANT_FILES[-1])
        variant = Model(manifest, target.pending / manifest.file, target.pending / manifest.labels, runtime)
        variant.set_overrides(m.serving.inference)
        settings = m.shadow_settings()
        gates = settings.model_copy(update={"enabled": True,
                                            "min_agreement": max(settings.min_agreement,
                                                                 runtime.min_variant_agreement)})
        if m.attach_shadow is None:
            raise VisionEdgeError("no live pipeline to shadow it on")
        shadow = Shadow(m.serving.model, variant, gates)
        said = (f"shadow: comparing the calibrated int8 variant with {kind_of(m.serving.model)} on up to "
                f"{gates.frames} live frames or {gates.max_s:g} s")
        self._set(VariantHealth("shadow", calibration_s=self._calibration_s, reason=said))
        log.info("%s of %s", said, target.key)
        verdict = await_verdict(shadow, m.attach_shadow, self._interrupted, POLL_S, lambda _why: None,
                                lambda figures: self._set(replace(self.now(), frames=figures.frames,
                                                                  agreement=figures.agreement)))
        figures = verdict.figures
        done = VariantHealth("refused", figures.frames, figures.agreement, figures.latency_ratio,
                             self._calibration_s, f"kept {kind_of(m.serving.model)}: {verdict.reason}")
        if not verdict.passed:
            log.warning("calibrated int8 variant of %s refused: %s", target.key, verdict.reason)
            self._finish(target, done)
            return
        _adopt(target, manifest, figures.frames, figures.agreement, figures.latency_ratio)
        served = m.serving.reload(runtime)  # auto times the new variant against the deployed file
        log.info("calibrated int8 variant of %s agreed (%s); serving %s", target.key, verdict.reason, kind_of(served))
        self._finish(target, _agreed(done, served, verdict.reason))

    def _follow_auto(self, target: Target) -> None:
        """An agreed variant's verdict says what serves now: every load times the variants again, so a quiet or busy
        start (or a runtime change) can turn `slower` into `int8` and back; the agreement stays as measured."""
        now, served = self.now(), self.m.serving.model
        value = _agreed(now, served, f"agreed in shadow; int8 runs fastest here now ({_timings(served)})")
        if value.state != now.state:
            log.info("calibrated int8 variant of %s: %s", target.key, value.reason)
            self._finish(target, value)

    def _interrupted(self) -> str | None:
        """A stop, a desired model block, a rollbackModel call or calibration turned off ends the calibration's
        shadow phase without a verdict."""
        if self.m.stopping.is_set():
            return "stopping"
        if self.m.has_pending() or self.m.rollbacks.waiting():
            return "a model update or rollback arrived"
        return "calibration turned off" if self.m.serving.runtime.calibrate != "on-device" else None

    # ---- state -----------------------------------------------------------------------------------------------

    def _set(self, value: VariantHealth) -> None:
        if value != self.now():
            self.m.healthbook.change(variant=value)

    def _finish(self, target: Target, value: VariantHealth) -> None:
        """A verdict: kept with the model file it is about, then reported; a refused variant is deleted. The folder
        may not exist yet: a child that failed or was killed early never made it."""
        shutil.rmtree(target.pending, ignore_errors=True)
        record: dict[str, Any] = value.reported() | {"sha256": target.sha256, "model": target.key}
        try:
            target.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(target.folder / RECORD, record)
        except OSError as err:
            log.warning("cannot keep the calibration verdict of %s: %s", target.key, err)
        self._set(value)

    def _off(self) -> None:
        """Calibration off: stop one in progress; a refusal is forgotten, so turning it on again retries."""
        self._abandon()
        target, self.target = self.target, None
        if target is not None and self.now().state in ("refused", "failed"):
            (target.folder / RECORD).unlink(missing_ok=True)
        self._set(VariantHealth())

    def _abandon(self) -> None:
        """End the child (its half-made scratch is removed by the next start) and delete the sample."""
        child, self.child = self.child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(10)
        self._child_tail()
        if self.sample is not None:
            self.sample.discard()
            self.sample = None

    def _child_tail(self) -> str:
        """The last line the child wrote (why it failed), and its log closed."""
        handle, self._child_log = self._child_log, None
        if handle is None:
            return ""
        with handle:
            handle.seek(0)
            lines = handle.read().decode(errors="replace").strip().splitlines()
        return lines[-1][:200] if lines else ""


def _timings(served: Model) -> str:
    """How auto chose the file that serves (its timings), or nothing when no choice was made."""
    return served.variant.reason if served.variant else ""


def _agreed(figures: VariantHealth, served: Model, int8_reason: str) -> VariantHealth:
    """The verdict of a variant that agreed, from what auto serves: `int8` (saying `int8_reason`), or `slower` with
    the timings that chose the deployed file."""
    if kind_of(served) == "int8":
        return replace(figures, state="int8", reason=int8_reason)
    return replace(figures, state="slower", reason=f"agreed, but {kind_of(served)} runs faster here "
                   f"({_timings(served)})")


def _adopt(target: Target, manifest: ModelManifest, frames: int, agreement: float | None,
           latency_ratio: float | None) -> None:
    """Move an agreed variant where auto finds it, its manifest carrying the agreement measured in shadow on live
    frames (the figure auto compares with `runtime.min_variant_agreement`); the manifest goes last."""
    assert manifest.variant is not None
    info = manifest.variant.model_copy(update={"agreement": agreement, "agreement_frames": frames,
                                               "latency_ratio": latency_ratio})
    data = manifest.model_copy(update={"variant": info}).model_dump(mode="json", exclude_none=True)
    labels = target.folder / manifest.labels
    if not labels.exists():
        shutil.copyfile(target.pending / manifest.labels, labels)
    os.replace(target.pending / manifest.file, target.folder / VARIANT_FILES[0])
    staged = target.pending / "adopted.yaml"
    staged.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(staged, target.folder / VARIANT_FILES[1])


def _discard_calibrated(folder: Path) -> None:
    """Delete a calibrated variant and its verdict (a variant made by `models quantize` has no record: kept)."""
    if (folder / RECORD).exists():
        discard_variant(folder)
        (folder / RECORD).unlink(missing_ok=True)
    shutil.rmtree(folder / PENDING, ignore_errors=True)
