"""The depot LP (controllers.market.lp): constraints, economics, a hand-computed optimum."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.market.lp import (
    AssetSpec,
    DepotProblem,
    EnergyTarget,
    InfeasibleError,
    MarketError,
    constraint_violations,
    cost_breakdown,
    flat,
    objective_value,
    solve,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)
TOL = 1e-6
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_problem(seed: int, n: int, n_ev: int, bess: bool, **kw: Any) -> DepotProblem:
    """A random depot whose zero schedule is feasible (power bounds contain 0, energy bounds
    contain the initial energy at every boundary, the import limit covers the base load).
    """
    rng = np.random.default_rng(seed)
    dt = kw.pop("interval", timedelta(hours=1))
    assets = []
    for i in range(n_ev):
        cap = float(rng.uniform(20, 90))
        arr = int(rng.integers(0, n))
        dep = int(rng.integers(arr + 1, n + 1))
        p_max = np.zeros(n)
        p_min = np.zeros(n)
        p_max[arr:dep] = float(rng.choice([3.7, 11.0, 22.0]))
        if rng.random() < 0.3:
            p_min[arr:dep] = -p_max[arr:dep]
        e0 = float(rng.uniform(0, 0.6)) * cap
        assets.append(
            AssetSpec(
                f"ev{i}",
                p_min,
                p_max,
                flat(n + 1, 0.0),
                flat(n + 1, cap),
                e0,
                float(rng.uniform(0.85, 1.0)),
                float(rng.uniform(0.85, 1.0)),
                float(rng.uniform(0, 0.05)) if p_min.min() < 0 else 0.0,
                (EnergyTarget(dep, float(rng.uniform(e0, cap))),),
            )
        )
    if bess:
        assets.append(
            AssetSpec(
                "bess",
                flat(n, -50.0),
                flat(n, 50.0),
                flat(n + 1, 20.0),
                flat(n + 1, 100.0),
                float(rng.uniform(20, 100)),
                0.95,
                0.95,
                float(rng.uniform(0, 0.05)),
            )
        )
    price = rng.uniform(-50, 300, n).round(2)
    spread = rng.uniform(0, 150, n).round(2)
    base = rng.uniform(0, 80, n)
    args: dict[str, Any] = {
        "start": T0,
        "interval": dt,
        "assets": tuple(assets),
        "price_import_per_mwh": price + spread,
        "price_export_per_mwh": price,
        "base_load_kw": base,
        "pv_kw": rng.uniform(0, 120, n) * (rng.random() < 0.7),
        "import_limit_kw": base + rng.uniform(0, 100, n),
        "export_limit_kw": rng.uniform(0, 100, n),
        "demand_charge_per_kw": float(rng.uniform(0, 10)),
        "peak_so_far_kw": float(rng.uniform(0, 60)),
    }
    args.update(kw)
    return DepotProblem(**args)


problems = st.builds(
    random_problem,
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 16),
    n_ev=st.integers(0, 4),
    bess=st.booleans(),
)


@SETTINGS
@given(problems)
def test_schedule_satisfies_every_constraint(problem: DepotProblem) -> None:
    s = solve(problem)
    worst = constraint_violations(problem, s)
    assert all(v <= TOL for v in worst.values()), worst
    for a, asset in enumerate(problem.assets):
        for t, short in zip(asset.targets, s.shortfall_kwh[a], strict=True):
            assert short >= t.energy_kwh - s.energy_kwh[a, t.index] - TOL
            assert short >= -TOL
    assert s.objective == pytest.approx(objective_value(problem, s), rel=1e-6, abs=1e-6)
    assert s.size.rows > 0 and s.size.cols > 0 and s.size.nonzeros > 0


@SETTINGS
@given(problems)
def test_cost_breakdown_total_is_the_exact_sum_of_its_parts(problem: DepotProblem) -> None:
    c = cost_breakdown(problem, solve(problem))
    assert c.currency == "EUR"
    parts = (
        c.energy_cost
        - c.export_revenue
        + c.demand_charge
        + c.degradation
        + c.shortfall_penalty
        - c.terminal_value
    )
    assert isinstance(c.total, Decimal) and c.total == parts


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.data())
def test_hard_targets_are_met_when_reachable(seed: int, n: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    dep = data.draw(st.integers(1, n))
    need = float(rng.uniform(0, 11.0 * dep * 0.9))
    ev = AssetSpec(
        "ev",
        flat(n, 0),
        flat(n, 11.0),
        flat(n + 1, 0),
        flat(n + 1, 200),
        0.0,
        0.9,
        targets=(EnergyTarget(dep, need),),
    )
    p = random_problem(seed, n, 0, False, assets=(ev,), hard_targets=True)
    p = random_problem(
        seed, n, 0, False, assets=(ev,), hard_targets=True, import_limit_kw=p.base_load_kw + 11
    )
    s = solve(p)
    assert s.energy_kwh[0, dep] >= need - TOL
    assert s.unmet_kwh == {}


def test_unreachable_target_is_reported_unmet_or_infeasible_when_hard() -> None:
    n = 2
    ev = AssetSpec(
        "ev",
        flat(n, 0),
        flat(n, 10.0),
        flat(n + 1, 0),
        flat(n + 1, 100),
        0.0,
        targets=(EnergyTarget(2, 30.0),),
    )
    kw: dict[str, Any] = {
        "price_import_per_mwh": flat(n, 100),
        "price_export_per_mwh": flat(n, 50),
        "base_load_kw": flat(n, 0),
        "pv_kw": flat(n, 0),
        "import_limit_kw": flat(n, 100),
        "export_limit_kw": flat(n, 0),
    }
    soft = solve(DepotProblem(T0, timedelta(hours=1), (ev,), **kw))
    assert soft.unmet_kwh == {"ev": pytest.approx(10.0)}
    assert soft.charge_kw[0] == pytest.approx([10.0, 10.0])
    with pytest.raises(InfeasibleError):
        solve(DepotProblem(T0, timedelta(hours=1), (ev,), hard_targets=True, **kw))


def test_worked_example_hand_computed_optimum() -> None:
    """4 h, base load 5 kW, an EV (10 kW, charging efficiency 0.9) needs 9 kWh by the end.

    9 kWh stored = 10 kWh from the grid, all in hour 1 (10 EUR/MWh, the cheapest): import
    5, 15, 5, 5 kW; cost (5*50 + 15*10 + 5*30 + 5*40) / 1000 = 0.75 EUR.
    With a demand charge D per kW: charge x kW in hour 1 and 10 - x in hour 2 (30 EUR/MWh,
    next cheapest); peak 5 + max(x, 10 - x). Moving 1 kW from hour 1 to 2 costs 0.02 EUR of
    energy and saves D of peak while x > 5: at D = 0.02 a tie, optimum 0.75 + 0.02*15 =
    1.05 = 0.25 + 0.1 + 0.3 + 0.2 + 0.02*10 (x = 5); at D = 0.03 the flat x = 5 (peak 10) wins:
    0.25 + 0.1 + 0.3 + 0.2 + 0.03*10 = 1.15.
    """
    n = 4
    ev = AssetSpec(
        "ev",
        flat(n, 0),
        flat(n, 10.0),
        flat(n + 1, 0),
        flat(n + 1, 50),
        0.0,
        0.9,
        1.0,
        targets=(EnergyTarget(4, 9.0),),
    )
    args: dict[str, Any] = {
        "price_import_per_mwh": np.array([50.0, 10.0, 30.0, 40.0]),
        "price_export_per_mwh": np.array([40.0, 0.0, 20.0, 30.0]),
        "base_load_kw": flat(n, 5.0),
        "pv_kw": flat(n, 0.0),
        "import_limit_kw": flat(n, 100.0),
        "export_limit_kw": flat(n, 100.0),
    }
    s = solve(DepotProblem(T0, timedelta(hours=1), (ev,), **args))
    assert s.objective == pytest.approx(0.75)
    assert s.charge_kw[0] == pytest.approx([0.0, 10.0, 0.0, 0.0])
    assert s.import_kw == pytest.approx([5.0, 15.0, 5.0, 5.0])
    assert s.energy_kwh[0] == pytest.approx([0.0, 0.0, 9.0, 9.0, 9.0])
    dc = solve(DepotProblem(T0, timedelta(hours=1), (ev,), demand_charge_per_kw=0.02, **args))
    assert dc.objective == pytest.approx(1.05)
    # a slightly higher demand charge breaks the tie towards the flat schedule (peak 10)
    dc2 = solve(DepotProblem(T0, timedelta(hours=1), (ev,), demand_charge_per_kw=0.03, **args))
    assert dc2.peak_kw == pytest.approx(10.0)
    assert dc2.objective == pytest.approx(1.15)


def test_worked_example_bess_arbitrage() -> None:
    """2 h, BESS 0..10 kWh from empty, 10 kW, eta 0.9/0.9, degradation 1 EUR/MWh.

    Buy at 20, sell at 200 (export price): charge 10 kW in hour 0 -> 9 kWh stored,
    discharge 9 kWh * 0.9 = 8.1 kWh to the grid in hour 1. Cost 10*20/1000 = 0.2, revenue
    8.1*200/1000 = 1.62, degradation (10 + 8.1)*0.001 = 0.0181: objective -1.4019.
    """
    bess = AssetSpec(
        "bess", flat(2, -10), flat(2, 10), flat(3, 0), flat(3, 10), 0.0, 0.9, 0.9, 0.001
    )
    p = DepotProblem(
        T0,
        timedelta(hours=1),
        (bess,),
        np.array([20.0, 250.0]),
        np.array([10.0, 200.0]),
        flat(2, 0),
        flat(2, 0),
        flat(2, 100),
        flat(2, 100),
    )
    s = solve(p)
    assert s.objective == pytest.approx(-1.4019)
    assert s.export_kw == pytest.approx([0.0, 8.1])
    assert cost_breakdown(p, s).total == Decimal("-1.401900")


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.data())
def test_negative_import_price_leads_to_charging(seed: int, n: int, data: st.DataObject) -> None:
    j = data.draw(st.integers(0, n - 1))
    rng = np.random.default_rng(seed)
    price = rng.uniform(10, 300, n)
    price[j] = -float(rng.uniform(1, 500))
    bess = AssetSpec("bess", flat(n, -20), flat(n, 20), flat(n + 1, 0), flat(n + 1, 1e4), 50.0)
    p = random_problem(
        seed,
        n,
        0,
        False,
        assets=(bess,),
        price_import_per_mwh=price,
        price_export_per_mwh=price - 1.0,
        demand_charge_per_kw=0.0,
        pv_kw=flat(n, 0),
    )
    p = random_problem(
        seed,
        n,
        0,
        False,
        assets=(bess,),
        price_import_per_mwh=price,
        price_export_per_mwh=price - 1.0,
        demand_charge_per_kw=0.0,
        pv_kw=flat(n, 0),
        import_limit_kw=p.base_load_kw + 20.0,
    )
    s = solve(p)
    assert s.net_kw[0, j] == pytest.approx(20.0, abs=TOL)
    assert s.import_kw[j] == pytest.approx(p.base_load_kw[j] + 20.0, abs=TOL)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_negative_export_price_curtails_rather_than_exports(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    price = -rng.uniform(1, 200, n)
    pv = rng.uniform(50, 150, n)
    p = random_problem(
        seed,
        n,
        0,
        False,
        price_import_per_mwh=flat(n, 10.0),
        price_export_per_mwh=price,
        pv_kw=pv,
        base_load_kw=rng.uniform(0, 40, n),
        export_limit_kw=flat(n, 500.0),
    )
    s = solve(p)
    assert s.export_kw == pytest.approx(np.zeros(n), abs=TOL)
    assert s.curtail_kw == pytest.approx(pv - p.base_load_kw, abs=TOL)


@SETTINGS
@given(problems)
def test_demand_charge_lowers_the_peak(problem: DepotProblem) -> None:
    from dataclasses import replace

    without = solve(replace(problem, demand_charge_per_kw=0.0, peak_so_far_kw=0.0))
    with_dc = solve(replace(problem, demand_charge_per_kw=50.0, peak_so_far_kw=0.0))
    assert with_dc.import_kw.max() <= without.import_kw.max() + 1e-5


@SETTINGS
@given(problems, st.floats(0.01, 0.5))
def test_degradation_cost_reduces_cycling(problem: DepotProblem, cost: float) -> None:
    from dataclasses import replace

    def bess(c: float) -> DepotProblem:
        b = AssetSpec(
            "bess",
            flat(problem.n, -50),
            flat(problem.n, 50),
            flat(problem.n + 1, 20),
            flat(problem.n + 1, 100),
            60.0,
            0.95,
            0.95,
            c,
        )
        return replace(problem, assets=(b,))

    def throughput(p: DepotProblem) -> float:
        s = solve(p)
        return float(s.charge_kw.sum() + s.discharge_kw.sum())

    assert throughput(bess(cost)) <= throughput(bess(0.0)) + 1e-5


def test_power_bounds_above_zero_and_below_zero_are_column_bounds() -> None:
    n = 3
    must = AssetSpec("must", flat(n, 2.0), flat(n, 5.0), flat(n + 1, 0), flat(n + 1, 100), 0.0)
    give = AssetSpec("give", flat(n, -5.0), flat(n, -1.0), flat(n + 1, 0), flat(n + 1, 100), 50.0)
    p = DepotProblem(
        T0,
        timedelta(hours=1),
        (must, give),
        flat(n, 100),
        flat(n, 50),
        flat(n, 10),
        flat(n, 0),
        flat(n, 100),
        flat(n, 100),
    )
    s = solve(p)
    assert (s.net_kw[0] >= 2.0 - TOL).all() and (s.net_kw[1] <= -1.0 + TOL).all()
    assert all(v <= TOL for v in constraint_violations(p, s).values())


def test_malformed_problems_are_rejected_with_the_field() -> None:
    n = 2
    ok: dict[str, Any] = {
        "start": T0,
        "interval": timedelta(hours=1),
        "assets": (),
        "price_import_per_mwh": flat(n, 100),
        "price_export_per_mwh": flat(n, 50),
        "base_load_kw": flat(n, 1),
        "pv_kw": flat(n, 0),
        "import_limit_kw": flat(n, 10),
        "export_limit_kw": flat(n, 10),
    }
    DepotProblem(**ok)
    bad: list[tuple[str, Any, str]] = [
        ("start", datetime(2026, 1, 1), "UTC"),
        ("start", datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))), "UTC"),
        ("price_export_per_mwh", flat(n, 200), "price_import_per_mwh <"),
        ("base_load_kw", flat(n + 1, 1), "base_load_kw"),
        ("pv_kw", flat(n, -1), "pv_kw"),
        (
            "assets",
            (AssetSpec("a", flat(n, 1), flat(n, 0), flat(n + 1, 0), flat(n + 1, 1)),),
            "p_min_kw > p_max_kw",
        ),
        (
            "assets",
            (AssetSpec("a", flat(n, 0), flat(n, 1), flat(n + 1, 0), flat(n + 1, 1), 2.0),),
            "e0_kwh",
        ),
    ]
    for name, value, message in bad:
        with pytest.raises(MarketError, match=message):
            DepotProblem(**{**ok, name: value})


def test_infeasible_site_limit_raises() -> None:
    n = 2
    p = DepotProblem(
        T0,
        timedelta(hours=1),
        (),
        flat(n, 100),
        flat(n, 50),
        flat(n, 20),
        flat(n, 0),
        flat(n, 10),
        flat(n, 10),
    )
    with pytest.raises(InfeasibleError) as info:
        solve(p)
    assert "nfeasible" in info.value.status
