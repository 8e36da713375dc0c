"""What the run view plots, read from a run folder and reduced for the browser.

Reading: :func:`load_view` reads the site-level series (``site`` and any ``pv``, ``bess``,
``building`` ... entity) and the EVSEs' ``power_kw`` and ``soc`` for one time range,
through :meth:`twin.run_folder.RunFolder.traces` (by column, with entity, quantity and
time pushed down to Parquet), so a one-day zoom of a week reads about a seventh of the
row groups.

Reducing: every line is cut to about :data:`LINE_POINTS` points for the visible range by
LTTB (:func:`twin.compare.lttb_indices`), gaps in the samples (a vehicle not plugged in)
stay gaps; the EVSE heatmap is binned in time by the mean to at most
:data:`HEATMAP_COLUMNS` columns.

Times travel to the browser as epoch milliseconds (a plotly date axis takes numbers as
UTC milliseconds) in base64 typed arrays, which plotly.js reads without parsing JSON
numbers.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from twin.compare import lttb_indices
from twin.recorder import parts_dir
from twin.run_folder import RunFolder

#: Points per line for the visible range.
LINE_POINTS = 2000
#: Total points of all SoC lines together (each line gets a share, at least 100).
SOC_POINTS_TOTAL = 20_000
#: Largest number of time columns of the EVSE heatmap.
HEATMAP_COLUMNS = 1000

#: Quantities that mark an entity as an EVSE (besides an ``station/evse`` id).
EVSE_QUANTITIES = frozenset({"offered_current_a", "setpoint_a", "setpoint_w"})

_MS_PER_S = 1000.0


# --------------------------------------------------------------------------- times


def to_ms(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Epoch milliseconds (float64) of tz-aware times of any unit."""
    idx = pd.DatetimeIndex(times)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    ns = idx.as_unit("ns").asi8
    return np.asarray(ns, dtype=np.float64) / 1e6


def ms_to_datetime(ms: float) -> datetime:
    """Epoch milliseconds as a tz-aware UTC ``datetime``."""
    return pd.Timestamp(round(ms * 1000), unit="us", tz="UTC").to_pydatetime()


def parse_time(text: str | float | None) -> datetime | None:
    """A time from the browser (plotly axis string, ISO text or epoch ms) as UTC."""
    if text is None or text == "":
        return None
    if isinstance(text, int | float):
        return ms_to_datetime(float(text))
    ts = pd.Timestamp(str(text))
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def iso(t: datetime | None) -> str | None:
    """ISO 8601 text of a UTC time (None stays None)."""
    return None if t is None else t.astimezone(UTC).isoformat()


def typed(values: np.ndarray, dtype: str = "f8") -> dict[str, Any]:
    """A numpy array as a plotly.js typed-array spec (base64, optional 2-D shape)."""
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    spec: dict[str, Any] = {"dtype": dtype, "bdata": base64.b64encode(arr.tobytes()).decode()}
    if arr.ndim > 1:
        spec["shape"] = ",".join(str(n) for n in arr.shape)
    return spec


# --------------------------------------------------------------------------- downsampling


def gap_threshold(x: np.ndarray) -> float:
    """Distance between samples above which a line is broken: 3x the median step."""
    if len(x) < 3:
        return float("inf")
    d = np.diff(x)
    d = d[d > 0]
    return 3.0 * float(np.median(d)) if len(d) else float("inf")


def downsample_line(
    x: np.ndarray, y: np.ndarray, n_out: int = LINE_POINTS, gap: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """LTTB to ``n_out`` points; a NaN is put wherever the samples had a gap.

    Args:
        x: sample times [epoch ms], strictly increasing.
        y: values, NaN where not recorded.
        n_out: points to keep (at least 2).
        gap: a step larger than this breaks the line; default :func:`gap_threshold`.

    Returns:
        ``(x, y)`` of at most ``n_out`` points plus one NaN point per gap.
    """
    finite = np.isfinite(y)
    if not finite.all():
        x, y = x[finite], y[finite]
    if len(x) == 0:
        return x, y
    limit = gap_threshold(x) if gap is None else gap
    idx = lttb_indices(x, y, max(2, n_out)) if len(x) > n_out else np.arange(len(x))
    xs, ys = x[idx], y[idx]
    if np.isfinite(limit) and len(x) > 1:
        # Segment number of each raw sample; a change between kept points is a gap.
        segment = np.concatenate(([0], np.cumsum(np.diff(x) > limit)))
        seg = segment[idx]
        breaks = np.flatnonzero(seg[1:] != seg[:-1]) + 1
        if len(breaks):
            xs = np.insert(xs.astype(np.float64), breaks, (xs[breaks - 1] + xs[breaks]) / 2)
            ys = np.insert(ys.astype(np.float64), breaks, np.nan)
    return xs, ys


@dataclass
class Heatmap:
    """Mean of a quantity per entity and time bin.

    Attributes:
        x: bin centres [epoch ms], shape ``(n_cols,)``.
        entities: row labels, shape ``(n_rows,)``.
        z: means, shape ``(n_rows, n_cols)``; NaN where an entity has no sample.
        bin_s: width of one bin [s].
    """

    x: np.ndarray
    entities: list[str]
    z: np.ndarray
    bin_s: float


def bin_mean(
    t_ms: np.ndarray,
    rows: np.ndarray,
    values: np.ndarray,
    entities: list[str],
    max_cols: int = HEATMAP_COLUMNS,
    span: tuple[float, float] | None = None,
) -> Heatmap:
    """Bin samples per entity in time by the mean to at most ``max_cols`` columns.

    The bin width is a whole number of sample steps (the median step), so bins hold the
    same number of samples; with no more sample times than ``max_cols`` each sample
    time is its own column.

    Args:
        t_ms: sample times [epoch ms].
        rows: row (index into ``entities``) of each sample; negative rows are dropped.
        values: value of each sample.
        entities: the row labels.
        max_cols: most columns.
        span: ``(first, last)`` time to cover [ms]; default the samples' own.
    """
    if len(t_ms) == 0 or not entities:
        return Heatmap(np.empty(0), list(entities), np.empty((len(entities), 0)), 0.0)
    times = np.unique(t_ms)
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    lo, hi = span if span is not None else (float(times[0]), float(times[-1]))
    lo, hi = max(lo, float(times[0])), min(hi, float(times[-1]))
    n_steps = round((hi - lo) / step) + 1 if hi >= lo else 1
    per_bin = max(1, -(-n_steps // max_cols))
    width = per_bin * step
    n_cols = max(1, -(-n_steps // per_bin))
    col = np.floor((t_ms - lo) / width + 1e-9).astype(np.int64)
    ok = (rows >= 0) & (rows < len(entities)) & (col >= 0) & (col < n_cols)
    ok &= np.isfinite(values)
    flat = rows[ok] * n_cols + col[ok]
    size = len(entities) * n_cols
    sums = np.bincount(flat, weights=values[ok], minlength=size)
    counts = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    # Centre of the sample times a bin holds.
    x = lo + np.arange(n_cols) * width + (per_bin - 1) * step / 2
    return Heatmap(x, list(entities), z.reshape(len(entities), n_cols), width / _MS_PER_S)


# --------------------------------------------------------------------------- run data


@dataclass
class Series:
    """One recorded series, full resolution for the requested range.

    Attributes:
        entity: e.g. ``site`` or ``CA001/1``.
        quantity: e.g. ``import_kw``.
        unit: e.g. ``kW``.
        x: sample times [epoch ms], increasing.
        y: values.
    """

    entity: str
    quantity: str
    unit: str
    x: np.ndarray
    y: np.ndarray


@dataclass
class Power:
    """EVSE power samples.

    Attributes:
        t: sample times [epoch ms].
        row: index of the sample's EVSE in :attr:`RunView.evses`.
        value: power [kW].
    """

    t: np.ndarray
    row: np.ndarray
    value: np.ndarray


@dataclass
class RunView:
    """Everything the run view's graphs show, for one time range.

    Attributes:
        start: requested start (None: from the first sample).
        end: requested end (None: to the last sample).
        site: site-level series (entities that are not EVSEs), by (entity, quantity).
        evses: EVSE ids, sorted.
        power: EVSE ``power_kw`` samples.
        soc: EVSE ``soc`` series, by EVSE.
        span: ``(first, last)`` time shown [ms], None without samples.
        read_s: time spent reading Parquet [s].
    """

    start: datetime | None
    end: datetime | None
    site: dict[tuple[str, str], Series]
    evses: list[str]
    power: Power
    soc: dict[str, Series]
    span: tuple[float, float] | None
    read_s: float = 0.0
    units: dict[tuple[str, str], str] = field(default_factory=dict)


def _natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders ``CA2/1`` before ``CA10/1``."""
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def split_entities(catalog: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(EVSEs, site-level entities) of a trace catalog (``entity, quantity, unit``).

    An EVSE has an id ``station/evse`` or an EVSE quantity (offered current, set-point);
    every other entity (``site``, ``pv``, ``bess``, ``building`` ...) is site-level.
    """
    entities = catalog["entity"].astype(str)
    quantities = catalog["quantity"].astype(str)
    evse_like = set(entities[quantities.isin(EVSE_QUANTITIES)]) | {
        e for e in entities.unique() if "/" in e
    }
    evses = sorted(evse_like, key=_natural_key)
    site = sorted((e for e in entities.unique() if e not in evse_like), key=_natural_key)
    return evses, site


class LruCache:
    """Small thread-safe LRU of values keyed by a run folder's state."""

    def __init__(self, size: int = 16) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value under ``key`` (None when absent); marks it recently used."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        """Remember ``value`` under ``key``, dropping the least recently used."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_CATALOGS = LruCache(32)


def folder_token(rf: RunFolder) -> tuple[str, int, int]:
    """Identity of a run folder's current traces: path, size and mtime (or part count)."""
    final = rf.path / "traces.parquet"
    try:
        st = final.stat()
        return (str(rf.path), st.st_size, st.st_mtime_ns)
    except OSError:
        parts = parts_dir(final)
        try:
            names = sorted(p.name for p in parts.iterdir())
        except OSError:
            names = []
        return (str(rf.path), -len(names), hash(tuple(names[-3:])))


_INFLIGHT: dict[Any, threading.Event] = {}
_INFLIGHT_LOCK = threading.Lock()


def trace_catalog(rf: RunFolder) -> pd.DataFrame:
    """The run's (entity, quantity, unit), remembered while the traces do not change.

    Concurrent callers for the same folder state wait for one read instead of each
    reading the whole file.
    """
    key = folder_token(rf)
    found = _CATALOGS.get(key)
    if found is not None:
        cached: pd.DataFrame = found
        return cached
    with _INFLIGHT_LOCK:
        pending = _INFLIGHT.get(key)
        if pending is None:
            _INFLIGHT[key] = threading.Event()
    if pending is not None:
        pending.wait(timeout=60)
        found = _CATALOGS.get(key)
        if found is not None:
            waited: pd.DataFrame = found
            return waited
    try:
        frame = rf.catalog()
        _CATALOGS.put(key, frame)
    finally:
        if pending is None:
            with _INFLIGHT_LOCK:
                _INFLIGHT.pop(key).set()
    return frame


def prefetch_catalog(rf: RunFolder) -> None:
    """Start reading the run's trace catalog in the background (for the next callback)."""
    if _CATALOGS.get(folder_token(rf)) is None:
        threading.Thread(target=trace_catalog, args=(rf,), daemon=True,
                         name="catalog-prefetch").start()


@dataclass
class _Long:
    """A long trace frame as arrays: times [ms], entity and quantity codes, values."""

    t: np.ndarray
    entity: np.ndarray
    entities: list[str]
    quantity: np.ndarray
    quantities: list[str]
    value: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Long:
        if len(frame) == 0:
            empty = np.empty(0, dtype=np.int64)
            return cls(np.empty(0), empty, [], empty, [], np.empty(0))
        ecode, euniq = pd.factorize(frame["entity"])
        qcode, quniq = pd.factorize(frame["quantity"])
        return cls(to_ms(frame["time"]), np.asarray(ecode, dtype=np.int64),
                   [str(e) for e in euniq], np.asarray(qcode, dtype=np.int64),
                   [str(q) for q in quniq], frame["value"].to_numpy(dtype=np.float64))

    def series(self, units: dict[tuple[str, str], str],
               keep: np.ndarray | None = None) -> dict[tuple[str, str], Series]:
        """Split into time-sorted series (of the rows where ``keep``)."""
        out: dict[tuple[str, str], Series] = {}
        key = self.entity * max(1, len(self.quantities)) + self.quantity
        rows = np.arange(len(key)) if keep is None else np.flatnonzero(keep)
        if len(rows) == 0:
            return out
        # Rows are in time order as written: a stable sort by key keeps each series sorted.
        order = rows[np.argsort(key[rows], kind="stable")]
        sorted_keys = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        stops = np.r_[starts[1:], len(order)]
        for a, b in zip(starts, stops, strict=True):
            sel = order[a:b]
            e = self.entities[int(self.entity[sel[0]])]
            q = self.quantities[int(self.quantity[sel[0]])]
            x, y = self.t[sel], self.value[sel]
            if len(x) > 1 and not bool(np.all(x[1:] > x[:-1])):
                o = np.argsort(x, kind="stable")
                x, y = x[o], y[o]
                dup = np.r_[x[1:] == x[:-1], False]
                x, y = x[~dup], y[~dup]  # keep the last sample of a repeated time
            out[(e, q)] = Series(e, q, units.get((e, q), ""), x, y)
        return out


def load_view(rf: RunFolder, start: datetime | None = None,
              end: datetime | None = None) -> RunView:
    """Read what the run view shows for ``[start, end]`` (None: that end of the run).

    Two filtered Parquet scans: the site-level entities (all their quantities), and the
    ``power_kw`` and ``soc`` of the EVSEs.
    """
    import time

    t0 = time.perf_counter()
    catalog = trace_catalog(rf)
    units = {
        (str(e), str(q)): str(u)
        for e, q, u in zip(catalog["entity"], catalog["quantity"], catalog["unit"],
                           strict=True)
    }
    evses, site_entities = split_entities(catalog)
    cols = ["time", "entity", "quantity", "value"]

    def scan(entities: list[str] | None, quantities: list[str] | None) -> _Long:
        return _Long.of(rf.traces(entities=entities, quantities=quantities, start=start,
                                  end=end, columns=cols))

    # The two scans overlap: Parquet decoding runs outside the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        site_job = pool.submit(scan, site_entities, None) if site_entities else None
        evse_job = pool.submit(scan, None, ["power_kw", "soc"]) if evses else None
        empty = _Long.of(pd.DataFrame(columns=cols))
        site_long = site_job.result() if site_job else empty
        evse_long = evse_job.result() if evse_job else empty
    read_s = time.perf_counter() - t0
    site = site_long.series(units)
    row_of = {e: i for i, e in enumerate(evses)}
    evse_row = np.array([row_of.get(e, -1) for e in evse_long.entities], dtype=np.int64)
    rows = evse_row[evse_long.entity] if len(evse_long.entities) else evse_long.entity
    q_power = (evse_long.quantities.index("power_kw")
               if "power_kw" in evse_long.quantities else -1)
    is_power = (rows >= 0) & (evse_long.quantity == q_power)
    power = Power(evse_long.t[is_power], rows[is_power], evse_long.value[is_power])
    soc = {e: s for (e, _q), s in
           evse_long.series(units, (rows >= 0) & (evse_long.quantity != q_power)).items()}
    firsts = [s.x[0] for s in site.values() if len(s.x)]
    lasts = [s.x[-1] for s in site.values() if len(s.x)]
    if len(power.t):
        firsts.append(float(power.t.min()))
        lasts.append(float(power.t.max()))
    span = (min(firsts), max(lasts)) if firsts else None
    if span is not None:
        lo = to_ms(pd.DatetimeIndex([start]))[0] if start else span[0]
        hi = to_ms(pd.DatetimeIndex([end]))[0] if end else span[1]
        span = (float(lo), float(hi))
    return RunView(start, end, site, evses, power, soc, span, read_s, units)
