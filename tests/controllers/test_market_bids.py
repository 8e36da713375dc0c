"""Day-ahead bids derived from the depot LP: monotone hourly price-quantity curves."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from market_testkit import random_evs

from controllers.market.bids import BidPoint, HourlyBid, bids_table, day_ahead_bids
from controllers.market.lp import AssetSpec, DepotProblem, MarketError, flat

T0 = datetime(2026, 3, 2, 23, tzinfo=UTC)  # 00:00 Europe/Berlin
FEE_IN, FEE_OUT = 100.0, 5.0


def day(seed: int, hours: int, per_hour: int) -> DepotProblem:
    rng = np.random.default_rng(seed)
    n = hours * per_hour
    dt = timedelta(hours=1) / per_hour
    assets = random_evs(rng, n, power_kw=22.0, e0_kwh=5.0, degradation_per_kwh=0.0,
                        need_kwh=(5, 60))
    if rng.random() < 0.7:
        assets.append(
            AssetSpec(
                "bess",
                flat(n, -100),
                flat(n, 100),
                flat(n + 1, 40),
                flat(n + 1, 200),
                100.0,
                0.95,
                0.95,
                float(rng.uniform(0, 0.03)),
            )
        )
    da = rng.uniform(-50, 250, n)
    base = rng.uniform(10, 200, n)
    return DepotProblem(
        start=T0,
        interval=dt,
        assets=tuple(assets),
        price_import_per_mwh=da + FEE_IN,
        price_export_per_mwh=da - FEE_OUT,
        base_load_kw=base,
        pv_kw=rng.uniform(0, 300, n) * (rng.random() < 0.5),
        import_limit_kw=base + 300,
        export_limit_kw=flat(n, 200),
        demand_charge_per_kw=float(rng.uniform(0, 2)),
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    hours=st.integers(1, 6),
    per_hour=st.sampled_from([1, 4]),
)
def test_curves_are_monotone_hourly_and_on_ticks(seed: int, hours: int, per_hour: int) -> None:
    problem = day(seed, hours, per_hour)
    bids = day_ahead_bids(problem, import_fee_per_mwh=FEE_IN, export_fee_per_mwh=FEE_OUT)
    assert len(bids) == hours
    for h, bid in enumerate(bids):
        assert bid.delivery_start == T0 + timedelta(hours=h)
        assert bid.delivery_end - bid.delivery_start == timedelta(hours=1)
        assert bid.currency == "EUR"
        prices = [p.price_per_mwh for p in bid.points]
        quantities = [p.quantity_mw for p in bid.points]
        assert prices == sorted(prices) and len(set(prices)) == len(prices)
        assert all(b <= a for a, b in itertools.pairwise(quantities))
        assert all(q == q.quantize(Decimal("0.1")) for q in quantities)
        assert all(p == p.quantize(Decimal("0.01")) for p in prices)
        assert prices[0] == Decimal("-500.00") and prices[-1] == Decimal("4000.00")


def test_inflexible_depot_bids_its_load_at_every_price() -> None:
    n = 3
    problem = DepotProblem(
        T0,
        timedelta(hours=1),
        (),
        flat(n, 150),
        flat(n, 40),
        np.array([400.0, 1000.0, 1260.0]),
        flat(n, 0),
        flat(n, 2000),
        flat(n, 0),
    )
    bids = day_ahead_bids(
        problem, import_fee_per_mwh=FEE_IN, export_fee_per_mwh=FEE_OUT, price_steps_per_mwh=[0, 50]
    )
    assert [[p.quantity_mw for p in b.points] for b in bids] == [
        [Decimal("0.4"), Decimal("0.4")],
        [Decimal("1.0"), Decimal("1.0")],
        [Decimal("1.3"), Decimal("1.3")],
    ]


def test_flexible_battery_buys_cheap_and_sells_dear() -> None:
    """A 1 MW / 2 MWh BESS (half full), no load: the curve of hour 0 with the other hour
    forecast at 100 EUR/MWh buys 1 MW at low prices and sells at high ones.
    """
    n = 2
    bess = AssetSpec(
        "bess", flat(n, -1000), flat(n, 1000), flat(n + 1, 0), flat(n + 1, 2000), 1000.0
    )
    problem = DepotProblem(
        T0,
        timedelta(hours=1),
        (bess,),
        flat(n, 100 + FEE_IN),
        flat(n, 100 - FEE_OUT),
        flat(n, 0),
        flat(n, 0),
        flat(n, 5000),
        flat(n, 5000),
    )
    bid = day_ahead_bids(problem, import_fee_per_mwh=FEE_IN, export_fee_per_mwh=FEE_OUT)[0]
    assert bid.quantity_at(Decimal("-500")) == Decimal("1.0")
    assert bid.quantity_at(Decimal("4000")) == Decimal("-1.0")
    # between the arbitrage thresholds (100 - 105 and 100 + 105) the BESS stays idle
    assert bid.quantity_at(Decimal("100")) == Decimal("0.0")


def test_bids_table_rows() -> None:
    bid = HourlyBid(
        T0, T0 + timedelta(hours=1), "EUR", (BidPoint(Decimal("-500.00"), Decimal("0.3")),)
    )
    assert bids_table([bid]) == [
        {
            "delivery_start": "2026-03-02T23:00:00+00:00",
            "delivery_end": "2026-03-03T00:00:00+00:00",
            "price_eur_mwh": "-500.00",
            "quantity_mw": "0.3",
        }
    ]


def test_bad_steps_and_misaligned_mtu_are_rejected() -> None:
    problem = day(1, 2, 4)
    with pytest.raises(MarketError, match="ascending"):
        day_ahead_bids(
            problem, import_fee_per_mwh=1, export_fee_per_mwh=1, price_steps_per_mwh=[5, 5]
        )
    with pytest.raises(MarketError, match="mtu"):
        day_ahead_bids(
            problem, import_fee_per_mwh=1, export_fee_per_mwh=1, mtu=timedelta(minutes=50)
        )
    short = replace(
        problem,
        price_import_per_mwh=problem.price_import_per_mwh[:6],
        price_export_per_mwh=problem.price_export_per_mwh[:6],
        base_load_kw=problem.base_load_kw[:6],
        pv_kw=problem.pv_kw[:6],
        import_limit_kw=problem.import_limit_kw[:6],
        export_limit_kw=problem.export_limit_kw[:6],
        assets=(),
    )
    with pytest.raises(MarketError, match="mtu"):
        day_ahead_bids(short, import_fee_per_mwh=1, export_fee_per_mwh=1)
