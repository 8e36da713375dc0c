"""CDR, split billing and home reimbursement (issue 8 item 4): Decimal, exact to the cent.

Golden tariff: ENERGY 0.25 EUR/kWh (step 1 Wh) + TIME 1.00 EUR/h, VAT 20 % on both.
Golden session: 2 h, 30.0004 kWh: energy 30.0004 x 0.25 = 7.5001, time 2.00,
excl. 9.5001 -> 9.50; incl. 9.5001 x 1.2 = 11.40012 -> 11.40.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controllers.billing.audit import AuditStatus
from controllers.billing.invoice import (
    Cdr,
    FleetPaysShare,
    FleetPaysUpToAmount,
    FleetPaysUpToKwh,
    Payer,
    SplitRule,
    reimburse_home,
    split,
)
from controllers.billing.tariffs.ocpi import ChargingSession, CostLine, Tariff

D = Decimal
T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


def tariff(currency: str = "EUR", energy: str = "0.25", time: str = "1.00") -> Tariff:
    return Tariff.model_validate({"id": "t-depot", "currency": currency, "elements": [
        {"price_components": [
            {"type": "ENERGY", "price": D(energy), "step_size": 1, "vat": D(20)},
            {"type": "TIME", "price": D(time), "step_size": 1, "vat": D(20)}]}]})


def session(kwh: Any = "30.0004", hours: int = 2) -> ChargingSession:
    return ChargingSession.model_validate({
        "start_date_time": T0, "end_date_time": T0 + dt.timedelta(hours=hours),
        "time_zone": "Europe/Amsterdam",
        "charging_periods": [{"start_date_time": T0, "energy_kwh": D(kwh),
                              "time_h": D(hours)}]})


def cdr(*, at_home: bool = False, status: AuditStatus = AuditStatus.VERIFIED,
        **kw: Any) -> Cdr:
    return Cdr.build(session_id="s1", station_id="CS1", evse_id="NL*ABC*E1",
                     id_token="TOKEN1", session=session(**kw), tariff=tariff(),
                     audit_status=status, at_home=at_home)


def test_cdr_golden() -> None:
    c = cdr()
    assert c.energy_kwh == D("30.000") and c.energy_kwh.as_tuple().exponent == -3
    assert (c.start, c.end) == (T0, T0 + dt.timedelta(hours=2))
    assert c.start.tzinfo is dt.UTC
    assert c.tariff_id == "t-depot" and c.currency == "EUR"
    assert (c.total_excl_vat, c.total_incl_vat) == (D("9.50"), D("11.40"))
    assert [(x.type, x.incl_vat) for x in c.lines] == [("ENERGY", D("9.00")),
                                                       ("TIME", D("2.40"))]
    assert c.audit_status is AuditStatus.VERIFIED


def test_cdr_energy_rounds_half_up_to_wh() -> None:
    assert cdr(kwh="12.3455").energy_kwh == D("12.346")


def test_split_share_golden() -> None:
    # fleet 33 %: incl. 9.00 x 0.33 = 2.97, 2.40 x 0.33 = 0.792 -> total 3.762 -> 3.76;
    # floors 2.97 + 0.79 = 3.76: no unit to allocate. Driver 6.03 + 1.61 = 7.64.
    inv = split(cdr(), FleetPaysShare(D(33)))
    assert inv.fleet_total == D("3.76") and inv.driver_total == D("7.64")
    assert inv.fleet_total + inv.driver_total == D("11.40")
    got = {(x.payer, x.kind): x.incl_vat for x in inv.lines}
    assert got == {(Payer.FLEET, "ENERGY"): D("2.97"), (Payer.DRIVER, "ENERGY"): D("6.03"),
                   (Payer.FLEET, "TIME"): D("0.79"), (Payer.DRIVER, "TIME"): D("1.61")}
    # excl.: 7.50 x 0.33 = 2.475, 2.00 x 0.33 = 0.66 -> 3.135 -> 3.14 (half up)
    assert inv.total(Payer.FLEET, incl_vat=False) == D("3.14")
    assert inv.total(Payer.DRIVER, incl_vat=False) == D("6.36")


def test_split_up_to_kwh() -> None:
    # fleet pays its first 20 kWh of 30.000: share 2/3; 11.40 x 2/3 = 7.60
    inv = split(cdr(), FleetPaysUpToKwh(D(20)))
    assert inv.fleet_total == D("7.60") and inv.driver_total == D("3.80")
    assert split(cdr(), FleetPaysUpToKwh(D(50))).driver_total == D(0)


def test_split_up_to_amount() -> None:
    inv = split(cdr(), FleetPaysUpToAmount(D("5.00"), "EUR"))
    assert inv.fleet_total == D("5.00") and inv.driver_total == D("6.40")
    full = split(cdr(), FleetPaysUpToAmount(D("100"), "EUR"))
    assert full.fleet_total == D("11.40") and full.lines == tuple(
        x for x in full.lines if x.payer is Payer.FLEET)


def test_split_currency_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="currency mismatch"):
        split(cdr(), FleetPaysUpToAmount(D(5), "USD"))


def test_reimbursement_at_home_tariff() -> None:
    # 30.000 kWh x 0.3127 EUR/kWh = 9.381 -> 9.38, rounded once
    r = reimburse_home(cdr(at_home=True), D("0.3127"), "EUR")
    assert r.amount == D("9.38") and r.energy_kwh == D("30.000")
    assert (r.payer, r.payee) == (Payer.FLEET, Payer.DRIVER)


def test_reimbursement_rounds_once_half_up() -> None:
    # 10.010 kWh x 0.2455 = 2.457455 -> 2.46 (rounding per-kWh first would give
    # 0.25 x 10.010 = 2.5025 -> 2.50)
    assert reimburse_home(cdr(at_home=True, kwh="10.010"), D("0.2455"), "EUR").amount \
        == D("2.46")


def test_reimbursement_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not a session at home"):
        reimburse_home(cdr(), D("0.30"), "EUR")
    with pytest.raises(ValueError, match="currency mismatch"):
        reimburse_home(cdr(at_home=True), D("0.30"), "USD")
    with pytest.raises(TypeError, match="never float"):
        reimburse_home(cdr(at_home=True), 0.30, "EUR")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        reimburse_home(cdr(at_home=True), D("-0.30"), "EUR")
    with pytest.raises(ValueError, match="ISO 4217"):
        reimburse_home(cdr(at_home=True), D("0.30"), "eur")


@pytest.mark.parametrize("status", [AuditStatus.FLAGGED, AuditStatus.UNVERIFIABLE])
def test_reimbursement_fail_safe_on_audit(status: AuditStatus) -> None:
    c = cdr(at_home=True, status=status)
    with pytest.raises(ValueError, match="not verified"):
        reimburse_home(c, D("0.30"), "EUR")
    assert reimburse_home(c, D("0.30"), "EUR", require_verified=False).amount == D("9.00")


def _raw(**kw: Any) -> dict[str, Any]:
    line = CostLine("ENERGY", D(1), D(1), D(1), D(1), D("1.00"), D("1.00"))
    base: dict[str, Any] = {
        "session_id": "s", "station_id": "CS", "evse_id": "E", "id_token": "T",
        "start": T0, "end": T0 + dt.timedelta(hours=1), "energy_kwh": D(4),
        "tariff_id": "t", "currency": "EUR", "lines": (line,),
        "total_excl_vat": D("1.00"), "total_incl_vat": D("1.00"),
        "audit_status": AuditStatus.VERIFIED}
    base.update(kw)
    return base


@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"energy_kwh": D(-1)}, ValueError, "must not be negative"),
    ({"energy_kwh": 4.0}, TypeError, "never float"),
    ({"total_incl_vat": 1.0}, TypeError, "never float"),
    ({"total_incl_vat": D("1.01")}, ValueError, "do not sum"),
    ({"currency": "euro"}, ValueError, "ISO 4217"),
    ({"start": dt.datetime(2026, 3, 2, 8)}, ValueError, "timezone-aware"),
    ({"end": T0 - dt.timedelta(hours=1)}, ValueError, "before start"),
    ({"energy_kwh": D("NaN")}, ValueError, "finite"),
])
def test_cdr_bad_input_raises(kw: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        Cdr(**_raw(**kw))


def test_negative_session_energy_rejected() -> None:
    with pytest.raises(ValidationError):
        session(kwh="-1")


@pytest.mark.parametrize(("make", "exc"), [
    (lambda: FleetPaysShare(D(101)), ValueError),
    (lambda: FleetPaysShare(D(-1)), ValueError),
    (lambda: FleetPaysShare(50.0), TypeError),  # type: ignore[arg-type]
    (lambda: FleetPaysUpToKwh(D(-5)), ValueError),
    (lambda: FleetPaysUpToKwh(20.0), TypeError),  # type: ignore[arg-type]
    (lambda: FleetPaysUpToAmount(5.0, "EUR"), TypeError),  # type: ignore[arg-type]
    (lambda: FleetPaysUpToAmount(D(5), "EURO"), ValueError),
])
def test_bad_rules_raise(make: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        make()


def test_jpy_zero_minor_units() -> None:
    c = Cdr.build(session_id="j", station_id="CS", evse_id="E", id_token="T",
                  session=session(kwh="7"), tariff=tariff("JPY", "31", "100"),
                  audit_status=AuditStatus.VERIFIED)
    # excl. 7 x 31 + 2 x 100 = 417; incl. x 1.2 = 500.4 -> 500
    assert c.total_incl_vat == D(500)
    inv = split(c, FleetPaysShare(D(50)))
    assert (inv.fleet_total, inv.driver_total) == (D(250), D(250))


# --- properties ---------------------------------------------------------------------

cents = st.integers(0, 10**7).map(lambda n: D(n).scaleb(-2))
rules: st.SearchStrategy[SplitRule] = st.one_of(
    st.decimals(0, 100, places=3).map(FleetPaysShare),
    st.decimals(0, 500, places=3).map(FleetPaysUpToKwh),
    cents.map(lambda a: FleetPaysUpToAmount(a, "EUR")),
)


@given(st.lists(st.tuples(st.sampled_from(["ENERGY", "TIME", "PARKING_TIME", "FLAT"]),
                          cents, cents), min_size=1, max_size=4),
       st.decimals(0, 500, places=3), rules)
def test_split_reconciles_exactly(lines: list[tuple[str, Decimal, Decimal]],
                                  energy: Decimal, rule: SplitRule) -> None:
    cls = [CostLine(k, D(1), D(1), ex, inc, ex, inc) for k, ex, inc in lines]
    c = Cdr(**_raw(lines=tuple(cls), energy_kwh=energy,
                   total_excl_vat=sum((x.excl_vat for x in cls), D(0)),
                   total_incl_vat=sum((x.incl_vat for x in cls), D(0))))
    inv = split(c, rule)
    assert inv.driver_total + inv.fleet_total == c.total_incl_vat
    assert inv.total(Payer.DRIVER, incl_vat=False) + inv.total(Payer.FLEET, incl_vat=False) \
        == c.total_excl_vat
    for x in inv.lines:
        assert isinstance(x.incl_vat, Decimal) and isinstance(x.excl_vat, Decimal)
        assert x.incl_vat >= 0 and x.excl_vat >= 0
        assert x.incl_vat == x.incl_vat.quantize(D("0.01"))
    # per CDR line: driver + fleet == line
    for cl in cls:
        mine = [x for x in inv.lines if x.kind == cl.type]
        if [y.type for y in cls].count(cl.type) == 1:
            assert sum((x.incl_vat for x in mine), D(0)) == cl.incl_vat
    # the fleet's share is honoured (rounded once)
    if isinstance(rule, FleetPaysUpToAmount):
        assert inv.fleet_total <= rule.amount
        assert inv.fleet_total == min(rule.amount, c.total_incl_vat)
    if isinstance(rule, FleetPaysShare):
        exact = c.total_incl_vat * rule.percent / 100
        assert abs(inv.fleet_total - exact) <= D("0.005")


@given(st.decimals(0, 200, places=4), st.decimals(0, 1, places=4))
def test_reimbursement_is_price_times_energy_rounded_once(kwh: Decimal,
                                                          price: Decimal) -> None:
    c = Cdr(**_raw(energy_kwh=kwh, at_home=True))
    r = reimburse_home(c, price, "EUR")
    assert r.amount == (price * c.energy_kwh).quantize(D("0.01"), rounding="ROUND_HALF_UP")
    assert isinstance(r.amount, Decimal)


def test_split_with_negative_price_limit_line() -> None:
    t = Tariff.model_validate({**tariff().model_dump(), "max_price": {
        "excl_vat": D(5), "incl_vat": D(6)}})
    c = Cdr.build(session_id="m", station_id="CS", evse_id="E", id_token="T",
                  session=session(), tariff=t, audit_status=AuditStatus.VERIFIED)
    assert c.total_incl_vat == D("6.00") and c.lines[-1].type == "PRICE_LIMIT"
    inv = split(c, FleetPaysShare(D(33)))
    # 6.00 x 0.33 = 1.98 exactly; every CDR line splits into driver + fleet exactly
    assert (inv.fleet_total, inv.driver_total) == (D("1.98"), D("4.02"))
    for line in c.lines:
        assert sum((x.incl_vat for x in inv.lines if x.kind == line.type), D(0)) \
            == line.incl_vat
