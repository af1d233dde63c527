"""Flat exports of result records: CSV, and Parquet when its optional dependency is installed."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from visionedge.errors import ConfigError
from visionedge.report.records import Row
from visionedge.tasks import task_of

EXPORT_SCHEMA = "1"
"""Version of the columns below; it changes with any incompatible change to them."""
COLUMNS = ("export_schema", "source_id", "frame_index", "timestamp", "model_name", "model_version", "inference_ms",
           "frame_width", "frame_height", "reused", "kind", "rank", "label", "confidence", "x1", "y1", "x2", "y2")
PARQUET_BATCH = 50_000


def rows_of(row: Row) -> list[tuple[Any, ...]]:
    """One tuple per item (timestamp in epoch ms); a frame with none gives one `none` row, so every frame counts."""
    head = (EXPORT_SCHEMA, row.source_id, row.frame_index, round(row.timestamp * 1000), row.model_name,
            row.model_version, row.inference_ms, row.frame_size[0], row.frame_size[1], row.reused)
    if not row.items:
        return [(*head, "none", None, None, None, None, None, None, None)]
    kind = task_of(row.task).item_kind
    return [(*head, kind, rank, item.label, item.confidence, *(item.box or (None, None, None, None)))
            for rank, item in enumerate(row.items, start=1)]


class Exporter(Protocol):
    """Takes rows one record at a time and finishes its file at close."""

    def add(self, row: Row) -> None:
        """Write the record's rows."""

    def close(self) -> None:
        """Flush and close the file."""


class CsvExporter:
    """Comma-separated, a header line, UTF-8; empty cells where a field does not apply."""

    def __init__(self, path: Path) -> None:
        try:
            self._stream = path.open("w", encoding="utf-8", newline="")
        except OSError as err:
            raise ConfigError(f"cannot write {path}: {err.strerror}") from err
        self._writer = csv.writer(self._stream)
        self._writer.writerow(COLUMNS)

    def add(self, row: Row) -> None:
        """Write the record's rows."""
        for values in rows_of(row):
            stamp = datetime.fromtimestamp(values[3] / 1000, UTC).isoformat(timespec="milliseconds")
            self._writer.writerow((*values[:3], stamp.replace("+00:00", "Z"), *values[4:]))

    def close(self) -> None:
        """Close the file."""
        self._stream.close()


class ParquetExporter:
    """Typed columns in row groups of PARQUET_BATCH rows, so memory stays bounded however long the input."""

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ConfigError("--parquet needs pyarrow: pip install 'visionedge[parquet]'") from err
        self._pa = pa
        self._schema = pa.schema([
            ("export_schema", pa.string()), ("source_id", pa.string()), ("frame_index", pa.int64()),
            ("timestamp", pa.timestamp("ms", tz="UTC")), ("model_name", pa.string()), ("model_version", pa.string()),
            ("inference_ms", pa.float64()), ("frame_width", pa.int32()), ("frame_height", pa.int32()),
            ("reused", pa.bool_()), ("kind", pa.string()), ("rank", pa.int32()), ("label", pa.string()),
            ("confidence", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64()), ("x2", pa.float64()),
            ("y2", pa.float64()),
        ], metadata={"visionedge.export_schema": EXPORT_SCHEMA})
        try:
            self._writer = pq.ParquetWriter(str(path), self._schema)
        except OSError as err:
            raise ConfigError(f"cannot write {path}: {err}") from err
        self._pending: list[tuple[Any, ...]] = []

    def add(self, row: Row) -> None:
        """Buffer the record's rows; a full batch becomes a row group."""
        self._pending += rows_of(row)
        if len(self._pending) >= PARQUET_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        columns = list(zip(*self._pending, strict=True))
        arrays = [self._pa.array(values, type=kind.type) for values, kind in zip(columns, self._schema, strict=True)]
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))
        self._pending = []

    def close(self) -> None:
        """Write the last row group and the footer."""
        self._flush()
        self._writer.close()
