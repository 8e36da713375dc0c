"""Reward rules: valuation from the prices in force, verification gating, idempotent replay."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError
from test_ledger_fixtures import *  # noqa: F403  (fixtures)
from test_ledger_fixtures import T0

from controllers.ledger import AccountRef, Ledger
from controllers.ledger.rewards import (
    Interval,
    RewardConfig,
    RewardRule,
    RuleKind,
    SessionActivity,
    Verification,
    process_stream,
    reward_event_id,
    tokens_for,
)


def iv(h: int, **kw) -> Interval:
    start = T0 + timedelta(hours=h)
    return Interval(start=start, end=start + timedelta(hours=1), **kw)


# plugged in 17-20 (peak, prices 0.40), charged 20-23 off-peak (0.10) with baseline shape
INTERVALS = (
    iv(
        0, import_kwh=Decimal(1), price_per_kwh=Decimal("0.40"), peak=True, baseline_kwh=Decimal(11)
    ),
    iv(
        1,
        import_kwh=Decimal(0),
        export_kwh=Decimal(4),
        price_per_kwh=Decimal("0.45"),
        peak=True,
        dr_event=True,
        baseline_kwh=Decimal(11),
    ),
    iv(2, import_kwh=Decimal(15), price_per_kwh=Decimal("0.10"), baseline_kwh=Decimal(0)),
    iv(3, import_kwh=Decimal(5), price_per_kwh=Decimal("0.08"), baseline_kwh=Decimal(0)),
)


def session(sid: str, verification=Verification.VERIFIED, intervals=INTERVALS):
    return SessionActivity(
        session_id=sid,
        driver_id="drv",
        currency="EUR",
        verification=verification,
        ended_at=T0 + timedelta(hours=4),
        intervals=intervals,
    )


def rules(code: str, hold: bool = False) -> RewardConfig:
    return RewardConfig(
        token=code,
        hold=hold,
        rules=(
            RewardRule(
                rule_id="defer", kind=RuleKind.DEFERRED_CHARGING, rate=Decimal(1), currency="EUR"
            ),
            RewardRule(rule_id="v2g", kind=RuleKind.V2G_EXPORT, rate=Decimal(10), currency="EUR"),
            RewardRule(
                rule_id="dr", kind=RuleKind.DEMAND_RESPONSE, rate=Decimal(3), currency="EUR"
            ),
            RewardRule(
                rule_id="shift", kind=RuleKind.KWH_SHIFTED, rate=Decimal("0.5"), currency="EUR"
            ),
        ),
    )


def test_rule_values_from_prices_in_force() -> None:
    s = session("S")
    got = {r.rule_id: r.measure(s) for r in rules("MGT").rules}
    # deferred: 15 kWh @0.10 + 5 kWh @0.08 off-peak
    assert got["defer"] == (Decimal(20), Decimal("1.90"))
    assert got["v2g"] == (Decimal(4), Decimal("1.80"))
    # DR: 11 kWh below baseline during the event @0.45
    assert got["dr"] == (Decimal(11), Decimal("4.95"))
    # shifted: 10 + 11 kWh out of peak, 20 delivered later: 20 kWh, peak value 4 + 4.95
    kwh, value = got["shift"]
    assert kwh == Decimal(20)
    assert value == (Decimal("8.95") * 20 / 21)
    assert tokens_for(value, Decimal("0.5")) == Decimal("4.261904")  # rounded down


def test_no_peak_no_deferral_reward() -> None:
    offpeak = (iv(2, import_kwh=Decimal(15), price_per_kwh=Decimal("0.10")),)
    rule = rules("MGT").rules[0]
    assert rule.measure(session("S", intervals=offpeak)) == (0, 0)


def test_floats_and_naive_times_refused() -> None:
    with pytest.raises(ValidationError):
        iv(0, import_kwh=1.5, price_per_kwh=Decimal("0.1"))
    with pytest.raises(ValidationError):
        Interval(
            start=T0.replace(tzinfo=None), end=T0 + timedelta(hours=1), price_per_kwh=Decimal(1)
        )


def test_stream_mints_verified_only_and_replays_idempotently(ledger: Ledger, code: str) -> None:
    cfg = rules(code)
    stream = [
        session(f"{code}-A"),
        session(f"{code}-B", Verification.PENDING),
        session(f"{code}-C", Verification.FAILED),
    ]
    first = process_stream(ledger, cfg, stream)
    assert {a.status for a in first if a.session_id.endswith("-A")} == {"minted"}
    assert {a.status for a in first if not a.session_id.endswith("-A")} == {"skipped_unverified"}
    w = AccountRef.wallet("drv", code)
    expected = sum((a.tokens for a in first if a.status == "minted"), Decimal(0))
    assert (
        ledger.balance(w)
        == expected
        == Decimal("1.90") + 18 + Decimal("14.85") + Decimal("4.261904")
    )
    again = process_stream(ledger, cfg, stream)
    assert {a.status for a in again if a.session_id.endswith("-A")} == {"replayed"}
    assert ledger.balance(w) == expected
    # B is verified later: the same stream now mints it, A stays as it was
    stream[1] = session(f"{code}-B", Verification.VERIFIED)
    process_stream(ledger, cfg, stream)
    process_stream(ledger, cfg, stream)
    assert ledger.balance(w) == 2 * expected
    # every entry traceable to its session and rule
    for e in ledger.entries(session_id=f"{code}-B"):
        assert e.event_id == reward_event_id(f"{code}-B", e.rule_id or "")
        assert e.rule_id in {"defer", "v2g", "dr", "shift"}
        assert "kWh" in e.memo
    assert len(ledger.entries(code=code)) == 8


def test_hold_mints_into_escrow_for_release(ledger: Ledger, code: str) -> None:
    cfg = rules(code, hold=True)
    process_stream(ledger, cfg, [session(f"{code}-H")])
    esc = AccountRef.escrow("drv", code)
    total = ledger.balance(esc)
    assert total > 0 and ledger.balance(AccountRef.wallet("drv", code)) == 0
    ledger.release(f"{code}:rel", "drv", code, total, at=T0, actor="fleet-manager")
    assert ledger.balance(AccountRef.wallet("drv", code)) == total


def test_currency_mismatch_refused(ledger: Ledger, code: str) -> None:
    s = SessionActivity(
        session_id=f"{code}-X",
        driver_id="drv",
        currency="USD",
        verification=Verification.VERIFIED,
        ended_at=T0,
        intervals=INTERVALS,
    )
    with pytest.raises(ValueError, match="USD"):
        process_stream(ledger, rules(code), [s])
