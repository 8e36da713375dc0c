"""Reward measurement in runs: ASAP baseline, V2G export, grid-event flags."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.billing.tariffs.utility import UtilityTariff
from twin.billing_rewards import (
    RateClock,
    RunSignals,
    asap_baseline_wh,
    max_power_kw,
    session_intervals,
)
from twin.billing_run import bill_run
from twin.market_control import MarketController
from twin.market_problem import study_prices
from twin.market_study import optimiser_scenario, run_twin, v2g_discharge_kwh
from twin.run_inputs import resolve_inputs
from twin.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
T0 = datetime(2023, 8, 8, 8, tzinfo=UTC)
Q = timedelta(minutes=15)


def quarter_blocks(whs: list[int]) -> list[tuple[datetime, datetime, int]]:
    return [(T0 + i * Q, T0 + (i + 1) * Q, wh) for i, wh in enumerate(whs)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2750), min_size=1, max_size=40),
       st.floats(11.0, 50.0))
def test_asap_baseline_is_front_loaded_and_keeps_the_energy(whs: list[int],
                                                            power_kw: float) -> None:
    # 2750 Wh in 15 min is 11 kW: at power_kw >= 11 kW the ASAP profile is ahead of the
    # actual one at every block boundary, and delivers the same energy.
    blocks = quarter_blocks(whs)
    base = asap_baseline_wh(blocks, power_kw)
    assert sum(base) == sum(whs)
    assert all(b >= 0 for b in base)
    assert (np.cumsum(base) >= np.cumsum(whs)).all()


def test_asap_baseline_when_the_power_could_not_have_done_it_sooner() -> None:
    base = asap_baseline_wh(quarter_blocks([3000, 3000]), 4.0)  # 1 kWh per block at 4 kW
    assert base == [1000, 5000]  # front-loaded up to the power, the rest at the end


def test_max_power_from_register_samples() -> None:
    regs = [(T0, 0), (T0 + timedelta(minutes=1), 183), (T0 + timedelta(minutes=2), 300)]
    assert max_power_kw(regs) == pytest.approx(10.98)
    assert max_power_kw(regs[:1]) == 0.0


def _clock() -> RateClock:
    flat = [[0] * 24 for _ in range(12)]
    peak = [[1 if 16 <= h < 21 else 0 for h in range(24)] for _ in range(12)]
    tariff = UtilityTariff.from_urdb({
        "name": "t", "energyratestructure": [[{"rate": "0.10"}], [{"rate": "0.30"}]],
        "energyweekdayschedule": peak, "energyweekendschedule": flat}, "UTC", currency="USD")
    return RateClock(tariff, None)


def test_intervals_carry_export_event_and_baseline() -> None:
    blocks = quarter_blocks([2750, 0, 1000])
    regs = [(T0, 0), (T0 + Q, 2750), (T0 + 2 * Q, 2750), (T0 + 3 * Q, 3750)]
    idx = pd.DatetimeIndex([T0 + Q + timedelta(minutes=m) for m in range(1, 16)])
    export = pd.DataFrame({"value": np.full(15, 4.0), "step_s": np.full(15, 60.0)}, index=idx)
    signals = RunSignals({"CV001/1": export}, ((T0 + 2 * Q, T0 + 2 * Q + timedelta(minutes=1)),))
    ivs = session_intervals(blocks, regs, "CV001/1", _clock(), signals)
    assert [iv.export_kwh for iv in ivs] == [Decimal(0), Decimal("1.000"), Decimal(0)]
    assert [iv.dr_event for iv in ivs] == [False, False, True]
    assert [iv.baseline_kwh for iv in ivs] == [Decimal("2.750"), Decimal("1.000"), Decimal(0)]
    assert [iv.price_per_kwh for iv in ivs] == [Decimal("0.10")] * 3  # 08:00 UTC, off-peak
    # no signals for another EVSE: nothing exported, no event
    other = session_intervals(blocks, regs, "CA001/1", _clock(), RunSignals())
    assert all(iv.export_kwh == 0 and not iv.dr_event for iv in other)


@pytest.mark.slow
def test_v2g_export_is_rewarded_as_metered_on_the_nl_day(
    tmp_path: Path, data_sets: dict[str, Path],
) -> None:
    """The NL negative-price day under the rolling market optimiser (V2G on 2.1 EVSEs),
    billed with V2G, kWh-shifted and demand-response rules: the export the rules measure
    is the export the EVSEs metered, and only verified sessions are minted.
    """
    doc = yaml.safe_load((SCENARIOS / "nl_negative_prices_2023-08-08.yaml").read_text())
    billing = yaml.safe_load((SCENARIOS / "caltech_week.yaml").read_text())["billing"]
    billing["ocpi_tariff"] = str(SCENARIOS / billing["ocpi_tariff"])
    billing["utility_tariff"] = str(SCENARIOS / billing["utility_tariff"])
    billing["dishonest"] = []
    billing["home_stations"] = []
    billing["rewards"]["rules"] = [
        {"rule_id": "v2g", "kind": "v2g_export", "rate": "10", "currency": "USD"},
        {"rule_id": "shift", "kind": "kwh_shifted", "rate": "10", "currency": "USD"},
        {"rule_id": "dr", "kind": "demand_response", "rate": "10", "currency": "USD"}]
    doc["billing"] = billing
    path = tmp_path / "nl_billed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    sc = optimiser_scenario(load_scenario(path))
    out = tmp_path / "rolling"
    asyncio.run(run_twin(sc, resolve_inputs(sc), out,
                         hook=MarketController(sc, study_prices(sc))))
    rb = bill_run(out)
    awards = [a for s in rb.sessions for a in s.awards]
    assert awards and all(a.kwh >= 0 and a.tokens >= 0 for a in awards)
    exported = sum((a.kwh for a in awards if a.rule_id == "v2g"), Decimal(0))
    metered = v2g_discharge_kwh(out, float(sc.run.step_s))
    assert metered > 1.0
    # sessions still plugged in at the end are not billed: at most what was metered
    assert float(exported) <= metered + 0.01
    assert float(exported) >= 0.9 * metered
    assert all(a.kwh == 0 for a in awards if a.rule_id == "dr")  # no grid event that day
    for s in rb.sessions:
        if not s.audit.verified:
            assert all(a.status == "skipped_unverified" for a in s.awards)
        shifted = sum((a.kwh for a in s.awards if a.rule_id == "shift"), Decimal(0))
        assert shifted <= s.data.energy_kwh
    assert any(a.status == "minted" and a.rule_id == "v2g" for a in awards)
