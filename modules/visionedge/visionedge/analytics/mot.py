"""MOTChallenge files and scores: write tracks any ground truth can score, and score them (CLEAR MOT, IDF1).

A small implementation on `lap` instead of `motmetrics` (whose 1.4.0 calls `np.asfarray`, gone in numpy 2); it follows
the same rules: a match needs IoU >= 0.5, matches of the previous frame are kept while they still qualify, an id
switch is a ground-truth object matched to a different track than the last time it was matched.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from visionedge.analytics.tracker import assign, iou_matrix

MATCH_IOU = 0.5

Boxes = dict[int, tuple[float, float, float, float]]
"""id -> x1, y1, x2, y2 (pixels) in one frame."""
Sequence = dict[int, Boxes]
"""frame number (from 1) -> its boxes."""


def write_row(out: TextIO, frame: int, track_id: int, box: tuple[float, float, float, float], score: float) -> None:
    """One MOTChallenge line: frame, id, left, top, width, height, conf, -1, -1, -1 (pixels)."""
    x1, y1, x2, y2 = box
    out.write(f"{frame},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1\n")


def read_mot(path: Path, min_conf: float = 0.0) -> Sequence:
    """A MOTChallenge file; ground truth rows with conf 0 (not to be counted) are left out with min_conf > 0."""
    frames: Sequence = defaultdict(dict)
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        fields = line.split(",")
        frame, ident = int(float(fields[0])), int(float(fields[1]))
        left, top, width, height, conf = (float(v) for v in fields[2:7])
        if conf < min_conf:
            continue
        frames[frame][ident] = (left, top, left + width, top + height)
    return dict(frames)


@dataclass(frozen=True)
class Scores:
    """CLEAR MOT and identity scores of one sequence."""

    gt: int
    hyp: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    idtp: int
    gt_ids: int

    @property
    def mota(self) -> float:
        """1 - (misses + false positives + id switches) / ground-truth boxes."""
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / self.gt if self.gt else math.nan

    @property
    def idf1(self) -> float:
        """2 IDTP / (ground-truth boxes + tracker boxes), under the best one-to-one id mapping."""
        return 2 * self.idtp / (self.gt + self.hyp) if self.gt + self.hyp else math.nan

    @property
    def recall(self) -> float:
        """Matched ground-truth boxes / ground-truth boxes."""
        return self.matches / self.gt if self.gt else math.nan


def _pairs(gt: Boxes, hyp: Boxes) -> tuple[list[int], list[int], np.ndarray]:
    g_ids, h_ids = list(gt), list(hyp)
    iou = iou_matrix(np.array([gt[i] for i in g_ids]).reshape(-1, 4), np.array([hyp[i] for i in h_ids]).reshape(-1, 4))
    return g_ids, h_ids, iou


def score(gt: Mapping[int, Boxes], hyp: Mapping[int, Boxes]) -> Scores:
    """Score tracks against ground truth over every frame either has."""
    last: dict[int, int] = {}
    previous: dict[int, int] = {}
    together: dict[tuple[int, int], int] = defaultdict(int)
    n_gt = n_hyp = matches = misses = fps = switches = 0
    for frame in sorted(set(gt) | set(hyp)):
        g_boxes, h_boxes = gt.get(frame, {}), hyp.get(frame, {})
        g_ids, h_ids, iou = _pairs(g_boxes, h_boxes)
        n_gt, n_hyp = n_gt + len(g_ids), n_hyp + len(h_ids)
        for gi, g in enumerate(g_ids):
            for hi, h in enumerate(h_ids):
                if iou[gi, hi] >= MATCH_IOU:
                    together[g, h] += 1
        matched: dict[int, int] = {}
        for gi, g in enumerate(g_ids):
            kept = previous.get(g)
            if kept is not None and kept in h_boxes and iou[gi, h_ids.index(kept)] >= MATCH_IOU:
                matched[g] = kept
        free_g = [gi for gi, g in enumerate(g_ids) if g not in matched]
        taken = set(matched.values())
        free_h = [hi for hi, h in enumerate(h_ids) if h not in taken]
        for r, c in assign(iou[np.ix_(free_g, free_h)], MATCH_IOU):
            g, h = g_ids[free_g[r]], h_ids[free_h[c]]
            if g in last and last[g] != h:
                switches += 1
            matched[g] = h
        for g, h in matched.items():
            last[g] = h
        previous = matched
        matches += len(matched)
        misses += len(g_ids) - len(matched)
        fps += len(h_ids) - len(matched)
    idtp = _best_identity(together)
    gt_ids = len({g for boxes in gt.values() for g in boxes})
    return Scores(n_gt, n_hyp, matches, misses, fps, switches, idtp, gt_ids)


def _best_identity(together: Mapping[tuple[int, int], int]) -> int:
    """Frames matched under the one-to-one ground-truth id -> track id mapping that maximises them."""
    if not together:
        return 0
    g_ids = sorted({g for g, _ in together})
    h_ids = sorted({h for _, h in together})
    counts = np.zeros((len(g_ids), len(h_ids)))
    for (g, h), n in together.items():
        counts[g_ids.index(g), h_ids.index(h)] = n
    best = counts / counts.max()
    return int(sum(counts[r, c] for r, c in assign(best, 1e-9)))


def detector_recall(gt: Mapping[int, Boxes], detections: Mapping[int, Iterable[tuple[float, float, float, float]]]) \
        -> float:
    """Share of ground-truth boxes a detection covers (IoU >= 0.5, one detection per box): the tracker's ceiling."""
    total = found = 0
    for frame, boxes in gt.items():
        dets = {i: box for i, box in enumerate(detections.get(frame, ()))}
        g_ids, _, iou = _pairs(boxes, dets)
        total += len(g_ids)
        found += len(assign(iou, MATCH_IOU))
    return found / total if total else math.nan
