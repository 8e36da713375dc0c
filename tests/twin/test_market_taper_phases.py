"""The depot LP's per-phase limit and CC-CV taper rows against the twin's own physics."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.market.lp import (
    BALANCED,
    AssetSpec,
    DepotProblem,
    EnergyTarget,
    MarketError,
    constraint_violations,
    flat,
    solve,
)
from devices.vehicle import VehicleSpec, VehicleState, charge
from twin.market_problem import INTERVAL, EvCapability, charge_taper

T0 = datetime(2023, 8, 8, 10, tzinfo=UTC)
L1: tuple[float, float, float] = (1.0, 0.0, 0.0)


def cap_of(spec: VehicleSpec, target: float) -> EvCapability:
    return EvCapability(
        capacity_kwh=spec.battery_capacity_kwh, charge_kw=spec.ac_max_power_kw,
        discharge_kw=0.0, min_charge_kw=0.0, eta_charge=spec.charge_efficiency,
        eta_discharge=1.0, floor_soc=0.0, target_soc=target,
        vehicle_max_kw=spec.ac_max_power_kw, taper_knee_soc=spec.taper_knee_soc)


def ev(name: str, n: int, p_kw: float, e0: float, cap: float, target: float,
       share: tuple[float, float, float] = BALANCED, **kw: object) -> AssetSpec:
    return AssetSpec(name, flat(n, 0.0), flat(n, p_kw), flat(n + 1, 0.0), flat(n + 1, cap),
                     e0, targets=(EnergyTarget(n, target),), phase_share=share, **kw)  # type: ignore[arg-type]


def depot(assets: list[AssetSpec], n: int, limit_kw: float, price: float = -50.0,
          base_kw: float = 0.0) -> DepotProblem:
    return DepotProblem(
        start=T0, interval=INTERVAL, assets=tuple(assets),
        price_import_per_mwh=flat(n, price), price_export_per_mwh=flat(n, price),
        base_load_kw=flat(n, base_kw), pv_kw=flat(n, 0.0), import_limit_kw=flat(n, limit_kw),
        export_limit_kw=flat(n, math.inf))


@pytest.mark.parametrize("soc0", [0.82, 0.88, 0.95])
def test_taper_row_plans_exactly_what_the_vehicle_takes(soc0: float) -> None:
    # At a negative price the LP charges all it can in one 15-min interval: on the taper
    # that is exactly the energy devices.vehicle.charge meters in 900 s at full offer.
    spec = VehicleSpec("VW ID.3", 58.0, 11.0, 3, 11.0)
    taper = charge_taper(cap_of(spec, 1.0), np.ones(1))
    assert taper is not None
    asset = ev("ev", 1, 11.0, soc0 * 58.0, 58.0, 58.0, taper=taper, eta_charge=0.92)
    s = solve(depot([asset], 1, 100.0))
    _, metered = charge(spec, VehicleState(soc=soc0), 1e3, INTERVAL.total_seconds(), "AC")
    assert s.charge_kw[0, 0] * 0.25 == pytest.approx(metered, rel=1e-6)


def test_taper_row_below_the_knee_leaves_full_power() -> None:
    spec = VehicleSpec("VW ID.3", 58.0, 11.0, 3, 11.0)
    taper = charge_taper(cap_of(spec, 0.9), np.ones(1))
    asset = ev("ev", 1, 11.0, 0.5 * 58.0, 58.0, 58.0, taper=taper, eta_charge=0.92)
    assert solve(depot([asset], 1, 100.0)).charge_kw[0, 0] == pytest.approx(11.0)
    assert charge_taper(cap_of(spec, 0.8), np.ones(1)) is None  # target not above the knee


def test_single_phase_vehicle_limits_the_three_phase_ones() -> None:
    # 30 kW import limit, 3 kW base: 9 kW per phase. Two 11 kW 3-phase vehicles load each
    # phase with 7.33 kW, which leaves 1.67 kW on L1 for the 1-phase 7 kW vehicle: 23.67 kW
    # in all, where a balanced model would plan 27 kW (the DLM would then cut someone).
    n = 1
    one = ev("leaf", n, 7.0, 0.0, 40.0, 40.0, L1)
    three = [ev(f"id3-{i}", n, 11.0, 0.0, 58.0, 58.0) for i in range(2)]
    s = solve(depot([one, *three], n, 30.0, base_kw=3.0))
    assert constraint_violations(depot([one, *three], n, 30.0, base_kw=3.0), s)[
        "phase_limit"] <= 1e-6
    net = s.charge_kw[:, 0]
    phase1 = net[0] + net[1:].sum() / 3 + 1.0
    assert phase1 <= 10.0 + 1e-6  # the import limit's third on L1
    assert net.sum() == pytest.approx(22.0 + 5.0 / 3.0, abs=1e-6)
    assert net[0] == pytest.approx(5.0 / 3.0, abs=1e-6)
    balanced = solve(depot([replace(one, phase_share=BALANCED), *three], n, 30.0, base_kw=3.0))
    assert balanced.charge_kw[:, 0].sum() == pytest.approx(27.0, abs=1e-6)


def test_bad_phase_share_is_rejected() -> None:
    with pytest.raises(MarketError, match="phase_share"):
        depot([ev("x", 1, 7.0, 0.0, 40.0, 40.0, (0.5, 0.6, 0.0))], 1, 30.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 6))
def test_per_phase_schedule_never_exceeds_a_phase(seed: int, n: int, n_ev: int) -> None:
    rng = np.random.default_rng(seed)
    assets = []
    for i in range(n_ev):
        share = BALANCED if rng.random() < 0.5 else tuple(np.eye(3)[rng.integers(0, 3)])
        cap = float(rng.uniform(30, 80))
        e0 = float(rng.uniform(0.1, 0.9)) * cap
        spec = VehicleSpec("v", cap, 11.0, 3, 11.0)
        taper = charge_taper(cap_of(spec, 1.0), np.ones(n)) if rng.random() < 0.5 else None
        assets.append(ev(f"ev{i}", n, float(rng.choice([3.7, 7.4, 11.0])), e0, cap, cap,
                         share, taper=taper, eta_charge=0.92))  # type: ignore[arg-type]
    base = float(rng.uniform(0, 20))
    problem = depot(assets, n, base + float(rng.uniform(5, 60)), float(rng.uniform(-80, 80)),
                    base_kw=base)
    s = solve(problem)
    worst = constraint_violations(problem, s)
    assert all(v <= 1e-6 for v in worst.values()), worst
    shares = np.array([a.phase_share for a in problem.assets])
    phase = shares.T @ (s.charge_kw - s.discharge_kw) + base / 3
    assert (phase <= problem.import_limit_kw / 3 + 1e-6).all()
