"""KPI arithmetic: violations, money in Decimal, met share."""

from decimal import Decimal

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from twin.kpis import KpiInputs, SessionOutcome, compute_kpis, energy_cost, peak_demand_kw


def inputs(import_kw, limit=100.0, prices=None, sessions=()):
    a = np.asarray(import_kw, dtype=float)
    return KpiInputs(
        step_s=60.0, import_kw=a, limit_kw=np.full(len(a), limit), ev_power_kw=a,
        price_per_mwh=None if prices is None else np.asarray(prices, dtype=float),
        currency=None if prices is None else "EUR", sessions=list(sessions),
        sessions_refused=0,
    )


def test_violations_count_size_and_energy() -> None:
    doc = compute_kpis(inputs([90, 100.05, 112, 130, 50]))["kpis"]
    assert doc["limit_violations"]["value"] == 2  # 100.05 is within the 0.1 kW tolerance
    assert doc["limit_violation_max_kw"]["value"] == 30.0
    assert abs(doc["limit_violation_kwh"]["value"] - (0.05 + 12 + 30) / 60) < 1e-6
    assert doc["peak_import_kw"]["value"] == 130.0


def test_demand_peak_is_the_largest_15_minute_mean() -> None:
    # one minute at 130 kW inside a quarter hour at 70 kW: the demand is 74 kW
    series = np.array([70.0] * 15 + [70.0] * 7 + [130.0] + [70.0] * 7 + [40.0] * 5)
    assert abs(peak_demand_kw(series, 60.0) - 74.0) < 1e-9
    assert peak_demand_kw(np.array([80.0, 90.0]), 3600.0) == 90.0  # steps >= interval
    doc = compute_kpis(inputs(series))["kpis"]
    assert abs(doc["peak_demand_15min_kw"]["value"] - 74.0) < 1e-6


@given(st.lists(st.floats(-100, 500), min_size=1, max_size=300))
def test_demand_peak_never_exceeds_the_step_peak(powers) -> None:
    a = np.asarray(powers)
    assert peak_demand_kw(a, 60.0) <= max(a.max(), 0.0) + 1e-9


def test_cost_is_decimal_to_the_cent() -> None:
    # 60 kW for one hour at 100 EUR/MWh = 6.00 EUR; then 60 kW for 1 h at -10 = -0.60
    cost = energy_cost(np.full(120, 60.0), np.array([100.0] * 60 + [-10.0] * 60), 60.0)
    assert cost == Decimal("5.40")
    doc = compute_kpis(inputs([60.0] * 60, prices=[100.0] * 60))["kpis"]
    assert doc["energy_cost"] == {"value": "6.00", "unit": "EUR"}


@given(st.lists(st.floats(0, 500), min_size=1, max_size=200),
       st.lists(st.floats(-500, 5000), min_size=1, max_size=200))
def test_cost_matches_exact_sum(powers, prices) -> None:
    n = min(len(powers), len(prices))
    p, c = np.array(powers[:n]), np.array(prices[:n])
    cost = energy_cost(p, c, 60.0)
    exact = sum(Decimal(repr(round(a, 3))) * Decimal(repr(round(b, 2)))
                for a, b in zip(p.tolist(), c.tolist(), strict=True))
    assert cost == (exact / Decimal(60000)).quantize(Decimal("0.01"))


def test_met_share_counts_completed_sessions_only() -> None:
    sessions = [
        SessionOutcome("a", "CS001/1", 10.0, 10.0, True),
        SessionOutcome("b", "CS002/1", 10.0, 5.0, True),
        SessionOutcome("c", "CS003/1", 10.0, 0.0, False),
    ]
    doc = compute_kpis(inputs([1.0], sessions=sessions))["kpis"]
    assert doc["energy_met_share"]["value"] == 0.75
    assert doc["energy_unmet_kwh"]["value"] == 5.0
    assert doc["sessions_open_at_end"]["value"] == 1
