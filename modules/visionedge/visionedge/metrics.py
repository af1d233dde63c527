"""Prometheus metrics and a health probe on :9600, named and labelled the way IoT Edge's own modules do it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from visionedge.modelstore.health import ModelHealth
from visionedge.sources import SourceState
from visionedge.state import ModuleSnapshot, SourceSnapshot, health_view
from visionedge.telemetry.scene import DWELL_BUCKETS_S, SceneTotals

log = logging.getLogger(__name__)

PREFIX = "visionedge"
LABELS = ("iothub", "edge_device", "module", "instance_number")
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
MAX_CONNECTIONS = 16
"""Connections served at once (one thread each); more get BUSY and are closed, so a flood cannot grow threads."""
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
CONNECTION_DEADLINE_S = 5.0
"""A connection that has not been answered and closed by then (a half-sent request, a slow reader) is cut."""


def default_metrics_host(env: dict[str, str] | None = None, root: Path = Path("/")) -> str:
    """Every interface inside a container (its own network: edgeAgent's collector and published ports reach it there),
    the loopback elsewhere, so a module run on a device's host network is not exposed on every interface."""
    env = dict(os.environ) if env is None else env
    in_container = bool(env.get("IOTEDGE_MODULEID")) or (root / ".dockerenv").exists() or \
        (root / "run/.containerenv").exists()
    return "0.0.0.0" if in_container else "127.0.0.1"


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them, each cut after CONNECTION_DEADLINE_S."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._open: dict[socket.socket, float] = {}
        self.refused = 0
        self.cut = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve on a new thread when a slot is free; otherwise answer 503 without reading, and close."""
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(BUSY)
            self.shutdown_request(request)
            return
        with self._lock:
            self._open[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The connection's thread; frees its slot however it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            if self._open.pop(request, None) is not None:
                self._slots.release()

    def service_actions(self) -> None:
        """Between polls of the accept loop: cut connections past their deadline (their thread then ends)."""
        now = time.monotonic()
        with self._lock:
            late = [r for r, started in self._open.items() if now - started > CONNECTION_DEADLINE_S]
        for request in late:
            self.cut += 1
            with contextlib.suppress(OSError):  # already closed by its thread
                request.shutdown(socket.SHUT_RDWR)


class ModuleCollector(Collector):
    """Turns a ModuleSnapshot into metric families with the IoT Edge identity labels."""

    def __init__(self, identity: dict[str, str], snapshot: Callable[[], ModuleSnapshot]) -> None:
        self.identity = identity
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus-client on every scrape."""
        s = self.snapshot()
        base = list(LABELS)
        values = [self.identity[k] for k in LABELS]
        yield from _sources(s.sources, base, values)
        yield from _module(s, base, values)
        yield from _model_health(s.model_health, base, values)
        if s.scene:
            yield from _scene(s.scene, base, values)


def _sources(sources: Sequence[SourceSnapshot], base: list[str], values: list[str]) -> Iterator[Metric]:
    """The per-source families, labelled with the source id."""
    per_source = [*base, "source"]

    def by_source(family: GaugeMetricFamily | CounterMetricFamily,
                  value: Callable[[SourceSnapshot], float]) -> Metric:
        for x in sources:
            family.add_metric([*values, x.id], value(x))
        return family

    yield by_source(GaugeMetricFamily(f"{PREFIX}_fps", "Frames analysed per second, recent average",
                                      labels=per_source), lambda x: x.fps)
    yield by_source(GaugeMetricFamily(f"{PREFIX}_frame_age_seconds", "Age of the last frame when inference "
                                      "started", labels=per_source), lambda x: x.frame_age_s)
    yield by_source(CounterMetricFamily(f"{PREFIX}_frames_captured", "Frames delivered by the source",
                                        labels=per_source), lambda x: x.captured)
    yield by_source(CounterMetricFamily(f"{PREFIX}_frames_analyzed", "Frames run through the model",
                                        labels=per_source), lambda x: x.analyzed)
    yield by_source(CounterMetricFamily(f"{PREFIX}_frames_dropped", "Frames captured but skipped (newer frame "
                                        "or over the target rate)", labels=per_source), lambda x: x.dropped)
    gated = [(x, x.gate) for x in sources if x.gate is not None]
    if gated:
        frames_gated = CounterMetricFamily(f"{PREFIX}_frames_gated", "Frames the scene-change gate found "
                                           "unchanged (last result reused)", labels=per_source)
        gate_cpu = CounterMetricFamily(f"{PREFIX}_gate_cpu_seconds", "CPU time spent by the scene-change gate",
                                       labels=per_source)
        for x, g in gated:
            frames_gated.add_metric([*values, x.id], g.gated)
            gate_cpu.add_metric([*values, x.id], g.cpu_s)
        yield frames_gated
        yield gate_cpu
    yield by_source(CounterMetricFamily(f"{PREFIX}_inference_errors", "Frames on which the model raised an error",
                                        labels=per_source), lambda x: x.errors)
    state = GaugeMetricFamily(f"{PREFIX}_source_state", "1 for the source's current state",
                              labels=[*base, "source", "state"])
    for x in sources:
        current = x.state or SourceState.FAILED
        for option in SourceState:
            state.add_metric([*values, x.id, option.value], 1.0 if current == option else 0.0)
    yield state


def _scene(scene: Mapping[str, SceneTotals], base: list[str], values: list[str]) -> Iterator[Metric]:
    """Line crossings, zone occupancy and dwell per zone; classes are those configured (others count as `other`),
    so the label sets stay bounded. A resetCounters call resets the counter, as a restart would."""
    crossings = CounterMetricFamily(f"{PREFIX}_line_crossings", "Line crossings since the last reset, per "
                                    "direction and class", labels=[*base, "source", "line", "direction", "class"])
    occupancy = GaugeMetricFamily(f"{PREFIX}_zone_occupancy", "Tracks inside the zone now, per class",
                                  labels=[*base, "source", "zone", "class"])
    dwell = HistogramMetricFamily(f"{PREFIX}_zone_dwell_seconds", "How long tracks stayed in the zone (on leaving)",
                                  labels=[*base, "source", "zone"])
    for sid, totals in sorted(scene.items()):
        for line, dirs in sorted(totals.lines.items()):
            for direction, classes in sorted(dirs.items()):
                for label, n in sorted(classes.items()):
                    crossings.add_metric([*values, sid, line, direction, label], n)
        for zone in sorted({*totals.occupancy, *totals.entries}):
            inside = totals.occupancy.get(zone, {})
            for label in sorted({*inside, *totals.entries.get(zone, {})}):
                occupancy.add_metric([*values, sid, zone, label], inside.get(label, 0))
        for zone, counts in sorted(totals.dwell.items()):
            buckets = [(str(b), counts[i]) for i, b in enumerate(DWELL_BUCKETS_S)] + [("+Inf", counts[-2])]
            dwell.add_metric([*values, sid, zone], buckets, counts[-1])
    yield crossings
    yield occupancy
    yield dwell


def _module(s: ModuleSnapshot, base: list[str], values: list[str]) -> Iterator[Metric]:
    """The module-wide families: outbox and link, and the model in use."""

    def one(family: GaugeMetricFamily | CounterMetricFamily, value: float) -> Metric:
        family.add_metric(values, value)
        return family

    outbox = s.telemetry.outbox if s.telemetry else None
    sender = s.telemetry.sender if s.telemetry else None
    yield one(GaugeMetricFamily(f"{PREFIX}_outbox_depth", "Events waiting in the durable outbox", labels=base),
              outbox.depth if outbox else 0)
    yield one(GaugeMetricFamily(f"{PREFIX}_outbox_oldest_age_seconds", "Age of the oldest waiting event",
                                labels=base), outbox.oldest_age_s if outbox else 0.0)
    yield one(CounterMetricFamily(f"{PREFIX}_messages_sent", "Messages accepted by IoT Hub/edgeHub", labels=base),
              sender.sent_messages if sender else 0)
    yield one(CounterMetricFamily(f"{PREFIX}_telemetry_dropped", "Events compacted or dropped by the outbox policy, "
                                  "or not stored", labels=base), s.telemetry_dropped)
    yield one(GaugeMetricFamily(f"{PREFIX}_hub_connected", "1 while connected to IoT Hub/edgeHub", labels=base),
              1.0 if s.hub_connected else 0.0)
    info = GaugeMetricFamily(f"{PREFIX}_model_info", "The model in use", labels=[*base, "name", "version",
                                                                                  "providers", "variant"])
    model = s.model
    info.add_metric([*values, model.name if model else "", model.version if model else "",
                     ",".join(model.providers) if model else "",
                     model.variant.chosen if model and model.variant else ""], 1.0)
    yield info


def _model_health(health: ModelHealth | None, base: list[str], values: list[str]) -> Iterator[Metric]:
    """The reported modelHealth as metrics: an info series for the words, gauges for the figures (absent when
    undefined, as the twin's nulls are)."""
    if health is None:
        return
    report = health.reported()
    candidate = report["candidate"] or {"name": "", "version": ""}
    info = GaugeMetricFamily(f"{PREFIX}_model_health_info", "Last model update: candidate, phase and verdict",
                             labels=[*base, "candidate", "candidate_version", "rollout", "phase", "verdict"])
    info.add_metric([*values, candidate["name"], candidate["version"], report["rollout"] or "", report["phase"],
                     report["verdict"]], 1.0)
    yield info
    variant = report["variant"]
    calibration = GaugeMetricFamily(f"{PREFIX}_model_calibration_info", "On-device calibration of the serving "
                                    "model's int8 variant: state (off, sampling, ..., int8, refused)",
                                    labels=[*base, "state"])
    calibration.add_metric([*values, variant["state"]], 1.0)
    yield calibration
    for name, doc, value in (
        ("model_calibration_agreement", "Calibrated variant's agreement with the serving model in its shadow phase",
         variant["agreement"]),
        ("model_calibration_frames", "Frames the calibrated variant was compared on", variant["frames"]),
        ("model_calibration_seconds", "Seconds from the first sampled frame to the quantized variant",
         variant["calibrationS"]),
        ("model_shadow_frames", "Frames on which the candidate was compared with the active model", report["frames"]),
        ("model_shadow_agreement", "Candidate's agreement with the active model (top-1 or detection F1)",
         report["agreement"]),
        ("model_shadow_latency_ratio", "Candidate p95 inference time over the active model's",
         report["latencyRatio"]),
    ):
        if value is not None:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=base)
            family.add_metric(values, float(value))
            yield family


class Metrics:
    """Registry, the latency histogram fed by the publish thread, and the HTTP server."""

    def __init__(self, identity: dict[str, str], snapshot: Callable[[], ModuleSnapshot]) -> None:
        self.snapshot = snapshot
        self.registry = CollectorRegistry()
        self.registry.register(ModuleCollector(identity, snapshot))
        self.latency = Histogram(f"{PREFIX}_inference_latency_seconds", "Model run time per frame",
                                 labelnames=LABELS, buckets=LATENCY_BUCKETS, registry=self.registry
                                 ).labels(*[identity[k] for k in LABELS])
        self.server: BoundedHTTPServer | None = None

    def observe(self, record: dict[str, Any]) -> None:
        """Per published record: inference latency into the histogram."""
        self.latency.observe(float(record.get("inference_ms", 0.0)) / 1000.0)

    def start(self, port: int, host: str | None = None) -> None:
        """Serve on the configured port (0: not at all); a port in use is logged, never fatal to the module."""
        if not port:
            return
        try:
            self.serve(port, host)
        except OSError as err:
            log.error("metrics server not started on port %d: %s", port, err)

    def serve(self, port: int, host: str | None = None) -> int:
        """Start /metrics and /healthz on a daemon thread; returns the bound port (0 picks a free one)."""
        metrics = self
        host = host or default_metrics_host()

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_DEADLINE_S

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, generate_latest(metrics.registry), "text/plain; version=0.0.4; charset=utf-8")
                elif self.path.split("?")[0] in ("/healthz", "/health"):
                    ready, detail = health_view(metrics.snapshot())
                    self._send(200 if ready else 503, json.dumps({"ready": ready, **detail}).encode(),
                               "application/json")
                else:
                    self._send(404, b"not found: use /metrics or /healthz\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = BoundedHTTPServer((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.5,), name="metrics-http", daemon=True).start()
        bound = int(self.server.server_address[1])
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, bound)
        return bound

    def close(self) -> None:
        """Stop the HTTP server."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
