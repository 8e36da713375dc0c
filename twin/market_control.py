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
the interval's steps (first-order sigma-delta, deterministic). If an LP is infeasible the
EVSEs go back to the DLM (``None``) until the next solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from controllers.csms import Csms
from controllers.market.lp import FloatArray, InfeasibleError, solve
from controllers.market.rolling import DayAheadPrices
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


@dataclass
class _Plan:
    """The applied schedule of one solve: per session, power while present [kW]."""

    k0: int
    power_kw: dict[str, FloatArray] = field(default_factory=dict)
    bound_kw: dict[str, FloatArray] = field(default_factory=dict)  # the LP's charge bound


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
        for p in plugged:
            station_id, evse = p.session.evse.split("/")
            csms.set_evse_setpoint_kw(station_id, int(evse), self._setpoint(p, kk))

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
            self._plan.power_kw[sid] = np.where(share > 0, net[i] / safe, 0.0)
            self._plan.bound_kw[sid] = np.where(share > 0, assets[i].p_max_kw / safe, 0.0)

    def _setpoint(self, p: PluggedEv, kk: int) -> float | None:
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
        if value >= 0.99 * bound:  # at the LP's bound: what the vehicle takes, a little more
            return min(cap.charge_kw * 1.05, self._ratings[p.session.evse][1])
        if value >= cap.min_charge_kw:
            return value
        # below the AC minimum: the minimum for a share value / minimum of the steps
        k_prev, credit = self._credit.get(sid, (kk, 0.0))
        credit = (credit if k_prev == kk else 0.0) + value / cap.min_charge_kw
        on = credit >= 0.5
        self._credit[sid] = (kk, credit - 1.0 if on else credit)
        return cap.min_charge_kw * 1.01 if on else 0.0
