"""The report page: one HTML file with plotly.js and every picture inlined, so it opens offline anywhere."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from visionedge.report.day import DAY, HOUR, MINUTE, DayStats, KeyFrames, Moment
from visionedge.report.records import BadLines
from visionedge.tasks import TASKS

HEAT_LABELS = 6
TABLE_LABELS = 50
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
BIN_NAMES = {1: "second", MINUTE: "minute", HOUR: "hour", DAY: "day"}
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1rem 2rem;
color:#1d2733}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #d8dde3;padding-bottom:.3rem}
table{border-collapse:collapse;font-size:.9rem}td,th{padding:.25rem .7rem;border-bottom:1px solid #eceff2;
text-align:left}th{background:#f5f7f9}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff7e0;border-left:4px solid #e8b400;padding:.5rem 1rem;margin:1rem 0}
.frames{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
figure{margin:0;border:1px solid #e1e5ea;border-radius:6px;padding:.4rem;background:#fafbfc}
figure img{width:100%;display:block}.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
figcaption{font-size:.8rem;margin-top:.3rem}.muted{color:#66707a}
"""


@dataclass(frozen=True)
class ReportInfo:
    """What the records alone do not say: where they came from and how the run went."""

    title: str
    inputs: tuple[str, ...]
    providers: tuple[str, ...] = ()
    throughput_fps: float | None = None
    frames_available: bool = False
    bad: BadLines = field(default_factory=BadLines)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * HOUR:
        return f"{seconds / MINUTE:.1f} min"
    return f"{seconds / HOUR:.1f} h"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{cell}</td>' if isinstance(cell, int | float) else f"<td>{html.escape(str(cell))}</td>"
            for cell in row) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(template="plotly_white", margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return str(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG))


def summary(stats: DayStats, info: ReportInfo) -> str:
    """Sources, time span, frames, models, providers and throughput."""
    span = stats.timeline.t_max - stats.timeline.t_min if stats.frames else 0.0
    models = ", ".join(f"{name} {version} ({n} frames)" for (name, version), n in stats.models.most_common())
    sources = ", ".join(f"{name or '(unnamed)'} ({n} frames)" for name, n in stats.sources.most_common())
    p50, p95 = stats.latency_percentile(50), stats.latency_percentile(95)
    rows: list[list[Any]] = [
        ["Inputs", ", ".join(info.inputs)],
        ["Sources", sources or "none"],
        ["Time span", f"{_when(stats.timeline.t_min)} to {_when(stats.timeline.t_max)} ({_duration(span)})"
         if stats.frames else "no records"],
        ["Frames", stats.frames],
        ["Models", models or "none"],
        ["Execution providers", ", ".join(info.providers) or "not recorded in result files"],
        ["Inference time p50 / p95", f"{p50:.1f} ms / {p95:.1f} ms" if p50 is not None and p95 is not None else "-"],
    ]
    if stats.reused:
        rows.insert(4, ["Frames reusing an unchanged scene's result", stats.reused])
    if info.throughput_fps is not None:
        rows.append(["Throughput", f"{info.throughput_fps:.1f} frames/s (measured by this run)"])
    elif span > 0:
        rows.append(["Frame rate", f"{stats.frames / span:.2f} frames/s (records over the time span)"])
    return table(["", ""], rows)


def timeline(stats: DayStats) -> str:
    """Mean count per frame of the top labels per time bin, with frames analysed per bin below it."""
    width = stats.timeline.width
    keys = sorted(stats.timeline.bins)
    labels = stats.top_labels(8)
    x: list[datetime | None] = []
    frames: list[int | None] = []
    series: dict[str, list[float | None]] = {label: [] for label in labels}
    for i, key in enumerate(keys):
        if i and key != keys[i - 1] + 1:  # a gap (no records): break the lines instead of drawing across it
            x.append(None)
            frames.append(None)
            for values in series.values():
                values.append(None)
        entry = stats.timeline.bins[key]
        x.append(datetime.fromtimestamp(key * width, UTC))
        frames.append(entry.frames)
        for label in labels:
            series[label].append(entry.counts.get(label, 0) / entry.frames)
    # the task of most frames (on a tie, the one that counts objects) names the axis
    task = max(TASKS.values(), key=lambda t: (stats.tasks.get(t.name, 0), t.counts_objects))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.06)
    for label in labels:
        fig.add_trace(go.Scatter(x=x, y=series[label], name=label, mode="lines+markers" if len(keys) < 60 else "lines",
                                 connectgaps=False), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=frames, name="frames", marker_color="#9aa5b1", showlegend=False), row=2, col=1)
    fig.update_yaxes(title_text=task.per_frame, row=1, col=1)
    fig.update_yaxes(title_text="frames", row=2, col=1)
    fig.update_layout(height=460, title=f"Counts per label, per {BIN_NAMES[width]} (UTC)")
    return plot(fig, "timeline")


def label_section(stats: DayStats) -> str:
    """Totals as a bar chart and a table: totals, frames seen, peak and when, first and last seen."""
    labels = stats.top_labels(TABLE_LABELS)
    shown = labels[:20][::-1]
    fig = go.Figure(go.Bar(x=[stats.labels[label].total for label in shown], y=shown, orientation="h",
                           marker_color="#3b7dd8"))
    fig.update_layout(height=120 + 22 * len(shown), title="Label totals", xaxis_title="count")
    rows: list[list[Any]] = []
    for label in labels:
        s = stats.labels[label]
        row: list[Any] = [label, s.total, s.frames, f"{100 * s.frames / stats.frames:.1f} %", s.peak,
                          _when(s.peak_at), _when(s.first_at), _when(s.last_at)]
        rows.append(row)
    more = len(stats.labels) - len(labels)
    note = f'<p class="muted">and {more} more labels</p>' if more > 0 else ""
    return plot(fig, "totals") + table(
        ["label", "total", "frames seen", "of frames", "peak in one frame", "peak at", "first seen", "last seen"],
        rows) + note


def heat_section(stats: DayStats) -> str:
    """Where in the frame each of the busiest labels occurs: a heat map of box centres."""
    labels = [label for label in stats.top_labels(len(stats.labels)) if label in stats.heat][:HEAT_LABELS]
    if not labels:
        return '<p class="muted">No boxes: the records come from a classifier.</p>'
    cols = min(3, len(labels))
    rows = (len(labels) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=labels, horizontal_spacing=0.05, vertical_spacing=0.1)
    for i, label in enumerate(labels):
        grid = stats.heat[label]
        # Log colours: a door used all day would otherwise hide every other place the label was seen.
        fig.add_trace(go.Heatmap(z=np.log1p(grid).tolist(), customdata=grid.tolist(), colorscale="Inferno",
                                 showscale=False, hovertemplate="%{customdata} boxes<extra>" + html.escape(label)
                                 + "</extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=260 * rows, title="Box centres in the frame (top of the frame at the top)")
    return plot(fig, "heatmaps")


def _caption(moment: Moment) -> str:
    row = moment.row
    counts = ", ".join(f"{label} {n}" for label, n in sorted(row.counts.items(), key=lambda kv: -kv[1])) or "nothing"
    return (f"<b>{html.escape(moment.why)}</b><br>{html.escape(row.source_id)} frame {row.frame_index}, "
            f"{html.escape(_when(row.timestamp))}<br>{html.escape(counts)}")


def key_frames(keys: KeyFrames, info: ReportInfo) -> str:
    """Pictures with boxes when the frames were at hand; otherwise the same moments as a table, and why."""
    parts = []
    if not info.frames_available:
        parts.append('<p class="note">These moments have no pictures: a report made from result files (JSONL) does '
                     "not have the frames. <code>visionedge analyze PATH --report report.html</code> includes them."
                     "</p>")
    for title, moments in keys.moments():
        if not moments:
            continue
        parts.append(f"<h3>{html.escape(title)}</h3>")
        pictured = [m for m in moments if m.thumbnail is not None]
        if info.frames_available and pictured:
            figures = "".join(
                f'<figure class="keyframe"><img alt="{html.escape(m.why)}" '
                f'src="data:image/jpeg;base64,{base64.b64encode(m.thumbnail or b"").decode()}">'
                f"<figcaption>{_caption(m)}</figcaption></figure>" for m in pictured)
            parts.append(f'<div class="frames">{figures}</div>')
        else:
            parts.append(table(["moment", "source", "frame", "time", "counts"], [
                [m.why, m.row.source_id, m.row.frame_index, _when(m.row.timestamp),
                 ", ".join(f"{k} {v}" for k, v in m.row.counts.items()) or "nothing"] for m in moments]))
    return "".join(parts) or '<p class="muted">No moments stand out: nothing was seen.</p>'


def render(stats: DayStats, keys: KeyFrames, info: ReportInfo) -> str:
    """The whole day's page."""
    sections = [f"<h2>Summary</h2>{summary(stats, info)}"]
    if info.bad.count:
        sections.append(f'<p class="note" id="bad-lines">{html.escape(info.bad.describe())}</p>')
    if stats.frames:
        sections += [
            f"<h2>Over time</h2>{timeline(stats)}",
            f"<h2>Labels</h2>{label_section(stats)}",
            f"<h2>Where in the frame</h2>{heat_section(stats)}",
            f"<h2>Key frames</h2>{key_frames(keys, info)}",
        ]
    else:
        sections.append('<p class="note" id="empty">The input holds no result records: nothing to show.</p>')
    return page(info.title, "".join(sections))


def page(title: str, body: str) -> str:
    """A complete HTML document: plotly.js inlined once, and a policy that forbids any request off the page."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
            f"style-src 'unsafe-inline'; script-src 'unsafe-inline' 'unsafe-eval'\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f"<h1>{html.escape(title)}</h1><p class=\"muted\">visionedge report, generated {generated}</p>"
            f"{body}</body></html>")
