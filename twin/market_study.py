"""Market study (issue 7): four ways to run one day on the same real data.

For one scenario -- the same replayed sessions, vehicles, real day-ahead prices and base
load -- :func:`run_study` computes:

* ``uncontrolled``: the twin's uncontrolled run (the machinery of ``compare_uncontrolled``:
  no grid events, no site devices, a grid limit that never binds: every EV charges at the
  most its EVSE and vehicle allow from arrival until full);
* ``dlm``: the twin run of the scenario as it is (DLM only, grid events and their
  response included);
* ``rolling``: the twin run with the rolling-horizon market optimiser
  (:class:`twin.market_control.MarketController`) setting EVSE set-points through the CSMS,
  the DLM still enforcing the site limit; the OpenADR price-ceiling response is switched
  off in this run (the optimiser is the price response), capacity-limit events stay;
* ``perfect_foresight``: one LP (:mod:`twin.market_problem`) over the whole run window
  with every session, its arrival and departure and every real price known in advance,
  and the grid event limits as the DLM run met them.

Every variant is measured the same way on a 15-minute grid from the run start: the
site's mean net power per interval (the twin's site import trace, or the LP schedule),
import = its positive part, export = its negative part, settled against the real
day-ahead price of the interval with :func:`controllers.market.settle` (Decimal, the
scenario's currency, both registers at 1 Wh). Peak import = highest 15-min mean import;
unmet energy = energy the sessions that departed within the window needed at the EVSE
meter and did not get (twin: the ``energy_unmet_kwh`` KPI; LP: the departure shortfall
over the charge efficiency); export energy = the settled export register.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from controllers.market.lp import FloatArray
from controllers.market.rolling import DayAheadPrices
from twin import kpis as kpi_doc
from twin.market_control import MarketController
from twin.market_problem import (
    INTERVAL,
    shortfall_penalty,
    study_prices,
)
from twin.market_variants import (
    VARIANTS,
    VariantResult,
    perfect_foresight_variant,
    rolling_lp_variant,
    settle_net,
)
from twin.run_inputs import RunInputs, resolve_inputs
from twin.runtime import LockStepRuntime, ProgressCallback, StepHook
from twin.scenario import Scenario
from twin.session_run import UNCONTROLLED_LIMIT_KW, write_status


@dataclass(frozen=True)
class StudyResult:
    """The four variants of one scenario."""

    scenario: str
    currency: str
    start: datetime
    end: datetime
    variants: dict[str, VariantResult]

    @property
    def rolling_gap(self) -> Decimal | None:
        """(rolling - perfect foresight) / |perfect foresight| cost; None if PF costs 0."""
        return self.gap("rolling")

    def gap(self, name: str) -> Decimal | None:
        """(variant - perfect foresight) / |perfect foresight| cost; None if PF costs 0."""
        pf = self.variants["perfect_foresight"].cost
        if pf == 0:
            return None
        return (self.variants[name].cost - pf) / abs(pf)

    @property
    def rolling_ratio(self) -> Decimal | None:
        """Rolling / perfect-foresight cost (meaningful when both are positive)."""
        pf = self.variants["perfect_foresight"].cost
        return None if pf == 0 else self.variants["rolling"].cost / pf

    @property
    def penalty_per_kwh(self) -> Decimal:
        """The LP's price of unmet energy [currency/kWh] (:mod:`twin.market_problem`)."""
        return Decimal(repr(round(self.shortfall_penalty_per_kwh, 4)))

    shortfall_penalty_per_kwh: float = 5.0

    def cost_incl_unmet(self, name: str) -> Decimal:
        """Cost + unmet energy at the LP's penalty: comparable when unmet energies differ."""
        v = self.variants[name]
        return (v.cost + Decimal(repr(round(v.unmet_kwh, 3))) * self.penalty_per_kwh).quantize(
            Decimal("0.01"))

    def to_json(self) -> dict[str, Any]:
        """The ``market_comparison.json`` document."""
        gap, ratio = self.rolling_gap, self.rolling_ratio
        return {
            "shortfall_penalty_per_kwh": str(self.penalty_per_kwh),
            "cost_incl_unmet_at_penalty": {k: str(self.cost_incl_unmet(k)) for k in self.variants},
            "scenario": self.scenario,
            "currency": self.currency,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "interval_s": int(INTERVAL.total_seconds()),
            "variants": {k: v.to_json() for k, v in self.variants.items()},
            "rolling_over_perfect_foresight": None if ratio is None else f"{ratio:.4f}",
            "rolling_gap_to_perfect_foresight": None if gap is None else f"{gap:.4f}",
            "gap_to_perfect_foresight": {
                k: (None if (g := self.gap(k)) is None else f"{g:.4f}") for k in self.variants
            },
            "method": __doc__,
        }


def interval_means(values: FloatArray, step_s: float, n: int) -> FloatArray:
    """Means of per-step values over ``n`` 15-minute intervals (whole steps each)."""
    m = round(INTERVAL.total_seconds() / step_s)
    if m < 1 or abs(m * step_s - INTERVAL.total_seconds()) > 1e-9:
        raise ValueError(f"control step {step_s} s does not divide 15 minutes")
    out: FloatArray = np.asarray(values, dtype=float)[: n * m].reshape(n, m).mean(axis=1)
    return out


def _site_trace(run_dir: Path, quantity: str) -> pd.Series:
    t = pd.read_parquet(run_dir / "traces.parquet",
                        filters=[("entity", "==", "site"), ("quantity", "==", quantity)])
    return t.set_index("time")["value"].sort_index()


def v2g_discharge_kwh(run_dir: Path, step_s: float) -> float:
    """Energy the EVSEs exported (V2G) in a twin run [kWh, at the EVSE meters]."""
    t = pd.read_parquet(run_dir / "traces.parquet", filters=[("quantity", "==", "power_kw")])
    p = t.loc[t["entity"] != "site", "value"].to_numpy(dtype=float)
    return float(np.clip(-p, 0.0, None).sum() * step_s / 3600.0)


def event_limits(run_dir: Path, scenario: Scenario, n: int) -> list[float | None]:
    """Lowest grid-event import limit of each interval of a twin run (None: none)."""
    steps = scenario.run.steps
    series = _site_trace(run_dir, "grid_event_limit_kw")
    if series.empty:
        return [None] * n
    grid = pd.date_range(scenario.run.start, periods=steps, freq=timedelta(
        seconds=scenario.run.step_s), tz="UTC") + timedelta(seconds=scenario.run.step_s)
    values = series.reindex(grid).to_numpy(dtype=float)
    m = steps // n
    out: list[float | None] = []
    for k in range(n):
        chunk = values[k * m:(k + 1) * m]
        chunk = chunk[~np.isnan(chunk)]
        out.append(float(chunk.min()) if chunk.size else None)
    return out


async def run_twin(
    scenario: Scenario,
    inputs: RunInputs,
    run_dir: Path,
    *,
    hook: StepHook | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """One lock-step twin run into ``run_dir`` (scenario.yaml, traces, events, kpis.json)."""
    _prepare_run_dir(scenario, inputs, run_dir)
    try:
        out = await LockStepRuntime(scenario, inputs, run_dir, on_progress=on_progress,
                                    hook=hook).run()
    except BaseException as err:
        write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    doc = {"scenario": scenario.name, "seed": scenario.run.seed, **out.kpis}
    _write(run_dir / "kpis.json", kpi_doc.dumps(doc))
    write_status(run_dir, "finished")
    return doc


def _prepare_run_dir(scenario: Scenario, inputs: RunInputs, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = scenario.model_dump(mode="json")
    resolved["sources"] = inputs.sources
    resolved["kind"] = "twin"
    _write(run_dir / "scenario.yaml", yaml.safe_dump(resolved, sort_keys=False))
    write_status(run_dir, "running")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def uncontrolled_scenario(scenario: Scenario) -> Scenario:
    """The scenario without grid events, site devices or a binding limit."""
    return scenario.model_copy(update={
        "name": f"{scenario.name}-uncontrolled",
        "grid": None,
        "site_devices": None,
        "site": scenario.site.model_copy(update={"grid_limit_kw": UNCONTROLLED_LIMIT_KW}),
        "assertions": [],
    })


def optimiser_scenario(scenario: Scenario) -> Scenario:
    """The scenario for the optimiser run: the price-ceiling response off."""
    update: dict[str, Any] = {"name": f"{scenario.name}-rolling"}
    if scenario.grid is not None:
        response = scenario.grid.response.model_copy(update={"price_ceiling_per_mwh": None})
        update["grid"] = scenario.grid.model_copy(update={"response": response})
    return scenario.model_copy(update=update)


def twin_variant(
    name: str,
    scenario: Scenario,
    run_dir: Path,
    doc: dict[str, Any],
    price_per_mwh: FloatArray,
    currency: str,
    n: int,
    extra: dict[str, Any] | None = None,
) -> VariantResult:
    """Figures of a twin run from its site import trace and KPIs."""
    step_s = float(scenario.run.step_s)
    import_kw = _site_trace(run_dir, "import_kw").to_numpy(dtype=float)
    net = interval_means(import_kw, step_s, n)
    settlement = settle_net(scenario.run.start, net, price_per_mwh, currency)
    settlement.reconcile()
    return VariantResult(
        name=name,
        settlement=settlement,
        peak_import_kw=float(max(net.max(initial=0.0), 0.0)),
        unmet_kwh=float(doc["kpis"]["energy_unmet_kwh"]["value"]),
        run_dir=run_dir,
        extra={"limit_violations": int(doc["kpis"]["limit_violations"]["value"]),
               "energy_delivered_kwh": round(
                   float(doc["kpis"]["energy_delivered_kwh"]["value"]), 3),
               "v2g_discharge_kwh": round(v2g_discharge_kwh(run_dir, step_s), 3),
               **(extra or {})},
    )


async def run_study(
    scenario: Scenario,
    out: Path,
    *,
    inputs: RunInputs | None = None,
    prices: DayAheadPrices | None = None,
    on_progress: Callable[[str, int, int, datetime], None] | None = None,
    perf_counter: Callable[[], float] | None = None,
) -> StudyResult:
    """Run the four variants of ``scenario`` into ``out`` and write ``market_comparison.json``.

    ``out/uncontrolled``, ``out/dlm`` and ``out/rolling`` are twin run folders.
    """
    if scenario.prices is None:
        raise ValueError("the market study needs a scenario with prices")
    currency = scenario.prices.currency
    inputs = inputs or resolve_inputs(scenario)
    prices = prices or study_prices(scenario)
    run = scenario.run
    n = math.floor(run.duration_h * 3600 / INTERVAL.total_seconds())
    price = prices.on_grid(run.start, INTERVAL, n)

    def progress(name: str) -> ProgressCallback | None:
        if on_progress is None:
            return None
        cb = on_progress
        return lambda k, steps, t: cb(name, k, steps, t)

    variants: dict[str, VariantResult] = {}
    base = uncontrolled_scenario(scenario)
    doc = await run_twin(base, inputs, out / "uncontrolled", on_progress=progress("uncontrolled"))
    variants["uncontrolled"] = twin_variant(
        "uncontrolled", base, out / "uncontrolled", doc, price, currency, n)
    doc = await run_twin(scenario, inputs, out / "dlm", on_progress=progress("dlm"))
    variants["dlm"] = twin_variant("dlm", scenario, out / "dlm", doc, price, currency, n)
    opt = optimiser_scenario(scenario)
    controller = MarketController(opt, prices, perf_counter=perf_counter)
    doc = await run_twin(opt, inputs, out / "rolling", hook=controller,
                         on_progress=progress("rolling"))
    variants["rolling"] = twin_variant(
        "rolling", opt, out / "rolling", doc, price, currency, n,
        extra={"lp_solves": controller.solves, "lp_infeasible": controller.infeasible},
    )
    limits = event_limits(out / "dlm", scenario, n)
    variants["rolling_lp"] = rolling_lp_variant(
        scenario, inputs, prices, price, limits, currency)
    variants["perfect_foresight"] = perfect_foresight_variant(
        scenario, inputs, price, limits, currency)
    result = StudyResult(scenario.name, currency, run.start, run.start + n * INTERVAL,
                         {k: variants[k] for k in VARIANTS},
                         shortfall_penalty_per_kwh=shortfall_penalty(price))
    _write(out / "market_comparison.json", json.dumps(result.to_json(), indent=2) + "\n")
    return result
