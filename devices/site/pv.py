"""PV plant: AC power from pvlib (PVWatts) on the TMY3 file shipped with pvlib, curtailable.

The typical-meteorological-year file ``pvlib/data/723170TYA.CSV`` (Greensboro, NC) is read
once with :func:`pvlib.iotools.read_tmy3`; plane-of-array irradiance
(:func:`pvlib.irradiance.get_total_irradiance`), cell temperature (SAPM), PVWatts DC
(:func:`pvlib.pvsystem.pvwatts_dc`) and the PVWatts inverter give an hourly AC profile per
kW of AC rating. A simulated time maps to it by day of year and hour of the day, in the
plant's local standard time (``utc_offset_h``, default the TMY file's); between hour
centres the power is interpolated linearly. Pure apart from reading pvlib's data file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pvlib

__all__ = ["PvPlant", "PvSpec", "tmy_profile"]

TMY_FILE = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"


@dataclass(frozen=True, slots=True)
class PvSpec:
    """A PV plant.

    Attributes:
        rated_kw: AC rating of the inverter.
        dc_ac_ratio: DC nameplate / AC rating.
        tilt_deg: module tilt.
        azimuth_deg: module azimuth (180 = south).
        gamma_pdc: temperature coefficient of DC power (1/K).
        utc_offset_h: local standard time of the plant, for the TMY mapping (None: the
            TMY file's).
    """

    rated_kw: float = 100.0
    dc_ac_ratio: float = 1.2
    tilt_deg: float = 25.0
    azimuth_deg: float = 180.0
    gamma_pdc: float = -0.004
    utc_offset_h: float | None = None


@cache
def tmy_profile(
    tilt_deg: float, azimuth_deg: float, dc_ac_ratio: float, gamma_pdc: float
) -> tuple[np.ndarray, float]:
    """Hourly AC power per kW of AC rating (8760 values, hour-ending) and the TMY UTC offset."""
    with warnings.catch_warnings():  # pvlib 0.16 on pandas 3: deprecation warnings
        warnings.simplefilter("ignore")
        return _tmy_profile(tilt_deg, azimuth_deg, dc_ac_ratio, gamma_pdc)


def _tmy_profile(
    tilt_deg: float, azimuth_deg: float, dc_ac_ratio: float, gamma_pdc: float
) -> tuple[np.ndarray, float]:
    data, meta = pvlib.iotools.read_tmy3(str(TMY_FILE), map_variables=True)
    times = data.index - timedelta(minutes=30)  # hour-ending values: use the hour centre
    solpos = pvlib.solarposition.get_solarposition(
        times, meta["latitude"], meta["longitude"], altitude=meta["altitude"]
    )
    dni_extra = pvlib.irradiance.get_extra_radiation(times)
    poa = pvlib.irradiance.get_total_irradiance(
        tilt_deg,
        azimuth_deg,
        solpos["apparent_zenith"].to_numpy(),
        solpos["azimuth"].to_numpy(),
        data["dni"].to_numpy(),
        data["ghi"].to_numpy(),
        data["dhi"].to_numpy(),
        dni_extra=dni_extra.to_numpy(),
        model="haydavies",
    )
    poa_global = np.nan_to_num(np.asarray(poa["poa_global"], dtype=float))
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_glass"]
    t_cell = pvlib.temperature.sapm_cell(
        poa_global, data["temp_air"].to_numpy(), data["wind_speed"].to_numpy(), **params
    )
    pdc0 = dc_ac_ratio  # per kW AC
    pdc = pvlib.pvsystem.pvwatts_dc(poa_global, t_cell, pdc0, gamma_pdc)
    pac = pvlib.inverter.pvwatts(pdc, pdc0 / dc_ac_ratio * 1.0 / 0.96, eta_inv_nom=0.96)
    pac = np.clip(np.nan_to_num(np.asarray(pac, dtype=float)), 0.0, 1.0)
    return pac[:8760], float(meta["TZ"])


class PvPlant:
    """Available and delivered AC power of a curtailable PV plant.

    Args:
        spec: the plant.
        start: time of the initial state (tz-aware UTC).
    """

    def __init__(self, spec: PvSpec, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be tz-aware")
        self.spec = spec
        self.last = start
        self._profile, tz = tmy_profile(
            spec.tilt_deg, spec.azimuth_deg, spec.dc_ac_ratio, spec.gamma_pdc
        )
        self._offset = timedelta(hours=spec.utc_offset_h if spec.utc_offset_h is not None else tz)
        self.limit_pct = 100.0
        self.power_kw = self.available_kw(start)
        #: mean uncurtailed power over the last interval (what curtailment cost), kW
        self.available_mean_kw = self.power_kw
        self.energy_kwh = 0.0

    def available_kw(self, t: datetime) -> float:
        """AC power the plant could deliver at ``t`` (no curtailment)."""
        local = t + self._offset
        doy = min(local.timetuple().tm_yday, 365)
        hour = (doy - 1) * 24 + local.hour + local.minute / 60 + local.second / 3600
        # profile[i] is the mean of hour [i, i+1): centred at i + 0.5
        x = hour - 0.5
        i0 = int(np.floor(x)) % 8760
        frac = x - np.floor(x)
        p = self._profile
        return float(self.spec.rated_kw * ((1 - frac) * p[i0] + frac * p[(i0 + 1) % 8760]))

    @property
    def cap_kw(self) -> float:
        """The curtailment cap in force."""
        return self.spec.rated_kw * self.limit_pct / 100.0

    def advance(self, now: datetime) -> float:
        """Deliver ``min(available, cap)`` over ``[last, now]``; returns the mean kW."""
        dt_s = (now - self.last).total_seconds()
        if dt_s < 0:
            raise ValueError(f"time went backwards: {now} < {self.last}")
        if dt_s == 0:
            return self.power_kw
        n = max(1, int(np.ceil(dt_s / 300.0)))  # trapezoid on <= 5 min sub-steps
        ts = [self.last + timedelta(seconds=dt_s * k / n) for k in range(n + 1)]
        cap = self.cap_kw
        avail = np.array([self.available_kw(t) for t in ts])
        p = np.minimum(avail, cap)
        mean_kw = float((p[:-1] + p[1:]).sum() / (2 * n))
        self.available_mean_kw = float((avail[:-1] + avail[1:]).sum() / (2 * n))
        self.energy_kwh += mean_kw * dt_s / 3600.0
        self.power_kw = mean_kw
        self.last = now
        return mean_kw
