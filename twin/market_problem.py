"""The depot LP of a scenario: EV sessions, prices and site limits on a 15-minute grid.

Shared by the market study (:mod:`twin.market_study`, perfect foresight) and the market
controller in the lock-step twin (:mod:`twin.market_control`, rolling horizon), so that
both solve the same model of the same depot:

* one :class:`~controllers.market.AssetSpec` per session, on the **battery side**: stored
  energy = SoC x capacity, ``eta_charge`` = the scenario's grid-to-battery efficiency,
  ``eta_discharge`` = the vehicle's battery-to-grid efficiency; bounds: V2G floor
  (``vehicles.v2g_min_soc``, or the arrival SoC if lower) .. ``target_soc`` (the vehicle
  stops there); departure energy ``target_soc x capacity`` at the boundary after the
  departure (soft, priced at the LP's shortfall penalty); a session still plugged in at the
  end of the window gets its target at the window's end;
* power bounds at the EVSE meter: ``min(EVSE rating, vehicle AC/DC limit)``, discharge
  ``ac/dc_max_discharge_kw`` only for a V2G vehicle on a bidirectional OCPP 2.1 EVSE; in an
  interval the vehicle is present only in part, the bounds are scaled by that share (so
  the LP's interval-mean power is feasible);
* the vehicle's charge taper (:mod:`devices.vehicle`: above ``taper_knee_soc`` the accepted
  power falls linearly with the SoC) as one row per interval, linear in the stored energy
  at the interval's start (:func:`charge_taper`: the exact interval mean on the taper);
* departure shortfall priced at max(5, 2 x the highest |price| per kWh) per kWh: above
  any price, so energy is never skipped for price;
* the phases: a single-phase vehicle loads one site phase (its EVSE's ``PhaseRotation``,
  :func:`twin.runtime.station_specs`), so the import limit holds per phase too: one
  third of ``limit - base load`` per phase, as the DLM allocates it (non-EV load assumed
  balanced);
* ties between equal prices broken towards the earlier interval (stable re-solves);
* site: the scenario's base load (interval mean), import limit ``min(grid limit, event
  limit) - safety margin`` (the DLM's own limit), no export limit, no demand charge;
  import price = export price = the real day-ahead price (no fees).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, time, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd

from controllers.dlm.phases import site_phases
from controllers.market.lp import (
    BALANCED,
    AssetSpec,
    ChargeTaper,
    DepotProblem,
    EnergyTarget,
    FloatArray,
)
from controllers.market.rolling import DayAheadPrices
from devices.vehicle import TAPER_FLOOR_FRACTION, VehicleSpec
from twin.inputs.prices import load_ercot_dam_spp, load_nl_day_ahead
from twin.runtime import station_specs
from twin.scenario import Scenario
from twin.session_plan import PlannedSession

#: settlement and LP interval
INTERVAL = timedelta(minutes=15)
#: V2G battery wear priced in the LP [currency/kWh of AC throughput of a V2G session]
V2G_DEGRADATION_PER_KWH = 0.01
#: tie-break among equal prices [currency/MWh per interval]: the earlier interval is
#: preferred, so that re-solves keep a stable, front-loaded plan (never changes an order
#: of distinct prices, which differ by at least 0.01)
TIE_BREAK_PER_MWH = 1e-4
#: day-ahead publication (local time of the market, the day before delivery)
PUBLICATION = {"ercot_dam_spp": time(13, 30), "nl_day_ahead": time(12, 0)}
#: the emulated vehicle's battery-to-grid efficiency (the runtime keeps its default)
_DISCHARGE_EFFICIENCY = float(
    next(f.default for f in fields(VehicleSpec) if f.name == "discharge_efficiency")  # type: ignore[arg-type]
)


@dataclass(frozen=True)
class EvCapability:
    """What the LP needs to know of a session's vehicle on its EVSE."""

    capacity_kwh: float
    charge_kw: float
    discharge_kw: float
    min_charge_kw: float  # AC: minimum current x vehicle phases x voltage; DC: 0
    eta_charge: float
    eta_discharge: float
    floor_soc: float
    target_soc: float
    vehicle_max_kw: float = math.inf  # the vehicle's own limit (its taper's full power)
    taper_knee_soc: float = 1.0
    #: share of the power on site phases L1..L3 (a 1-phase vehicle: its EVSE's L1 phase)
    phase_share: tuple[float, float, float] = BALANCED


class EvseRating(NamedTuple):
    """An EVSE of the scenario as the LP sees it."""

    kind: str  # "AC" or "DC"
    rating_kw: float
    bidirectional: bool  # can discharge (OCPP 2.1 bidirectional)
    phase_rotation: str  # OCPP PhaseRotation, e.g. "STR" (twin.runtime.station_specs)


def evse_ratings(scenario: Scenario) -> dict[str, EvseRating]:
    """``"<station>/<evse>"`` -> :class:`EvseRating` (the runtime's station specs)."""
    out: dict[str, EvseRating] = {}
    for spec in station_specs(scenario):
        for e in spec.evses:
            out[f"{spec.station_id}/{e.evse_id}"] = EvseRating(
                e.kind, e.max_power_kw, e.bidirectional, e.phase_rotation)
    return out


def _phase_share(rotation: str, vehicle_phases: int) -> tuple[float, float, float]:
    """Site-phase shares of an AC session: 1-phase on the EVSE's L1's site phase."""
    if vehicle_phases >= 3:
        return BALANCED
    phases = site_phases(rotation, (1,))
    w = 1.0 / len(phases)  # unknown rotation: every phase (worst case, like the DLM)
    share = [w if p in phases else 0.0 for p in (1, 2, 3)]
    return (share[0], share[1], share[2])


def capability(
    session: PlannedSession, scenario: Scenario, ratings: dict[str, EvseRating]
) -> EvCapability:
    """The session's vehicle on its EVSE (see the module docstring)."""
    kind, rating, bidir, rotation = ratings[session.evse]
    m = session.model
    vc = scenario.vehicles
    if kind == "AC":
        charge = min(rating, m.ac_max_power_kw)
        discharge = min(rating, m.ac_max_discharge_kw) if (m.v2g and bidir) else 0.0
        min_charge = (
            scenario.controllers.dlm.min_current_a * m.ac_phases * scenario.site.voltage_v / 1000
        )
    else:
        charge = min(rating, m.dc_max_power_kw)
        discharge = min(rating, m.dc_max_discharge_kw) if (m.v2g and bidir) else 0.0
        min_charge = 0.0
    return EvCapability(
        capacity_kwh=m.battery_capacity_kwh,
        charge_kw=charge,
        discharge_kw=discharge,
        min_charge_kw=min_charge,
        eta_charge=vc.charge_efficiency,
        eta_discharge=_DISCHARGE_EFFICIENCY,
        floor_soc=vc.v2g_min_soc,
        target_soc=session.target_soc,
        vehicle_max_kw=m.ac_max_power_kw if kind == "AC" else m.dc_max_power_kw,
        taper_knee_soc=vc.taper_knee_soc,
        phase_share=_phase_share(rotation, m.ac_phases) if kind == "AC" else BALANCED,
    )


def charge_taper(cap: EvCapability, share: FloatArray) -> ChargeTaper | None:
    """The vehicle's CC-CV taper as an LP row (:class:`controllers.market.lp.ChargeTaper`).

    :mod:`devices.vehicle`: above the knee the accepted power is ``P_max g(soc)``, ``g = 1 -
    k (soc - knee)``, ``k = (1 - f) / (1 - knee)``; at full acceptance ``g`` decays as
    ``exp(-k r t)`` (``r = eta P_max / (3600 C)`` soc per second), so the mean power over
    an interval of ``T`` begun at ``e`` is ``P_max alpha g(e / C)``, ``alpha = (1 -
    exp(-k r T)) / (k r T)``: exact on the taper, an over-estimate before the knee (where
    the power bound ``P_max`` binds instead). None when the target is not above the knee.
    """
    if cap.target_soc <= cap.taper_knee_soc or not math.isfinite(cap.vehicle_max_kw) \
            or cap.vehicle_max_kw <= 0:
        return None
    k = (1.0 - TAPER_FLOOR_FRACTION) / (1.0 - cap.taper_knee_soc)
    r = cap.eta_charge * cap.vehicle_max_kw / (3600.0 * cap.capacity_kwh)
    x = k * r * INTERVAL.total_seconds()
    alpha = -math.expm1(-x) / x
    p = cap.vehicle_max_kw * alpha
    return ChargeTaper(
        intercept_kw=p * (1.0 + k * cap.taper_knee_soc),
        slope_kw_per_kwh=p * k / cap.capacity_kwh,
        scale=np.asarray(share, dtype=float),
    )


def presence(
    start: datetime, n: int, arrival: datetime, departure: datetime
) -> FloatArray:
    """Share of each of ``n`` intervals from ``start`` during which the vehicle is present."""
    out = np.zeros(n)
    for k in range(n):
        t0 = start + k * INTERVAL
        lo, hi = max(t0, arrival), min(t0 + INTERVAL, departure)
        if hi > lo:
            out[k] = (hi - lo) / INTERVAL
    return out


def ev_asset(
    session: PlannedSession,
    cap: EvCapability,
    start: datetime,
    n: int,
    e0_kwh: float,
    *,
    present_from: datetime | None = None,
    degradation_per_kwh: float = V2G_DEGRADATION_PER_KWH,
) -> tuple[AssetSpec, FloatArray]:
    """The session as an LP asset over ``n`` intervals from ``start``, and its presence.

    ``e0_kwh``: battery energy at ``start`` (or at ``present_from``, the time the
    controller decides, when later than the arrival).
    """
    arrival = max(session.arrival, present_from) if present_from else session.arrival
    share = presence(start, n, arrival, session.departure)
    e_top = max(cap.target_soc * cap.capacity_kwh, e0_kwh)
    e_floor = min(cap.floor_soc * cap.capacity_kwh, e0_kwh) if cap.discharge_kw > 0 else 0.0
    end = start + n * INTERVAL
    index = n if session.departure >= end else math.ceil((session.departure - start) / INTERVAL)
    asset = AssetSpec(
        asset_id=session.session_id,
        p_min_kw=-cap.discharge_kw * share,
        p_max_kw=cap.charge_kw * share,
        e_min_kwh=np.full(n + 1, e_floor),
        e_max_kwh=np.full(n + 1, e_top),
        e0_kwh=e0_kwh,
        eta_charge=cap.eta_charge,
        eta_discharge=cap.eta_discharge,
        degradation_cost_per_kwh=degradation_per_kwh if cap.discharge_kw > 0 else 0.0,
        # the departure target first (its shortfall is the unmet energy)
        targets=(EnergyTarget(max(index, 0), cap.target_soc * cap.capacity_kwh),),
        phase_share=cap.phase_share,
        taper=charge_taper(cap, share),
    )
    return asset, share


def base_load_kw(scenario: Scenario, start: datetime, n: int) -> FloatArray:
    """Mean base load of each interval [kW] (sampled at the control step)."""
    m = max(1, round(INTERVAL.total_seconds() / scenario.run.step_s))
    dt = timedelta(seconds=scenario.run.step_s)
    bl = scenario.site.base_load
    return np.array([
        np.mean([bl.power_kw_at(start + k * INTERVAL + i * dt) for i in range(m)])
        for k in range(n)
    ])


def import_limit_kw(scenario: Scenario, event_limit_kw: Sequence[float | None]) -> FloatArray:
    """The DLM's import limit per interval: min(grid, event limit) - safety margin."""
    site = scenario.site
    return np.array([
        max(min(site.grid_limit_kw, e if e is not None else math.inf) - site.safety_margin_kw,
            0.0)
        for e in event_limit_kw
    ])


def shortfall_penalty(price_per_mwh: FloatArray) -> float:
    """Price of unmet energy [currency/kWh]: max(5, 2 x the highest |price|).

    Above any price in the horizon: the LP first charges what it can, then minimises cost
    (the DLM too never skips energy for price).
    """
    return max(5.0, 2.0 * float(np.abs(np.asarray(price_per_mwh)).max()) / 1000.0)


def depot_problem(
    scenario: Scenario,
    start: datetime,
    assets: Sequence[AssetSpec],
    price_per_mwh: FloatArray,
    limit_kw: FloatArray,
    currency: str,
) -> DepotProblem:
    """The LP of ``assets`` from ``start`` at ``price_per_mwh`` (import = export price).

    The prices get the :data:`TIE_BREAK_PER_MWH` ramp (settlement uses the real ones).
    """
    n = len(price_per_mwh)
    price_per_mwh = np.asarray(price_per_mwh, dtype=float) + TIE_BREAK_PER_MWH * np.arange(n)
    penalty = shortfall_penalty(price_per_mwh)
    return DepotProblem(
        start=start,
        interval=INTERVAL,
        assets=tuple(assets),
        price_import_per_mwh=price_per_mwh,
        price_export_per_mwh=price_per_mwh,
        base_load_kw=base_load_kw(scenario, start, n),
        pv_kw=np.zeros(n),
        import_limit_kw=limit_kw,
        export_limit_kw=np.full(n, math.inf),
        shortfall_penalty_per_kwh=penalty,
        currency=currency,
    )


def study_prices(scenario: Scenario) -> DayAheadPrices:
    """The scenario's real day-ahead prices (8 days before .. 2 days after the run).

    Published at 13:30 America/Chicago (ERCOT DAM) or 12:00 Europe/Amsterdam (SDAC) the
    day before delivery. Only ``align: utc`` price series without a year offset.
    """
    prices = scenario.prices
    if prices is None:
        raise ValueError("the market study needs the scenario's prices")
    if prices.align != "utc" or prices.year_offset:
        raise ValueError("the market study supports prices with align: utc, year_offset: 0")
    run = scenario.run
    lo, hi = run.start - timedelta(days=8), run.end + timedelta(days=2)
    if prices.dataset == "ercot_dam_spp":
        assert prices.settlement_point is not None
        frame = load_ercot_dam_spp(prices.settlement_point, lo, hi)
    else:
        frame = load_nl_day_ahead(lo, hi)
    times = pd.DatetimeIndex(frame["time"])
    step = pd.Timedelta(hours=1)
    if len(times) < 2 or not (times[1:] - times[:-1] == step).all():
        raise ValueError("day-ahead prices: not a gap-free hourly series around the run")
    return DayAheadPrices(
        start=times[0].to_pydatetime(),
        interval=timedelta(hours=1),
        price_per_mwh=frame["price_per_mwh"].to_numpy(dtype=float),
        tz=prices.market_timezone,
        publication=PUBLICATION[prices.dataset],
    )
