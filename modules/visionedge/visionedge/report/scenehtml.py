"""The report's scene section: crossings and occupancy over time, dwell per zone, and each source's picture with its
lines and zones drawn over the day's track trails."""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime

import numpy as np
import plotly.graph_objects as go

from visionedge.report.html import plot, table
from visionedge.report.scene import Bins, SceneStats, SourceScene
from visionedge.report.scenerecords import Shape

MAX_SERIES = 24
"""Line directions or zones drawn per chart: a legend beyond that is unreadable (the table still lists all)."""


def _series(bins: Bins, mean: bool) -> tuple[list[datetime], list[float]]:
    """Bin starts and values (sums, or means per sample)."""
    keys = sorted(bins.sums)
    values = [bins.sums[k] / bins.samples[k] if mean else bins.sums[k] for k in keys]
    return [datetime.fromtimestamp(k * bins.width, UTC) for k in keys], values


def _seconds(width: float) -> str:
    """A bin width in words."""
    return f"{width:g} s" if width < 120 else f"{width / 60:g} min" if width < 7200 else f"{width / 3600:g} h"


def crossings_chart(sid: str, source: SourceScene, index: int) -> str:
    """Crossings per bin for each line and direction."""
    fig = go.Figure()
    width = 1.0
    for line, direction in sorted(source.crossings)[:MAX_SERIES]:
        bins = source.crossings[line, direction]
        width = max(width, bins.width)
        x, y = _series(bins, mean=False)
        fig.add_trace(go.Bar(x=x, y=y, name=f"{line} {direction}"))
    fig.update_layout(height=320, barmode="group", title=f"{sid}: crossings per line and direction (per "
                      f"{_seconds(width)}, UTC)", yaxis_title="crossings")
    return plot(fig, f"scene-crossings-{index}")


def occupancy_chart(sid: str, source: SourceScene, index: int) -> str:
    """Mean occupancy per bin for each zone."""
    fig = go.Figure()
    for zone in sorted(source.occupancy)[:MAX_SERIES]:
        x, y = _series(source.occupancy[zone], mean=True)
        fig.add_trace(go.Scatter(x=x, y=y, name=zone, mode="lines", line_shape="hv"))
    fig.update_layout(height=300, title=f"{sid}: zone occupancy (mean tracks inside, UTC)", yaxis_title="tracks")
    return plot(fig, f"scene-occupancy-{index}")


def dwell_chart(sid: str, source: SourceScene, index: int) -> str:
    """The distribution of dwell times per zone."""
    fig = go.Figure()
    for zone in sorted(source.dwells)[:MAX_SERIES]:
        fig.add_trace(go.Box(x=source.dwells[zone], name=zone, boxpoints="outliers", orientation="h"))
    fig.update_layout(height=120 + 40 * min(len(source.dwells), MAX_SERIES), xaxis_title="seconds in the zone",
                      title=f"{sid}: how long tracks stayed (on leaving)", showlegend=False)
    return plot(fig, f"scene-dwell-{index}")


def _shape_trace(shape: Shape, width: int, height: int, closed: bool) -> go.Scatter:
    """A line or zone outline in pixel coordinates, named."""
    points = [*shape.points, shape.points[0]] if closed else list(shape.points)
    return go.Scatter(x=[p[0] * width for p in points], y=[p[1] * height for p in points], name=shape.name,
                      mode="lines+markers" if not closed else "lines", fill="toself" if closed else None,
                      opacity=0.8, line={"width": 3}, hoverinfo="name")


def picture(sid: str, source: SourceScene, index: int) -> str:
    """The source's frame (or a blank of its size) with the trails as a heat map and the lines and zones on top."""
    width, height = source.size
    rows, cols = source.trails.shape
    fig = go.Figure()
    if source.background is not None:
        fig.add_layout_image(source=f"data:image/jpeg;base64,{base64.b64encode(source.background).decode()}",
                             xref="x", yref="y", x=0, y=0, sizex=width, sizey=height, sizing="stretch", layer="below")
    trails = source.trails.astype(float)
    fig.add_trace(go.Heatmap(z=np.where(trails > 0, np.log1p(trails), np.nan).tolist(),
                             x=[(c + 0.5) * width / cols for c in range(cols)],
                             y=[(r + 0.5) * height / rows for r in range(rows)],
                             customdata=source.trails.tolist(), colorscale="Inferno", opacity=0.6, showscale=False,
                             hovertemplate="%{customdata} track points<extra>trails</extra>"))
    for zone in source.zones:
        fig.add_trace(_shape_trace(zone, width, height, closed=True))
    for line in source.lines:
        fig.add_trace(_shape_trace(line, width, height, closed=False))
        if line.directions:
            (x1, y1), (x2, y2) = line.points[0], line.points[-1]
            fig.add_annotation(x=(x1 + x2) / 2 * width, y=(y1 + y2) / 2 * height, showarrow=False,
                               text=html.escape(f"{line.name}: {' / '.join(line.directions)}"),
                               bgcolor="rgba(255,255,255,0.8)")
    fig.update_xaxes(range=[0, width], showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(range=[height, 0], showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x")
    fig.update_layout(height=min(700, 120 + round(560 * height / max(1, width))), title=f"{sid}: lines, zones and "
                      "the day's track trails", plot_bgcolor="#20242a" if source.background is None else None)
    return plot(fig, f"scene-picture-{index}")


def scene_section(scene: SceneStats) -> str:
    """Per source: totals, the picture and the charts that have data."""
    parts = []
    for index, (sid, source) in enumerate(sorted(scene.sources.items())):
        parts.append(f"<h3>{html.escape(sid or '(unnamed)')}</h3>")
        if source.totals:
            parts.append(table(["line", "direction", "crossings"],
                               [[line, direction, n] for (line, direction), n in sorted(source.totals.items())]))
        parts.append(picture(sid, source, index))
        if source.crossings:
            parts.append(crossings_chart(sid, source, index))
        if source.occupancy:
            parts.append(occupancy_chart(sid, source, index))
        if source.dwells:
            parts.append(dwell_chart(sid, source, index))
    return "".join(parts)
