"""Capture per source, inference workers sharing one model, and one publisher that restores each source's order."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from visionedge.config import GateSettings
from visionedge.feed import POLL_S, Counters, Feed, Job
from visionedge.frame import Frame, Geometry, Inference
from visionedge.gate import GateStats
from visionedge.models.model import Model
from visionedge.result import to_record
from visionedge.sinks import Sink
from visionedge.sources import Source
from visionedge.supervise import Part

if TYPE_CHECKING:
    from visionedge.analytics.live import SceneAnalytics
    from visionedge.modelstore.shadow import Shadow, ShadowRun

log = logging.getLogger(__name__)

RESULTS_QUEUE = 32
"""Frames between inference and publishing; each holds raw model outputs (about 1 MB for a COCO detector)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """A frame handed to a worker, numbered in its source's dispatch order so results can be put back in order."""

    feed: Feed
    seq: int
    job: Job
    reuse: bool = False
    """The scene-change gate found the frame unchanged: it takes the source's last result instead of a run."""


@dataclass(frozen=True, slots=True)
class Ran:
    """What a worker made of one ticket: raw outputs on their way to decoding, or the error that stopped it."""

    ticket: Ticket
    model: Model
    raw: list[np.ndarray] | None = None
    geometry: Geometry | None = None
    inference_ms: float = 0.0
    error: Exception | None = None
    reused: bool = False
    shadow: ShadowRun | None = None
    """A candidate model's outputs for the same frame, during a model update's shadow phase."""


class InOrder:
    """One source's results put back in its dispatch order (publish thread only; kept across a publish restart)."""

    def __init__(self) -> None:
        self._next = 0
        self._waiting: dict[int, Ran] = {}

    def add(self, ran: Ran) -> None:
        """A result arrived, in any order."""
        self._waiting[ran.ticket.seq] = ran

    def take(self) -> Ran | None:
        """The next result in order once it arrived; counted as taken before publishing, so a record that crashes
        publishing is skipped, not retried."""
        ran = self._waiting.pop(self._next, None)
        if ran is not None:
            self._next += 1
        return ran


@dataclass
class PipelineStats(Counters):
    """Totals over every source, for status, metrics and the closing summary (frame age: the oldest source's)."""

    started: float = field(default_factory=time.monotonic)
    skipped: int = 0

    def elapsed(self) -> float:
        """Seconds since start."""
        return time.monotonic() - self.started


Record = dict[str, Any]


class Pipeline:
    """sources -> frames -> model (N workers, one session) -> records in each source's order -> sinks.

    Workers take frames from the sources in turn, so one busy or broken source never starves another. A model with a
    dynamic batch dimension gets every frame that is waiting when a worker comes free (one per source) in one run:
    batches grow with load and add no waiting. The model can be swapped between two frames.
    """

    def __init__(self, sources: Source | Sequence[Source], model: Model | Callable[[], Model], sinks: Sequence[Sink], *,
                 fps: float | None = None, on_record: Callable[[Record], None] | None = None,
                 on_inference_error: Callable[[Model, Exception], None] | None = None,
                 watchdog_s: float | None = None, workers: int | None = None,
                 gate: GateSettings | None = None) -> None:
        self._serving: Callable[[], Model] = (lambda: model) if isinstance(model, Model) else model
        """Where each dispatch reads the model: a fixed one, or its holder's (the IoT Edge module's model manager)."""
        self.sinks = sinks
        self.on_record = on_record
        self.on_inference_error = on_inference_error
        self.workers = workers or self.model.layout.workers
        self._cond = threading.Condition()
        listed = [sources] if isinstance(sources, Source) else list(sources)
        self.feeds = [Feed(s, self._cond, lambda: self.model, s.fps if s.fps is not None else fps,
                           s.watchdog_s if s.watchdog_s is not None else watchdog_s) for s in listed]
        if gate is not None:
            self.set_gate(gate)
        ids = [f.source_id for f in self.feeds]
        if len(set(ids)) != len(ids):
            raise ValueError(f"source ids must be unique, got {ids}")
        self.results: queue.Queue[Ran | None] = queue.Queue(maxsize=RESULTS_QUEUE)
        self._started = time.monotonic()
        self._turn = 0
        self._running_workers = 0
        self._order = {f.source_id: InOrder() for f in self.feeds}
        self.parts: dict[str, Part] = {}
        """Workers and publishing; each is restarted after an unexpected error, down while it crash-loops."""
        self.batched = 0
        """Frames that shared a run with frames of other sources."""
        self.latest: tuple[Frame, Inference] | None = None
        """The last analysed frame (any source) and its result, for on-device snapshots."""
        self.shadow: Shadow | None = None
        """A candidate model compared on sampled frames (model update shadow phase); its results are never published."""
        self.scene: SceneAnalytics | None = None
        """Tracks, lines and zones per source, fed each published record before the sinks see it."""

    @property
    def model(self) -> Model:
        """The model the next frame runs on."""
        return self._serving()

    @property
    def fatal(self) -> Exception | None:
        """The first source error that ended a source (files: unreadable; live sources never end this way)."""
        return next((f.fatal for f in self.feeds if f.fatal is not None), None)

    @property
    def stats(self) -> PipelineStats:
        """Totals over the sources, computed now."""
        total = PipelineStats(started=self._started)
        for feed in self.feeds:
            s = feed.stats
            total.captured += s.captured
            total.inferred += s.inferred
            total.published += s.published
            total.errors += s.errors
            total.label_counts.update(s.label_counts)
            total.fps += s.fps
            total.frame_age_s = max(total.frame_age_s, s.frame_age_s)
            total.last_error = feed.last_error or total.last_error
            total.skipped += feed.skipped()
        return total

    def set_gate(self, settings: GateSettings) -> None:
        """A scene-change gate per source as the settings say (`auto`: live sources only); from the next frame."""
        with self._cond:
            for feed in self.feeds:
                feed.set_gate(settings)

    def gate_stats(self) -> GateStats | None:
        """What the gates of every source saved; None when no source is gated."""
        stats = [f.gate.stats() for f in self.feeds if f.gate is not None]
        if not stats:
            return None
        return GateStats(sum(g.gated for g in stats), sum(g.inferred for g in stats), sum(g.cpu_s for g in stats))

    def swap_model(self, model: Model) -> None:
        """Take effect at the next frame; frames in flight finish on the old model (a pipeline holding its model)."""
        with self._cond:
            self._serving = lambda: model

    def run(self, stop: threading.Event) -> PipelineStats:
        """Run until every source ends or stop is set; returns the final counters."""
        done = threading.Event()
        for feed in self.feeds:
            feed.start()
        self._running_workers = self.workers
        self.parts = {name: Part(name) for name in [f"inference-{i}" for i in range(self.workers)] + ["publish"]}
        threads = [threading.Thread(target=self._work_supervised, args=(self.parts[f"inference-{i}"], stop),
                                    name=f"inference-{i}", daemon=True) for i in range(self.workers)]
        threads.append(threading.Thread(target=self._publish_supervised, args=(done, stop), name="publish",
                                        daemon=True))
        for thread in threads:
            thread.start()
        while not done.wait(POLL_S):
            if stop.is_set():
                break
            for feed in self.feeds:
                feed.watch()
        for feed in self.feeds:
            feed.stop()
        with self._cond:
            self._cond.notify_all()
        for thread in threads:
            thread.join(timeout=1.5)
        for feed in self.feeds:
            feed.join(timeout=0.5)
        return self.stats

    def skipped(self) -> int:
        """Frames captured but never analysed, over every source."""
        return self.stats.skipped

    def feed(self, source_id: str) -> Feed | None:
        """The feed of one source, by id."""
        return next((f for f in self.feeds if f.source_id == source_id), None)

    # ---- scheduling ------------------------------------------------------------------------------------------

    def _take(self, stop: threading.Event) -> tuple[Model, list[Ticket]] | None:
        """Frames for one run and the model they run on, read together at dispatch so that a swap never lets an
        older model's result follow a newer one; sources taken in turn; None once every source has ended."""
        with self._cond:
            while not stop.is_set():
                model = self.model
                tickets = self._ready(model, len(self.feeds) if model.batchable else 1)
                if tickets:
                    return model, tickets
                if all(f.handoff.drained for f in self.feeds):
                    return None
                self._cond.wait(POLL_S)
        return None

    def _ready(self, model: Model, batch: int) -> list[Ticket]:
        count = len(self.feeds)
        tickets: list[Ticket] = []
        now = time.monotonic()
        for step in range(count):
            feed = self.feeds[(self._turn + step) % count]
            due = feed.dispatch(now, model)
            if due is None:
                continue
            seq, job, reuse = due
            tickets.append(Ticket(feed, seq, job, reuse=reuse))
            if len(tickets) >= batch:
                self._turn = (self._turn + step + 1) % count
                break
        else:
            self._turn = (self._turn + 1) % count
        if len(tickets) > 1:
            self.batched += len(tickets)
        return tickets

    # ---- inference -------------------------------------------------------------------------------------------

    def supervised(self) -> list[Part]:
        """Every thread of the pipeline that is restarted after a crash: captures, workers, publishing."""
        return [f.part for f in self.feeds] + list(self.parts.values())

    def _work_supervised(self, part: Part, stop: threading.Event) -> None:
        """A worker thread, restarted after a bug; the last worker to end tells publishing that results ended."""
        try:
            part.run(lambda: self._work(stop), stop)
        finally:
            with self._cond:
                self._running_workers -= 1
                last = self._running_workers == 0
            if last:
                self._put_result(None, stop, force=True)

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            taken = self._take(stop)
            if taken is None:
                return
            model, tickets = taken
            for ran in self._run(model, tickets):
                self._put_result(ran, stop)

    def _run(self, model: Model, tickets: list[Ticket]) -> list[Ran]:
        """One session.run for the tickets (a batch when several); a failure fails each of them, nothing else."""
        prepared: list[tuple[Ticket, np.ndarray, Geometry]] = []
        failed: list[Ran] = []
        for ticket in tickets:
            job = ticket.job
            if ticket.reuse:
                failed.append(Ran(ticket, model, reused=True))
                continue
            try:
                if job.model is model and job.tensor is not None and job.geometry is not None:
                    prepared.append((ticket, job.tensor, job.geometry))
                else:  # live hand-off, or the model was swapped after the frame was prepared
                    prepared.append((ticket, *model.prepare(job.frame.image)))
            except Exception as err:  # noqa: BLE001 - a model failing on one frame must not stop the pipeline
                failed.append(Ran(ticket, model, error=err))
        if not prepared:
            return failed
        try:
            if len(prepared) == 1:
                raw, elapsed = model.run(prepared[0][1])
                outputs = [raw]
            else:
                outputs, elapsed = model.run_batch([tensor for _, tensor, _ in prepared])
        except Exception as err:  # noqa: BLE001 - as above
            return failed + [Ran(ticket, model, error=err) for ticket, _, _ in prepared]
        shadow = self.shadow
        return failed + [Ran(ticket, model, raw, geometry, elapsed,
                             shadow=shadow.offer(ticket.job.frame, model) if shadow is not None else None)
                         for (ticket, _, geometry), raw in zip(prepared, outputs, strict=True)]

    def _put_result(self, ran: Ran | None, stop: threading.Event, force: bool = False) -> None:
        while True:
            try:
                self.results.put(ran, timeout=POLL_S)
                return
            except queue.Full:
                if stop.is_set() and not force:
                    return

    # ---- publishing ------------------------------------------------------------------------------------------

    def _publish_supervised(self, done: threading.Event, stop: threading.Event) -> None:
        """The publish thread, restarted after a bug (a sink or callback that raises); `done` once results end."""
        try:
            self.parts["publish"].run(self._publish, stop)
        finally:
            done.set()

    def _publish(self) -> None:
        """Results arrive in any order from the workers; each source's records leave in its dispatch order."""
        while True:
            arrived = self.results.get()
            if arrived is None:
                return
            order = self._order[arrived.ticket.feed.source_id]
            order.add(arrived)
            while (ran := order.take()) is not None:
                self._publish_one(ran)

    def _publish_one(self, ran: Ran) -> None:
        feed, frame = ran.ticket.feed, ran.ticket.job.frame
        if ran.reused:
            reused = feed.reuse()
            if reused is None:  # its reference failed: no result to reuse
                return
            inference = reused
        elif ran.error is None and ran.raw is not None and ran.geometry is not None:
            feed.note_result()
            try:  # decoding here overlaps it with the next frames' inference
                inference = ran.model.finish(ran.raw, ran.geometry, ran.inference_ms)
            except Exception as err:  # noqa: BLE001 - one undecodable frame must not stop the pipeline
                self._failed(feed, ran.model, frame, err)
                return
            feed.decoded(inference)
        else:
            self._failed(feed, ran.model, frame, ran.error or RuntimeError("no output"))
            return
        record = to_record(frame, inference)
        if ran.reused:
            record["reused"] = True
        if self.scene is not None:
            self.scene.observe(frame, inference, record, ran.reused)
        feed.analysed(frame, inference, record.get("counts", {}))
        self.latest = feed.latest
        for sink in self.sinks:
            sink.publish(record)
        feed.published()
        if self.on_record is not None:
            self.on_record(record)
        if ran.shadow is not None:
            ran.shadow.compare(frame, inference)

    def _failed(self, feed: Feed, model: Model, frame: Frame, err: Exception) -> None:
        reason = f"inference failed on frame {frame.index} of {frame.source_id}: {err}"
        feed.failed(reason)
        log.warning("%s", reason)
        if self.on_inference_error is not None:
            self.on_inference_error(model, err)
