"""Run-folder writers: traces and events as Parquet, written in row groups.

Formats (DESIGN.md, "Run folder"):

* ``traces.parquet`` — long format, one row per entity, quantity and sample time:
  ``time`` (timestamp[us, UTC]), ``entity`` (str), ``quantity`` (str), ``value``
  (float64), ``unit`` (str).
* ``events.parquet`` — ``time`` (timestamp[us, UTC]), ``source``, ``kind``, ``payload``
  (JSON text with sorted keys).

Rows are buffered in columns and written as one row group every ``chunk_rows`` rows, so
memory stays bounded on long runs. Events of one control step are sorted by
(time, source, kind, payload) before they are written, so that concurrent protocol
exchanges within a step cannot change the file: same scenario and seed, same bytes.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TRACE_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("entity", pa.string()),
        ("quantity", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
    ]
)

EVENT_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("payload", pa.string()),
    ]
)


class _ChunkedParquet:
    """Column buffers flushed to a Parquet file as row groups."""

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int) -> None:
        self._path = path
        self._schema = schema
        self._chunk_rows = chunk_rows
        self._columns: list[list[Any]] = [[] for _ in schema.names]
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            str(path),
            schema,
            compression="zstd",
            use_dictionary=["entity", "quantity", "unit", "source", "kind"],
            write_statistics=True,
        )
        self.rows_written = 0

    def _append_row(self, row: tuple[Any, ...]) -> None:
        for column, value in zip(self._columns, row, strict=True):
            column.append(value)
        if len(self._columns[0]) >= self._chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows as one row group."""
        if not self._columns[0] or self._writer is None:
            return
        table = pa.Table.from_arrays(
            [pa.array(col, type=field.type) for col, field in zip(
                self._columns, self._schema, strict=True)],
            schema=self._schema,
        )
        self._writer.write_table(table)
        self.rows_written += table.num_rows
        self._columns = [[] for _ in self._schema.names]

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TraceWriter(_ChunkedParquet):
    """Writer of ``traces.parquet``."""

    def __init__(self, path: Path, chunk_rows: int = 200_000) -> None:
        super().__init__(path, TRACE_SCHEMA, chunk_rows)

    def add(self, time: datetime, entity: str, quantity: str, value: float, unit: str) -> None:
        """Add one sample; ``time`` tz-aware UTC, ``value`` in ``unit``."""
        self._append_row((time, entity, quantity, float(value), unit))

    def add_many(self, time: datetime, rows: list[tuple[str, str, float, str]]) -> None:
        """Add ``(entity, quantity, value, unit)`` samples taken at ``time``."""
        for entity, quantity, value, unit in rows:
            self._append_row((time, entity, quantity, float(value), unit))


class EventWriter(_ChunkedParquet):
    """Writer of ``events.parquet`` that orders each step's events deterministically."""

    def __init__(self, path: Path, chunk_rows: int = 50_000) -> None:
        super().__init__(path, EVENT_SCHEMA, chunk_rows)
        self._pending: list[tuple[datetime, str, str, str]] = []
        self._aliases: list[tuple[str, str]] = []

    def alias(self, actual: str, stable: str) -> None:
        """Write ``stable`` wherever a payload holds ``actual``.

        Used for what differs from run to run but means the same, such as the CSMS's
        ephemeral loopback URL, so that events of the same scenario and seed are equal.
        """
        self._aliases.append((actual, stable))

    def sink(self, time: datetime, source: str, kind: str, payload: dict[str, Any]) -> None:
        """Event sink for devices and controllers: ``(time, source, kind, payload)``."""
        text = json.dumps(payload, sort_keys=True, default=str)
        for actual, stable in self._aliases:
            text = text.replace(actual, stable)
        self._pending.append((time, source, kind, text))

    def commit_step(self) -> list[tuple[datetime, str, str, str]]:
        """Sort the events gathered since the last call, write them, and return them."""
        pending = sorted(self._pending)
        self._pending = []
        for row in pending:
            self._append_row(row)
        return pending

    def close(self) -> None:
        """Write any pending events and close the file."""
        self.commit_step()
        super().close()
