"""Rolling-horizon market optimiser in the lock-step twin (a :class:`twin.runtime.StepHook`).

At the start of every 15-minute interval, and whenever a vehicle has plugged in since the
last solve, the controller re-solves the depot LP (:mod:`twin.market_problem`,
:func:`controllers.market.solve`) for the vehicles plugged in **now** -- their stored
energy from the SoC the vehicle reports, their departure and target as the session
states them; no knowledge of vehicles still to come -- over the next 24 h (cut at the run
end), with the day-ahead prices as published at that time
(:meth:`controllers.market.DayAheadPrices.known_on_grid`, forecast beyond) and the import
limit in force now (the grid event limit the CSMS holds, assumed to persist).

At every control step it hands the CSMS each plugged EVSE's set-point of the current
interval (:meth:`controllers.csms.Csms.set_evse_setpoint_kw`): negative (V2G discharge)
on bidirectional 2.1 EVSEs, positive as a cap of the DLM's allocation, 0 to pause. The DLM
still enforces the site limit. An AC EVSE cannot charge below its minimum current (6 A):
a scheduled power below that minimum is delivered as the minimum for a matching share of
the interval's steps (first-order sigma-delta, deterministic), a step at the minimum only
where the phases it loads have room in the step (else it waits, its credit kept). If an
LP is infeasible, and while the grid asks to hold EVs at their minimum (an OpenADR grid
emergency), the EVSEs go back to the DLM (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from controllers.csms import Csms
from controllers.market.lp import FloatArray, InfeasibleError, solve
from controllers.market.rolling import DayAheadPrices
from devices.vehicle import TAPER_FLOOR_FRACTION
from twin.market_problem import (
    INTERVAL,
    V2G_DEGRADATION_PER_KWH,
    EvCapability,
    capability,
    depot_problem,
    ev_asset,
    evse_ratings,
    import_limit_kw,
)
from twin.runtime import PluggedEv
from twin.scenario import Scenario

#: below this |power| [kW] a scheduled power is 0
EPS_KW = 0.05
#: set-point of a session the LP runs at its bound, over the vehicle's own limit: the
#: DLM quantises a cap down to 0.1 A (0.6 % of 16 A) and reserves what it allocates
AT_BOUND_FACTOR = 1.007


@dataclass
class _Plan:
    """The applied schedule of one solve: per session, power while present [kW]."""

    k0: int
    power_kw: dict[str, FloatArray] = field(default_factory=dict)
    bound_kw: dict[str, FloatArray] = field(default_factory=dict)  # the LP's charge bound


@dataclass(frozen=True)
class _Pulse:
    """A step at the AC minimum a session below it is due (first-order sigma-delta)."""

    credit: float  # accumulated share of minimum-current steps owed in this interval


def accepted_kw(cap: EvCapability, soc: float | None) -> float:
    """What the vehicle accepts at ``soc`` [kW], capped by its EVSE.

    The taper of :meth:`devices.vehicle.VehicleSpec.power_limit_kw`; the EVSE's limit
    when the SoC is not reported.
    """
    if soc is None or soc <= cap.taper_knee_soc or not math.isfinite(cap.vehicle_max_kw):
        return cap.charge_kw
    k = (1.0 - TAPER_FLOOR_FRACTION) / (1.0 - cap.taper_knee_soc)
    g = 1.0 - k * (min(soc, 1.0) - cap.taper_knee_soc)
    return min(cap.charge_kw, cap.vehicle_max_kw * g)


class MarketController:
    """The rolling-horizon optimiser as a step hook of the lock-step runtime."""

    def __init__(
        self,
        scenario: Scenario,
        prices: DayAheadPrices,
        *,
        horizon: timedelta = timedelta(hours=24),
        degradation_per_kwh: float = V2G_DEGRADATION_PER_KWH,
        perf_counter: Callable[[], float] | None = None,
    ) -> None:
        self.scenario = scenario
        self.prices = prices
        self.horizon_k = round(horizon / INTERVAL)
        self.degradation_per_kwh = degradation_per_kwh
        self.perf_counter = perf_counter
        self._ratings = evse_ratings(scenario)
        self._caps: dict[str, EvCapability] = {}
        self._start = scenario.run.start
        self._n = round((scenario.run.end - scenario.run.start) / INTERVAL)
        self._plan: _Plan | None = None
        self._solved_ids: frozenset[str] = frozenset()
        self._credit: dict[str, tuple[int, float]] = {}
        self.solves = 0
        self.infeasible = 0
        self.solve_times_s: list[float] = []

    def before_dlm(
        self, now: datetime, k: int, csms: Csms, plugged: Sequence[PluggedEv]
    ) -> None:
        """Re-solve when due, then set every plugged EVSE's set-point for the next step."""
        kk = int((now - self._start) // INTERVAL)
        if kk >= self._n or not plugged:
            return
        ids = frozenset(p.session.session_id for p in plugged)
        if self._plan is None or self._plan.k0 != kk or not ids <= self._solved_ids:
            self._solve(now, kk, csms, plugged)
            self._solved_ids = ids
        setpoints: dict[str, float | None] = {}
        pulses: list[tuple[float, PluggedEv]] = []
        hold = csms.site_measurement().hold_minimum
        for p in plugged:
            # a grid emergency (hold at minimum) overrides the market schedule: the DLM
            # admits EVSEs at their minimum in its own order, as many as fit
            sp = None if hold else self._setpoint(p, kk)
            if isinstance(sp, _Pulse):
                pulses.append((sp.credit, p))
            else:
                setpoints[p.session.session_id] = sp
        self._schedule_pulses(kk, csms, plugged, setpoints, pulses)
        for p in plugged:
            station_id, evse = p.session.evse.split("/")
            csms.set_evse_setpoint_kw(station_id, int(evse), setpoints[p.session.session_id],
                                      vehicle_phases=p.session.model.ac_phases)

    def _schedule_pulses(
        self,
        kk: int,
        csms: Csms,
        plugged: Sequence[PluggedEv],
        setpoints: dict[str, float | None],
        pulses: list[tuple[float, PluggedEv]],
    ) -> None:
        """Grant minimum-current pulses that fit the phase budget, largest credit first.

        A pulse that would take a phase over its share of the import limit (the DLM's
        capacity per phase: ``(limit - non-EV load) / 3``) waits for a later step of the
        interval, its credit kept; granted anyway it would pre-empt, in the DLM's
        minimum stage, the fill of a vehicle the plan runs at its bound.
        """
        site = csms.site_measurement()
        limit = float(import_limit_kw(self.scenario, [site.external_limit_kw])[0])
        non_ev = site.non_ev_load_kw if site.non_ev_load_kw is not None else limit
        budget = np.full(3, (limit - non_ev) / 3.0)
        for p in plugged:
            sp = setpoints.get(p.session.session_id)
            if sp is not None:
                budget -= sp * np.asarray(self._cap(p).phase_share)
        for credit, p in sorted(pulses, key=lambda x: (-x[0], x[1].session.session_id)):
            cap = self._cap(p)
            sid = p.session.session_id
            load = cap.min_charge_kw * 1.01 * np.asarray(cap.phase_share)
            if (budget - load >= -1e-9).all():
                budget -= load
                setpoints[sid] = cap.min_charge_kw * 1.01
                self._credit[sid] = (kk, credit - 1.0)
            else:
                setpoints[sid] = 0.0
                self._credit[sid] = (kk, credit)

    def _cap(self, p: PluggedEv) -> EvCapability:
        sid = p.session.session_id
        if sid not in self._caps:
            self._caps[sid] = capability(p.session, self.scenario, self._ratings)
        return self._caps[sid]

    def _solve(self, now: datetime, kk: int, csms: Csms, plugged: Sequence[PluggedEv]) -> None:
        n = min(self.horizon_k, self._n - kk)
        t0 = self._start + kk * INTERVAL
        assets, shares = [], []
        for p in plugged:
            cap = self._cap(p)
            s = p.session
            soc = p.soc
            if soc is None:  # no SoC reported: arrival SoC + metered energy
                soc = s.arrival_soc + p.net_kwh * cap.eta_charge / cap.capacity_kwh
            asset, share = ev_asset(
                s, cap, t0, n, soc * cap.capacity_kwh, present_from=now,
                degradation_per_kwh=self.degradation_per_kwh,
            )
            assets.append(asset)
            shares.append(share)
        da = self.prices.known_on_grid(now, t0, INTERVAL, n)
        external = csms.site_measurement().external_limit_kw
        limit = import_limit_kw(self.scenario, [external] * n)
        problem = depot_problem(self.scenario, t0, assets, da, limit, "EUR")
        frac = (t0 + INTERVAL - now) / INTERVAL
        if frac < 1.0:
            # a re-solve within the interval (a vehicle plugged in): the sessions' shares
            # of interval 0 are the rest of it, so its site limit and base load are too
            # (interval means); else the plan would count the elapsed part's capacity again
            lim, base = problem.import_limit_kw.copy(), problem.base_load_kw.copy()
            lim[0] *= frac
            base[0] *= frac
            problem = replace(problem, import_limit_kw=lim, base_load_kw=base)
        self._plan = _Plan(kk)
        self.solves += 1
        try:
            sched = solve(problem, perf_counter=self.perf_counter)
        except InfeasibleError:
            self.infeasible += 1
            return
        self.solve_times_s.append(sched.solve_time_s)
        net = sched.charge_kw - sched.discharge_kw
        for i, p in enumerate(plugged):
            share = shares[i]
            safe = np.where(share > 0, share, 1.0)
            sid = p.session.session_id
            bound = assets[i].p_max_kw
            tp = assets[i].taper
            if tp is not None:  # the taper row's bound at the planned energies
                bound = np.minimum(bound, tp.scale * (
                    tp.intercept_kw - tp.slope_kw_per_kwh * sched.energy_kwh[i, :-1]))
            self._plan.power_kw[sid] = np.where(share > 0, net[i] / safe, 0.0)
            self._plan.bound_kw[sid] = np.where(share > 0, bound / safe, 0.0)

    def _setpoint(self, p: PluggedEv, kk: int) -> float | _Pulse | None:
        plan = self._plan
        sid = p.session.session_id
        if plan is None or sid not in plan.power_kw:
            return None  # no schedule (infeasible LP): the DLM decides
        power = plan.power_kw[sid]
        j = kk - plan.k0
        value = float(power[j]) if 0 <= j < power.size else 0.0
        cap = self._cap(p)
        if value < -EPS_KW:
            return value if cap.discharge_kw > 0 else 0.0
        if value <= EPS_KW:
            return 0.0
        bound = float(plan.bound_kw[sid][j]) if 0 <= j < power.size else 0.0
        if value >= 0.99 * bound:
            # at the LP's bound (power or taper): what the vehicle takes now, plus one 0.1 A
            # quantum of the DLM. A larger cap is reserved per phase by the DLM and starves
            # the others; on the taper, a cap at what the vehicle accepts keeps the DLM from
            # reserving its taper headroom on top of it.
            takes = accepted_kw(cap, p.soc)
            return min(takes * AT_BOUND_FACTOR, self._ratings[p.session.evse].rating_kw)
        if value >= cap.min_charge_kw:
            return value
        # below the AC minimum: the minimum for a share value / minimum of the steps
        k_prev, credit = self._credit.get(sid, (kk, 0.0))
        credit = (credit if k_prev == kk else 0.0) + value / cap.min_charge_kw
        if credit >= 0.5:
            return _Pulse(credit)  # granted by _schedule_pulses if the phases allow
        self._credit[sid] = (kk, credit)
        return 0.0
