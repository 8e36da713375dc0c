"""Utility tariffs (URDB style): golden bills computed by hand, properties, bad input."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controllers.billing.tariffs.money import round_money
from controllers.billing.tariffs.utility import (
    DynamicPricing,
    UtilityTariff,
    bill,
    flat_schedule,
)

D = Decimal
LA = "America/Los_Angeles"

# weekdays 16:00-21:00 local are period 1 (peak), every other hour period 0
PEAK_WD = [[1 if 16 <= h < 21 else 0 for h in range(24)] for _ in range(12)]


def urdb(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "E-TOU test", "energyratestructure": [[{"rate": 0.10, "unit": "kWh"}],
                                                      [{"rate": 0.25, "adj": 0.05}]],
        "energyweekdayschedule": PEAK_WD, "energyweekendschedule": flat_schedule(0),
        "fixedchargefirstmeter": 10.0, "fixedchargeunits": "$/month",
        "flatdemandstructure": [[{"rate": 12.5}]], "flatdemandmonths": [0] * 12,
        "demandwindow": 15}
    doc.update(kw)
    return doc


def series(start_local: str, n: int, value: float | list[float], tz: str = LA,
           freq: str = "15min") -> pd.Series:
    idx = pd.date_range(pd.Timestamp(start_local, tz=tz), periods=n, freq=freq).tz_convert(
        "UTC")
    vals = value if isinstance(value, list) else [value] * n
    return pd.Series(vals, index=idx, dtype=float)


def lines(b: Any, kind: str) -> list[Any]:
    return [x for m in b.months for x in m.lines if x.kind == kind]


def test_tou_flat_demand_fixed_one_weekday() -> None:
    """10 kW for a whole Monday in Los Angeles (96 x 15 min).

    Peak 16-21 h: 50 kWh x (0.25 + 0.05) = 15.00; off-peak 190 kWh x 0.10 = 19.00;
    fixed 10.00; flat demand 10 kW x 12.50 = 125.00; total 169.00.
    """
    t = UtilityTariff.from_urdb(urdb(), time_zone=LA)
    b = bill(t, series("2024-07-01T00:00", 96, 10.0), kind="kw")
    (m,) = b.months
    assert m.month == "2024-07"
    got = {x.description: (x.quantity, x.amount) for x in m.lines}
    assert got == {"fixed charge": (D(1), D("10.00")),
                   "energy period 0 tier 0": (D(190), D("19.00")),
                   "energy period 1 tier 0": (D(50), D("15.00")),
                   "flat demand period 0 tier 0": (D(10), D("125.00"))}
    assert m.total == b.total == D("169.00")
    assert m.energy_kwh == D(240) and m.peak_kw == D(10)


def test_weekend_schedule_and_holiday() -> None:
    """Saturday, and a Monday declared a holiday, use the weekend schedule: no peak line."""
    t = UtilityTariff.from_urdb(urdb(flatdemandstructure=None, flatdemandmonths=None),
                                time_zone=LA)
    sat = bill(t, series("2024-07-06T00:00", 96, 10.0), kind="kw")
    assert [x.description for x in lines(sat, "energy")] == ["energy period 0 tier 0"]
    hol = bill(t, series("2024-07-01T00:00", 96, 10.0), kind="kw",
               holidays=[dt.date(2024, 7, 1)])
    assert lines(hol, "energy")[0].amount == D("24.00")


def test_energy_tiers() -> None:
    """Tier 0 up to 100 kWh/month at 0.10, above at 0.15: 150 kWh -> 10.00 + 7.50."""
    t = UtilityTariff.from_urdb(
        urdb(energyratestructure=[[{"rate": 0.10, "max": 100}, {"rate": 0.15}]],
             energyweekdayschedule=flat_schedule(), fixedchargefirstmeter=0,
             flatdemandstructure=None, flatdemandmonths=None), time_zone=LA)
    b = bill(t, series("2024-07-01T00:00", 6, 25.0, freq="1h"), kind="kwh")
    assert [(x.quantity, x.amount) for x in lines(b, "energy")] == [
        (D(100), D("10.00")), (D(50), D("7.50"))]
    assert b.total == D("17.50")


def test_demand_is_15_min_mean_of_5_min_data() -> None:
    """5-min data 0, 30, 0 kW then 9 kW: the 15-min means are 10 and 9 kW -> peak 10."""
    t = UtilityTariff.from_urdb(urdb(), time_zone=LA)
    b = bill(t, series("2024-07-01T00:00", 6, [0.0, 30.0, 0.0, 9.0, 9.0, 9.0], freq="5min"),
             kind="kw")
    assert b.months[0].peak_kw == D(10)
    assert lines(b, "flat_demand")[0].amount == D("125.00")


def test_tou_demand() -> None:
    """TOU demand: peak period 20.00/kW on the 16-21 h peak, 5.00/kW otherwise.

    12 kW at 03:00 (off-peak), 8 kW at 17:00 (peak), 1 kW otherwise:
    off-peak 12 x 5 = 60.00, peak 8 x 20 = 160.00.
    """
    vals = [1.0] * 96
    vals[3 * 4] = 12.0
    vals[17 * 4] = 8.0
    t = UtilityTariff.from_urdb(
        urdb(demandratestructure=[[{"rate": 5}], [{"rate": 20}]],
             demandweekdayschedule=PEAK_WD, demandweekendschedule=flat_schedule(),
             flatdemandstructure=None, flatdemandmonths=None), time_zone=LA)
    b = bill(t, series("2024-07-01T00:00", 96, vals), kind="kw")
    assert [(x.description, x.amount) for x in lines(b, "tou_demand")] == [
        ("TOU demand period 0 tier 0", D("60.00")), ("TOU demand period 1 tier 0", D("160.00"))]


def test_split_by_local_month() -> None:
    """2024-06-30 20:00 PDT is 2024-07-01 03:00 UTC: the month is the local one."""
    t = UtilityTariff.from_urdb(urdb(), time_zone=LA)
    b = bill(t, series("2024-06-30T20:00", 32, 4.0), kind="kw")  # 20:00 -> 04:00 local
    assert [m.month for m in b.months] == ["2024-06", "2024-07"]
    assert [m.energy_kwh for m in b.months] == [D(16), D(16)]
    assert len(lines(b, "fixed")) == 2
    assert b.total == sum(m.total for m in b.months)


def test_dst_day_has_23_hours() -> None:
    """2024-03-10 in Los Angeles has 23 h: 92 intervals of 1 kW = 23 kWh x 0.10 = 2.30
    (a Sunday: weekend schedule)."""
    t = UtilityTariff.from_urdb(urdb(fixedchargefirstmeter=0, flatdemandstructure=None,
                                     flatdemandmonths=None), time_zone=LA)
    b = bill(t, series("2024-03-10T00:00", 92, 1.0), kind="kw")
    assert b.months[0].energy_kwh == D(23) and b.total == D("2.30")


def test_dynamic_pass_through() -> None:
    """(50 USD/MWh / 1000 + 0.02) x 1.10 = 0.077 USD/kWh; 2 h of 50 kW = 100 kWh -> 7.70.
    The second hour costs 80/MWh: (0.08 + 0.02) x 1.1 x 50 = 5.50; 3.85 + 5.50 = 9.35."""
    t = UtilityTariff(time_zone=LA, dynamic=DynamicPricing(adder_per_kwh=D("0.02"),
                                                           markup_percent=D(10)))
    meter = series("2024-07-01T00:00", 8, 50.0)
    prices = pd.Series([50.0, 80.0], index=meter.index[::4])
    b = bill(t, meter, kind="kw", prices_per_mwh=prices)
    (line,) = lines(b, "dynamic_energy")
    assert line.quantity == D(100) and line.amount == D("9.35")
    assert line.rate == D("0.0935")


def test_rounding_point_is_the_line() -> None:
    """Three lines of x.xx5 exact: each rounds half up, the total is their sum (no
    second rounding): 0.105 -> 0.11 (x2 periods) ..."""
    t = UtilityTariff.from_urdb(
        urdb(energyratestructure=[[{"rate": 0.021}], [{"rate": 0.021}]],
             fixedchargefirstmeter=0, flatdemandstructure=None, flatdemandmonths=None),
        time_zone=LA)
    # 5 kWh off-peak at 03:00 and 5 kWh peak at 17:00 -> 0.105 each
    vals = [0.0] * 96
    vals[12] = 5.0
    vals[68] = 5.0
    b = bill(t, series("2024-07-01T00:00", 96, vals), kind="kwh")
    assert [x.amount_exact for x in lines(b, "energy")] == [D("0.105"), D("0.105")]
    assert [x.amount for x in lines(b, "energy")] == [D("0.11"), D("0.11")]
    assert b.total == D("0.22")


# ------------------------------------------------------------------------- bad input


def _t() -> UtilityTariff:
    return UtilityTariff.from_urdb(urdb(), time_zone=LA)


def test_bad_meter_rejected() -> None:
    s = series("2024-07-01T00:00", 4, 1.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        bill(_t(), s.tz_convert(None), kind="kw")
    with pytest.raises(ValueError, match="UTC"):
        bill(_t(), s.tz_convert(LA), kind="kw")
    with pytest.raises(ValueError, match="non-finite"):
        bill(_t(), s.where(s.index != s.index[1], np.nan), kind="kw")
    with pytest.raises(ValueError, match="evenly spaced"):
        bill(_t(), s.drop(s.index[1]), kind="kw")
    with pytest.raises(ValueError, match="strictly increasing"):
        bill(_t(), s.iloc[::-1], kind="kw")
    dyn = UtilityTariff(time_zone=LA, dynamic=DynamicPricing())
    with pytest.raises(ValueError, match="prices_per_mwh"):
        bill(dyn, s, kind="kw")
    with pytest.raises(ValueError, match="cover"):
        bill(dyn, s, kind="kw", prices_per_mwh=pd.Series([1.0], index=s.index[2:3]))


@pytest.mark.parametrize(("patch", "message"), [
    ({"energyweekdayschedule": [[0] * 24] * 11}, "12 months x 24 hours"),
    ({"energyweekdayschedule": [[0] * 23] * 12}, "12 months x 24 hours"),
    ({"energyweekendschedule": [[2] * 24] * 12}, "out of range"),
    ({"flatdemandmonths": [0] * 11}, "flat_demand_months"),
    ({"energyratestructure": [[{"rate": 0.1}, {"rate": 0.2}], [{"rate": 0.3}]]},
     "only the last tier"),
    ({"energyratestructure": [[{"rate": 0.1, "max": 5}, {"rate": 0.2, "max": 5}],
                              [{"rate": 0.3}]]}, "must increase"),
    ({"fixedchargeunits": "$/year"}, "fixed_charge_units"),
])
def test_bad_urdb_rejected(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        UtilityTariff.from_urdb(urdb(**patch), time_zone=LA)


def test_bad_zone_and_currency() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        UtilityTariff.from_urdb(urdb(), time_zone="Pacific/Nowhere")
    with pytest.raises(ValidationError, match="ISO 4217"):
        UtilityTariff.from_urdb(urdb(), time_zone=LA, currency="usd")


# ------------------------------------------------------------------------- properties

rates = st.decimals(min_value=0, max_value=1, places=5).map(float)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-5, max_value=200, allow_nan=False), min_size=2,
                max_size=300),
       rates, rates, st.decimals(min_value=0, max_value=30, places=3).map(float),
       st.integers(min_value=0, max_value=365 * 24 * 4))
def test_bill_reconciles(vals: list[float], r0: float, r1: float, dem: float,
                         offset: int) -> None:
    t = UtilityTariff.from_urdb(
        urdb(energyratestructure=[[{"rate": r0, "max": 500}, {"rate": r1}], [{"rate": r1}]],
             flatdemandstructure=[[{"rate": dem}]]), time_zone=LA)
    start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=15 * offset)
    s = pd.Series(vals, index=pd.date_range(start, periods=len(vals), freq="15min"))
    b = bill(t, s, kind="kw")
    assert b.total == sum(m.total for m in b.months)
    for m in b.months:
        assert m.total == sum(x.amount for x in m.lines)
        for x in m.lines:
            assert x.amount == round_money(x.amount_exact, "USD")
    energy = sum((x.quantity for m in b.months for x in m.lines if x.kind == "energy"), D(0))
    assert energy == sum((m.energy_kwh for m in b.months), D(0))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), min_size=2,
                max_size=200),
       st.integers(min_value=0, max_value=199), st.floats(min_value=0, max_value=50),
       rates, rates)
def test_bill_monotone_in_energy(vals: list[float], i: int, extra: float, r0: float,
                                 r1: float) -> None:
    t = UtilityTariff.from_urdb(
        urdb(energyratestructure=[[{"rate": r0, "max": 300}, {"rate": r1}], [{"rate": r1}]]),
        time_zone=LA)
    idx = pd.date_range("2024-07-01", periods=len(vals), freq="15min", tz="UTC")
    more = list(vals)
    more[i % len(vals)] += extra
    a = bill(t, pd.Series(vals, index=idx), kind="kw")
    b = bill(t, pd.Series(more, index=idx), kind="kw")
    assert a.total <= b.total
