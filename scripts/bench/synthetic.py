"""A scene labelled by construction: real people cut from TUD-Stadtmitte by its ground truth, pasted onto the median
background of vtest.avi and moved along known paths, so every box, id, line crossing and zone stay is known exactly.

Shared by the bench's tracking section and tests/analytics (imported there as `scripts.bench.synthetic`); it needs
only numpy, OpenCV and the two shared media files, and renders each frame on demand (nothing is stored).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from visionedge.analytics.engine import SceneEngine
from visionedge.analytics.events import AnalyticsEvent, Crossing
from visionedge.analytics.settings import SourceAnalytics
from visionedge.frame import Inference

FPS = 10.0
LINE: dict[str, Any] = {"name": "middle", "points": [[0.5, 0.3], [0.5, 1.0]], "directions": ["leftward", "rightward"]}
"""Drawn top to bottom, so its first direction is moving left (the same line as the bench's TUD-Stadtmitte one)."""
ZONE: dict[str, Any] = {"name": "bench", "points": [[0.02, 0.62], [0.22, 0.62], [0.22, 0.92], [0.02, 0.92]]}
"""Bottom left, where only the loiterer's feet ever are."""
SETTINGS: dict[str, Any] = {"lines": [LINE], "zones": [ZONE]}
"""One source's `analytics` value for the scene."""
CROPS = ((1, 1), (1, 4), (1, 5), (1, 7), (120, 7), (120, 9))
"""(frame, ground-truth id) of TUD-Stadtmitte people standing clear of others there, each cut by its box."""
BACKGROUND_STEP = 32
"""Every 32nd vtest.avi frame (25 of them) goes into the median: people keep walking, so none stays on one pixel in
half of them."""

Box = tuple[float, float, float, float]
Detector = Callable[[int], Inference]
"""A frame index -> the detections a model passed for that frame's image (its own confidence threshold)."""
Path2D = Callable[[int], "tuple[float, float] | None"]
"""frame index (from 0) -> where the person's feet are (pixels), or None while not in the scene."""


@dataclass(frozen=True)
class Actor:
    """One person: which crop, how tall, and where the feet are in each frame."""

    name: str
    crop: int
    height: int
    feet: Path2D


@dataclass(frozen=True)
class SyntheticScene:
    """The frames (rendered on demand) and their exact truth: boxes per frame and id, crossings, zone frames."""

    background: np.ndarray
    people: tuple[np.ndarray, ...]
    actors: tuple[Actor, ...]
    frames: int

    @property
    def size(self) -> tuple[int, int]:
        """Width, height in pixels."""
        return self.background.shape[1], self.background.shape[0]

    def boxes(self, index: int) -> dict[int, Box]:
        """Ground truth of frame `index` (from 0): id (from 1) -> x1, y1, x2, y2 in pixels, as pasted."""
        out = {}
        for number, actor in enumerate(self.actors, 1):
            feet = actor.feet(index)
            if feet is not None:
                h, w = self.people[number - 1].shape[:2]
                x1, y2 = round(feet[0] - w / 2), round(feet[1])
                out[number] = (float(x1), float(y2 - h), float(x1 + w), float(y2))
        return out

    def image(self, index: int) -> np.ndarray:
        """Frame `index`: the background with each present person pasted, the farther (feet higher) first."""
        canvas = self.background.copy()
        boxes = self.boxes(index)
        for number in sorted(boxes, key=lambda n: boxes[n][3]):
            x1, y1, x2, y2 = (int(v) for v in boxes[number])
            canvas[y1:y2, x1:x2] = self.people[number - 1]
        return canvas

    def truth(self) -> dict[int, dict[int, Box]]:
        """Every frame's boxes in MOTChallenge numbering (frames from 1)."""
        return {i + 1: self.boxes(i) for i in range(self.frames)}

    def crossings(self) -> dict[str, int]:
        """Crossings of LINE per direction: a person whose feet end on the other side of x = 0.5 than they started
        crossed once (every path here crosses at most once; the swaying one ends on the far side)."""
        middle = LINE["points"][0][0] * self.size[0]
        counts: dict[str, int] = dict.fromkeys(LINE["directions"], 0)
        for actor in self.actors:
            xs = [f[0] for f in map(actor.feet, range(self.frames)) if f is not None]
            if xs[0] > middle > xs[-1]:
                counts["leftward"] += 1
            elif xs[0] < middle < xs[-1]:
                counts["rightward"] += 1
        return counts

    def dwell_s(self) -> list[float]:
        """Each stay in ZONE: the frames with the feet inside the polygon, times the frame interval."""
        polygon = np.array(ZONE["points"], dtype=np.float32) * np.array(self.size, dtype=np.float32)
        stays = []
        for actor in self.actors:
            inside = 0
            for index in range(self.frames + 1):
                feet = actor.feet(index) if index < self.frames else None
                if feet is not None and cv2.pointPolygonTest(polygon, (float(feet[0]), float(feet[1])), False) > 0:
                    inside += 1
                elif inside:
                    stays.append(inside / FPS)
                    inside = 0
        return stays


def walk(start: int, x0: float, x1: float, y: float, speed: float) -> Path2D:
    """From x0 to x1 at `speed` pixels per frame along feet height y, starting at frame `start`."""
    steps = math.ceil(abs(x1 - x0) / speed)
    direction = 1.0 if x1 > x0 else -1.0

    def feet(index: int) -> tuple[float, float] | None:
        k = index - start
        return (x0 + direction * speed * k, y) if 0 <= k <= steps else None

    return feet


def then(*legs: tuple[int, Path2D]) -> Path2D:
    """Legs one after another: (frames it lasts, its path from frame 0)."""

    def feet(index: int) -> tuple[float, float] | None:
        begin = 0
        for length, leg in legs:
            if begin <= index < begin + length:
                return leg(index - begin)
            begin += length
        return None

    return feet


def delayed(start: int, path: Path2D) -> Path2D:
    """`path` begun at frame `start`."""
    return lambda index: path(index - start) if index >= start else None


def actors() -> tuple[Actor, ...]:
    """Seven people on a 768 x 576 frame at 10 fps, 165 frames: two walking right across the middle (one fast), four
    walking left (one slowly, one running), two of them crossing each other's path off the line (the nearer one
    hides the other), one standing on the line swaying +-6 px for 3 s before walking on, one loitering in the zone."""
    sway = then((44, walk(0, 640, 380, 320, 6)),
                (30, lambda k: (384.0 + (6 if k % 2 else -6), 320.0)),
                (40, walk(0, 384, 150, 320, 6)))
    loiter = then((37, walk(0, 320, 100, 470, 6)),
                  (60, lambda k: (125.0 - 25 * math.cos(2 * math.pi * k / 30), 470.0 + 20 * math.sin(
                      2 * math.pi * k / 60))),
                  (38, walk(0, 100, 320, 470, 6)))
    return (Actor("fast, rightward", 1, 130, walk(0, 100, 680, 330, 14)),
            Actor("slow, leftward", 2, 200, walk(20, 660, 120, 555, 5)),
            Actor("crossing, rightward", 3, 165, walk(40, 200, 680, 440, 8)),
            Actor("crossing, leftward", 4, 165, walk(40, 720, 240, 450, 8)),
            Actor("stands on the line", 5, 130, delayed(50, sway)),
            Actor("loiters in the zone", 0, 160, delayed(10, loiter)),
            Actor("runs, leftward", 3, 150, walk(125, 700, 250, 420, 16)))


def median_background(video: Path) -> np.ndarray:
    """The per-pixel median of every BACKGROUND_STEP-th frame: the street of vtest.avi without its walkers."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    index = 0
    while capture.grab():
        if index % BACKGROUND_STEP == 0:
            ok, image = capture.retrieve()
            if ok:
                frames.append(image)
        index += 1
    capture.release()
    if not frames:
        raise ValueError(f"{video}: no frames to make a background from")
    return np.asarray(np.median(np.stack(frames), axis=0), dtype=np.uint8)


def cut_people(sequence: Path) -> list[np.ndarray]:
    """The CROPS of TUD-Stadtmitte, each cut from its frame by its ground-truth box."""
    rows: dict[tuple[int, int], Box] = {}
    for line in (sequence / "gt.txt").read_text().splitlines():
        f, i, left, top, w, h = (float(v) for v in line.split(",")[:6])
        rows[int(f), int(i)] = (left, top, left + w, top + h)
    capture = cv2.VideoCapture(str(sequence / f"{sequence.name}.mp4"))
    wanted = {frame for frame, _ in CROPS}
    crops: dict[tuple[int, int], np.ndarray] = {}
    number = 0
    while len(crops) < len(CROPS):
        ok, image = capture.read()
        if not ok:
            break
        number += 1
        if number in wanted:
            for key in CROPS:
                if key[0] == number:
                    x1, y1, x2, y2 = (round(v) for v in rows[key])
                    crops[key] = np.ascontiguousarray(image[max(y1, 0):y2, max(x1, 0):x2])
    capture.release()
    missing = [k for k in CROPS if k not in crops]
    if missing:
        raise ValueError(f"{sequence}: frames/ids {missing} not found")
    return [crops[k] for k in CROPS]


def build(sequence: Path, video: Path) -> SyntheticScene:
    """The scene from the shared TUD-Stadtmitte folder and vtest.avi (about 1 s: the median is most of it)."""
    people = cut_people(sequence)
    cast = actors()
    scaled = []
    for actor in cast:
        crop = people[actor.crop]
        width = round(crop.shape[1] * actor.height / crop.shape[0])
        scaled.append(cv2.resize(crop, (width, actor.height), interpolation=cv2.INTER_AREA))
    return SyntheticScene(median_background(video), tuple(scaled), cast, 165)


@dataclass(frozen=True)
class Played:
    """What the detector and the module's scene engine made of the scene (boxes in pixels, frames from 1)."""

    detections: dict[int, list[Box]]
    tracks: dict[int, dict[int, Box]]
    events: tuple[AnalyticsEvent, ...]

    def crossings(self) -> dict[str, int]:
        """Counted crossings of LINE per direction."""
        counts: dict[str, int] = dict.fromkeys(LINE["directions"], 0)
        for event in self.events:
            if isinstance(event, Crossing):
                counts[event.direction] += 1
        return counts

    def dwell_s(self) -> list[float]:
        """Each stay in ZONE as the module measured it (exits, including those at the end of the scene)."""
        return [e.dwell_s for e in self.events
                if not isinstance(e, Crossing) and e.kind == "exit" and e.dwell_s is not None]


def play(scene: SyntheticScene, detect: Detector, every: int = 1, label: str = "person") -> Played:
    """Every `every`-th frame through `detect` (only `label` kept) and one SceneEngine with SETTINGS at its defaults,
    at the frames' capture times (index / FPS): every=2 is the same scene at 5 fps."""
    engine = SceneEngine("synthetic", SourceAnalytics.model_validate(SETTINGS))
    w, h = scene.size
    detections: dict[int, list[Box]] = {}
    tracks: dict[int, dict[int, Box]] = {}
    events: list[AnalyticsEvent] = []
    for index in range(0, scene.frames, every):
        inference = detect(index)
        dets = [d for d in inference.detections if d.label == label]
        answer = engine.update(dets, index / FPS, "synthetic@1", [d for d in inference.hidden if d.label == label])
        detections[index + 1] = [(d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h) for d in dets]
        pairs = [*zip(dets, answer.track_ids, strict=True), *answer.occluded]
        tracks[index + 1] = {i: (d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h) for d, i in pairs
                             if i is not None}
        events.extend(answer.events)
    events.extend(engine.finish())
    return Played(detections, tracks, tuple(events))
