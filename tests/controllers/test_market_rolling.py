"""Rolling-horizon market control and the rule of which day-ahead prices are known when."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from market_testkit import random_evs

from controllers.market.lp import (
    AssetSpec,
    DepotProblem,
    MarketError,
    constraint_violations,
    flat,
    objective_value,
)
from controllers.market.rolling import (
    DayAheadPrices,
    perfect_foresight,
    rolling_horizon,
    with_real_prices,
)

BERLIN = ZoneInfo("Europe/Berlin")
DAY0 = datetime(2026, 3, 2, tzinfo=BERLIN).astimezone(UTC)  # local midnight, UTC+1


def series(rng: np.random.Generator, days_before: int, days: int) -> DayAheadPrices:
    n = 24 * (days_before + days)
    return DayAheadPrices(
        start=DAY0 - timedelta(days=days_before),
        interval=timedelta(hours=1),
        price_per_mwh=rng.uniform(-80, 300, n).round(2),
        import_fee_per_mwh=float(rng.uniform(0, 150)),
        export_fee_per_mwh=float(rng.uniform(0, 20)),
    )


def depot(seed: int, hours: int, dt: timedelta) -> DepotProblem:
    rng = np.random.default_rng(seed)
    n = int(timedelta(hours=hours) / dt)
    assets = random_evs(rng, n, power_kw=11.0, e0_kwh=10.0, degradation_per_kwh=0.02,
                        need_kwh=(10, 80))
    assets.append(
        AssetSpec(
            "bess",
            flat(n, -40),
            flat(n, 40),
            flat(n + 1, 20),
            flat(n + 1, 100),
            float(rng.uniform(20, 100)),
            0.95,
            0.95,
            float(rng.uniform(0, 0.04)),
        )
    )
    base = rng.uniform(0, 60, n)
    return DepotProblem(
        start=DAY0,
        interval=dt,
        assets=tuple(assets),
        price_import_per_mwh=flat(n, 0),
        price_export_per_mwh=flat(n, 0),
        base_load_kw=base,
        pv_kw=rng.uniform(0, 100, n),
        import_limit_kw=base + 80.0,
        export_limit_kw=flat(n, 50),
        demand_charge_per_kw=float(rng.uniform(0, 5)),
        peak_so_far_kw=float(rng.uniform(0, 50)),
    )


def test_day_ahead_prices_are_known_from_12_local_on_the_day_before() -> None:
    prices = series(np.random.default_rng(1), 1, 3)
    tomorrow = datetime(2026, 3, 3, 0, tzinfo=BERLIN)
    before = datetime(2026, 3, 2, 11, 59, tzinfo=BERLIN).astimezone(UTC)
    at_noon = datetime(2026, 3, 2, 12, 0, tzinfo=BERLIN).astimezone(UTC)
    assert not prices.is_known(before, tomorrow.astimezone(UTC))
    assert prices.is_known(before, (tomorrow - timedelta(hours=1)).astimezone(UTC))
    assert prices.is_known(at_noon, tomorrow.astimezone(UTC))
    assert prices.is_known(at_noon, datetime(2026, 3, 3, 23, tzinfo=BERLIN).astimezone(UTC))
    assert not prices.is_known(at_noon, datetime(2026, 3, 4, 0, tzinfo=BERLIN).astimezone(UTC))
    assert prices.known_until(at_noon) == datetime(2026, 3, 4, tzinfo=BERLIN).astimezone(UTC)


def test_known_until_follows_local_days_across_dst() -> None:
    # 2026-03-29: Europe/Berlin goes from UTC+1 to UTC+2; that day has 23 hours
    prices = series(np.random.default_rng(1), 0, 1)
    noon = datetime(2026, 3, 28, 12, tzinfo=BERLIN).astimezone(UTC)
    assert prices.known_until(noon) == datetime(2026, 3, 29, 22, tzinfo=UTC)


def test_forecast_uses_last_week_then_last_day() -> None:
    prices = series(np.random.default_rng(2), 8, 2)
    now = DAY0 + timedelta(hours=1)  # 02:00 local: today known, tomorrow not
    tomorrow_k = DAY0 + timedelta(days=1, hours=5)
    got = prices.known_on_grid(now, tomorrow_k, timedelta(hours=1), 1)
    assert got[0] == prices.price_per_mwh[prices.index(tomorrow_k - timedelta(days=7))]
    got = prices.known_on_grid(now, tomorrow_k, timedelta(hours=1), 1, forecast="last_day")
    assert got[0] == prices.price_per_mwh[prices.index(tomorrow_k - timedelta(days=1))]
    today = prices.known_on_grid(now, DAY0, timedelta(minutes=15), 96)
    assert today == pytest.approx(prices.on_grid(DAY0, timedelta(minutes=15), 96))
    # no history a week back: falls back to the last known day
    short = series(np.random.default_rng(2), 1, 2)
    got = short.known_on_grid(now, tomorrow_k, timedelta(hours=1), 1)
    assert got[0] == short.price_per_mwh[short.index(tomorrow_k - timedelta(days=1))]


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    hours=st.integers(6, 40),
    step_h=st.sampled_from([1, 2, 3]),
    horizon_h=st.sampled_from([4, 12, 24]),
    forecast=st.sampled_from(["last_day", "last_week"]),
    dt=st.sampled_from([timedelta(hours=1), timedelta(minutes=30)]),
)
def test_rolling_cost_is_never_below_perfect_foresight(
    seed: int, hours: int, step_h: int, horizon_h: int, forecast: str, dt: timedelta
) -> None:
    problem = depot(seed, hours, dt)
    prices = series(np.random.default_rng(seed), 8, 2)
    rolled = rolling_horizon(
        problem,
        prices,
        step=timedelta(hours=step_h),
        horizon=timedelta(hours=max(horizon_h, step_h)),
        forecast=forecast,  # type: ignore[arg-type]
    )
    pf = perfect_foresight(problem, prices)
    assert rolled.cost >= pf.objective - 1e-6 * max(1.0, abs(pf.objective))
    assert len(rolled.solve_times_s) == -(-hours // step_h)
    # the applied schedule satisfies the whole problem's constraints
    real = replace(
        problem,
        price_import_per_mwh=pf.import_kw * 0 + 1.0,
        price_export_per_mwh=pf.import_kw * 0,
    )
    worst = constraint_violations(real, rolled.schedule)
    assert all(v <= 1e-6 for v in worst.values()), worst
    assert rolled.schedule.peak_kw == pytest.approx(
        max(problem.peak_so_far_kw, rolled.schedule.import_kw.max())
    )


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_rolling_equals_perfect_foresight_when_all_prices_are_known(seed: int) -> None:
    # 12 h from local midnight: at every step the whole rest of the day is published
    problem = depot(seed, 12, timedelta(hours=1))
    prices = series(np.random.default_rng(seed), 8, 2)
    rolled = rolling_horizon(problem, prices, horizon=timedelta(hours=12))
    pf = perfect_foresight(problem, prices)
    assert rolled.cost == pytest.approx(pf.objective, rel=1e-6, abs=1e-6)


def test_rolling_carries_state_and_peak() -> None:
    problem = depot(3, 24, timedelta(minutes=15))
    prices = series(np.random.default_rng(3), 8, 2)
    rolled = rolling_horizon(problem, prices)
    s = rolled.schedule
    assert len(rolled.starts) == 24 and rolled.starts[1] - rolled.starts[0] == timedelta(hours=1)
    assert s.energy_kwh[:, 0] == pytest.approx([a.e0_kwh for a in problem.assets])
    assert rolled.cost == pytest.approx(objective_value(with_real_prices(problem, prices), s))
    assert all(size.cols > 0 for size in rolled.sizes)


def test_bad_step_or_missing_prices_are_rejected() -> None:
    problem = depot(1, 6, timedelta(hours=1))
    prices = series(np.random.default_rng(1), 0, 1)
    with pytest.raises(MarketError, match="step"):
        rolling_horizon(problem, prices, step=timedelta(minutes=90))
    late = replace(prices, start=DAY0 + timedelta(hours=1))
    with pytest.raises(MarketError, match="no day-ahead price"):
        rolling_horizon(problem, late)
