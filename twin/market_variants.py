"""The market study's variants on the LP model, and what every variant is measured by.

:class:`VariantResult` holds one variant's figures and :func:`settle_net` settles a net
site power per 15 min (every variant, twin or LP, is settled by it: see
:mod:`twin.market_study`). :func:`perfect_foresight_variant` solves one LP over the run
window with everything known; :func:`rolling_lp_variant` re-solves the rolling horizon on
the LP's own physics (no twin), to tell the cost of missing information from the cost of
the physics the LP does not model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from controllers.market.lp import FloatArray, solve
from controllers.market.rolling import DayAheadPrices
from controllers.market.settlement import Settlement, settle
from twin.market_problem import (
    INTERVAL,
    capability,
    depot_problem,
    ev_asset,
    evse_ratings,
    import_limit_kw,
)
from twin.run_inputs import RunInputs
from twin.scenario import Scenario

__all__ = ["LABELS", "VARIANTS", "VariantResult", "perfect_foresight_variant",
           "rolling_lp_variant", "settle_net"]

VARIANTS = ("uncontrolled", "dlm", "rolling", "rolling_lp", "perfect_foresight")
LABELS = {
    "uncontrolled": "uncontrolled",
    "dlm": "DLM only",
    "rolling": "rolling-horizon optimiser (twin)",
    "rolling_lp": "rolling horizon, LP physics",
    "perfect_foresight": "perfect foresight",
}


@dataclass(frozen=True)
class VariantResult:
    """Figures of one variant (:mod:`twin.market_study`)."""

    name: str
    settlement: Settlement
    peak_import_kw: float
    unmet_kwh: float
    run_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cost(self) -> Decimal:
        """Amount due [currency], rounded to the minor unit."""
        return self.settlement.amount_due

    @property
    def export_kwh(self) -> Decimal:
        """Settled export energy [kWh]."""
        return self.settlement.export_kwh

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON-able values (money and energies as strings)."""
        s = self.settlement
        return {
            "label": LABELS[self.name],
            "cost": str(s.amount_due),
            "energy_cost": str(s.energy_cost),
            "export_revenue": str(s.export_revenue),
            "import_kwh": str(s.import_kwh),
            "export_kwh": str(s.export_kwh),
            "peak_import_kw": round(self.peak_import_kw, 3),
            "unmet_kwh": round(self.unmet_kwh, 3),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            **self.extra,
        }


def settle_net(
    start: datetime, net_kw: FloatArray, price_per_mwh: FloatArray, currency: str
) -> Settlement:
    """Settle mean net site powers per 15 min (import +) at the day-ahead prices."""
    prices = [Decimal(repr(round(float(p), 2))) for p in price_per_mwh]
    return settle(
        start,
        INTERVAL,
        [max(float(x), 0.0) for x in net_kw],
        [max(-float(x), 0.0) for x in net_kw],
        prices,
        prices,
        currency=currency,
    )


def perfect_foresight_variant(
    scenario: Scenario,
    inputs: RunInputs,
    price_per_mwh: FloatArray,
    limits: list[float | None],
    currency: str,
) -> VariantResult:
    """One LP over the run window with all sessions and prices known (module docstring)."""
    start = scenario.run.start
    n = len(price_per_mwh)
    end = start + n * INTERVAL
    ratings = evse_ratings(scenario)
    assets = []
    caps = []
    for s in inputs.plan.sessions:
        cap = capability(s, scenario, ratings)
        asset, _ = ev_asset(s, cap, start, n, s.arrival_soc * cap.capacity_kwh)
        assets.append(asset)
        caps.append((s, cap))
    problem = depot_problem(
        scenario, start, assets, price_per_mwh, import_limit_kw(scenario, limits), currency)
    sched = solve(problem)
    net = sched.import_kw - sched.export_kw
    settlement = settle_net(start, net, price_per_mwh, currency)
    unmet = sum(
        short[0] / cap.eta_charge
        for (s, cap), short in zip(caps, sched.shortfall_kwh, strict=True)
        if s.departure <= end and short
    )
    return VariantResult(
        name="perfect_foresight",
        settlement=settlement,
        peak_import_kw=float(max(sched.import_kw.max(initial=0.0), 0.0)),
        unmet_kwh=float(unmet),
        extra={"lp_objective": round(sched.objective, 6),
               "v2g_discharge_kwh": round(float(sched.discharge_kw.sum()) * INTERVAL / timedelta(
                   hours=1), 3),
               "lp_solve_time_s": round(sched.solve_time_s, 4)},
    )


def rolling_lp_variant(
    scenario: Scenario,
    inputs: RunInputs,
    prices: DayAheadPrices,
    price_per_mwh: FloatArray,
    limits: list[float | None],
    currency: str,
) -> VariantResult:
    """The rolling horizon on the LP's own physics (no twin): where information is lost.

    Every 15 min from the run start, the LP of the sessions present in the coming
    interval (a session enters at its arrival: no foresight of later arrivals) from their
    stored energies, with the prices known then and the grid event limit in force then
    (assumed to persist), is solved over the rest of the window; its first interval is
    applied (the LP's energies carried). Its gap to perfect foresight is the price of not
    knowing arrivals and next-day prices; the twin run's further gap is the physics the
    LP does not model.
    """
    start = scenario.run.start
    n = len(price_per_mwh)
    end = start + n * INTERVAL
    ratings = evse_ratings(scenario)
    caps = {s.session_id: capability(s, scenario, ratings) for s in inputs.plan.sessions}
    energy = {s.session_id: s.arrival_soc * caps[s.session_id].capacity_kwh
              for s in inputs.plan.sessions}
    net = np.zeros(n)
    discharged = 0.0
    for kk in range(n):
        t0 = start + kk * INTERVAL
        present = [s for s in inputs.plan.sessions
                   if s.arrival < t0 + INTERVAL and s.departure > t0]
        if not present:
            net[kk] = float(depot_problem(scenario, t0, [], price_per_mwh[kk:kk + 1],
                                          np.ones(1), currency).base_load_kw[0])
            continue
        assets = [ev_asset(s, caps[s.session_id], t0, n - kk, energy[s.session_id])[0]
                  for s in present]
        da = prices.known_on_grid(t0, t0, INTERVAL, n - kk)
        limit = import_limit_kw(scenario, [limits[kk]] * (n - kk))
        sched = solve(depot_problem(scenario, t0, assets, da, limit, currency))
        for i, s in enumerate(present):
            energy[s.session_id] = float(sched.energy_kwh[i, 1])
        net[kk] = float(sched.import_kw[0] - sched.export_kw[0])
        discharged += float(sched.discharge_kw[:, 0].sum()) * INTERVAL / timedelta(hours=1)
    settlement = settle_net(start, net, price_per_mwh, currency)
    unmet = sum(
        max(caps[s.session_id].target_soc * caps[s.session_id].capacity_kwh
            - energy[s.session_id], 0.0) / caps[s.session_id].eta_charge
        for s in inputs.plan.sessions if s.departure <= end
    )
    return VariantResult(
        name="rolling_lp",
        settlement=settlement,
        peak_import_kw=float(max(net.max(initial=0.0), 0.0)),
        unmet_kwh=float(unmet),
        extra={"v2g_discharge_kwh": round(discharged, 3)},
    )
