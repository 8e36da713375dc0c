"""Settlement in Decimal: exact reconciliation, Wh rounding points, split invariance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.market.lp import AssetSpec, DepotProblem, MarketError, flat, objective_terms, solve
from controllers.market.settlement import (
    CURRENCY_EXPONENTS,
    minor_unit,
    prices_on_grid,
    settle,
    settle_schedule,
)

T0 = datetime(2026, 3, 2, 23, tzinfo=UTC)
Q15 = timedelta(minutes=15)

powers = st.floats(0, 2000, allow_nan=False, allow_infinity=False)
prices = st.decimals(-500, 4000, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def periods(draw: st.DrawFn) -> tuple[list[float], list[float], list[Decimal], list[Decimal]]:
    n = draw(st.integers(1, 30))
    imp = draw(st.lists(powers, min_size=n, max_size=n))
    exp = draw(st.lists(powers, min_size=n, max_size=n))
    pi = draw(st.lists(prices, min_size=n, max_size=n))
    pe = draw(st.lists(prices, min_size=n, max_size=n))
    return imp, exp, pi, pe


@settings(max_examples=200, deadline=None)
@given(periods(), st.sampled_from(sorted(CURRENCY_EXPONENTS)), prices, powers)
def test_settlement_reconciles_exactly(
    period: tuple[list[float], list[float], list[Decimal], list[Decimal]],
    currency: str,
    demand_rate: Decimal,
    peak_before: float,
) -> None:
    imp, exp, pi, pe = period
    s = settle(
        T0,
        Q15,
        imp,
        exp,
        pi,
        pe,
        currency=currency,
        demand_charge_per_kw=abs(demand_rate) / 100,
        peak_so_far_kw=Decimal(repr(peak_before)),
    )
    s.reconcile()
    lines = s.lines
    assert sum((ln.import_kwh for ln in lines), Decimal(0)) == s.import_kwh
    assert sum((ln.export_kwh for ln in lines), Decimal(0)) == s.export_kwh
    assert sum((ln.net for ln in lines), Decimal(0)) + s.demand_charge == s.net_exact
    assert s.net_exact + s.rounding_adjustment == s.amount_due
    assert abs(s.rounding_adjustment) <= minor_unit(currency) / 2
    assert s.amount_due.as_tuple().exponent == -CURRENCY_EXPONENTS[currency]
    for ln in lines:
        assert ln.import_kwh == ln.import_kwh.quantize(Decimal("0.001"))
        assert ln.import_cost == ln.import_kwh * ln.import_price_per_mwh / 1000
        assert ln.end - ln.start == Q15
    # the registers: total energy is the total of the mean powers, rounded once to the Wh
    exact = sum((Decimal(repr(p)) * 900 for p in imp), Decimal(0)) / 3600
    assert s.import_kwh == exact.quantize(Decimal("0.001"))


@settings(max_examples=200, deadline=None)
@given(periods(), st.integers(2, 5))
def test_settlement_is_invariant_to_splitting_intervals(
    period: tuple[list[float], list[float], list[Decimal], list[Decimal]], parts: int
) -> None:
    imp, exp, pi, pe = period
    whole = settle(T0, timedelta(minutes=15 * parts), imp, exp, pi, pe)

    def split(xs: list[Any]) -> list[Any]:
        return [x for x in xs for _ in range(parts)]

    fine = settle(T0, Q15, split(imp), split(exp), split(pi), split(pe))
    assert len(fine.lines) == parts * len(whole.lines)
    for name in ("import_kwh", "export_kwh", "energy_cost", "export_revenue", "net_exact"):
        assert getattr(fine, name) == getattr(whole, name), name
    assert fine.amount_due == whole.amount_due
    for k, ln in enumerate(whole.lines):
        group = fine.lines[k * parts : (k + 1) * parts]
        assert sum((g.import_kwh for g in group), Decimal(0)) == ln.import_kwh
        assert sum((g.net for g in group), Decimal(0)) == ln.net


def test_hand_example_and_half_even_rounding_of_the_register() -> None:
    # 10 kW for 15 min = 2.5 kWh at 100.00 EUR/MWh = 0.25 EUR; 2 W for 15 min = 0.5 Wh:
    # the register reads 2.5005 kWh -> 2.500 (half even), then 2.5010 -> 2.501
    s = settle(
        T0,
        Q15,
        [10.0, 0.002, 0.002],
        [0.0, 0.0, 4.0],
        [Decimal("100.00"), Decimal("100.00"), Decimal("-20.00")],
        [Decimal("50.00"), Decimal("50.00"), Decimal("-25.00")],
        demand_charge_per_kw=Decimal("1.50"),
    )
    assert [ln.import_kwh for ln in s.lines] == [
        Decimal("2.500"),
        Decimal("0.000"),
        Decimal("0.001"),
    ]
    assert s.lines[0].import_cost == Decimal("0.25")
    assert s.lines[2].import_cost == Decimal("-0.00002")
    assert s.lines[2].export_kwh == Decimal("1.000")
    assert s.lines[2].export_revenue == Decimal("-0.025")
    assert s.peak_kw == Decimal("10.000")
    assert s.demand_charge == Decimal("15.00")
    assert s.net_exact == Decimal("0.25") + Decimal("-0.00002") + Decimal("0.025") + 15
    assert s.amount_due == Decimal("15.27")
    assert s.rounding_adjustment == Decimal("-0.00498")


def test_settling_an_lp_schedule_matches_its_energy_cost() -> None:
    n = 8
    bess = AssetSpec(
        "bess", flat(n, -50), flat(n, 50), flat(n + 1, 20), flat(n + 1, 100), 50.0, 0.95, 0.95
    )
    price = np.array([120.0, 80.0, -10.0, 40.0, 200.0, 250.0, 90.0, 60.0])
    p = DepotProblem(
        T0,
        Q15,
        (bess,),
        price + 100,
        price,
        np.linspace(10, 80, n),
        flat(n, 30),
        flat(n, 500),
        flat(n, 100),
    )
    sched = solve(p)
    pi = [Decimal(repr(float(x))) for x in p.price_import_per_mwh]
    pe = [Decimal(repr(float(x))) for x in p.price_export_per_mwh]
    s = settle_schedule(sched, pi, pe)
    terms = objective_terms(p, sched)
    assert float(s.energy_cost - s.export_revenue) == pytest.approx(
        terms["energy_cost"] - terms["export_revenue"], abs=n * 0.0005 * 0.35
    )


def test_prices_on_grid_and_bad_inputs() -> None:
    hourly = [Decimal("10.00"), Decimal("20.00")]
    assert (
        prices_on_grid(T0, timedelta(hours=1), hourly, T0, Q15, 8)
        == [hourly[0]] * 4 + [hourly[1]] * 4
    )
    with pytest.raises(MarketError, match="straddles"):
        prices_on_grid(T0, timedelta(hours=1), hourly, T0 + Q15, timedelta(hours=1), 1)
    with pytest.raises(MarketError, match="ISO 4217"):
        settle(T0, Q15, [1.0], [0.0], [Decimal(1)], [Decimal(1)], currency="EURO")
    with pytest.raises(MarketError, match="UTC"):
        settle(
            T0.astimezone(timezone(timedelta(hours=1))),
            Q15,
            [1.0],
            [0.0],
            [Decimal(1)],
            [Decimal(1)],
        )
    with pytest.raises(MarketError, match="negative"):
        settle(T0, Q15, [-1.0], [0.0], [Decimal(1)], [Decimal(1)])
    with pytest.raises(MarketError, match="same length"):
        settle(T0, Q15, [1.0, 2.0], [0.0], [Decimal(1)], [Decimal(1)])
    assert minor_unit("JPY") == Decimal(1) and minor_unit("EUR") == Decimal("0.01")
