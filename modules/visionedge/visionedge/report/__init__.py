"""Offline analytics: a self-contained HTML report and flat exports, from JSONL results or live from `analyze`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionedge.errors import ConfigError
from visionedge.intake import refuse_overlap
from visionedge.report.day import DayStats, KeyFrames
from visionedge.report.export import CsvExporter, Exporter, ParquetExporter
from visionedge.report.records import BadLines, Row, read_rows, to_row
from visionedge.report.thumbs import thumbnail


@dataclass(frozen=True)
class Outputs:
    """Which files to write; at least one."""

    html: Path | None = None
    csv: Path | None = None
    parquet: Path | None = None
    title: str = "visionedge report"
    key_frames: int = 6

    def any(self) -> bool:
        """Whether anything is asked for."""
        return bool(self.html or self.csv or self.parquet)

    def paths(self) -> tuple[Path | None, ...]:
        """The files asked for (None where not)."""
        return self.html, self.csv, self.parquet


class ReportBuilder:
    """Takes records one at a time (with the frame when it is at hand) and writes the outputs at the end."""

    def __init__(self, outputs: Outputs, inputs: tuple[str, ...]) -> None:
        if outputs.html is not None:
            _check_plotly()
        self.outputs = outputs
        self.inputs = inputs
        self.stats = DayStats()
        self.keys = KeyFrames(k=outputs.key_frames)
        self.bad = BadLines()
        self.frames_seen = False
        self._exporters: list[Exporter] = []
        if outputs.csv is not None:
            self._exporters.append(CsvExporter(outputs.csv))
        if outputs.parquet is not None:
            self._exporters.append(ParquetExporter(outputs.parquet))

    def add_row(self, row: Row, image: np.ndarray | None = None) -> None:
        """Count one record; its frame, when given, can become a key-frame picture."""
        self.stats.add(row)
        maker: Callable[[Row], bytes | None] | None = None
        if image is not None and self.outputs.html is not None:
            self.frames_seen = True
            maker = lambda r: thumbnail(image, r.items)  # noqa: E731 - drawn only if the frame is kept
        self.keys.offer(row, maker)
        for exporter in self._exporters:
            exporter.add(row)

    def add_record(self, record: dict[str, Any], image: np.ndarray | None = None) -> None:
        """A record made by this process (`analyze --report`)."""
        try:
            row = to_row(record)
        except ValueError as err:
            self.bad.add(f"frame {record.get('frame_index')}", str(err))
            return
        self.add_row(row, image)

    def finish(self, providers: tuple[str, ...] = (), throughput_fps: float | None = None) -> list[Path]:
        """Close the exports and write the HTML; returns the files written."""
        for exporter in self._exporters:
            exporter.close()
        written = [p for p in (self.outputs.csv, self.outputs.parquet) if p is not None]
        if self.outputs.html is not None:
            from visionedge.report.html import ReportInfo, render

            info = ReportInfo(self.outputs.title, self.inputs, providers, throughput_fps, self.frames_seen, self.bad)
            page = render(self.stats, self.keys, info)
            try:
                self.outputs.html.write_text(page, encoding="utf-8")
            except OSError as err:
                raise ConfigError(f"cannot write {self.outputs.html}: {err.strerror}") from err
            written.insert(0, self.outputs.html)
        return written


def _check_plotly() -> None:
    try:
        import plotly  # noqa: F401
    except ImportError as err:
        raise ConfigError("the HTML report needs plotly: pip install 'visionedge[report]'") from err


def check_inputs(paths: list[Path], outputs: Outputs) -> None:
    """Every input is a regular file and no output is one of them, before any output is started."""
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: not a file")
    refuse_overlap(paths, outputs.paths())


def report_from_files(paths: list[Path], outputs: Outputs,
                      on_bytes: Callable[[int], None] | None = None) -> tuple[ReportBuilder, list[Path]]:
    """Stream JSONL result files into the outputs; bad lines are skipped and counted."""
    check_inputs(paths, outputs)
    builder = ReportBuilder(outputs, tuple(p.name for p in paths))
    for row in read_rows(paths, builder.bad, on_bytes):
        builder.add_row(row)
    return builder, builder.finish()


__all__ = ["Outputs", "ReportBuilder", "check_inputs", "report_from_files"]
