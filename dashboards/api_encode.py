"""Encoders of the read API: trace and event frames as JSON, CSV or Parquet bytes.

JSON is written with orjson straight from numpy arrays (times as RFC 3339 UTC strings
ending in ``Z``, NaN as ``null``), which keeps a few hundred thousand rows in the tens of
milliseconds. CSV is streamed in record batches (times ISO 8601 with ``Z``); Parquet has
the run folder's own schema (``twin.recorder``), so a downloaded file reads like the run's
``traces.parquet`` or ``events.parquet``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

#: ``lttb(x, y, n_out) -> (x_out, y_out)``: largest-triangle-three-buckets downsampling.
Downsampler = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

#: orjson options: numpy arrays natively, naive datetime64 taken as UTC and written ``Z``.
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z

#: Rows per CSV chunk of a streamed download.
CSV_CHUNK_ROWS = 100_000

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


def find_lttb() -> Downsampler | None:
    """``twin.compare.lttb`` when this build has it, else None."""
    try:
        from twin.compare import lttb
    except ImportError:
        return None
    found: Downsampler = lttb
    return found


@dataclass
class Series:
    """One series of a trace answer: sample times (datetime64[us], UTC) and values."""

    entity: str
    quantity: str
    unit: str
    time: np.ndarray
    value: np.ndarray
    source_rows: int


def _naive_utc(times: pd.Series) -> np.ndarray:
    """datetime64[us] numpy array (UTC, no zone) of a tz-aware time column."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    out: np.ndarray = times.to_numpy(dtype="datetime64[us]")
    return out


def split_series(frame: pd.DataFrame) -> list[Series]:
    """The rows of a long trace frame as series, sorted by (entity, quantity)."""
    if frame.empty:
        return []
    groups = frame.groupby(["entity", "quantity"], sort=True, observed=True).indices
    times = _naive_utc(frame["time"])
    values = frame["value"].to_numpy(dtype="float64")
    units = frame["unit"].to_numpy()
    out = []
    for key, idx in groups.items():
        entity, quantity = key if isinstance(key, tuple) else (key, "")
        out.append(
            Series(
                entity=str(entity),
                quantity=str(quantity),
                unit=str(units[idx[0]]),
                time=times[idx],
                value=values[idx],
                source_rows=len(idx),
            )
        )
    return out


def downsample(series: list[Series], max_points: int, lttb: Downsampler) -> bool:
    """Cut every series longer than ``max_points`` with ``lttb`` (in place).

    NaN samples are left out of a downsampled series (LTTB needs numbers). Returns
    whether any series was cut.
    """
    cut = False
    for s in series:
        if len(s.time) <= max_points:
            continue
        keep = ~np.isnan(s.value)
        x = s.time[keep].astype("int64").astype("float64")  # µs since the epoch, exact
        y = s.value[keep]
        if len(x) > max_points:
            x_out, y_out = lttb(x, y, max_points)
            x = np.asarray(x_out, dtype="float64")
            y = np.asarray(y_out, dtype="float64")
        s.time = np.rint(x).astype("int64").astype("datetime64[us]")
        s.value = y
        cut = True
    return cut


def series_frame(series: list[Series]) -> pd.DataFrame:
    """A long trace frame (time, entity, quantity, value, unit) of ``series``, in order."""
    if not series:
        return pd.DataFrame(
            {
                "time": pd.Series([], dtype="datetime64[us, UTC]"),
                "entity": pd.Series([], dtype=object),
                "quantity": pd.Series([], dtype=object),
                "value": pd.Series([], dtype="float64"),
                "unit": pd.Series([], dtype=object),
            }
        )
    lengths = [len(s.time) for s in series]
    return pd.DataFrame(
        {
            "time": pd.to_datetime(np.concatenate([s.time for s in series]), utc=True),
            "entity": np.repeat([s.entity for s in series], lengths),
            "quantity": np.repeat([s.quantity for s in series], lengths),
            "value": np.concatenate([s.value for s in series]),
            "unit": np.repeat([s.unit for s in series], lengths),
        }
    )


def traces_json(
    frame: pd.DataFrame,
    series: list[Series] | None,
    *,
    layout: str,
    header: dict[str, Any],
) -> bytes:
    """JSON body of a trace answer (see ``dashboards.api_models.TracesBody``).

    ``series`` is the per-series split when it was made (per-series layout or
    downsampling), else None and ``frame`` is encoded as it is (recorded order).
    """
    body: dict[str, Any] = dict(header)
    if layout == "series":
        parts = series if series is not None else split_series(frame)
        body["rows"] = sum(len(s.time) for s in parts)
        body["series"] = [
            {
                "entity": s.entity,
                "quantity": s.quantity,
                "unit": s.unit,
                "rows": len(s.time),
                "source_rows": s.source_rows,
                "time": s.time,
                "value": s.value,
            }
            for s in parts
        ]
    else:
        rows = series_frame(series) if series is not None else frame
        body["rows"] = len(rows)
        body["columns"] = {
            "time": _naive_utc(rows["time"]),
            "entity": _texts(rows["entity"]),
            "quantity": _texts(rows["quantity"]),
            "value": rows["value"].to_numpy(dtype="float64"),
            "unit": _texts(rows["unit"]),
        }
    return orjson.dumps(body, option=_JSON_OPTS)


def _texts(column: pd.Series) -> list[str]:
    """A text column as a list of str (via its few distinct values: faster)."""
    codes, uniques = pd.factorize(column)
    names = np.asarray([str(u) for u in uniques], dtype=object)
    out: list[str] = names[codes].tolist() if len(names) else [""] * len(codes)
    return out


def events_json(frame: pd.DataFrame, header: dict[str, Any]) -> bytes:
    """JSON body of an event answer; payloads are parsed back into JSON values."""
    events = [
        {"time": t, "source": src, "kind": kind, "payload": _payload(text)}
        for t, src, kind, text in zip(
            rfc3339(_naive_utc(frame["time"])),
            frame["source"].astype(str).tolist(),
            frame["kind"].astype(str).tolist(),
            frame["payload"].astype(str).tolist(),
            strict=True,
        )
    ]
    body = dict(header)
    body["count"] = len(events)
    body["events"] = events
    return orjson.dumps(body, option=_JSON_OPTS)


def rfc3339(times: np.ndarray) -> list[str]:
    """RFC 3339 UTC strings (``...Z``) of datetime64 times; fractions only when needed."""
    micros = times.astype("datetime64[us]")
    whole = bool((micros.astype("int64") % 1_000_000 == 0).all())
    text = np.datetime_as_string(micros, unit="s" if whole else "us")
    return [f"{t}Z" for t in text.tolist()]


def _payload(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text)  # NaN/Infinity written by json.dumps
        except ValueError:
            return text


def to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table with the run folder's ``schema``."""
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def csv_chunks(table: pa.Table) -> Iterator[bytes]:
    """CSV text of ``table`` in chunks: a header line, then rows (times ISO 8601 ``Z``)."""
    if "time" in table.column_names:
        i = table.column_names.index("time")
        table = table.set_column(i, "time", _iso_text(table.column("time")))
    options = pa_csv.WriteOptions(include_header=True)
    if table.num_rows == 0:
        sink = io.BytesIO()
        pa_csv.write_csv(table, sink, options)
        yield sink.getvalue()
        return
    for batch in table.to_batches(max_chunksize=CSV_CHUNK_ROWS):
        sink = io.BytesIO()
        pa_csv.write_csv(batch, sink, options)
        yield sink.getvalue()
        options = pa_csv.WriteOptions(include_header=False)


def _iso_text(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601 UTC text (``2019-09-10T14:01:00.000000Z``) of a UTC timestamp column.

    Cast as naive UTC: Arrow's zone-aware cast to text is about 20 times slower.
    """
    unit = times.type.unit if pa.types.is_timestamp(times.type) else "us"
    text = pc.cast(times.cast(pa.timestamp(unit)), pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    joined: pa.ChunkedArray = pc.binary_join_element_wise(text, "Z", "")
    return joined


def parquet_bytes(table: pa.Table) -> bytes:
    """Parquet file of ``table`` (zstd), as bytes."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def download_name(run_id: str, what: str, ext: str) -> str:
    """Safe file name for a download: ``<run id>.<what>.<ext>``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"
    return f"{safe}.{what}.{ext}"
