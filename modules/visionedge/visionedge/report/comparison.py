"""The comparison view: `visionedge compare --report`, two models on the same frames, side by side."""

from __future__ import annotations

import base64
import heapq
import html
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from visionedge.compare import Figures, FrameComparison, disagreement
from visionedge.errors import ConfigError
from visionedge.frame import Frame, Inference
from visionedge.report.html import page, plot, table
from visionedge.report.thumbs import items_of, thumbnail
from visionedge.tasks import task_of

DRIFT_LABELS = 15
AGREEMENT_POINTS = 400


@dataclass(frozen=True, slots=True)
class Pair:
    """The two models' results on one frame, drawn, for a frame that may be among the worst."""

    active: bytes | None
    candidate: bytes | None


class ComparisonReport:
    """Collects, frame by frame, what the page needs beyond the figures: pictures of the worst frames, the
    agreement along the input and each model's label counts."""

    def __init__(self, worst_kept: int) -> None:
        self.worst_kept = worst_kept
        self._heap: list[tuple[float, int, tuple[str, int]]] = []
        self._pairs: dict[tuple[str, int], Pair] = {}
        self._order = 0
        self.agreement: list[float] = []
        self.counts: tuple[Counter[str], Counter[str]] = (Counter(), Counter())

    def offer(self, result: FrameComparison, frame: Frame, active: Inference, candidate: Inference) -> None:
        """Fold one compared frame in; pictures are drawn only for frames ranked among the worst so far."""
        self._order += 1
        if result.agreement is not None:
            self.agreement.append(result.agreement)
        for counts, inference in zip(self.counts, (active, candidate), strict=True):
            counts.update(task_of(inference.task).counted_labels(inference.labels()))
        key = disagreement(result)  # the same ranking as Figures.worst, so the same frames are kept
        if key is None:
            return
        entry = (key, -self._order, (result.source_id, result.frame))
        if len(self._heap) < self.worst_kept:
            heapq.heappush(self._heap, entry)
        elif key > self._heap[0][0]:
            evicted = heapq.heapreplace(self._heap, entry)
            self._pairs.pop(evicted[2], None)
        else:
            return
        self._pairs[entry[2]] = Pair(thumbnail(frame.image, items_of(active)),
                                     thumbnail(frame.image, items_of(candidate)))

    def write(self, path: Path, figures: Figures, title: str) -> None:
        """The page: figures, per-label counts of each model, agreement along the input, worst frames side by side."""
        sections = [f"<h2>Figures</h2>{_figures_table(figures)}"]
        if figures.undefined:
            sections.append(f'<p class="note" id="undefined">Agreement is undefined: {html.escape(figures.undefined)}. '
                            "Only latency and health can judge this candidate.</p>")
        sections.append(f"<h2>Labels, counted by each model</h2>{self._counts_chart(figures)}")
        if self.agreement:
            sections.append(f"<h2>Agreement along the input</h2>{self._agreement_chart(figures)}")
        sections.append(f"<h2>Where they disagree most</h2>{self._worst(figures)}")
        try:
            path.write_text(page(title, "".join(sections)), encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot write {path}: {err.strerror}") from err

    def _counts_chart(self, figures: Figures) -> str:
        labels = sorted(set(self.counts[0]) | set(self.counts[1]),
                        key=lambda lb: (-abs(self.counts[1][lb] - self.counts[0][lb]), lb))[:DRIFT_LABELS]
        if not labels:
            return '<p class="muted">Neither model reported a label.</p>'
        what = task_of(figures.active.task).counted
        fig = go.Figure([
            go.Bar(name=f"active {figures.active.name} {figures.active.version}", y=labels[::-1],
                   x=[self.counts[0][lb] for lb in labels[::-1]], orientation="h", marker_color="#3b7dd8"),
            go.Bar(name=f"candidate {figures.candidate.name} {figures.candidate.version}", y=labels[::-1],
                   x=[self.counts[1][lb] for lb in labels[::-1]], orientation="h", marker_color="#e8833a"),
        ])
        fig.update_layout(barmode="group", height=140 + 40 * len(labels), xaxis_title=what,
                          title=f"Largest differences first ({what})")
        return plot(fig, "counts")

    def _agreement_chart(self, figures: Figures) -> str:
        values = np.asarray(self.agreement)
        chunks = np.array_split(values, min(AGREEMENT_POINTS, len(values)))
        x = [int(sum(len(c) for c in chunks[:i])) for i in range(len(chunks))]
        fig = go.Figure(go.Scatter(x=x, y=[float(c.mean()) for c in chunks], mode="lines", line_color="#3b7dd8"))
        what = task_of(figures.active.task).measure
        fig.update_layout(height=300, yaxis_range=[-0.02, 1.02], xaxis_title="compared frame",
                          yaxis_title=what, title=f"Per-frame {what}, averaged over {len(values) // len(chunks)}+ "
                          "frames a point")
        return plot(fig, "agreement")

    def _worst(self, figures: Figures) -> str:
        if not figures.worst:
            return '<p class="muted">No frame where they disagree.</p>'
        rows = []
        for f in figures.worst:
            pair = self._pairs.get((f.source_id, f.frame))
            cells = "".join(
                f'<figure class="side"><img alt="{side}" src="data:image/jpeg;base64,{base64.b64encode(img).decode()}">'
                f"<figcaption>{side}: {html.escape('; '.join(labels) or 'nothing')}</figcaption></figure>"
                for side, img, labels in (("active", pair.active if pair else None, f.active_labels),
                                          ("candidate", pair.candidate if pair else None, f.candidate_labels))
                if img is not None)
            overlap = f", top-5 overlap {f.overlap:.2f}" if f.overlap is not None else ""
            head = (f"<h3>{html.escape(f.source_id)} frame {f.frame}: agreement "
                    f"{'n/a' if f.agreement is None else f'{f.agreement:.2f}'}{overlap}</h3>")
            rows.append(head + (f'<div class="pair">{cells}</div>' if cells else ""))
        return "".join(rows)


def _figures_table(figures: Figures) -> str:
    a, c = figures.active, figures.candidate

    def num(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    what = task_of(a.task).measure_long
    return table(["", "active", "candidate"], [
        ["model", f"{a.name} {a.version}", f"{c.name} {c.version}"],
        ["task", a.task, c.task],
        ["frames compared", str(figures.frames), ""],
        [what, num(figures.agreement) if figures.agreement is not None else f"undefined: {figures.undefined}", ""],
        ["top-5 overlap", num(figures.top5_overlap), ""],
        ["mean top confidence", num(figures.active_confidence), num(figures.candidate_confidence)],
        ["latency p50", f"{num(figures.active_p50_ms, 1)} ms",
         f"{num(figures.candidate_p50_ms, 1)} ms ({num(figures.latency_ratio_p50, 2)}x)"],
        ["latency p95", f"{num(figures.active_p95_ms, 1)} ms",
         f"{num(figures.candidate_p95_ms, 1)} ms ({num(figures.latency_ratio, 2)}x)"],
    ])
