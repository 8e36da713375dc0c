"""Recorded inputs of a field day: charging sessions and the measured non-EV load.

Files written by :func:`twin.replay.replay_run` (or by hand), read by a scenario with
``sessions.dataset: recorded`` / ``site.base_load.kind: series``. CSV (UTF-8, header row)
or Parquet (by the ``.parquet`` / ``.pq`` suffix).

Recorded sessions, one row per charging session:

=============== ======== ==========================================================
column          required meaning
=============== ======== ==========================================================
session_id      yes      unique text
evse            yes      ``"<station id>/<evse id>"`` of the scenario's layout
arrival         yes      plug-in (transaction start), ISO 8601 with a time zone
departure       yes      plug-out (transaction end), after ``arrival``
energy_kwh      yes      energy delivered at the EVSE meter [kWh], >= 0
id_token        no       the driver's id token (blank: ``REC<n>``)
needed_kwh      no       energy the driver needed [kWh] (blank: ``energy_kwh``)
arrival_soc     no       SoC on arrival, 0..1 (blank: see :func:`plan_recorded`)
battery_kwh     no       battery capacity [kWh] (blank: see :func:`plan_recorded`)
max_power_kw    no       the vehicle's charge power limit at the meter [kW]
                         (blank: the EVSE's rating)
=============== ======== ==========================================================

Base-load series: ``time`` (ISO 8601 with a time zone, strictly increasing) and
``power_kw`` (>= 0): each value holds from its time until the next row's time
(piecewise constant); before the first row the first value holds, after the last row
the last value (the nearest edge).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin.session_plan import EvModel, PlannedSession, SessionPlan

SESSION_COLUMNS = ("session_id", "evse", "arrival", "departure", "energy_kwh")
OPTIONAL_SESSION_COLUMNS = ("id_token", "needed_kwh", "arrival_soc", "battery_kwh",
                            "max_power_kw")

#: battery capacity of a recorded vehicle whose capacity is not known [kWh] (the bench's
#: default vehicle); raised when the session's need would not fit in it.
DEFAULT_BATTERY_KWH = 60.0


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as err:  # pandas/pyarrow raise many kinds on a bad file
        raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err})") from None


def _utc_times(values: pd.Series, what: str) -> pd.Series:
    """Tz-aware UTC timestamps; a value without a time zone or not a time is refused."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if getattr(values.dt, "tz", None) is None:
            raise ValueError(f"{what}: times need a time zone (write e.g. 2026-01-05T07:00:00Z)")
        utc: pd.Series = values.dt.tz_convert("UTC")
        return utc
    text = values.astype(str).str.strip()
    for i, v in enumerate(text):
        try:
            ts = pd.Timestamp(v)
        except (ValueError, TypeError):
            raise ValueError(f"{what}: row {i + 1}: {v!r} is not a time") from None
        if pd.isna(ts):
            raise ValueError(f"{what}: row {i + 1}: missing time")
        if ts.tzinfo is None:
            raise ValueError(f"{what}: row {i + 1}: {v!r} needs a time zone "
                             "(write e.g. 2026-01-05T07:00:00Z)")
    return pd.to_datetime(text, utc=True, format="ISO8601")


def _numbers(values: pd.Series, what: str, *, optional: bool) -> pd.Series:
    blank = values.isna() | (values.astype(str).str.strip() == "")
    if blank.any() and not optional:
        raise ValueError(f"{what}: row {int(np.argmax(blank.to_numpy())) + 1}: missing value")
    out = pd.to_numeric(values.where(~blank, None), errors="coerce")
    bad = out.isna() & ~blank
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise ValueError(f"{what}: row {i + 1}: {values.iloc[i]!r} is not a number")
    if not np.isfinite(out.dropna().to_numpy(dtype=float)).all():
        raise ValueError(f"{what}: values must be finite")
    return out.astype(float)


def _file_key(path: str | Path) -> tuple[str, int, int]:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return (str(p), -1, -1)
    return (str(p), st.st_mtime_ns, st.st_size)


def load_recorded_sessions(path: str | Path) -> pd.DataFrame:
    """The recorded sessions at ``path`` (module docstring), in arrival order.

    Read once per file version (path, modification time, size); do not modify the frame.

    Returns:
        columns session_id, evse, station_id, evse_id (int), arrival, departure (UTC),
        energy_kwh, needed_kwh, id_token, arrival_soc, battery_kwh, max_power_kw (NaN
        where blank).

    Raises:
        ValueError: unreadable file, missing column, bad value (with the row number).
    """
    return _sessions(_file_key(path))


@lru_cache(maxsize=16)
def _sessions(key: tuple[str, int, int]) -> pd.DataFrame:
    p = Path(key[0])
    raw = _read_table(p)
    missing = [c for c in SESSION_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{p}: missing columns: {', '.join(missing)}")
    out = pd.DataFrame({"session_id": raw["session_id"].astype(str).str.strip()})
    if (out["session_id"] == "").any() or out["session_id"].duplicated().any():
        raise ValueError(f"{p}: session_id must be unique and non-empty")
    out["evse"] = raw["evse"].astype(str).str.strip()
    parts = out["evse"].str.extract(r"^([^/]+)/([1-9][0-9]*)$")
    if parts.isna().any(axis=None):
        i = int(np.argmax(parts.isna().any(axis=1).to_numpy()))
        raise ValueError(f"{p}: evse: row {i + 1}: {out['evse'].iloc[i]!r} is not "
                         "'<station id>/<evse id>'")
    out["station_id"] = parts[0]
    out["evse_id"] = parts[1].astype(int)
    out["arrival"] = _utc_times(raw["arrival"], f"{p}: arrival")
    out["departure"] = _utc_times(raw["departure"], f"{p}: departure")
    bad = out["departure"] <= out["arrival"]
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise ValueError(f"{p}: row {i + 1}: departure must be after arrival")
    out["energy_kwh"] = _numbers(raw["energy_kwh"], f"{p}: energy_kwh", optional=False)
    for col in OPTIONAL_SESSION_COLUMNS[1:]:
        out[col] = (_numbers(raw[col], f"{p}: {col}", optional=True) if col in raw.columns
                    else np.nan)
    out["id_token"] = (raw["id_token"].fillna("").astype(str).str.strip()
                       if "id_token" in raw.columns else "")
    checks = {
        "energy_kwh": out["energy_kwh"] < 0,
        "needed_kwh": out["needed_kwh"] < 0,
        "arrival_soc": (out["arrival_soc"] < 0) | (out["arrival_soc"] > 1),
        "battery_kwh": out["battery_kwh"] <= 0,
        "max_power_kw": out["max_power_kw"] <= 0,
    }
    for col, wrong in checks.items():
        if wrong.any():
            i = int(np.argmax(wrong.to_numpy()))
            rule = "in [0, 1]" if col == "arrival_soc" else (
                "> 0" if col in ("battery_kwh", "max_power_kw") else ">= 0")
            raise ValueError(f"{p}: {col}: row {i + 1}: must be {rule}")
    return out.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class LoadSeries:
    """A piecewise-constant power series: ``times`` (UTC, ns since epoch), ``power_kw``."""

    times_ns: np.ndarray
    power_kw: np.ndarray

    def at(self, t: datetime) -> float:
        """Value in force at ``t`` (tz-aware); the nearest edge outside the series."""
        ns = pd.Timestamp(t).value
        i = int(np.searchsorted(self.times_ns, ns, side="right")) - 1
        return float(self.power_kw[max(i, 0)])

    @property
    def peak_kw(self) -> float:
        """Largest value [kW]."""
        return float(self.power_kw.max())


def load_base_load_series(path: str | Path) -> LoadSeries:
    """The base-load series at ``path`` (columns ``time``, ``power_kw``).

    Read once per file version (path, modification time, size).

    Raises:
        ValueError: unreadable file, missing column, naive or unordered times, a negative
            or missing power.
    """
    return _series(_file_key(path))


@lru_cache(maxsize=16)
def _series(key: tuple[str, int, int]) -> LoadSeries:
    p = Path(key[0])
    raw = _read_table(p)
    missing = [c for c in ("time", "power_kw") if c not in raw.columns]
    if missing:
        raise ValueError(f"{p}: missing columns: {', '.join(missing)}")
    if raw.empty:
        raise ValueError(f"{p}: no rows")
    times = _utc_times(raw["time"], f"{p}: time")
    power = _numbers(raw["power_kw"], f"{p}: power_kw", optional=False)
    if (power < 0).any():
        raise ValueError(f"{p}: power_kw: row {int(np.argmax((power < 0).to_numpy())) + 1}: "
                         "must be >= 0")
    ns = times.dt.as_unit("ns").astype("int64").to_numpy()
    if (np.diff(ns) <= 0).any():
        raise ValueError(f"{p}: time: rows must be in strictly increasing time order")
    return LoadSeries(ns, power.to_numpy(dtype=float))


def plan_recorded(
    sessions: pd.DataFrame,
    evse_ratings_kw: Mapping[str, float],
    *,
    start: datetime,
    end: datetime,
    target_soc: float,
    min_arrival_soc: float,
    charge_efficiency: float,
    taper_knee_soc: float,
) -> SessionPlan:
    """Plan the replay of recorded sessions on the EVSEs they were recorded on.

    Sessions arriving in ``[start, end)`` are replayed on their own EVSE (no reassignment);
    one arriving while its EVSE is still busy with an earlier session is refused.

    Per session (documented defaults for blank fields):

    * need = ``needed_kwh``, else ``energy_kwh`` (energy at the EVSE meter);
    * battery = ``battery_kwh``, else :data:`DEFAULT_BATTERY_KWH`, raised so that the need
      fits between the arrival SoC (or ``min_arrival_soc``) and ``target_soc``;
    * arrival SoC = ``arrival_soc``; else the need ends at the taper knee
      (``taper_knee_soc``; the field power already shows any taper of the real vehicle),
      not below ``min_arrival_soc``;
    * target SoC = arrival SoC + need x efficiency / battery (at most 1): the replayed
      vehicle stops when it has taken the recorded need;
    * power limit = ``max_power_kw``, else the EVSE's rating (``evse_ratings_kw``), for
      AC (3-phase) and DC alike.
    """
    planned: list[PlannedSession] = []
    refused: list[str] = []
    busy_until: dict[str, datetime] = {}
    records: list[dict[Any, Any]] = sessions.to_dict("records")
    for i, row in enumerate(records):
        arrival: datetime = row["arrival"].to_pydatetime()
        departure: datetime = row["departure"].to_pydatetime()
        if not start <= arrival < end:
            continue
        evse = str(row["evse"])
        if evse not in evse_ratings_kw or busy_until.get(evse, arrival) > arrival:
            refused.append(str(row["session_id"]))
            continue
        busy_until[evse] = departure
        need = row["needed_kwh"]
        need = float(row["energy_kwh"] if pd.isna(need) else need)
        gain = need * charge_efficiency  # battery energy [kWh]
        known_soc = None if pd.isna(row["arrival_soc"]) else float(row["arrival_soc"])
        if pd.isna(row["battery_kwh"]):
            room = (1.0 if known_soc is not None else target_soc) - (
                known_soc if known_soc is not None else min_arrival_soc)
            battery = max(DEFAULT_BATTERY_KWH, gain / room if room > 0 else 0.0)
        else:
            battery = float(row["battery_kwh"])
        if known_soc is not None:
            arrival_soc = known_soc
        else:
            arrival_soc = max(min_arrival_soc, min(taper_knee_soc, target_soc) - gain / battery)
        target = min(1.0, arrival_soc + gain / battery)
        need = (target - arrival_soc) * battery / charge_efficiency
        max_kw = row["max_power_kw"]
        max_kw = float(evse_ratings_kw[evse] if pd.isna(max_kw) else max_kw)
        token = str(row["id_token"]) or f"REC{i:06d}"
        planned.append(PlannedSession(
            session_id=str(row["session_id"]),
            recorded_station_id=str(row["station_id"]),
            evse=evse,
            arrival=arrival,
            departure=departure,
            model=EvModel("recorded vehicle", battery, max_kw, 3, max_kw),
            arrival_soc=arrival_soc,
            target_soc=target,
            needed_kwh=need,
            id_token=token,
            driver_departure=None,
            driver_energy_kwh=None,
        ))
    return SessionPlan(tuple(planned), tuple(refused))
