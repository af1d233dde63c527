"""Prometheus metrics and a health probe on :9600, named and labelled the way IoT Edge's own modules do it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from visionedge.sources import SourceState

log = logging.getLogger(__name__)

PREFIX = "visionedge"
LABELS = ("iothub", "edge_device", "module", "instance_number")
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Snapshot:
    """Everything scraped, read from the live objects at scrape time (nothing on the frame path)."""

    fps: float = 0.0
    frames_captured: int = 0
    frames_analyzed: int = 0
    frames_dropped: int = 0
    inference_errors: int = 0
    frame_age_s: float = 0.0
    source_id: str = ""
    source_state: str = SourceState.CONNECTING.value
    model_name: str = ""
    model_version: str = ""
    providers: list[str] = field(default_factory=list)
    outbox_depth: int = 0
    outbox_oldest_age_s: float = 0.0
    messages_sent: int = 0
    telemetry_dropped: int = 0
    hub_connected: bool = False


class ModuleCollector(Collector):
    """Turns a Snapshot into metric families with the IoT Edge identity labels."""

    def __init__(self, identity: dict[str, str], snapshot: Callable[[], Snapshot]) -> None:
        self.identity = identity
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus-client on every scrape."""
        s = self.snapshot()
        base = list(LABELS)
        values = [self.identity[k] for k in LABELS]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=base)
            family.add_metric(values, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=base)
            family.add_metric(values, value)
            return family

        yield gauge("fps", "Frames analysed per second, recent average", s.fps)
        yield gauge("frame_age_seconds", "Age of the last frame when inference started", s.frame_age_s)
        yield counter("frames_captured", "Frames delivered by the source", s.frames_captured)
        yield counter("frames_analyzed", "Frames run through the model", s.frames_analyzed)
        yield counter("frames_dropped", "Frames captured but skipped (newer frame or over the target rate)",
                      s.frames_dropped)
        yield counter("inference_errors", "Frames on which the model raised an error", s.inference_errors)
        yield gauge("outbox_depth", "Events waiting in the durable outbox", s.outbox_depth)
        yield gauge("outbox_oldest_age_seconds", "Age of the oldest waiting event", s.outbox_oldest_age_s)
        yield counter("messages_sent", "Messages accepted by IoT Hub/edgeHub", s.messages_sent)
        yield counter("telemetry_dropped", "Events dropped by the outbox overflow policy", s.telemetry_dropped)
        yield gauge("hub_connected", "1 while connected to IoT Hub/edgeHub", 1.0 if s.hub_connected else 0.0)
        info = GaugeMetricFamily(f"{PREFIX}_model_info", "The model in use", labels=[*base, "name", "version",
                                                                                      "providers"])
        info.add_metric([*values, s.model_name, s.model_version, ",".join(s.providers)], 1.0)
        yield info
        state = GaugeMetricFamily(f"{PREFIX}_source_state", "1 for the source's current state",
                                  labels=[*base, "source", "state"])
        for option in SourceState:
            state.add_metric([*values, s.source_id, option.value], 1.0 if s.source_state == option.value else 0.0)
        yield state


class Metrics:
    """Registry, the latency histogram fed by the publish thread, and the HTTP server."""

    def __init__(self, identity: dict[str, str], snapshot: Callable[[], Snapshot],
                 health: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ModuleCollector(identity, snapshot))
        self.latency = Histogram(f"{PREFIX}_inference_latency_seconds", "Model run time per frame",
                                 labelnames=LABELS, buckets=LATENCY_BUCKETS, registry=self.registry
                                 ).labels(*[identity[k] for k in LABELS])
        self.health = health
        self.server: ThreadingHTTPServer | None = None

    def observe(self, record: dict[str, Any]) -> None:
        """Per published record: inference latency into the histogram."""
        self.latency.observe(float(record.get("inference_ms", 0.0)) / 1000.0)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Start /metrics and /healthz on a daemon thread; returns the bound port (0 picks a free one)."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, generate_latest(metrics.registry), "text/plain; version=0.0.4; charset=utf-8")
                elif self.path.split("?")[0] in ("/healthz", "/health"):
                    ready, detail = metrics.health()
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

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True).start()
        bound = int(self.server.server_address[1])
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, bound)
        return bound

    def close(self) -> None:
        """Stop the HTTP server."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
