"""Building load following a BDEW standard load profile from demandlib.

demandlib 0.2.2's ``ElecSlp`` (BDEW 1999 profiles) fails on pandas 3 (it turns every
warning into an error process-wide and then triggers pandas' inplace deprecation). The
2025 revision classes work: ``demandlib.bdew.G25`` (commercial, the default), ``H25``
(households, dynamised), ``L25`` (agriculture), ``P25``, ``S25``; they give kW for 1 GWh a
year on 15-minute steps, which we rescale to ``annual_kwh``. The profile runs in the
building's local standard time (``utc_offset_h``); the power is constant per 15 minutes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import numpy as np
import pandas as pd

__all__ = ["BuildingLoad", "BuildingSpec", "slp_year"]

_STEP = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class BuildingSpec:
    """A building load.

    Attributes:
        annual_kwh: yearly consumption.
        profile: BDEW 2025 profile class in demandlib: ``G25``, ``H25``, ``L25``, ``P25``,
            ``S25``.
        utc_offset_h: local standard time of the building.
    """

    annual_kwh: float = 250_000.0
    profile: str = "G25"
    utc_offset_h: float = 1.0


@cache
def slp_year(profile: str, year: int) -> np.ndarray:
    """Quarter-hour power of ``year`` (local standard time), normalised to 1 kWh/year."""
    import demandlib.bdew as bdew  # heavy: only when a building is used

    cls = getattr(bdew, profile)
    idx = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq="15min", inclusive="left")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = cls(idx)
    values: np.ndarray = np.asarray(series, dtype=float)
    out: np.ndarray = values / (values.sum() / 4.0)
    return out


class BuildingLoad:
    """Power and energy of a building following a standard load profile.

    Args:
        spec: the building.
        start: time of the initial state (tz-aware UTC).
    """

    def __init__(self, spec: BuildingSpec, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be tz-aware")
        self.spec = spec
        self.last = start
        self._offset = timedelta(hours=spec.utc_offset_h)
        self.energy_kwh = 0.0
        self.power_kw = self.power_at(start)

    def power_at(self, t: datetime) -> float:
        """Power of the quarter hour containing ``t``."""
        local = (t + self._offset).replace(tzinfo=None)
        values = slp_year(self.spec.profile, local.year)
        start = datetime(local.year, 1, 1)
        i = int((local - start) / _STEP)
        return float(values[min(i, len(values) - 1)] * self.spec.annual_kwh)

    def advance(self, now: datetime) -> float:
        """Integrate energy over ``[last, now]`` (piecewise constant); returns the mean kW."""
        dt_s = (now - self.last).total_seconds()
        if dt_s < 0:
            raise ValueError(f"time went backwards: {now} < {self.last}")
        if dt_s == 0:
            return self.power_kw
        t = self.last
        energy = 0.0
        while t < now:
            local = t + self._offset
            boundary = local.replace(minute=local.minute // 15 * 15, second=0, microsecond=0)
            nxt = min(now, boundary - self._offset + _STEP)
            energy += self.power_at(t) * (nxt - t).total_seconds() / 3600.0
            t = nxt
        self.energy_kwh += energy
        self.power_kw = energy / (dt_s / 3600.0)
        self.last = now
        return self.power_kw
