"""Where on a price calendar a site's time looks its price up.

The lookup itself (price in force at a time) is ``twin.inputs.prices.price_at``.
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
