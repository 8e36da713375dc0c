"""Billing store: round trips, exact decimals, idempotency, crash safety; SQLite + PostgreSQL.

Property tests (hypothesis) save generated records and read them back equal (Decimals
exact, to the digit where they are not money), saving them again changes nothing and a
different record under the same key is refused without a trace. A worker process saving
a billing pass is SIGKILLed mid-way and re-run: nothing is lost or doubled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, localcontext
from pathlib import Path

import hypothesis.strategies as st
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from billing_crash_worker import N_CRASH, crash_records
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, inspect, select, text
from test_ledger_fixtures import *  # noqa: F403  (fixtures)
from test_ledger_fixtures import BACKENDS, T0, backend_target

from controllers.billing.audit import AuditResult, AuditStatus
from controllers.billing.invoice import Cdr, FleetPaysShare, Invoice, InvoiceLine, Payer, split
from controllers.billing.store import BillingConflictError, BillingStore, SessionRecord
from controllers.billing.store_models import (
    BillingBase,
    CdrLineRow,
    InvoiceLineRow,
    SessionRow,
    SiteBillLineRow,
)
from controllers.billing.tariffs.money import EXACT, minor_unit
from controllers.billing.tariffs.ocpi import CostLine, Tariff
from controllers.billing.tariffs.utility import Bill, LineItem, MonthlyBill
from controllers.ledger import AccountRef, Ledger, open_ledger
from controllers.ledger.db import downgrade, make_engine
from controllers.ledger.rewards import RewardRule, RuleKind

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def store(ledger_target: str):
    db = open_ledger(ledger_target)
    try:
        yield BillingStore(db)
    finally:
        db.close()


# -- strategies ---------------------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
zones = st.sampled_from([UTC, timezone(timedelta(hours=2)),
                         timezone(-timedelta(hours=5, minutes=30))])
instants = st.builds(lambda d, z: d.replace(tzinfo=UTC).astimezone(z),
                     st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
                     zones)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3))
exact = st.one_of(
    st.decimals(min_value=-10**9, max_value=10**9, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=1000, places=18),
    st.integers(-10**30, 10**30).map(Decimal),
)
floats = st.none() | st.floats(allow_nan=False, allow_infinity=False)
currencies = st.sampled_from(["EUR", "USD", "JPY", "BHD"])


def uid() -> str:
    return uuid.uuid4().hex[:12]


def money(currency: str, lo: int = -10**6, hi: int = 10**6) -> st.SearchStrategy[Decimal]:
    q = minor_unit(currency)
    return st.integers(lo, hi).map(lambda n: Decimal(n) * q)


@st.composite
def sessions(draw: st.DrawFn, token: str | None = None) -> SessionRecord:
    start = draw(instants)
    return SessionRecord(
        session_id=f"s-{uid()}-{draw(names)}", station_id=draw(names), evse_id=draw(names),
        id_token=token or draw(names), fleet_id=draw(st.none() | names), start=start,
        end=start + draw(durations), energy_kwh=draw(exact), soc_start=draw(floats),
        soc_end=draw(floats), capacity_kwh=draw(floats), at_home=draw(st.booleans()),
        run_id=draw(st.none() | names))


@st.composite
def audits(draw: st.DrawFn) -> AuditResult:
    return AuditResult(f"s-{uid()}", draw(st.sampled_from(list(AuditStatus))),
                       draw(floats), draw(floats), tuple(draw(st.lists(names, max_size=3))))


@st.composite
def cost_lines(draw: st.DrawFn, currency: str) -> CostLine:
    return CostLine(type=draw(st.sampled_from(["ENERGY", "TIME", "PARKING_TIME", "FLAT",
                                               "PRICE_LIMIT"])),
                    volume=draw(exact), billed_volume=draw(exact),
                    excl_vat_exact=draw(exact), incl_vat_exact=draw(exact),
                    excl_vat=draw(money(currency)), incl_vat=draw(money(currency)))


@st.composite
def cdrs(draw: st.DrawFn, token: str | None = None) -> Cdr:
    cur = draw(currencies)
    lines = tuple(draw(st.lists(cost_lines(cur), max_size=5)))
    start = draw(instants)
    return Cdr(session_id=f"s-{uid()}", station_id=draw(names), evse_id=draw(names),
               id_token=token or draw(names), start=start, end=start + draw(durations),
               energy_kwh=draw(st.decimals(min_value=0, max_value=10**6, places=4)),
               tariff_id=draw(names), currency=cur, lines=lines,
               total_excl_vat=sum((x.excl_vat for x in lines), Decimal(0)),
               total_incl_vat=sum((x.incl_vat for x in lines), Decimal(0)),
               audit_status=draw(st.sampled_from(list(AuditStatus))),
               at_home=draw(st.booleans()))


@st.composite
def invoices(draw: st.DrawFn) -> Invoice:
    cur = draw(currencies)
    lines = tuple(draw(st.lists(st.builds(InvoiceLine, st.sampled_from(list(Payer)),
                                          st.sampled_from(["ENERGY", "TIME", "FLAT"]),
                                          money(cur), money(cur)), max_size=6)))
    with localcontext(EXACT):
        share = Decimal(draw(st.integers(0, 7))) / Decimal(7)  # 60 significant digits
    return Invoice(f"s-{uid()}", cur, share, lines,
                   sum((x.excl_vat for x in lines), Decimal(0)),
                   sum((x.incl_vat for x in lines), Decimal(0)))


@st.composite
def bills(draw: st.DrawFn) -> Bill:
    cur = draw(currencies)
    months = []
    for m in range(draw(st.integers(0, 3))):
        month = f"2026-{m + 1:02d}"
        items = tuple(
            LineItem(month=month, kind=draw(st.sampled_from(
                ["fixed", "energy", "dynamic_energy", "flat_demand", "tou_demand"])),
                description=draw(names), quantity=draw(exact), unit="kWh", rate=draw(exact),
                amount_exact=draw(exact), amount=draw(money(cur)))
            for _ in range(draw(st.integers(0, 4))))
        months.append(MonthlyBill(month, items, sum((x.amount for x in items), Decimal(0)),
                                  draw(exact), draw(exact)))
    return Bill(cur, tuple(months), sum((m.total for m in months), Decimal(0)))


prices = st.decimals(min_value=0, max_value=100, places=4)


@st.composite
def tariffs(draw: st.DrawFn) -> Tariff:
    elements = []
    for _ in range(draw(st.integers(1, 3))):
        comps = [{"type": draw(st.sampled_from(["ENERGY", "TIME", "PARKING_TIME", "FLAT"])),
                  "price": str(draw(prices)), "step_size": draw(st.integers(1, 900)),
                  **({"vat": str(draw(st.decimals(0, 100, places=2)))}
                     if draw(st.booleans()) else {})}
                 for _ in range(draw(st.integers(1, 3)))]
        el: dict[str, object] = {"price_components": comps}
        if draw(st.booleans()):
            el["restrictions"] = {"start_time": "08:00", "end_time": "20:00",
                                  "day_of_week": draw(st.lists(st.sampled_from(
                                      ["MONDAY", "SATURDAY", "SUNDAY"]), unique=True)),
                                  "min_kwh": str(draw(prices))}
        elements.append(el)
    doc: dict[str, object] = {"id": f"t-{uid()}", "currency": draw(currencies),
                              "country_code": "DE", "party_id": "MGT",
                              "elements": elements}
    if draw(st.booleans()):
        doc["min_price"] = {"excl_vat": str(draw(prices)), "incl_vat": str(draw(prices))}
    if draw(st.booleans()):
        doc["last_updated"] = draw(instants).isoformat()
    return Tariff.model_validate(doc)


rules = st.builds(lambda k, r, c: RewardRule(rule_id=f"r-{uid()}", kind=k, rate=r, currency=c),
                  st.sampled_from(list(RuleKind)),
                  st.decimals(min_value=0, max_value=1000, places=6), currencies)


def digits_equal(a: Decimal, b: Decimal) -> bool:
    return a == b and str(a) == str(b)


# -- round trips --------------------------------------------------------------------------


@SETTINGS
@given(rec=sessions())
def test_session_round_trip(store: BillingStore, rec: SessionRecord) -> None:
    store.save_session(rec)
    got = store.session(rec.session_id)
    assert got == rec
    assert got is not None and digits_equal(got.energy_kwh, rec.energy_kwh)
    assert got.start.tzinfo is UTC and got.start == rec.start
    store.save_session(rec)  # replay: no-op
    assert rec in store.sessions(id_token=rec.id_token)
    other = replace(rec, energy_kwh=rec.energy_kwh + 1)
    with pytest.raises(BillingConflictError):
        store.save_session(other)
    assert store.session(rec.session_id) == rec


@SETTINGS
@given(result=audits())
def test_audit_round_trip(store: BillingStore, result: AuditResult) -> None:
    store.save_audit(result, at=T0)
    assert store.audit(result.session_id) == result
    store.save_audit(result, at=T0 + timedelta(hours=1))  # replay, later: no-op
    rec = store.audit_record(result.session_id)
    assert rec is not None and rec.audited_at == T0
    with pytest.raises(BillingConflictError):
        store.save_audit(replace(result, reasons=(*result.reasons, "x")), at=T0)
    assert result in store.audits(status=result.status)


@SETTINGS
@given(cdr=cdrs())
def test_cdr_round_trip(store: BillingStore, cdr: Cdr) -> None:
    store.save_cdr(cdr)
    got = store.cdr(cdr.session_id)
    assert got == cdr
    assert got is not None
    for a, b in zip(got.lines, cdr.lines, strict=True):
        assert digits_equal(a.excl_vat_exact, b.excl_vat_exact)
        assert digits_equal(a.volume, b.volume)
    store.save_cdr(cdr)
    with pytest.raises(BillingConflictError):
        store.save_cdr(replace(cdr, tariff_id=cdr.tariff_id + "x"))
    with store.db.sessions() as s:
        n = s.scalar(select(func.count()).select_from(CdrLineRow)
                     .where(CdrLineRow.session_id == cdr.session_id))
    assert n == len(cdr.lines)


@SETTINGS
@given(inv=invoices())
def test_invoice_round_trip(store: BillingStore, inv: Invoice) -> None:
    store.save_invoice(inv)
    got = store.invoice(inv.session_id)
    assert got == inv
    assert got is not None and digits_equal(got.fleet_share, inv.fleet_share)
    store.save_invoice(inv)
    if inv.lines:
        x = inv.lines[0]
        q = minor_unit(inv.currency)
        bad = replace(inv, lines=(replace(x, incl_vat=x.incl_vat + q), *inv.lines[1:]))
        with pytest.raises(BillingConflictError):
            store.save_invoice(bad)
    with store.db.sessions() as s:
        n = s.scalar(select(func.count()).select_from(InvoiceLineRow)
                     .where(InvoiceLineRow.session_id == inv.session_id))
    assert n == len(inv.lines)


@SETTINGS
@given(bill=bills())
def test_site_bill_round_trip(store: BillingStore, bill: Bill) -> None:
    run = f"run-{uid()}"
    store.save_site_bill(run, bill, tariff_id="pge-b19")
    got = store.site_bill(run)
    assert got is not None and got.bill == bill and got.tariff_id == "pge-b19"
    store.save_site_bill(run, bill, tariff_id="pge-b19")
    with pytest.raises(BillingConflictError):
        store.save_site_bill(run, bill, tariff_id="other")
    with store.db.sessions() as s:
        n = s.scalar(select(func.count()).select_from(SiteBillLineRow)
                     .where(SiteBillLineRow.run_id == run))
    assert n == sum(len(m.lines) for m in bill.months)
    assert run in store.site_bill_runs()


@SETTINGS
@given(tariff=tariffs(), other=tariffs())
def test_tariff_upsert_versions(store: BillingStore, tariff: Tariff, other: Tariff) -> None:
    r1 = store.put_tariff(tariff, at=T0)
    assert (r1.version, r1.updated_at) == (1, T0)
    assert store.tariff(tariff.id) == tariff
    assert store.put_tariff(tariff, at=T0 + timedelta(1)).version == 1  # same: no-op
    changed = other.model_copy(update={"id": tariff.id})
    if changed == tariff:
        return
    r2 = store.put_tariff(changed, at=T0 + timedelta(2))
    assert (r2.version, r2.updated_at) == (2, T0 + timedelta(2))
    assert store.tariff(tariff.id) == changed
    assert store.tariff(tariff.id, version=1) == tariff
    assert changed in store.tariffs()


@SETTINGS
@given(rule=rules, rate=st.decimals(min_value=0, max_value=10, places=3))
def test_reward_rule_upsert(store: BillingStore, rule: RewardRule, rate: Decimal) -> None:
    assert store.put_reward_rule(rule, at=T0).version == 1
    assert store.put_reward_rule(rule, at=T0).version == 1
    assert rule in store.reward_rules()
    new = rule.model_copy(update={"rate": rate})
    rec = store.put_reward_rule(new, at=T0 + timedelta(1))
    assert rec.version == (1 if new == rule else 2)
    got = store.reward_rule(rule.rule_id)
    assert got is not None and got.rule == new


# -- refusals -----------------------------------------------------------------------------


def test_refusals_leave_no_trace(store: BillingStore) -> None:
    sid = f"s-{uid()}"
    with pytest.raises(TypeError, match="Decimal"):
        SessionRecord(sid, "cs", "e", "tok", None, T0, T0, 1.5, None, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        SessionRecord(sid, "cs", "e", "tok", None, T0.replace(tzinfo=None), T0,
                      Decimal(1), None, None, None)
    with pytest.raises(ValueError, match="before start"):
        SessionRecord(sid, "cs", "e", "tok", None, T0, T0 - timedelta(1), Decimal(1),
                      None, None, None)
    with pytest.raises(ValueError, match="finite"):
        SessionRecord(sid, "cs", "e", "tok", None, T0, T0, Decimal(1), float("nan"), None,
                      None)
    inv = Invoice(sid, "EUR", Decimal(1), (InvoiceLine(Payer.FLEET, "ENERGY",
                                                       Decimal("0.0000001"), Decimal(0)),),
                  Decimal("0.0000001"), Decimal(0))
    with pytest.raises(ValueError, match="6 decimals"):
        store.save_invoice(inv)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.save_audit(AuditResult(sid, AuditStatus.VERIFIED, 0.0, 1.0, ()),
                         at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="200 characters"):
        store.save_session(SessionRecord("x" * 201, "cs", "e", "tok", None, T0, T0,
                                         Decimal(1), None, None, None))
    with pytest.raises(ValueError, match="NUL"):
        store.save_session(SessionRecord(sid, "cs\x00", "e", "tok", None, T0, T0,
                                         Decimal(1), None, None, None))
    with pytest.raises(ValueError, match="120 characters"):
        store.save_session(SessionRecord(sid, "cs", "e", "tok", None, T0, T0,
                                         Decimal("1." + "1" * 130), None, None, None))
    assert store.invoice(sid) is None and store.audit(sid) is None
    assert store.session(sid) is None and store.session("x" * 201) is None


def test_driver_filters_and_owner(store: BillingStore) -> None:
    tok = f"drv-{uid()}"
    rec = SessionRecord(f"s-{uid()}", "cs", "e1", tok, "fleet", T0, T0 + timedelta(hours=1),
                        Decimal("10.5"), 0.2, 0.4, 50.0)
    store.save_session(rec)
    cdr = Cdr(rec.session_id, "cs", "e1", tok, rec.start, rec.end, rec.energy_kwh, "t1",
              "EUR", (CostLine("ENERGY", Decimal("10.5"), Decimal("10.5"), Decimal("2.625"),
                               Decimal("3.12375"), Decimal("2.63"), Decimal("3.12")),),
              Decimal("2.63"), Decimal("3.12"), AuditStatus.VERIFIED)
    store.save_cdr(cdr)
    inv = split(cdr, FleetPaysShare(Decimal(40)))
    store.save_invoice(inv)
    assert store.sessions(id_token=tok) == [rec]
    assert store.cdrs(id_token=tok) == [cdr]
    assert store.invoices(id_token=tok) == [inv]
    assert store.invoices(id_token=f"nobody-{uid()}") == []
    assert store.owner_of(rec.session_id) == tok
    assert store.owner_of("missing") is None
    assert inv.driver_total + inv.fleet_total == Decimal("3.12")


# -- schema -------------------------------------------------------------------------------


def test_migration_matches_models(store: BillingStore) -> None:
    with store.db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={
            "compare_type": False, "version_table": "ledger_alembic_version"}),
            BillingBase.metadata)
    ours = [d for d in diffs if "billing_" in repr(d)]
    assert ours == []
    names = set(inspect(store.db.engine).get_table_names())
    assert {t.name for t in BillingBase.metadata.sorted_tables} <= names


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_from_ledger_only_database(backend: str, tmp_path: Path) -> None:
    with backend_target(backend, tmp_path / "run") as target:
        open_ledger(target).close()
        engine = make_engine(target)
        downgrade(engine, "0001_initial")
        assert "billing_sessions" not in inspect(engine).get_table_names()
        engine.dispose()
        db = open_ledger(target)
        try:
            Ledger(db).mint("e1", AccountRef.wallet("ann", "MGT"), Decimal(5), at=T0, verified=True)
            BillingStore(db).save_session(SessionRecord(
                "s1", "cs", "e", "ann", None, T0, T0, Decimal(1), None, None, None))
            with db.engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM ledger_alembic_version")
                                    ).scalar() == "0002_billing"
                assert conn.execute(select(func.count()).select_from(SessionRow)).scalar() == 1
        finally:
            db.close()


# -- crash safety -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_pass_then_rerun(backend: str, tmp_path: Path) -> None:
    code = [sys.executable, str(HERE / "billing_crash_worker.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with backend_target(backend, tmp_path / "run") as target:
        open_ledger(target).close()  # migrate once, outside the timed part
        for kill_after in (5, 17):
            p = subprocess.Popen([*code, target], stdout=subprocess.PIPE, text=True, env=env)
            assert p.stdout is not None
            for _ in range(kill_after):
                p.stdout.readline()
            time.sleep(0.005)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        p = subprocess.run([*code, target], capture_output=True, text=True, env=env,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        db = open_ledger(target)
        try:
            store = BillingStore(db)
            assert len(store.sessions(id_token=None)) == N_CRASH
            for i in range(N_CRASH):
                rec, cdr, inv = crash_records(i)
                assert store.session(rec.session_id) == rec
                assert store.cdr(rec.session_id) == cdr
                assert store.invoice(rec.session_id) == inv
            with db.sessions() as s:
                assert s.scalar(select(func.count()).select_from(InvoiceLineRow)) == sum(
                    len(crash_records(i)[2].lines) for i in range(N_CRASH))
                assert s.scalar(select(func.count()).select_from(CdrLineRow)) == N_CRASH
        finally:
            db.close()
