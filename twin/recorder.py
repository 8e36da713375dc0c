"""Run-folder writers: traces and events as Parquet, written in row groups.

Formats (DESIGN.md, "Run folder"):

* ``traces.parquet`` — long format, one row per entity, quantity and sample time:
  ``time`` (timestamp[us, UTC]), ``entity`` (str), ``quantity`` (str), ``value``
  (float64), ``unit`` (str).
* ``events.parquet`` — ``time`` (timestamp[us, UTC]), ``source``, ``kind``, ``payload``
  (JSON text with sorted keys).

While the run is written, rows are buffered in columns and flushed about once a second
of wall time (or every ``chunk_rows`` rows) as part files that a live reader can read;
on close the parts are merged into the final file. Memory stays bounded on long runs.
Events of one control step are sorted by (time, source, kind, payload) before they are
written, so that concurrent protocol exchanges within a step cannot change the file:
same scenario and seed, same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import time as _time
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


#: Rows per row group of the final files (fixed, so that equal content gives equal bytes).
ROW_GROUP_ROWS = 250_000


def parts_dir(path: Path) -> Path:
    """Folder of the part files that stand for ``path`` while a run is being written."""
    return path.with_name(path.name + ".parts")


class _ChunkedParquet:
    """Column buffers written as part files while running, merged into one file on close.

    While a run is written, ``<name>.parquet.parts/part-NNNNNN.parquet`` holds complete,
    atomically renamed Parquet files, one per flush, so a live reader (the dashboard)
    sees every flushed row. :meth:`close` merges the parts in order into ``<name>.parquet``
    with fixed row groups and removes the folder.
    """

    def __init__(
        self, path: Path, schema: pa.Schema, chunk_rows: int, flush_interval_s: float
    ) -> None:
        self._path = path
        self._parts = parts_dir(path)
        self._parts.mkdir(parents=True, exist_ok=True)
        self._schema = schema
        self._chunk_rows = chunk_rows
        self._flush_interval_s = flush_interval_s
        self._last_flush = _time.monotonic()
        self._columns: list[list[Any]] = [[] for _ in schema.names]
        self._n_parts = 0
        self._closed = False
        self.rows_written = 0

    def _append_row(self, row: tuple[Any, ...]) -> None:
        for column, value in zip(self._columns, row, strict=True):
            column.append(value)
        if len(self._columns[0]) >= self._chunk_rows:
            self.flush()

    def maybe_flush(self) -> None:
        """Flush when ``flush_interval_s`` of wall time has passed since the last flush.

        Called once per control step by the runtime, so that a live reader lags the run
        by about that interval whatever the run's speed.
        """
        if _time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as the next part file (atomic rename)."""
        self._last_flush = _time.monotonic()
        if not self._columns[0] or self._closed:
            return
        table = pa.Table.from_arrays(
            [
                pa.array(col, type=field.type)
                for col, field in zip(self._columns, self._schema, strict=True)
            ],
            schema=self._schema,
        )
        self._n_parts += 1
        final = self._parts / f"part-{self._n_parts:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
        self.rows_written += table.num_rows
        self._columns = [[] for _ in self._schema.names]

    def close(self) -> None:
        """Flush, merge the parts into the final file and remove them (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        tmp = self._path.with_suffix(".parquet.tmp")
        with pq.ParquetWriter(
            str(tmp),
            self._schema,
            compression="zstd",
            use_dictionary=["entity", "quantity", "unit", "source", "kind"],
            write_statistics=True,
        ) as writer:
            pending: list[pa.Table] = []
            pending_rows = 0
            for part in sorted(self._parts.glob("part-*.parquet")):
                table = pq.read_table(part, schema=self._schema)
                pending.append(table)
                pending_rows += table.num_rows
                while pending_rows >= ROW_GROUP_ROWS:
                    merged = pa.concat_tables(pending)
                    writer.write_table(merged.slice(0, ROW_GROUP_ROWS))
                    pending = [merged.slice(ROW_GROUP_ROWS)]
                    pending_rows -= ROW_GROUP_ROWS
            if pending_rows or not self.rows_written:
                merged = (pa.concat_tables(pending) if pending
                          else self._schema.empty_table())
                writer.write_table(merged)
        os.replace(tmp, self._path)
        shutil.rmtree(self._parts)


class TraceWriter(_ChunkedParquet):
    """Writer of ``traces.parquet``."""

    def __init__(
        self, path: Path, chunk_rows: int = 200_000, flush_interval_s: float = 1.0
    ) -> None:
        super().__init__(path, TRACE_SCHEMA, chunk_rows, flush_interval_s)

    def add(self, time: datetime, entity: str, quantity: str, value: float, unit: str) -> None:
        """Add one sample; ``time`` tz-aware UTC, ``value`` in ``unit``."""
        self._append_row((time, entity, quantity, float(value), unit))

    def add_many(self, time: datetime, rows: list[tuple[str, str, float, str]]) -> None:
        """Add ``(entity, quantity, value, unit)`` samples taken at ``time``."""
        for entity, quantity, value, unit in rows:
            self._append_row((time, entity, quantity, float(value), unit))


class EventWriter(_ChunkedParquet):
    """Writer of ``events.parquet`` that orders each step's events deterministically."""

    def __init__(
        self, path: Path, chunk_rows: int = 50_000, flush_interval_s: float = 1.0
    ) -> None:
        super().__init__(path, EVENT_SCHEMA, chunk_rows, flush_interval_s)
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
