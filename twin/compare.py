"""The maths of comparing two runs (twin vs field, or run A vs run B); no I/O.

Inputs are the long-format traces of two run folders (DESIGN.md, "Run folder"): columns
``time`` (tz-aware, UTC; any datetime64 unit), ``entity``, ``quantity``, ``value``
(float64) and ``unit``, one row per entity, quantity and sample time. A trace value at
time ``t`` is the mean over the control step ending at ``t`` (interval-mean semantics),
so a run sampled every ``dt`` from ``t0`` covers the interval ``(t0 - dt, t_last]``.

The pipeline:

1. :func:`align` puts every (entity, quantity) present in both runs on one common grid of
   bins ``(t - step, t]`` labelled by their end ``t``, over the overlap of the two runs,
   each side binned by the mean of its samples in the bin. Bins where either side has no
   sample stay NaN and are excluded from everything downstream. The returned
   :class:`Alignment` carries a human-readable :attr:`Alignment.statement` of what was
   done (grid, overlap, resampling, exclusions) for reports.
2. :func:`residuals` gives the long frame ``time, entity, quantity, a, b, residual, unit``
   with ``residual = b - a``.
3. :func:`metrics` gives n, MAE, RMSE, largest deviation (and when and where), bias per
   series and per quantity across entities (``entity == "*"``).
4. :func:`exceedances` gives the contiguous periods where ``|residual| > tolerance``.
5. :func:`kpi_deltas` compares two ``kpis.json`` documents, money as ``Decimal``.
6. :func:`lttb` / :func:`lttb_indices` / :func:`downsample_frame` reduce a long series to
   a few thousand points for plotting (Largest-Triangle-Three-Buckets, Steinarsson 2013).
   Done in numpy: the C package ``lttbc`` on PyPI is built against the NumPy 1 ABI and
   does not import under NumPy 2; ``lttb`` loops in Python with per-call validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "Alignment",
    "KpiDelta",
    "align",
    "downsample_frame",
    "exceedances",
    "kpi_deltas",
    "lttb",
    "lttb_indices",
    "metrics",
    "residuals",
]

#: Columns a trace frame must have.
TRACE_COLUMNS = ("time", "entity", "quantity", "value", "unit")

#: How the samples inside one bin become the bin's value.
BinMethod = Literal["mean", "last", "min", "max"]

#: Entity name of the per-quantity aggregate rows of :func:`metrics`.
ALL_ENTITIES = "*"

_NS_PER_S = 1_000_000_000
_SeriesKey = tuple[str, str]


# --------------------------------------------------------------------------- formatting


def _fmt_time(ns: int) -> str:
    """ISO 8601 UTC with a ``Z``; seconds and fractions only when not zero."""
    ts = pd.Timestamp(ns, unit="ns", tz="UTC")
    if ts.nanosecond or ts.microsecond:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if ts.second:
        return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ts.strftime("%Y-%m-%dT%H:%MZ")


def _fmt_step(ns: int) -> str:
    """A duration in seconds, e.g. ``300 s`` or ``0.5 s``."""
    if ns % _NS_PER_S == 0:
        return f"{ns // _NS_PER_S} s"
    return f"{ns / _NS_PER_S:g} s"


def _fmt_range(first_ns: int, last_ns: int) -> str:
    """``first - last`` joined by an en dash; ``last`` without its date if on one day."""
    first, last = _fmt_time(first_ns), _fmt_time(last_ns)
    if first[:10] == last[:10]:
        last = last[11:]
    return f"{first}\N{EN DASH}{last}"


def _td_ns(td: timedelta) -> int:
    """A ``timedelta`` in integer nanoseconds."""
    return (td // timedelta(microseconds=1)) * 1000


def _ns_td(ns: int) -> timedelta:
    """Integer nanoseconds as a ``timedelta`` (microsecond resolution)."""
    return timedelta(microseconds=ns // 1000)


def _ns_dt(ns: int) -> datetime:
    """Integer epoch nanoseconds as a tz-aware UTC ``datetime``."""
    return datetime(1970, 1, 1, tzinfo=UTC) + _ns_td(ns)


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Alignment:
    """Two runs' common series on one time grid.

    Attributes:
        a: run A binned on the grid, shape ``(n_bins, n_series)``; index ``time`` (UTC
            DatetimeIndex of bin ends), columns a MultiIndex ``(entity, quantity)``;
            NaN where A has no sample in the bin.
        b: run B, same index and columns as :attr:`a`.
        units: unit of each compared ``(entity, quantity)``.
        step: grid step; bin ``t`` is the interval ``(t - step, t]``.
        start: start of the first bin (exclusive), tz-aware UTC.
        end: end of the last bin (inclusive), tz-aware UTC.
        a_range: interval ``(first - step_a, last]`` covered by run A (all its series).
        b_range: the same for run B.
        a_step: median sample step of run A (None when no series has two samples).
        b_step: the same for run B.
        method: how samples within a bin were combined (``"mean"`` by default).
        only_a: ``(entity, quantity)`` present only in run A, sorted; not compared.
        only_b: the same for run B.
        labels: names of the runs in :attr:`statement`, e.g. ``("twin", "field")``.
        excluded: series-bins left out because A, B or both have no sample there.
        statement: one human-readable paragraph saying how the runs were aligned.
    """

    a: pd.DataFrame
    b: pd.DataFrame
    units: dict[_SeriesKey, str]
    step: timedelta
    start: datetime
    end: datetime
    a_range: tuple[datetime, datetime]
    b_range: tuple[datetime, datetime]
    a_step: timedelta | None
    b_step: timedelta | None
    method: str
    only_a: list[_SeriesKey] = field(default_factory=list)
    only_b: list[_SeriesKey] = field(default_factory=list)
    labels: tuple[str, str] = ("A", "B")
    excluded: int = 0
    statement: str = ""

    @property
    def series(self) -> list[_SeriesKey]:
        """The compared ``(entity, quantity)`` pairs, in column order."""
        return [(str(k[0]), str(k[1])) for k in self.a.columns.to_list()]

    @property
    def n_bins(self) -> int:
        """Number of grid bins."""
        return len(self.a.index)


@dataclass
class _Run:
    """One run's trace in arrays: per row epoch ns, series code and value."""

    label: str
    time_ns: np.ndarray
    series: np.ndarray  # per row: index into ``keys``
    value: np.ndarray
    keys: list[_SeriesKey]  # the run's series, each ``(entity, quantity)``
    units: dict[_SeriesKey, str]
    step_ns: int | None
    first_ns: int
    last_ns: int


def _codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer code per row and the distinct strings of a text column."""
    codes, uniques = pd.factorize(col.astype(str))
    return np.asarray(codes, dtype=np.int64), [str(u) for u in uniques]


def _load_run(df: pd.DataFrame, label: str) -> _Run:
    """Check a trace frame and take it apart into arrays (see :class:`_Run`)."""
    missing = [c for c in TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"run {label}: trace frame lacks column(s) {missing}")
    if len(df) == 0:
        raise ValueError(f"run {label}: trace frame is empty")
    time = df["time"]
    if not isinstance(time.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"run {label}: 'time' must be tz-aware UTC datetimes, got dtype {time.dtype}"
        )
    idx = pd.DatetimeIndex(time)
    if idx.hasnans:
        raise ValueError(f"run {label}: 'time' has missing values (NaT)")
    t = np.asarray(idx.asi8, dtype=np.int64)  # epoch in the column's own unit
    if idx.unit != "ns":
        t = t * int(np.timedelta64(1, idx.unit) // np.timedelta64(1, "ns"))
    value = df["value"].to_numpy(dtype=np.float64, na_value=np.nan)
    ent, ent_names = _codes(df["entity"])
    qty, qty_names = _codes(df["quantity"])
    unit, unit_names = _codes(df["unit"])

    series_of_key, key_rows = np.unique(ent * len(qty_names) + qty, return_inverse=True)
    series = np.asarray(key_rows, dtype=np.int64).reshape(-1)
    keys = [
        (ent_names[int(k) // len(qty_names)], qty_names[int(k) % len(qty_names)])
        for k in series_of_key
    ]
    # Units: one per series within the run.
    pairs = np.unique(series * len(unit_names) + unit)
    pair_series, pair_unit = pairs // len(unit_names), pairs % len(unit_names)
    if len(pairs) > len(keys):
        twice = pair_series[np.flatnonzero(np.diff(pair_series) == 0)[0]]
        found = sorted(unit_names[int(u)] for u in pair_unit[pair_series == twice])
        e, q = keys[int(twice)]
        raise ValueError(f"run {label}: {e} {q} has more than one unit: {found}")
    units = {
        keys[int(s_)]: unit_names[int(u)] for s_, u in zip(pair_series, pair_unit, strict=True)
    }

    # Median sample step: pooled over the positive time differences within each series.
    order = np.lexsort((t, series))
    ts, ks = t[order], series[order]
    d = np.diff(ts)
    d = d[(ks[1:] == ks[:-1]) & (d > 0)]
    step_ns = int(np.partition(d, len(d) // 2)[len(d) // 2]) if len(d) else None
    return _Run(label, t, series, value, keys, units, step_ns, int(t.min()), int(t.max()))


def _bin(
    run: _Run,
    columns: list[_SeriesKey],
    origin_ns: int,
    step_ns: int,
    k_first: int,
    n_bins: int,
    method: BinMethod,
) -> tuple[np.ndarray, bool]:
    """Bin one run's samples of the series ``columns`` onto the grid.

    Returns the values, shape ``(n_bins, len(columns))``, and whether the run was on the
    grid as recorded (every sample at a bin end, at most one sample per bin).
    """
    column_of = {key: i for i, key in enumerate(columns)}
    to_column = np.array([column_of.get(key, -1) for key in run.keys], dtype=np.int64)
    code = to_column[run.series]
    # Bin of each sample: the k with origin + (k-1)*step < t <= origin + k*step.
    k = -((origin_ns - run.time_ns) // step_ns)
    b = k - k_first
    keep = (code >= 0) & (b >= 0) & (b < n_bins) & ~np.isnan(run.value)
    code, b, v, t = code[keep], b[keep], run.value[keep], run.time_ns[keep]
    n_series = len(columns)
    flat = code * n_bins + b
    size = n_series * n_bins
    counts = np.bincount(flat, minlength=size)
    on_grid = bool(np.all((t - origin_ns) % step_ns == 0)) and int(counts.max(initial=0)) <= 1
    if method == "mean":
        sums = np.bincount(flat, weights=v, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = sums / counts
    else:
        out = np.full(size, np.nan)
        if len(flat):
            s = pd.Series(v)
            if method == "last":
                order = np.lexsort((t, flat))
                s, flat = pd.Series(v[order]), flat[order]
            grouped = s.groupby(flat, sort=False)
            agg = {"last": grouped.last, "min": grouped.min, "max": grouped.max}[method]()
            out[agg.index.to_numpy(dtype=np.int64)] = agg.to_numpy(dtype=np.float64)
    out[counts == 0] = np.nan
    return out.reshape(n_series, n_bins).T, on_grid


def align(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    step: timedelta | None = None,
    method: BinMethod = "mean",
    origin: datetime | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> Alignment:
    """Put the series common to two runs on one time grid over their overlap.

    Method:

    * Each run's step is the median of the positive differences between consecutive
      sample times within each of its series (pooled), and its range is
      ``(first - step, last]`` over all its rows (interval-mean semantics).
    * Grid step: ``step``, or the coarser of the two runs' steps (rounded to whole
      seconds when at least one second, so that jitter in a field run's sample times
      does not make an odd grid). Grid bins are
      ``(t - step, t]`` labelled ``t = origin + k * step``; ``origin`` defaults to the
      first sample time of the coarser run (of the earlier-starting run on a tie), so
      the coarser run lands on the grid as recorded and ``align(a, b)`` and
      ``align(b, a)`` use the same grid.
    * The grid holds every bin that lies wholly inside the overlap of the two ranges.
    * Each side's value in a bin is the ``method`` (default mean) of its non-NaN samples
      whose time falls in the bin; a bin without such sample is NaN. A coarser grid than
      a run's own step averages that run; a finer one leaves bins without samples (NaN),
      nothing is interpolated.

    Args:
        a: trace frame of run A (``time, entity, quantity, value, unit``).
        b: trace frame of run B.
        step: grid step; default the coarser of the runs' median steps.
        method: ``"mean"`` (interval mean, the default), ``"last"``, ``"min"`` or
            ``"max"`` of the samples within a bin.
        origin: a bin end of the grid (tz-aware); default see above.
        labels: names of the two runs in the statement.

    Returns:
        The :class:`Alignment`: two frames of shape ``(n_bins, n_series)``, grid, overlap,
        series only on one side, and a statement of all that.

    Raises:
        ValueError: a frame lacks a column, is empty or has naive/missing times; a series
            has different units in A and B (or a quantity different units across the
            compared entities); the runs do not overlap, or overlap less than one step;
            no step can be found; ``step`` not positive; unknown ``method``.
    """
    if method not in ("mean", "last", "min", "max"):
        raise ValueError(f"unknown bin method {method!r}; use mean, last, min or max")
    la, lb = labels
    ra, rb = _load_run(a, la), _load_run(b, lb)

    common = sorted(set(ra.units) & set(rb.units))
    only_a = sorted(set(ra.units) - set(rb.units))
    only_b = sorted(set(rb.units) - set(ra.units))
    mismatched = [k for k in common if ra.units[k] != rb.units[k]]
    if mismatched:
        e, q = mismatched[0]
        more = f" (and {len(mismatched) - 1} more series)" if len(mismatched) > 1 else ""
        raise ValueError(
            f"unit mismatch for {q} of {e}: {la} has {ra.units[(e, q)]!r}, "
            f"{lb} has {rb.units[(e, q)]!r}{more}"
        )
    by_quantity: dict[str, set[str]] = {}
    for e, q in common:
        by_quantity.setdefault(q, set()).add(ra.units[(e, q)])
    mixed = {q: sorted(u) for q, u in by_quantity.items() if len(u) > 1}
    if mixed:
        q = sorted(mixed)[0]
        raise ValueError(f"quantity {q} has different units across entities: {mixed[q]}")

    if step is not None:
        step_ns = _td_ns(step)
        if step_ns <= 0:
            raise ValueError(f"grid step must be positive, got {step}")
    else:
        steps = [s for s in (ra.step_ns, rb.step_ns) if s is not None]
        if not steps:
            raise ValueError(
                "no series in either run has two samples; pass the grid step explicitly"
            )
        step_ns = max(steps)
        if step_ns >= _NS_PER_S:  # a field run's jitter (60.01 s) should not set the grid
            step_ns = round(step_ns / _NS_PER_S) * _NS_PER_S

    # Each run's range (first - own step, last]; a run without a step of its own
    # (single samples) is taken to cover one grid step before its first sample.
    def covered(r: _Run) -> tuple[int, int]:
        return r.first_ns - (r.step_ns if r.step_ns is not None else step_ns), r.last_ns

    a_lo, a_hi = covered(ra)
    b_lo, b_hi = covered(rb)
    ranges = f"{la} {_fmt_range(a_lo, a_hi)}, {lb} {_fmt_range(b_lo, b_hi)}"
    lo, hi = max(a_lo, b_lo), min(a_hi, b_hi)
    if lo >= hi:
        raise ValueError(f"the runs do not overlap in time: {ranges}")

    if origin is not None:
        if origin.tzinfo is None:
            raise ValueError("origin must be a tz-aware datetime")
        origin_ns = int(pd.Timestamp(origin).tz_convert("UTC").as_unit("ns").value)
    else:
        sa, sb = ra.step_ns or 0, rb.step_ns or 0
        if sa != sb:
            origin_ns = ra.first_ns if sa > sb else rb.first_ns
        else:
            origin_ns = min(ra.first_ns, rb.first_ns)
    # Bins (origin + (k-1)*step, origin + k*step] within (lo, hi].
    k_first = -((origin_ns - lo) // step_ns) + 1  # ceil((lo - origin) / step) + 1
    k_last = (hi - origin_ns) // step_ns
    n_bins = k_last - k_first + 1
    if n_bins < 1:
        raise ValueError(
            f"the runs overlap by less than one {_fmt_step(step_ns)} grid step "
            f"(overlap {_fmt_range(lo, hi)}): {ranges}"
        )

    index = pd.MultiIndex.from_arrays(
        [[e for e, _ in common], [q for _, q in common]], names=["entity", "quantity"]
    )
    va, grid_a = _bin(ra, common, origin_ns, step_ns, k_first, n_bins, method)
    vb, grid_b = _bin(rb, common, origin_ns, step_ns, k_first, n_bins, method)
    labels_ns = origin_ns + step_ns * np.arange(k_first, k_last + 1, dtype=np.int64)
    time_index = pd.DatetimeIndex(labels_ns.astype("datetime64[ns]"), name="time").tz_localize(
        "UTC"
    )
    frame_a = pd.DataFrame(va, index=time_index, columns=index)
    frame_b = pd.DataFrame(vb, index=time_index, columns=index.copy())

    missing = np.isnan(va) | np.isnan(vb)
    excluded = int(missing.sum())
    g_lo, g_hi = int(labels_ns[0]) - step_ns, int(labels_ns[-1])

    def how(r: _Run, on_grid: bool) -> str:
        if on_grid:
            return f"{r.label} as recorded"
        own = _fmt_step(r.step_ns) if r.step_ns is not None else "single"
        return f"{r.label} resampled from {own} samples by {method}"

    parts = [
        f"aligned on a {_fmt_step(step_ns)} grid over {_fmt_range(g_lo, g_hi)} "
        f"(overlap of {ranges})",
        f"{len(common)} series compared over {n_bins} bins each",
        f"{how(ra, grid_a)}, {how(rb, grid_b)}",
    ]
    if excluded:
        parts.append(
            f"{excluded} of {missing.size} series-bins without data on one or both sides "
            f"excluded ({la} missing {int(np.isnan(va).sum())}, "
            f"{lb} missing {int(np.isnan(vb).sum())})"
        )
    else:
        parts.append("no series-bin without data on either side")
    for label, only in ((la, only_a), (lb, only_b)):
        if only:
            names = ", ".join(f"{e} {q}" for e, q in only[:5])
            more = f" and {len(only) - 5} more" if len(only) > 5 else ""
            parts.append(f"not compared, only in {label}: {names}{more}")
    return Alignment(
        a=frame_a,
        b=frame_b,
        units={k: ra.units[k] for k in common},
        step=_ns_td(step_ns),
        start=_ns_dt(g_lo),
        end=_ns_dt(g_hi),
        a_range=(_ns_dt(a_lo), _ns_dt(a_hi)),
        b_range=(_ns_dt(b_lo), _ns_dt(b_hi)),
        a_step=None if ra.step_ns is None else _ns_td(ra.step_ns),
        b_step=None if rb.step_ns is None else _ns_td(rb.step_ns),
        method=method,
        only_a=only_a,
        only_b=only_b,
        labels=labels,
        excluded=excluded,
        statement="; ".join(parts) + ".",
    )


# --------------------------------------------------------------------------- residuals


RESIDUAL_COLUMNS = ("time", "entity", "quantity", "a", "b", "residual", "unit")


def residuals(al: Alignment) -> pd.DataFrame:
    """Long frame of the aligned values and their difference.

    One row per compared series and grid bin, ordered by entity, quantity, time; columns
    ``time`` (UTC bin end), ``entity``, ``quantity``, ``a``, ``b``, ``residual``
    (``b - a``, in the series' unit) and ``unit``. Rows where either side has no sample
    are kept with NaN (``residual`` NaN) so that gaps break contiguity; :func:`metrics`
    skips them. ``attrs["step_s"]`` holds the grid step in seconds.
    """
    n_bins, n_series = al.a.shape
    va = al.a.to_numpy(dtype=np.float64).T.reshape(-1)
    vb = al.b.to_numpy(dtype=np.float64).T.reshape(-1)
    series = al.series
    entity = np.repeat(np.array([e for e, _ in series], dtype=object), n_bins)
    quantity = np.repeat(np.array([q for _, q in series], dtype=object), n_bins)
    unit = np.repeat(np.array([al.units[s] for s in series], dtype=object), n_bins)
    grid_ns = pd.DatetimeIndex(al.a.index).as_unit("ns").asi8
    time = pd.DatetimeIndex(np.tile(grid_ns, n_series).astype("datetime64[ns]"), name=None)
    time = time.tz_localize("UTC")
    out = pd.DataFrame(
        {
            "time": time,
            "entity": pd.array(entity, dtype="str"),
            "quantity": pd.array(quantity, dtype="str"),
            "a": va,
            "b": vb,
            "residual": vb - va,
            "unit": pd.array(unit, dtype="str"),
        }
    )
    out.attrs["step_s"] = al.step.total_seconds()
    return out


def _check_residuals(res: pd.DataFrame) -> None:
    missing = [c for c in ("time", "entity", "quantity", "residual", "unit") if c not in res]
    if missing:
        raise ValueError(f"residual frame lacks column(s) {missing}")


def metrics(res: pd.DataFrame) -> pd.DataFrame:
    """Error statistics of residuals per series and per quantity across entities.

    Over the rows with a residual (NaN rows are skipped), with ``r = b - a`` in the
    series' unit: ``n`` (bins compared), ``n_excluded`` (bins without data on a side),
    ``mae`` = mean |r|, ``rmse`` = sqrt(mean r²), ``max_abs`` = max |r| with
    ``max_abs_time`` (UTC bin end, the earliest on a tie) and ``max_abs_entity``, and
    ``bias`` = mean r (positive: B above A). ``mae <= rmse <= max_abs`` holds exactly:
    the computed values are clamped into that order, which they can leave by rounding
    only.

    Returns:
        One row per (entity, quantity), sorted, then one row per quantity with
        ``entity == "*"`` pooling all of that quantity's bins across entities. Columns
        ``entity, quantity, n, n_excluded, mae, rmse, max_abs, max_abs_time,
        max_abs_entity, bias, unit``. Statistics are NaN (time NaT) where ``n == 0``.
    """
    _check_residuals(res)
    cols = ["time", "entity", "quantity", "residual", "unit"]
    df = res[cols].sort_values(["time", "entity", "quantity"], kind="stable")
    df = df.reset_index(drop=True)
    r = df["residual"].to_numpy(dtype=np.float64, na_value=np.nan)
    valid = ~np.isnan(r)
    df["abs"] = np.abs(r)
    df["sq"] = r * r
    df["ok"] = valid

    def stats(keys: list[str]) -> pd.DataFrame:
        grouped = df.groupby(keys, sort=True, observed=True)
        out = pd.DataFrame(
            {
                "n": grouped["ok"].sum().astype(np.int64),
                "n_total": grouped["ok"].size().astype(np.int64),
                "mae": grouped["abs"].mean(),
                "ms": grouped["sq"].mean(),
                "max_abs": grouped["abs"].max(),
                "bias": grouped["residual"].mean(),
            }
        )
        units = dict(grouped["unit"].unique().items())
        many = [k for k, u in units.items() if len(u) > 1]
        if many:
            raise ValueError(f"different units within {many[0]}: {sorted(units[many[0]])}")
        out["unit"] = [str(u[0]) for u in units.values()]
        # Where the largest |r| is: first row (earliest time) reaching it.
        top = df[valid].sort_values("abs", ascending=False, kind="stable")
        top = top.drop_duplicates(keys, keep="first").set_index(keys, drop=False)
        out["max_abs_time"] = top["time"].reindex(out.index)
        out["max_abs_entity"] = top["entity"].reindex(out.index)
        out["n_excluded"] = out["n_total"] - out["n"]
        out["rmse"] = np.sqrt(out["ms"])
        # Clamp rounding: mae <= rmse <= max_abs.
        out["mae"] = np.minimum(out["mae"], out["max_abs"])
        out["rmse"] = np.minimum(np.maximum(out["rmse"], out["mae"]), out["max_abs"])
        return out.reset_index()

    per_series = stats(["entity", "quantity"])
    per_quantity = stats(["quantity"])
    per_quantity.insert(0, "entity", ALL_ENTITIES)
    cols_out = [
        "entity",
        "quantity",
        "n",
        "n_excluded",
        "mae",
        "rmse",
        "max_abs",
        "max_abs_time",
        "max_abs_entity",
        "bias",
        "unit",
    ]
    if len(per_series) == 0:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in cols_out})
        return out
    out = pd.concat([per_series[cols_out], per_quantity[cols_out]], ignore_index=True)
    out["entity"] = out["entity"].astype("str")
    out["max_abs_time"] = pd.to_datetime(out["max_abs_time"], utc=True)
    return out


# --------------------------------------------------------------------------- exceedances


EXCEEDANCE_COLUMNS = (
    "entity",
    "quantity",
    "start",
    "end",
    "duration_s",
    "n_bins",
    "peak_abs",
    "peak_time",
    "tolerance",
    "unit",
)


def _grid_step_ns(res: pd.DataFrame, step: timedelta | None) -> int:
    """Grid step of a residual frame: given, from ``attrs``, or the smallest time step."""
    if step is not None:
        ns = _td_ns(step)
    elif "step_s" in res.attrs:
        ns = round(float(res.attrs["step_s"]) * _NS_PER_S)
    else:
        t = np.unique(pd.DatetimeIndex(res["time"]).as_unit("ns").asi8)
        if len(t) < 2:
            raise ValueError("cannot tell the grid step of the residuals; pass step=")
        ns = int(np.diff(t).min())
    if ns <= 0:
        raise ValueError(f"grid step must be positive, got {ns} ns")
    return ns


def exceedances(
    res: pd.DataFrame,
    tolerance: float | Mapping[str, float],
    *,
    min_duration: timedelta = timedelta(0),
    step: timedelta | None = None,
) -> pd.DataFrame:
    """Contiguous periods in which a series' ``|residual|`` exceeds its tolerance.

    A bin exceeds when ``|residual| > tolerance`` (strictly; NaN never exceeds). A period
    is a maximal run of exceeding bins of one series at consecutive grid times (``step``
    apart); a bin without data, or a row missing from ``res``, ends it. Bin ``t`` covers
    ``(t - step, t]``, so a period of bins ``t1 .. tk`` is reported as ``start = t1 -
    step``, ``end = tk``, ``duration_s = k * step``.

    Args:
        res: residual frame as from :func:`residuals`.
        tolerance: one tolerance in each series' unit, or one per quantity; in a mapping
            the key ``"*"`` is the default for quantities not named.
        min_duration: keep only periods at least this long.
        step: grid step; default ``res.attrs["step_s"]``, else the smallest time step.

    Returns:
        Columns ``entity, quantity, start, end`` (UTC), ``duration_s``, ``n_bins``,
        ``peak_abs`` (largest |residual|) with ``peak_time`` (earliest on a tie),
        ``tolerance`` and ``unit``; sorted by entity, quantity, start.

    Raises:
        ValueError: a quantity has no tolerance (mapping without ``"*"``), a tolerance is
            negative or NaN, or the grid step cannot be told.
    """
    _check_residuals(res)
    step_ns = _grid_step_ns(res, step)
    quantities = pd.unique(res["quantity"].astype(str))
    if isinstance(tolerance, Mapping):
        default = tolerance.get(ALL_ENTITIES)
        lacking = sorted(str(q) for q in quantities if q not in tolerance and default is None)
        if lacking:
            raise ValueError(f"no tolerance for quantity {lacking} (give one or a '*' default)")
        tol_of = {str(q): float(tolerance.get(str(q), default or 0.0)) for q in quantities}
    else:
        tol_of = {str(q): float(tolerance) for q in quantities}
    bad = {q: v for q, v in tol_of.items() if not v >= 0}
    if bad:
        raise ValueError(f"tolerances must be >= 0: {bad}")

    df = res[["time", "entity", "quantity", "residual", "unit"]].sort_values(
        ["entity", "quantity", "time"], kind="stable"
    )
    t = pd.DatetimeIndex(df["time"]).as_unit("ns").asi8
    ent = df["entity"].astype(str).to_numpy(dtype=object)
    qty = df["quantity"].astype(str).to_numpy(dtype=object)
    unit = df["unit"].astype(str).to_numpy(dtype=object)
    r_abs = np.abs(df["residual"].to_numpy(dtype=np.float64, na_value=np.nan))
    tol = np.array([tol_of[q] for q in qty], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        above = r_abs > tol
    same = np.zeros(len(df), dtype=bool)
    if len(df) > 1:
        same[1:] = (ent[1:] == ent[:-1]) & (qty[1:] == qty[:-1]) & (np.diff(t) == step_ns)
    prev_above = np.zeros(len(df), dtype=bool)
    prev_above[1:] = above[:-1]
    begins = above & ~(same & prev_above)

    rows = np.flatnonzero(above)
    if len(rows) == 0:
        return _empty_exceedances()
    pid = np.cumsum(begins)[rows] - 1
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    first, last = rows[starts], rows[np.r_[starts[1:] - 1, len(rows) - 1]]
    n = np.diff(np.r_[starts, len(rows)])
    # Peak per period: the first row reaching the period's maximum.
    peak = np.maximum.reduceat(r_abs[rows], starts)
    is_peak = r_abs[rows] == np.repeat(peak, n)
    peak_pos = np.flatnonzero(is_peak)
    first_peak = peak_pos[np.r_[True, pid[peak_pos][1:] != pid[peak_pos][:-1]]]
    peak_row = rows[first_peak]

    start_ns = t[first] - step_ns
    end_ns = t[last]
    out = pd.DataFrame(
        {
            "entity": pd.array(ent[first], dtype="str"),
            "quantity": pd.array(qty[first], dtype="str"),
            "start": pd.DatetimeIndex(start_ns.astype("datetime64[ns]")).tz_localize("UTC"),
            "end": pd.DatetimeIndex(end_ns.astype("datetime64[ns]")).tz_localize("UTC"),
            "duration_s": (end_ns - start_ns) / _NS_PER_S,
            "n_bins": n.astype(np.int64),
            "peak_abs": peak,
            "peak_time": pd.DatetimeIndex(t[peak_row].astype("datetime64[ns]")).tz_localize("UTC"),
            "tolerance": tol[first],
            "unit": pd.array(unit[first], dtype="str"),
        }
    )
    keep = out["duration_s"] >= min_duration.total_seconds()
    return out[keep].reset_index(drop=True)


def _empty_exceedances() -> pd.DataFrame:
    utc = pd.DatetimeTZDtype("ns", "UTC")
    dtypes: dict[str, Any] = {
        "entity": "str",
        "quantity": "str",
        "start": utc,
        "end": utc,
        "duration_s": np.float64,
        "n_bins": np.int64,
        "peak_abs": np.float64,
        "peak_time": utc,
        "tolerance": np.float64,
        "unit": "str",
    }
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in dtypes.items()})


# --------------------------------------------------------------------------- KPIs


KpiNumber = int | float | Decimal

#: Sections of a ``kpis.json`` document holding ``{name: {"value": ..., "unit": ...}}``.
KPI_SECTIONS = ("kpis", "wall")


@dataclass(frozen=True)
class KpiDelta:
    """One KPI of two runs side by side.

    Attributes:
        section: ``"kpis"`` or ``"wall"`` (the wall-clock figures).
        name: KPI name, e.g. ``peak_import_kw``.
        a: value in run A, None when A lacks it; ``Decimal`` when either side gave a
            decimal string (money).
        b: value in run B, likewise.
        delta: ``b - a`` (``Decimal`` for decimal values, exact), None if a side lacks it.
        relative: ``delta / |a|`` as float (positive: B larger); None when ``a == 0`` or a
            side lacks the KPI.
        unit: the KPI's unit (ISO 4217 code for money).
    """

    section: str
    name: str
    a: KpiNumber | None
    b: KpiNumber | None
    delta: KpiNumber | None
    relative: float | None
    unit: str


def _kpi_value(raw: Any, where: str) -> KpiNumber | None:
    """A KPI value as int, float or Decimal (from a decimal string)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise TypeError(f"{where}: boolean KPI value {raw!r}")
    if isinstance(raw, int | float | Decimal):
        return raw
    if isinstance(raw, str):
        try:
            return Decimal(raw.strip())
        except InvalidOperation:
            raise ValueError(f"{where}: KPI value {raw!r} is not a decimal number") from None
    raise TypeError(f"{where}: KPI value {raw!r} is neither a number nor a decimal string")


def _as_decimal(v: KpiNumber) -> Decimal:
    """Exact ``Decimal`` of an int or Decimal; a float via its shortest repr."""
    return v if isinstance(v, Decimal) else Decimal(repr(v))


def kpi_deltas(kpis_a: Mapping[str, Any], kpis_b: Mapping[str, Any]) -> list[KpiDelta]:
    """Compare two ``kpis.json`` documents KPI by KPI.

    Documents look like ``{"scenario": ..., "seed": ..., "kpis": {name: {"value": v,
    "unit": u}}, "wall": {...}}`` where ``v`` is a number or, for money, a decimal string
    such as ``"183.32"``. When either side's value is a string both are compared as
    ``Decimal`` and the delta stays ``Decimal`` (exact; money is never float). Numbers
    compare as numbers (int - int stays int).

    Returns:
        One :class:`KpiDelta` per KPI name in either document, section by section
        (``kpis`` then ``wall``), names sorted; a KPI only on one side has None for the
        other side, the delta and the relative delta.

    Raises:
        ValueError: a KPI has different units in A and B, or a value string is not a
            decimal number.
        TypeError: a value is neither a number nor a string.
    """
    out: list[KpiDelta] = []
    for section in KPI_SECTIONS:
        sec_a: Mapping[str, Any] = kpis_a.get(section) or {}
        sec_b: Mapping[str, Any] = kpis_b.get(section) or {}
        for name in sorted(set(sec_a) | set(sec_b)):
            ea, eb = sec_a.get(name), sec_b.get(name)
            ua = None if ea is None else ea.get("unit")
            ub = None if eb is None else eb.get("unit")
            if ea is not None and eb is not None and ua != ub:
                raise ValueError(f"unit mismatch for KPI {section}.{name}: A {ua!r}, B {ub!r}")
            va = None if ea is None else _kpi_value(ea.get("value"), f"A {section}.{name}")
            vb = None if eb is None else _kpi_value(eb.get("value"), f"B {section}.{name}")
            delta: KpiNumber | None = None
            relative: float | None = None
            if va is not None and vb is not None:
                if isinstance(va, Decimal) or isinstance(vb, Decimal):
                    va, vb = _as_decimal(va), _as_decimal(vb)
                    delta = vb - va
                    if va != 0:
                        relative = float(delta / abs(va))
                else:
                    delta = vb - va
                    if va != 0:
                        relative = float(delta) / abs(float(va))
            unit = ua if ua is not None else ub
            out.append(KpiDelta(section, name, va, vb, delta, relative, str(unit or "")))
    return out


# --------------------------------------------------------------------------- LTTB


def lttb_indices(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices into ``x``/``y`` of the points that LTTB keeps.

    Largest-Triangle-Three-Buckets (S. Steinarsson, "Downsampling Time Series for Visual
    Representation", MSc thesis, University of Iceland, 2013): keep the first and last
    point; split the points between them into ``n_out - 2`` buckets of (nearly) equal
    count; walk the buckets in order and keep in each the point forming the largest
    triangle with the point kept in the previous bucket and the mean of the next bucket
    (the last point, for the last bucket). Ties go to the earliest point.

    Points where ``x`` or ``y`` is NaN (or infinite) are dropped first. The walk is
    sequential over buckets and vectorised within each: O(len) work plus about 10 µs of
    Python per bucket.

    Args:
        x: shape ``(n,)``, strictly increasing where finite (any real dtype).
        y: shape ``(n,)``.
        n_out: number of points to keep, at least 2.

    Returns:
        Sorted int64 indices into the input, shape ``(min(n_out, n_finite),)``; all
        finite points when there are no more than ``n_out``.

    Raises:
        ValueError: shapes differ or are not 1-D, ``n_out < 2``, or the finite ``x`` are
            not strictly increasing.
    """
    xf = np.asarray(x, dtype=np.float64)
    yf = np.asarray(y, dtype=np.float64)
    if xf.ndim != 1 or xf.shape != yf.shape:
        raise ValueError(f"x and y must be 1-D of one length, got {xf.shape} and {yf.shape}")
    if int(n_out) != n_out or n_out < 2:
        raise ValueError(f"n_out must be an integer >= 2, got {n_out!r}")
    n_out = int(n_out)
    finite = np.isfinite(xf) & np.isfinite(yf)
    if finite.all():
        keep = None
    else:
        keep = np.flatnonzero(finite)
        xf, yf = xf[keep], yf[keep]
    n = len(xf)
    if n > 1 and not bool(np.all(xf[1:] > xf[:-1])):
        raise ValueError("x must be strictly increasing (after dropping NaN points)")
    if n <= n_out:
        chosen = np.arange(n, dtype=np.int64)
        return chosen if keep is None else keep.astype(np.int64)

    if n_out == 2:
        chosen = np.array([0, n - 1], dtype=np.int64)
        return chosen if keep is None else keep[chosen].astype(np.int64)
    nb = n_out - 2
    # Bucket i holds points edges[i] .. edges[i+1]-1 (edges[0] = 1, edges[nb] = n - 1),
    # i.e. floor(i * every) + 1 with every = (n - 2) / nb, in exact integer arithmetic.
    edges = 1 + (np.arange(nb + 1, dtype=np.int64) * (n - 2)) // nb
    counts = np.diff(edges)
    mean_x = np.add.reduceat(xf[1 : n - 1], edges[:-1] - 1) / counts
    mean_y = np.add.reduceat(yf[1 : n - 1], edges[:-1] - 1) / counts
    # "Next bucket" mean for bucket i is bucket i+1's mean; for the last, the last point.
    next_x = np.append(mean_x[1:], xf[n - 1]).tolist()
    next_y = np.append(mean_y[1:], yf[n - 1]).tolist()
    bounds = edges.tolist()

    chosen = np.empty(n_out, dtype=np.int64)
    chosen[0], chosen[-1] = 0, n - 1
    xa, ya = float(xf[0]), float(yf[0])
    for i in range(nb):
        s, e = bounds[i], bounds[i + 1]
        # 2 * area = |(xa - xc) * (yb - ya) + (xb - xa) * (yc - ya)|
        w = yf[s:e] - ya
        w *= xa - next_x[i]
        u = xf[s:e] - xa
        u *= next_y[i] - ya
        w += u
        np.abs(w, out=w)
        j = s + int(w.argmax())
        chosen[i + 1] = j
        xa, ya = float(xf[j]), float(yf[j])
    return chosen if keep is None else keep[chosen].astype(np.int64)


def lttb(x: np.ndarray, y: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Downsample a series to ``n_out`` points by LTTB (see :func:`lttb_indices`).

    Args:
        x: shape ``(n,)``, strictly increasing where finite.
        y: shape ``(n,)``.
        n_out: points to keep (>= 2).

    Returns:
        ``(x_out, y_out)``, each shape ``(min(n_out, n_finite),)``, taken from the input
        (same dtype): the first and last finite points, one point per bucket between.
        With ``n_finite <= n_out`` the finite points, i.e. the input itself when it has
        no NaN.
    """
    xa, ya = np.asarray(x), np.asarray(y)
    idx = lttb_indices(xa, ya, n_out)
    if len(idx) == len(xa):
        return xa, ya
    return xa[idx], ya[idx]


def downsample_frame(
    times: pd.DatetimeIndex | pd.Series | list[datetime] | np.ndarray,
    values: pd.Series | list[float] | np.ndarray,
    n_out: int,
) -> pd.DataFrame:
    """LTTB-downsample a time series for plotting.

    Times are turned into seconds since the first time for the triangle areas (so the
    areas do not lose precision to epoch magnitudes); the kept times are the input's own.

    Args:
        times: shape ``(n,)``, strictly increasing (NaT rows are dropped, as are NaN
            values); tz-aware or naive, kept as given.
        values: shape ``(n,)``.
        n_out: points to keep (>= 2).

    Returns:
        Frame with columns ``time`` and ``value``, ``min(n_out, n_valid)`` rows.
    """
    ti = pd.DatetimeIndex(times)
    v = np.asarray(values, dtype=np.float64)
    if len(ti) != len(v):
        raise ValueError(f"times and values differ in length: {len(ti)} and {len(v)}")
    raw = ti.asi8  # in the index's own unit, no conversion
    per_s = float(np.timedelta64(1, "s") / np.timedelta64(1, ti.unit))
    if ti.hasnans:
        nat = np.asarray(ti.isna())
        t0 = int(raw[~nat][0]) if (~nat).any() else 0
        x = np.where(nat, np.nan, (raw - t0) / per_s)
    else:
        x = (raw - (int(raw[0]) if len(raw) else 0)) / per_s
    idx = lttb_indices(x, v, n_out)
    return pd.DataFrame({"time": ti[idx], "value": v[idx]})
