"""gate: the scene-change gate: gated share of a still scene (60 s of one frame with sensor noise) and of vtest.avi,
CPU per frame with the gate on and off, the gate's own CPU per frame."""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import cv2
from visionedge.app import load_model, make_fetcher
from visionedge.config import GateSettings, load_config
from visionedge.gate import SceneGate
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.models.model import Model
from visionedge.pipeline import Pipeline
from visionedge.sinks import jsonl_sink
from visionedge.sources import Source, VideoFileSource

from bench.clips import HeldFrame


def gate_run(model: Model, source: Source, gate_on: bool) -> dict[str, float]:
    """One pipeline pass; CPU per frame covers every thread of the process (decode, gate, inference, records)."""
    sink = jsonl_sink(Path(os.devnull))
    try:
        pipeline = Pipeline(source, model, [sink], gate=GateSettings(mode="on" if gate_on else "off"))
        wall, cpu = time.perf_counter(), time.process_time()
        pipeline.run(threading.Event())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        sink.close()
    frames = pipeline.stats.published
    stats = pipeline.gate_stats()
    return {"frames": frames, "gated": stats.gated if stats else 0, "fps": frames / wall,
            "cpu_ms_per_frame": 1000 * cpu / frames, "gate_ms_per_frame": 1000 * stats.cpu_s / frames if stats else 0.0}


def run(args: argparse.Namespace) -> int:
    """Gated share and CPU per frame with the gate on and off: a still scene (60 s, noise) and vtest.avi (busy)."""
    config = load_config()
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    capture = cv2.VideoCapture(str(video))
    first = capture.read()[1]
    capture.release()
    # Camera time: the still clip as a 10 fps camera delivers it, max_skip_s re-checks counted on frame timestamps.
    still = HeldFrame(first, 60.0, 10.0)
    camera = SceneGate(GateSettings(mode="on"))
    for frame in still.frames(threading.Event()):
        camera.should_infer(frame.image, frame.timestamp)
    held = camera.stats()
    print(f"gate decisions on a 10 fps camera clock: still scene 60 s: {held.gated}/{held.gated + held.inferred} "
          f"gated ({100 * held.gated / (held.gated + held.inferred):.1f} %, re-checked every "
          f"{GateSettings().max_skip_s:g} s); gate CPU {1000 * held.cpu_s / (held.gated + held.inferred):.3f} ms/frame")
    print()
    head = (f"{'model':<12} {'clip':<14} {'gate':<5} {'frames':>7} {'gated':>6} {'share':>6} {'fps':>7} "
            f"{'CPU ms/frame':>13} {'gate ms/frame':>14}")
    print(head)
    print("-" * len(head))
    for name in args.models:
        model = load_model(name, config, fetcher)
        for clip, make in (("still 60 s", lambda: HeldFrame(first, 60.0, 10.0)),
                           ("vtest.avi", lambda: VideoFileSource(video, "vtest"))):
            for gate_on in (False, True):
                r = gate_run(model, make(), gate_on)
                print(f"{name:<12} {clip:<14} {'on' if gate_on else 'off':<5} {r['frames']:>7.0f} {r['gated']:>6.0f} "
                      f"{100 * r['gated'] / r['frames']:>5.1f}% {r['fps']:>7.1f} {r['cpu_ms_per_frame']:>13.2f} "
                      f"{r['gate_ms_per_frame']:>14.3f}")
    print()
    print("The still clip's frames carry 10 fps camera timestamps, so its max_skip_s re-checks count as on a camera; "
          "vtest.avi is analysed as fast as it decodes (wall-clock timestamps). CPU ms/frame: all threads of the "
          "process (decode, gate, inference, records) over frames published.")
    return 0
