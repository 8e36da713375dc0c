"""Availability forecast of the depot's vehicles from the history of charging sessions.

Method (empirical conditional statistics by slot of day and day type, no model fitting):

1. History window: the ``weeks`` full local days before the local day of ``now``
   (``[midnight(now) - 7 * weeks days, midnight(now))`` on the site's clock), so nothing
   on or after ``now``'s day is used.
2. Each local day is cut into slots of ``slot_minutes`` starting at local midnight (wall
   clock: on a DST day a slot that does not exist is shifted forward, the repeated hour
   uses standard time). A day is a *weekday* (Mon-Fri) or a *weekend* day (Sat, Sun);
   public holidays are not treated apart.
3. Per day and slot, from the sessions ``[arrival, departure)``:
   * ``plugged``: the time-weighted number of plugged vehicles, ``sum_i overlap_i /
     slot`` (a vehicle plugged for half the slot counts 0.5);
   * ``energy_kwh``: the flexible energy pending at the slot's midpoint ``t``, the energy
     each plugged session still had to take if its energy were delivered uniformly over
     its stay, ``sum_i E_i (departure_i - t) / (departure_i - arrival_i)``.
4. Per day type and slot: the mean over the days of that type (the expected value, an
   empirical conditional mean) and the ``quantile`` (default P10, linear interpolation
   between order statistics, Hyndman-Fan type 7 as in :func:`numpy.quantile`) -- the level
   reached on ``1 - quantile`` of the days, to offer as *firm* capacity.

This is the day-type profile analysis of the ACN-Data paper (Z. J. Lee, T. Li, S. H.
Low, "ACN-Data: Analysis and Applications of an Open EV Charging Dataset", ACM e-Energy
2019, section 4: arrivals, departures and occupancy differ between weekdays and
weekends), used as a forecast: the expected occupancy of a future slot is its mean over
the last ``weeks`` weeks of the same day type.

The session table is a :class:`pandas.DataFrame` with the columns of the ACN-Data loader
of the twin (``arrival``, ``departure``: tz-aware UTC datetimes; an energy column, by
default ``delivered_energy_kwh``; ``station_id`` is not needed). Rows with a missing
arrival, departure or energy, or departure at or before arrival, are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["AvailabilityForecast", "availability_forecast"]

_DAY_TYPES = ("weekday", "weekend")


@dataclass(frozen=True)
class AvailabilityForecast:
    """Expected and firm availability per day type and slot of day.

    Attributes:
        table: index ``(day_type, slot)`` (``"weekday"``/``"weekend"``, slot ``0 ..
            1440 / slot_minutes - 1``), columns ``plugged_mean``, ``plugged_q`` (number
            of vehicles), ``energy_mean_kwh``, ``energy_q_kwh`` (pending flexible energy
            [kWh]), ``days`` (number of history days of that type).
        slot_minutes: slot length [min].
        timezone: the site's IANA time zone that defines days and slots.
        quantile: the quantile of the ``_q`` columns (0..1).
    """

    table: pd.DataFrame
    slot_minutes: int
    timezone: str
    quantile: float

    def on_grid(self, t0: datetime, dt_h: float, n: int) -> pd.DataFrame:
        """Map the forecast onto a UTC grid of ``n`` intervals of ``dt_h`` hours.

        Each interval takes the values of the slot (of its local day type) that holds its
        start.

        Args:
            t0: start of the grid (tz-aware UTC).
            dt_h: interval length [h].
            n: number of intervals.

        Returns:
            Index: the ``n`` interval starts (UTC); the columns of :attr:`table`.

        Raises:
            ValueError: naive ``t0``.
        """
        if t0.tzinfo is None or t0.utcoffset() is None:
            raise ValueError(f"t0 must be timezone-aware (UTC), got naive {t0.isoformat()}")
        starts = pd.DatetimeIndex([pd.Timestamp(t0) + pd.Timedelta(hours=k * dt_h)
                                   for k in range(n)]).tz_convert("UTC")
        local = starts.tz_convert(self.timezone)
        slot = (local.hour * 60 + local.minute) // self.slot_minutes
        kind = np.where(local.day_of_week < 5, "weekday", "weekend")
        rows = self.table.loc[list(zip(kind, slot, strict=True))]
        return rows.set_index(starts).rename_axis("time")


def availability_forecast(
    sessions: pd.DataFrame,
    now: datetime,
    *,
    weeks: int = 4,
    slot_minutes: int = 15,
    timezone: str = "UTC",
    quantile: float = 0.1,
    energy_column: str = "delivered_energy_kwh",
) -> AvailabilityForecast:
    """Forecast plugged vehicles and flexible energy per slot of day from past sessions.

    Args:
        sessions: past sessions (see the module docstring for the columns).
        now: the forecast time (tz-aware UTC); the history ends at local midnight before it.
        weeks: length of the history window [weeks], ``>= 1``.
        slot_minutes: slot length [min], dividing 1440.
        timezone: the site's IANA time zone (days, slots, weekday/weekend).
        quantile: quantile for the firm columns (0..1), default 0.1 (P10).
        energy_column: the column of session energy [kWh].

    Returns:
        :class:`AvailabilityForecast` (``5 * weeks`` weekdays, ``2 * weeks`` weekend days).

    Raises:
        ValueError: naive ``now``, bad ``weeks`` / ``slot_minutes`` / ``quantile``, missing
            columns.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}")
    if weeks < 1:
        raise ValueError(f"weeks must be >= 1, got {weeks}")
    if slot_minutes <= 0 or 1440 % slot_minutes:
        raise ValueError(f"slot_minutes must divide 1440, got {slot_minutes}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    missing = sorted({"arrival", "departure", energy_column} - set(sessions.columns))
    if missing:
        raise ValueError(f"sessions lack columns {missing}")
    zone = ZoneInfo(timezone)

    frame = sessions[["arrival", "departure", energy_column]].dropna()
    arrival = _epoch_s(frame["arrival"])
    departure = _epoch_s(frame["departure"])
    energy = frame[energy_column].to_numpy(dtype=np.float64)
    ok = departure > arrival
    arrival, departure, energy = arrival[ok], departure[ok], energy[ok]

    today = now.astimezone(zone).date()
    days = [today - timedelta(days=d) for d in range(7 * weeks, 0, -1)]
    per_day = 1440 // slot_minutes
    slot_s = slot_minutes * 60.0
    plugged = np.zeros((len(days), per_day))
    pending = np.zeros((len(days), per_day))
    offsets = pd.to_timedelta(np.arange(per_day) * slot_minutes, unit="min")
    for row, day in enumerate(days):
        wall = pd.Timestamp(day) + offsets
        starts_local = wall.tz_localize(zone, ambiguous=np.zeros(per_day, dtype=bool),
                                        nonexistent="shift_forward")
        start_s = _epoch_s(pd.Series(starts_local.tz_convert("UTC")))
        end_s = start_s + slot_s
        near = (arrival < end_s[-1]) & (departure > start_s[0])
        a, d, e = arrival[near, None], departure[near, None], energy[near, None]
        overlap = np.clip(np.minimum(d, end_s) - np.maximum(a, start_s), 0.0, None)
        plugged[row] = overlap.sum(axis=0) / slot_s
        mid = start_s + slot_s / 2
        inside = (a <= mid) & (mid < d)
        pending[row] = np.where(inside, e * (d - mid) / (d - a), 0.0).sum(axis=0)

    kinds = np.array(["weekday" if day.weekday() < 5 else "weekend" for day in days])
    parts = []
    for kind in _DAY_TYPES:
        sel = kinds == kind
        part = pd.DataFrame({  # whole weeks: both day types always have days
            "plugged_mean": plugged[sel].mean(axis=0),
            "plugged_q": np.quantile(plugged[sel], quantile, axis=0),
            "energy_mean_kwh": pending[sel].mean(axis=0),
            "energy_q_kwh": np.quantile(pending[sel], quantile, axis=0),
        })
        part["days"] = int(sel.sum())
        part.index = pd.MultiIndex.from_product([[kind], range(per_day)],
                                                names=["day_type", "slot"])
        parts.append(part)
    return AvailabilityForecast(table=pd.concat(parts), slot_minutes=slot_minutes,
                                timezone=timezone, quantile=quantile)


def _epoch_s(values: pd.Series) -> NDArray[np.float64]:
    """Seconds since the Unix epoch of tz-aware datetimes, as float64."""
    stamps = pd.to_datetime(values, utc=True)
    return np.asarray((stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds(),
                      dtype=np.float64)
