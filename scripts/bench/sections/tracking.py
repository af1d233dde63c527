"""tracking: scene analytics accuracy on a MOTChallenge sequence with ground truth (MOTA, IDF1, id switches, the
detector's recall beside them, line counts per direction against the same rule on the ground-truth tracks) and on a
scene labelled by construction (real people pasted on a real background along known paths: exact boxes, crossings
and dwell), the cost of tracking plus lines and zones per frame at 5, 20 and 50 objects, and 8 sources at 10 fps
with analytics on: through the model (what this machine's detector allows) and the analytics alone at the full 80
frames/s."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from visionedge.analytics.engine import SceneEngine
from visionedge.analytics.events import SceneFrame
from visionedge.analytics.live import SceneAnalytics
from visionedge.analytics.mot import MATCH_IOU, Boxes, detector_recall, read_mot, score
from visionedge.analytics.scene import LineCounter, Seen
from visionedge.analytics.settings import LineSettings, SourceAnalytics
from visionedge.analytics.tracker import assign, iou_matrix
from visionedge.app import load_model, make_fetcher
from visionedge.config import InferenceSettings, load_config
from visionedge.frame import Detection, Frame, Inference
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.models.decoders.base import nms
from visionedge.result import to_record

from bench import synthetic
from bench.common import machine_line, spread
from bench.sections.sources import SOURCE_FPS, measure_sources

DEFAULT_SEQUENCE = Path(__file__).resolve().parents[3].parent / "shared" / "media" / "mot" / "TUD-Stadtmitte"
COUNT_LINE = synthetic.LINE
"""Across the walkway of TUD-Stadtmitte, where people walk left and right (the synthetic scene's line too)."""
FLOOR = 0.1
"""The detector runs once at this confidence without NMS; each row keeps what its setting would have passed."""
COST_OBJECTS = (5, 20, 50)
COST_FRAMES = 400
SOURCES = 8
WARMUP = 20
REPLAY_FRAMES = 120
"""vtest.avi frames whose detections the full-rate analytics run replays (forward, then back: motion stays smooth)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--tracking-sequences: MOTChallenge folders (video or img1/, gt/gt.txt or gt.txt, seqinfo.ini)."""
    parser.add_argument("--tracking-sequences", nargs="+", type=Path, default=[DEFAULT_SEQUENCE],
                        help="tracking: MOTChallenge sequence folders (default: shared TUD-Stadtmitte)")
    parser.add_argument("--tracking-model", default="yolox-nano", help="tracking: the detector (built-in name)")
    parser.add_argument("--tracking-variants", nargs="+", default=["auto"],
                        help="tracking: runtime.variant of each accuracy run (default auto, as a user's config; e.g. "
                        "fp32 int8 to compare the deployed file with its int8 variant)")
    parser.add_argument("--tracking-seconds", type=float, default=20.0,
                        help="tracking: seconds of each 8-source run, analytics off and on (default 20)")


def frames_of(folder: Path) -> list[np.ndarray]:
    """The sequence's frames: its .mp4, or the images in img1/."""
    videos = sorted(folder.glob("*.mp4"))
    if videos:
        capture = cv2.VideoCapture(str(videos[0]))
        frames: list[np.ndarray] = []
        while True:
            ok, read = capture.read()
            if not ok:
                break
            frames.append(read)
        capture.release()
        return frames
    return [image for p in sorted((folder / "img1").glob("*.jpg")) if (image := cv2.imread(str(p))) is not None]


def fps_of(folder: Path) -> float:
    """frameRate from seqinfo.ini (25 when absent)."""
    info = folder / "seqinfo.ini"
    for line in info.read_text().splitlines() if info.is_file() else ():
        if line.startswith("frameRate="):
            return float(line.split("=", 1)[1])
    return 25.0


def ground_truth(folder: Path) -> dict[int, Boxes]:
    """gt.txt (rows with conf 0 left out)."""
    path = folder / "gt.txt" if (folder / "gt.txt").is_file() else folder / "gt" / "gt.txt"
    return read_mot(path, min_conf=0.5)


def line_counts(tracks: dict[int, dict[int, tuple[float, float, float, float]]], size: tuple[int, int],
                fps: float) -> dict[str, int]:
    """The counting rule applied to given tracks (pixels): crossings per direction of COUNT_LINE."""
    counter = LineCounter(LineSettings.model_validate(COUNT_LINE), "gt")
    w, h = size
    counts: dict[str, int] = dict.fromkeys(COUNT_LINE["directions"], 0)
    for frame in sorted(tracks):
        seen = [Seen(track_id, "person", ((x1 + x2) / 2 / w, y2 / h))
                for track_id, (x1, _, x2, y2) in tracks[frame].items()]
        xy = np.array([s.anchor for s in seen], dtype=float).reshape(-1, 2)
        for crossing in counter.see(seen, xy, frame / fps):
            counts[crossing.direction] += 1
    return counts


def track(detections: dict[int, tuple[list[Detection], list[Detection]]], settings: SourceAnalytics,
          size: tuple[int, int], fps: float, every: int = 1) -> dict[int, dict[int, tuple[float, float, float, float]]]:
    """Run the engine over cached detections and the boxes NMS removed (every n-th frame); tracks in pixels per frame
    number, as `analyze --mot` writes them (boxes that hold a hidden track included)."""
    engine = SceneEngine("bench", settings)
    w, h = size
    out: dict[int, dict[int, tuple[float, float, float, float]]] = {}
    for frame in sorted(detections):
        if (frame - 1) % every:
            continue
        dets, hidden = detections[frame]
        scene = engine.update(dets, frame / fps, "bench@1", hidden)
        pairs = [*zip(dets, scene.track_ids, strict=True), *scene.occluded]
        out[frame] = {tid: (d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h)
                      for d, tid in pairs if tid is not None}
    return out


def box_agreement(truth: dict[int, Boxes], boxes: dict[int, list[tuple[float, float, float, float]]]) -> str:
    """How the detector's boxes sit on the annotated ones: median errors of pairs matched one-to-one at IoU >= 0.3
    (a letterbox, stride or scale-back error would show as an offset or a ratio off 1), and why each box missed at
    IoU >= 0.5 is missed (its best-overlapping detection taken by another true box, or overlapping it too little)."""
    errors, taken, loose, lone = [], 0, 0, 0
    for frame, people in truth.items():
        g = np.array(list(people.values())).reshape(-1, 4)
        d = np.array(boxes.get(frame, []), dtype=float).reshape(-1, 4)
        iou = iou_matrix(g, d) if len(d) else np.zeros((len(g), 0))
        for r, c in assign(iou, 0.3):
            (gx1, gy1, gx2, gy2), (dx1, dy1, dx2, dy2) = g[r], d[c]
            gw, gh = gx2 - gx1, gy2 - gy1
            errors.append(((dx1 + dx2 - gx1 - gx2) / 2 / gw, (dy1 + dy2 - gy1 - gy2) / 2 / gh,
                           (dx2 - dx1) / gw, (dy2 - dy1) / gh))
        found = dict(assign(iou, MATCH_IOU))
        for r in set(range(len(g))) - set(found):
            best = int(iou[r].argmax()) if iou.shape[1] else -1
            if best < 0 or iou[r, best] == 0.0:
                lone += 1
            elif iou[r, best] >= MATCH_IOU or best in found.values():
                taken += 1
            else:
                loose += 1
    dx, dy, rw, rh = np.median(np.array(errors), axis=0)
    return (f"boxes vs ground truth ({len(errors)} pairs at IoU >= 0.3): median centre offset {dx:+.3f} of the true "
            f"width, {dy:+.3f} of its height; median size ratio width {rw:.3f}, height {rh:.3f}. Missed at IoU >= 0.5: "
            f"{taken} lie under a detection matched to another true box, {loose} overlap a free one by less, "
            f"{lone} overlap none")


def kept_by_nms(candidates: list[Detection], floor: float, iou: float) -> tuple[list[Detection], list[Detection]]:
    """What the model would have passed at confidence `floor` with NMS at `iou` (one class: people), and what its NMS
    would have removed."""
    above = [d for d in candidates if d.confidence > floor]
    if not above:
        return [], []
    keep = nms(np.array([d.box for d in above]), np.array([d.confidence for d in above]), iou)
    removed = set(range(len(above))) - {int(k) for k in keep}
    return [above[int(k)] for k in keep], [above[k] for k in sorted(removed)]


def accuracy(folder: Path, model_name: str, variant: str = "auto") -> None:
    """One sequence: the detector once (every candidate, no NMS), then each detector and tracker setting over it;
    `variant` is runtime.variant (auto picks int8 once variants exist, and its detections differ)."""
    config = load_config()
    runtime = config.desired.runtime.model_copy(update={"variant": variant})
    config = config.model_copy(update={"desired": config.desired.model_copy(update={"runtime": runtime})})
    model = load_model(model_name, config, make_fetcher(config))
    floor_default, nms_default = model.manifest.confidence, model.manifest.iou
    model.set_overrides(InferenceSettings(confidence=FLOOR, iou=1.0, top_k=1000))
    images = frames_of(folder)
    h, w = images[0].shape[:2]
    fps = fps_of(folder)
    started = time.perf_counter()
    candidates = {i + 1: [d for d in model.infer(img).detections if d.label == "person"]
                  for i, img in enumerate(images)}
    detect_s = time.perf_counter() - started
    gt = ground_truth(folder)
    # (name, detector confidence, NMS IoU, tracker settings, every n-th frame)
    rows: list[tuple[str, float, float, dict[str, Any], int]] = [
            ("defaults (detections >= manifest confidence)", floor_default, nms_default, {}, 1),
            ("no occluded stage (occluded false)", floor_default, nms_default, {"tracker": {"occluded": False}}, 1),
            ("no id at first sight (confirm_score 1.0)", floor_default, nms_default,
             {"tracker": {"confirm_score": 1.0}}, 1),
            ("low-score stage fed from 0.1", FLOOR, nms_default, {}, 1),
            ("no low-score stage (low 0.5)", floor_default, nms_default, {"tracker": {"low": 0.5}}, 1),
            ("confirm after 1 hit", floor_default, nms_default, {"tracker": {"confirm_hits": 1}}, 1),
            ("confirm after 3 hits", floor_default, nms_default, {"tracker": {"confirm_hits": 3}}, 1),
            ("lost tracks kept 2 s (max_lost_s 2)", floor_default, nms_default, {"tracker": {"max_lost_s": 2.0}}, 1),
            ("detector confidence 0.2", 0.2, nms_default, {}, 1),
            ("detector NMS IoU 0.55", floor_default, 0.55, {}, 1),
            ("detector NMS IoU 0.6", floor_default, 0.6, {}, 1),
            ("half the frame rate (every 2nd frame)", floor_default, nms_default, {}, 2),
            ("a third of the frame rate (every 3rd frame)", floor_default, nms_default, {}, 3)]
    truth = line_counts(gt, (w, h), fps)
    print(f"{folder.name}: {len(images)} frames {w}x{h} at {fps:g} fps, {sum(len(b) for b in gt.values())} "
          f"ground-truth boxes of {len({i for b in gt.values() for i in b})} people; {model_name} "
          f"({model.variant.chosen if model.variant else 'deployed file'}, variant {variant}) "
          f"{1000 * detect_s / len(images):.0f} ms/frame; line {COUNT_LINE['name']} on ground truth: "
          + ", ".join(f"{d} {n}" for d, n in truth.items()))
    print(box_agreement(gt, {f: [(d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h)
                                 for d in kept_by_nms(v, floor_default, nms_default)[0]]
                             for f, v in candidates.items()}))
    head = (f"{'setting':<46} {'det recall':>10} {'MOTA':>6} {'IDF1':>6} {'IDsw':>5} {'FN':>5} {'FP':>5} "
            f"{'ms/frame':>9}  line counts (vs ground truth)")
    print(head)
    print("-" * len(head))
    for name, floor, overlap, extra, step in rows:
        dets = {f: kept_by_nms(v, floor, overlap) for f, v in candidates.items()}
        settings = SourceAnalytics.model_validate({"lines": [COUNT_LINE], **extra})
        began = time.perf_counter()
        tracks = track(dets, settings, (w, h), fps, step)
        per_frame_ms = 1000 * (time.perf_counter() - began) / len(tracks)
        truth_here = {f: b for f, b in gt.items() if (f - 1) % step == 0}
        s = score(truth_here, tracks)
        recall = detector_recall(truth_here, {f: [(d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h)
                                                  for d in v[0]] for f, v in dets.items()})
        counted = line_counts(tracks, (w, h), fps)
        lines = ", ".join(f"{d} {counted[d]} ({counted[d] - truth[d]:+d})" for d in truth)
        print(f"{name:<46} {recall:>10.3f} {s.mota:>6.3f} {s.idf1:>6.3f} {s.id_switches:>5} {s.misses:>5} "
              f"{s.false_positives:>5} {per_frame_ms:>9.3f}  {lines}")


def never_on_a_person(tracks: dict[int, Boxes], truth: dict[int, Boxes]) -> set[int]:
    """Track ids none of whose boxes overlaps a true box by IoU >= 0.5: something in the background taken for a
    person, not a person followed badly."""
    touching: set[int] = set()
    for frame, boxes in tracks.items():
        if boxes and truth.get(frame):
            ious = iou_matrix(np.array(list(boxes.values())), np.array(list(truth[frame].values())))
            touching.update(i for i, best in zip(boxes, ious.max(axis=1), strict=True) if best >= 0.5)
    return {i for boxes in tracks.values() for i in boxes} - touching


def synthetic_scene(model_name: str) -> None:
    """The scene labelled by construction through the detector and the engine at default settings, at 10 and 5 fps:
    scores, the detector's recall, line counts per direction and each stay's dwell against the truth."""
    config = load_config()
    fetcher = make_fetcher(config)
    model = load_model(model_name, config, fetcher)
    scene = synthetic.build(DEFAULT_SEQUENCE, fetcher.media(SAMPLE_VIDEO))
    w, h = scene.size
    began = time.perf_counter()
    answers = [model.infer(scene.image(i)) for i in range(scene.frames)]
    detect_ms = 1000 * (time.perf_counter() - began) / scene.frames
    print(f"synthetic scene: {len(scene.actors)} people cut from TUD-Stadtmitte on the median background of "
          f"{SAMPLE_VIDEO}, {scene.frames} frames {w}x{h} at {synthetic.FPS:g} fps, "
          f"{sum(map(len, scene.truth().values()))} true boxes; {model_name} at its defaults, {detect_ms:.0f} ms/frame")
    for every in (1, 2):
        played = synthetic.play(scene, answers.__getitem__, every)
        truth = {f: b for f, b in scene.truth().items() if (f - 1) % every == 0}
        s = score(truth, played.tracks)
        background = never_on_a_person(played.tracks, truth)
        clean = score(truth, {f: {i: b for i, b in t.items() if i not in background}
                              for f, t in played.tracks.items()})
        counted, expected = played.crossings(), scene.crossings()
        on_truth = line_counts(truth, scene.size, synthetic.FPS)
        print(f"  {synthetic.FPS / every:g} fps: detector recall {detector_recall(truth, played.detections):.3f}; "
              f"MOTA {s.mota:.3f}, IDF1 {s.idf1:.3f}, id switches {s.id_switches}, FN {s.misses}, "
              f"FP {s.false_positives}")
        print(f"    {len(background)} track(s) never on a person (ids {sorted(background)}), "
              f"{s.false_positives - clean.false_positives} FP; without them MOTA {clean.mota:.3f}, "
              f"IDF1 {clean.idf1:.3f}")
        print("    line counts (vs truth): " + ", ".join(f"{d} {counted[d]} ({counted[d] - expected[d]:+d})"
                                                     for d in expected)
              + "; the rule on the true boxes: " + ", ".join(f"{d} {n}" for d, n in on_truth.items()))
        print("    zone dwell s (vs truth): " + (", ".join(f"{got:.1f} ({got - want:+.1f})" for got, want in zip(
            played.dwell_s(), scene.dwell_s(), strict=False)) or "none") + f"; stays {len(played.dwell_s())} "
              f"(truth {len(scene.dwell_s())})")


def cost_scene(objects: int) -> tuple[SceneEngine, list[list[Detection]]]:
    """`objects` people walking on separate rows across 2 lines and through 2 zones, COST_FRAMES frames."""
    settings = SourceAnalytics.model_validate({
        "lines": [{"name": "a", "points": [[0.3, 0.0], [0.3, 1.0]]}, {"name": "b", "points": [[0.7, 0.0], [0.7, 1.0]]}],
        "zones": [{"name": "left", "points": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]], "max_dwell_s": 5},
                  {"name": "right", "points": [[0.5, 0.0], [1.0, 0.2], [1.0, 0.8], [0.5, 1.0], [0.6, 0.5]]}]})
    rng = np.random.default_rng(0)
    rows = np.linspace(0.05, 0.95, objects)
    speed = rng.uniform(0.001, 0.004, objects)
    start = rng.uniform(0, 1, objects)
    frames = []
    for i in range(COST_FRAMES):
        x = (start + speed * i) % 1.0
        frames.append([Detection("person", 0.8, (float(x[k] - 0.01), float(rows[k] - 0.008), float(x[k] + 0.01),
                                                 float(rows[k] + 0.008))) for k in range(objects)])
    return SceneEngine("cost", settings), frames


def cost() -> None:
    """Tracking, 2 lines and 2 zones per frame, single thread: CPU time (what the load of others does not inflate
    much) and wall time."""
    print("per-frame cost: tracking + 2 lines + 2 zones (one source, one thread)")
    for objects in COST_OBJECTS:
        engine, frames = cost_scene(objects)
        for i, dets in enumerate(frames[:WARMUP]):
            engine.update(dets, i / 10.0, "cost@1")
        wall = []
        cpu = time.thread_time()
        for i, dets in enumerate(frames[WARMUP:], WARMUP):
            began = time.perf_counter()
            engine.update(dets, i / 10.0, "cost@1")
            wall.append(time.perf_counter() - began)
        cpu = time.thread_time() - cpu
        wall.sort()
        print(f"  {objects:>3} objects: CPU {1000 * cpu / len(wall):.3f} ms/frame; wall median "
              f"{1000 * wall[len(wall) // 2]:.3f} ms, p95 {1000 * wall[int(len(wall) * 0.95)]:.3f} ms")


class TimedScene(SceneAnalytics):
    """The module's scene analytics, adding up its thread's CPU time inside `observe` (tracking, lines, zones)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.cpu_s = 0.0
        self.frames = 0

    def observe(self, frame: Frame, inference: Inference, record: dict[str, Any],
                reused: bool) -> SceneFrame | None:
        """The real call, timed."""
        began = time.thread_time()
        try:
            return super().observe(frame, inference, record, reused)
        finally:
            self.cpu_s += time.thread_time() - began
            self.frames += 1


def analytics_settings() -> SourceAnalytics:
    """A line and a zone, as on every source of the 8-source runs."""
    return SourceAnalytics.model_validate({"lines": [COUNT_LINE], "zones": [
        {"name": "left", "points": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]}]})


def sources_with_analytics(seconds: float) -> None:
    """8 paced sources at 10 fps into one YOLOX-nano pipeline, without and with a line and a zone on each, twice
    in turn (the spread between rounds is the machine's noise)."""
    print(f"{SOURCES} paced vtest.avi sources at {SOURCE_FPS:g} fps each, yolox-nano, {seconds:g} s after 3 s warm-up")
    for label, scene in [(off_on, TimedScene() if off_on == "analytics on" else None)
                         for _ in range(2) for off_on in ("analytics off", "analytics on")]:
        if scene is not None:
            scene.configure({f"cam{i}": analytics_settings() for i in range(SOURCES)}, "detect")
        r = measure_sources("yolox-nano", SOURCES, seconds, SOURCE_FPS, scene=scene)
        told = (f"; analytics CPU {1000 * scene.cpu_s / max(scene.frames, 1):.2f} ms/frame over {scene.frames} "
                f"frames" if scene is not None else "")
        print(f"  {label:<14} total {r.total:.1f} inf/s, per source {spread(r.per_source_fps)} fps, "
              f"skipped {r.skipped / r.seconds:.1f}/s{told}")


def replayed_detections(model_name: str) -> list[Inference]:
    """The detector's answers for the first REPLAY_FRAMES frames of the sample video, then the same backwards."""
    config = load_config()
    fetcher = make_fetcher(config)
    model = load_model(model_name, config, fetcher)
    capture = cv2.VideoCapture(str(fetcher.media(SAMPLE_VIDEO)))
    answers: list[Inference] = []
    while len(answers) < REPLAY_FRAMES:
        ok, image = capture.read()
        if not ok:
            break
        answers.append(model.infer(image))
    capture.release()
    return answers + answers[-2:0:-1]


def analytics_at_full_rate(seconds: float, model_name: str) -> None:
    """8 sources at 10 fps through the module's scene analytics on one thread (the pipeline's publishing thread does
    this work), fed the detector's real answers for vtest.avi replayed on schedule: whether they keep the full rate,
    and their CPU time, with the model's cost taken out."""
    answers = replayed_detections(model_name)
    scene = TimedScene()
    scene.configure({f"cam{i}": analytics_settings() for i in range(SOURCES)}, "detect")
    image = np.zeros((576, 768, 3), np.uint8)
    period = 1.0 / SOURCE_FPS
    fed = [0] * SOURCES
    behind = 0.0
    began, cpu = time.monotonic(), time.thread_time()
    tick = 0
    while time.monotonic() - began < seconds:
        due = began + tick * period
        behind = max(behind, time.monotonic() - due)
        for i in range(SOURCES):
            k = tick + 37 * i  # each source at its own point of the replay
            frame = Frame(image, f"cam{i}", tick, 1.8e9 + tick * period)
            inference = answers[k % len(answers)]
            scene.observe(frame, inference, to_record(frame, inference), reused=False)
            fed[i] += 1
        tick += 1
        time.sleep(max(0.0, began + tick * period - time.monotonic()))
    elapsed = time.monotonic() - began
    cpu = time.thread_time() - cpu
    objects = sum(len(a.detections) for a in answers) / len(answers)
    print(f"{SOURCES} sources x {SOURCE_FPS:g} fps through the scene analytics alone (a line and a zone each, "
          f"{model_name}'s answers for vtest.avi replayed, {objects:.1f} objects/frame), {elapsed:.0f} s, one thread:")
    print(f"  per source {spread([n / elapsed for n in fed])} fps (asked {SOURCE_FPS:g}), most behind schedule "
          f"{1000 * behind:.1f} ms; analytics CPU {1000 * scene.cpu_s / scene.frames:.2f} ms/frame, "
          f"{100 * scene.cpu_s / elapsed:.1f} % of one core (with building the records: {100 * cpu / elapsed:.1f} %)")


def run(args: argparse.Namespace) -> int:
    """Accuracy per sequence, then cost."""
    print(machine_line())
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for folder in args.tracking_sequences:
        for variant in args.tracking_variants:
            accuracy(folder, args.tracking_model, variant)
            print()
    synthetic_scene(args.tracking_model)
    print()
    cost()
    print()
    analytics_at_full_rate(args.tracking_seconds, args.tracking_model)
    print()
    sources_with_analytics(args.tracking_seconds)
    return 0


