"""Day-ahead prices put on a run's time grid.

A price series is a frame with ``time`` (UTC interval start) and ``price_per_mwh``; the
price in force at ``t`` is the one of the last interval starting at or before ``t``.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd


def align_times(
    times_utc: pd.DatetimeIndex,
    align: str,
    site_timezone: str,
    market_timezone: str,
    year_offset: int = 0,
) -> pd.DatetimeIndex:
    """Times at which to look the price up for each site time.

    ``utc``: the same instant (shifted by ``year_offset`` years). ``local_clock``: the
    same local clock time and date in the market's zone as the site's local time, e.g.
    08:00 in Pasadena looks up the 08:00 price in Amsterdam. Clock times that do not
    exist in the market zone (spring-forward) move forward; repeated ones take the
    first occurrence.
    """
    shifted = times_utc
    if align == "local_clock":
        local = times_utc.tz_convert(ZoneInfo(site_timezone)).tz_localize(None)
        shifted = local.tz_localize(
            ZoneInfo(market_timezone),
            nonexistent="shift_forward",
            ambiguous=np.ones(len(local), dtype=bool),
        ).tz_convert("UTC")
    elif align != "utc":
        raise ValueError(f"unknown price alignment {align!r}")
    if year_offset:
        shifted = shifted + pd.DateOffset(years=year_offset)
    return pd.DatetimeIndex(shifted)


def price_in_force(prices: pd.DataFrame, lookup_utc: pd.DatetimeIndex) -> np.ndarray:
    """Price [per MWh] in force at each lookup time (forward fill of interval starts).

    Raises:
        ValueError: a lookup time before the first interval or more than one interval
            after the last; the message names the covered range.
    """
    times = pd.DatetimeIndex(prices["time"]).tz_convert("UTC")
    values = prices["price_per_mwh"].to_numpy(dtype=float)
    if len(times) == 0:
        raise ValueError("price series is empty")
    step = (times[-1] - times[-2]) if len(times) > 1 else pd.Timedelta(hours=1)
    lo, hi = times[0], times[-1] + step
    bad = (lookup_utc < lo) | (lookup_utc >= hi)
    if bad.any():
        first_bad = lookup_utc[bad][0]
        raise ValueError(f"no price at {first_bad.isoformat()}: the data cover {lo} to {hi}")
    idx = np.searchsorted(times.asi8, lookup_utc.as_unit(times.unit).asi8, side="right") - 1
    return values[idx]
