"""Resolve a scenario's real-data inputs: fetch what is missing, load, plan, price.

Everything a run reads from outside is resolved here, once, before the run starts, so
that a missing data set or a run window outside the data is an error before any
endpoint starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from twin import data_cache
from twin.inputs.acn_sessions import load_acn_sessions
from twin.inputs.ev_specs import load_ev_specs
from twin.inputs.prices import load_ercot_dam_spp, load_nl_day_ahead, price_at
from twin.inputs.recorded import load_recorded_sessions, plan_recorded
from twin.price_signal import align_times
from twin.scenario import STATION_KINDS, Scenario
from twin.session_plan import EvModel, SessionPlan, plan_sessions


@dataclass(frozen=True)
class RunInputs:
    """Resolved inputs of a run.

    ``price_per_mwh`` has one value per control step: the price in force at the step's
    start, in ``currency`` per MWh (None without a price data set). ``sources`` maps
    each data set to its cache manifest (wheel, sha256 of wheel and files, licence).
    """

    plan: SessionPlan
    price_per_mwh: np.ndarray | None
    currency: str | None
    sources: dict[str, Any]


def _ev_models(scenario: Scenario) -> tuple[list[EvModel], list[float]]:
    fleet = scenario.vehicles.fleet
    if fleet is not None:
        return (
            [EvModel(m.name, m.battery_capacity_kwh, m.ac_max_power_kw, m.ac_phases,
                     m.dc_max_power_kw, m.v2g, m.ac_max_discharge_kw, m.dc_max_discharge_kw)
             for m in fleet],
            [m.weight for m in fleet],
        )
    models: list[EvModel] = []
    weights: list[float] = []
    for spec in load_ev_specs():
        models.append(
            EvModel(
                name=spec.model,
                battery_capacity_kwh=spec.battery_capacity_kwh,
                ac_max_power_kw=spec.max_ac_charge_power_kw,
                ac_phases=spec.ac_phases,
                dc_max_power_kw=spec.max_dc_charge_power_kw,
            )
        )
        weights.append(float(spec.registrations))
    return models, weights


def stack_days(sessions: pd.DataFrame, start: datetime, days: int) -> pd.DataFrame:
    """Shift the sessions of day d (counted from ``start``, d < ``days``) back by d days.

    Returns the shifted frame in arrival order (stable on session id); sessions from
    ``days`` days on are dropped.
    """
    day = ((sessions["arrival"] - start) // pd.Timedelta(days=1)).astype(int)
    keep = sessions[(day >= 0) & (day < days)].copy()
    shift = pd.to_timedelta(day[(day >= 0) & (day < days)], unit="D")
    for col in ("arrival", "departure", "estimated_departure"):
        keep[col] = keep[col] - shift
    return keep.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)


def step_price_series(scenario: Scenario) -> tuple[np.ndarray, str] | None:
    """Price in force at the start of each control step, and its currency."""
    prices = scenario.prices
    if prices is None:
        return None
    run = scenario.run
    starts = pd.date_range(run.start, periods=run.steps, freq=timedelta(seconds=run.step_s))
    lookup = align_times(
        pd.DatetimeIndex(starts), prices.align, scenario.site.timezone,
        prices.market_timezone, prices.year_offset,
    )
    lo = lookup.min().to_pydatetime()
    hi = lookup.max().to_pydatetime() + timedelta(seconds=1)
    if prices.dataset == "ercot_dam_spp":
        assert prices.settlement_point is not None
        frame = load_ercot_dam_spp(prices.settlement_point, lo, hi)
    else:
        frame = load_nl_day_ahead(lo, hi)
    return price_at(frame, lookup), prices.currency


def resolve_inputs(scenario: Scenario, *, progress: Any = None) -> RunInputs:
    """Fetch missing data sets, then load sessions, EV models and prices.

    Args:
        scenario: validated scenario.
        progress: a rich Progress or callback for the data fetch (optional).

    Raises:
        twin.datasets.DataSetError: a data set cannot be fetched or fails its checksum.
        ValueError: the run window lies outside the data.
    """
    data_cache.ensure(scenario.datasets, progress=progress)
    run = scenario.run
    if scenario.sessions.dataset == "recorded":
        return _recorded_inputs(scenario)
    site: Literal["caltech", "jpl"] = (
        "caltech" if scenario.sessions.dataset == "acn_caltech" else "jpl"
    )
    stack = scenario.sessions.stack_days
    # sessions recorded from ``replay_from`` on are replayed from the run start
    source_start = scenario.sessions.replay_from or run.start
    shift = run.start - source_start
    sessions = load_acn_sessions(
        site, source_start, max(run.end, run.start + timedelta(days=stack)) - shift
    )
    if shift:
        sessions = sessions.copy()
        for col in ("arrival", "departure", "estimated_departure"):
            sessions[col] = sessions[col] + shift
    if stack > 1:
        sessions = stack_days(sessions, run.start, stack)
    sessions = sessions[(sessions["arrival"] >= run.start) & (sessions["arrival"] < run.end)]
    models, weights = _ev_models(scenario)
    evses = [f"{sid}/{e}" for sid, evse_ids in scenario.evse_layout() for e in evse_ids]
    plan = plan_sessions(
        sessions,
        evses,
        models,
        weights,
        seed=run.seed,
        target_soc=scenario.vehicles.target_soc,
        min_arrival_soc=scenario.vehicles.min_arrival_soc,
        charge_efficiency=scenario.vehicles.charge_efficiency,
        station_map=dict(scenario.sessions.station_map),
    )
    return _with_prices(scenario, plan)


def _with_prices(scenario: Scenario, plan: SessionPlan) -> RunInputs:
    priced = step_price_series(scenario)
    sources = {name: data_cache.manifest(name) for name in scenario.datasets}
    files = {"sessions": scenario.sessions.file, "base_load": scenario.site.base_load.file}
    for what, path in files.items():
        if path is not None:  # recorded field-day files: path and checksum
            sources[f"{what}_file"] = {"path": path, "sha256": data_cache.sha256_file(Path(path))}
    return RunInputs(
        plan=plan,
        price_per_mwh=priced[0] if priced else None,
        currency=priced[1] if priced else None,
        sources=sources,
    )


def _recorded_inputs(scenario: Scenario) -> RunInputs:
    """Inputs of a run on recorded sessions (``sessions.dataset: recorded``)."""
    assert scenario.sessions.file is not None
    ratings = {
        f"{sid}/{e}": STATION_KINDS[group.kind][1]
        for group in scenario.stations for sid in group.station_ids()
        for e in range(1, group.evses + 1)
    }
    vc = scenario.vehicles
    plan = plan_recorded(
        load_recorded_sessions(scenario.sessions.file), ratings,
        start=scenario.run.start, end=scenario.run.end, target_soc=vc.target_soc,
        min_arrival_soc=vc.min_arrival_soc, charge_efficiency=vc.charge_efficiency,
        taper_knee_soc=vc.taper_knee_soc,
    )
    return _with_prices(scenario, plan)
