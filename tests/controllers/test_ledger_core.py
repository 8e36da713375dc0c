"""The double-entry ledger on SQLite and PostgreSQL: postings, rules, idempotency, locking."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from test_ledger_fixtures import *  # noqa: F403  (fixtures)
from test_ledger_fixtures import T0

from controllers.ledger import (
    AccountKind,
    AccountRef,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidPostingError,
    Ledger,
    Posting,
    TxnKind,
    UnverifiedSessionError,
    Verification,
    open_ledger,
)
from controllers.ledger.db import resolve_url


def _funded(ledger: Ledger, code: str, owner: str, amount: str) -> AccountRef:
    w = AccountRef.wallet(owner, code)
    ledger.mint(f"{code}:fund:{owner}", w, Decimal(amount), at=T0, verified=True)
    return w


def test_open_creates_schema_and_reopens(ledger_target: str) -> None:
    db = open_ledger(ledger_target)
    try:
        names = set(inspect(db.engine).get_table_names())
        assert {
            "ledger_accounts",
            "ledger_transactions",
            "ledger_postings",
            "ledger_rejections",
            "ledger_alembic_version",
        } <= names
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM ledger_alembic_version")).all() == [
                ("0002_billing",)
            ]
            if db.dialect == "sqlite":
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.close()


def test_run_folder_default_is_ledger_sqlite(tmp_path) -> None:
    assert resolve_url(tmp_path) == f"sqlite:///{(tmp_path / 'ledger.sqlite').resolve()}"
    assert resolve_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    open_ledger(tmp_path).close()
    assert (tmp_path / "ledger.sqlite").exists()


def test_amounts_are_exact_decimals(ledger: Ledger, code: str) -> None:
    w = AccountRef.wallet("alice", code)
    for i, a in enumerate(["0.1", "0.2", "0.000001"]):
        ledger.mint(f"{code}:m{i}", w, Decimal(a), at=T0, verified=True)
    bal = ledger.balance(w)
    assert isinstance(bal, Decimal) and bal == Decimal("0.300001")
    assert ledger.balance(AccountRef.mint_source(code)) == Decimal("-0.300001")
    with pytest.raises(InvalidPostingError):
        ledger.mint(f"{code}:f", w, 0.5, at=T0, verified=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidPostingError):
        ledger.mint(f"{code}:p", w, Decimal("0.0000001"), at=T0, verified=True)
    with pytest.raises(InvalidPostingError):
        ledger.mint(f"{code}:z", w, Decimal(0), at=T0, verified=True)
    assert ledger.verify() == []


def test_overdraw_refused_without_trace_and_remembered(ledger: Ledger, code: str) -> None:
    w = _funded(ledger, code, "bob", "10")
    t = AccountRef.treasury(code)
    before = ledger.balances(code)
    n_entries = len(ledger.entries(code=code))
    with pytest.raises(InsufficientFundsError):
        ledger.transfer(f"{code}:pay", w, t, Decimal("10.000001"), at=T0)
    assert ledger.balances(code) == before
    assert len(ledger.entries(code=code)) == n_entries
    assert ledger.entry(f"{code}:pay") is None
    assert ledger.rejected(f"{code}:pay") is not None
    # a replay of the refused event is refused again, even though funds now suffice
    ledger.mint(f"{code}:more", w, Decimal(5), at=T0, verified=True)
    with pytest.raises(InsufficientFundsError):
        ledger.transfer(f"{code}:pay", w, t, Decimal("10.000001"), at=T0)
    # without remembering, a later retry of the same id can succeed
    with pytest.raises(InsufficientFundsError):
        ledger.post(
            f"{code}:try",
            TxnKind.TRANSFER,
            [Posting(w, Decimal(-100)), Posting(t, Decimal(100))],
            at=T0,
            remember_rejection=False,
        )
    assert ledger.rejected(f"{code}:try") is None
    assert ledger.balance(w) == Decimal(15)


def test_idempotent_on_event_id(ledger: Ledger, code: str) -> None:
    w = AccountRef.wallet("carol", code)
    first = ledger.mint(
        f"{code}:e", w, Decimal(3), at=T0, verified=True, session_id="s", rule_id="r"
    )
    again = ledger.mint(
        f"{code}:e", w, Decimal(3), at=T0, verified=True, session_id="s", rule_id="r"
    )
    assert not first.replayed and again.replayed
    assert again.txn_id == first.txn_id and again.postings == first.postings
    assert ledger.balance(w) == Decimal(3)
    with pytest.raises(IdempotencyConflictError):
        ledger.mint(f"{code}:e", w, Decimal(4), at=T0, verified=True)
    assert ledger.balance(w) == Decimal(3)


def test_mint_only_for_verified_sessions(ledger: Ledger, code: str) -> None:
    w = AccountRef.wallet("dan", code)
    for v in (Verification.PENDING, Verification.FAILED, False):
        with pytest.raises(UnverifiedSessionError):
            ledger.mint(f"{code}:u", w, Decimal(1), at=T0, verified=v, session_id="s1")
    assert ledger.balance(w) == 0
    ledger.mint(f"{code}:u", w, Decimal(1), at=T0, verified=Verification.VERIFIED, session_id="s1")
    assert ledger.balance(w) == 1


@pytest.mark.parametrize(
    ("kind", "src", "dst"),
    [
        (TxnKind.MINT, AccountKind.WALLET, AccountKind.TREASURY),
        (TxnKind.MINT, AccountKind.MINT_SOURCE, AccountKind.MINT_SOURCE),
        (TxnKind.TRANSFER, AccountKind.MINT_SOURCE, AccountKind.WALLET),
        (TxnKind.TRANSFER, AccountKind.WALLET, AccountKind.ESCROW),
        (TxnKind.FREEZE, AccountKind.TREASURY, AccountKind.ESCROW),
        (TxnKind.RELEASE, AccountKind.WALLET, AccountKind.WALLET),
        (TxnKind.BURN, AccountKind.WALLET, AccountKind.TREASURY),
    ],
)
def test_kind_rules(ledger: Ledger, code: str, kind: TxnKind, src, dst) -> None:
    a, b = AccountRef(src, "x", code), AccountRef(dst, "y", code)
    with pytest.raises(InvalidPostingError):
        ledger.post(f"{code}:k", kind, [Posting(a, Decimal(-1)), Posting(b, Decimal(1))], at=T0)


def test_malformed_postings(ledger: Ledger, code: str) -> None:
    w, t = AccountRef.wallet("x", code), AccountRef.treasury(code)
    with pytest.raises(InvalidPostingError, match="sum to zero"):
        ledger.post(
            f"{code}:1", TxnKind.TRANSFER, [Posting(w, Decimal(-1)), Posting(t, Decimal(2))], at=T0
        )
    with pytest.raises(InvalidPostingError, match="one token"):
        ledger.post(
            f"{code}:2",
            TxnKind.TRANSFER,
            [Posting(w, Decimal(-1)), Posting(AccountRef.treasury("OTHER"), Decimal(1))],
            at=T0,
        )
    with pytest.raises(InvalidPostingError, match="aware"):
        ledger.transfer(f"{code}:3", w, t, Decimal(1), at=datetime(2026, 1, 1))


def test_freeze_release_clawback(ledger: Ledger, code: str) -> None:
    w = _funded(ledger, code, "erin", "100")
    e = AccountRef.escrow("erin", code)
    ledger.freeze(f"{code}:f1", "erin", code, Decimal(60), at=T0, actor="fleet-mgr")
    assert (ledger.balance(w), ledger.balance(e)) == (Decimal(40), Decimal(60))
    with pytest.raises(InsufficientFundsError):
        ledger.freeze(f"{code}:f2", "erin", code, Decimal(41), at=T0, actor="fleet-mgr")
    ledger.release(f"{code}:r1", "erin", code, Decimal(25), at=T0, actor="fleet-mgr")
    ledger.clawback(f"{code}:c1", "erin", code, Decimal(30), at=T0, actor="fleet-mgr")
    ledger.clawback(f"{code}:c2", "erin", code, Decimal(5), at=T0, actor="fleet-mgr", burn=True)
    with pytest.raises(InsufficientFundsError):
        ledger.release(f"{code}:r2", "erin", code, Decimal("0.000001"), at=T0, actor="fleet-mgr")
    assert ledger.balance(w) == Decimal(65)
    assert ledger.balance(e) == 0
    assert ledger.balance(AccountRef.treasury(code)) == Decimal(30)
    assert ledger.balance(AccountRef.mint_source(code)) == Decimal(-95)
    assert [x.actor for x in ledger.entries(code=code)][1:] == ["fleet-mgr"] * 4
    assert ledger.verify() == []


def test_entries_traceable_and_utc(ledger: Ledger, code: str) -> None:
    w = AccountRef.wallet("fay", code)
    at = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    ledger.mint(f"{code}:a", w, Decimal(2), at=at, verified=True, session_id="S1", rule_id="v2g")
    ledger.mint(f"{code}:b", w, Decimal(1), at=T0, verified=True, session_id="S2", rule_id="dr")
    (e,) = ledger.entries(session_id="S1", code=code)
    assert (e.session_id, e.rule_id, e.event_id) == ("S1", "v2g", f"{code}:a")
    assert e.created_at == T0 and e.created_at.utcoffset() == timedelta(0)
    assert [x.event_id for x in ledger.entries(rule_id="dr", code=code)] == [f"{code}:b"]


def test_database_refuses_negative_balance_directly(ledger: Ledger, code: str) -> None:
    w = _funded(ledger, code, "gus", "1")
    with pytest.raises(IntegrityError), ledger.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_accounts SET balance = -1 WHERE owner = 'gus' AND code = :c"),
            {"c": code},
        )
    assert ledger.balance(w) == 1


def test_concurrent_debits_never_overdraw(ledger: Ledger, code: str) -> None:
    w = _funded(ledger, code, "hal", "100")
    t = AccountRef.treasury(code)
    ok = [0, 0]
    lock = threading.Lock()

    def spend(worker: int) -> None:
        for i in range(40):
            try:
                ledger.transfer(f"{code}:w{worker}:{i}", w, t, Decimal(3), at=T0)
            except InsufficientFundsError:
                continue
            with lock:
                ok[worker] += 1

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(spend, [0, 1]))
    assert sum(ok) == 33
    assert ledger.balance(w) == Decimal(1) and ledger.balance(t) == Decimal(99)
    assert ledger.verify() == []


def test_concurrent_same_event_posted_once(ledger: Ledger, code: str) -> None:
    w = _funded(ledger, code, "ivy", "10")
    t = AccountRef.treasury(code)
    start = threading.Barrier(4)

    def pay(_: int) -> bool:
        start.wait()
        return ledger.transfer(f"{code}:same", w, t, Decimal(4), at=T0).replayed

    with ThreadPoolExecutor(4) as pool:
        replayed = list(pool.map(pay, range(4)))
    assert sorted(replayed) == [False, True, True, True]
    assert ledger.balance(w) == Decimal(6)


def test_throughput(ledger: Ledger, code: str, record_property) -> None:
    w = AccountRef.wallet("perf", code)
    n = 200
    t0 = time.perf_counter()
    for i in range(n):
        ledger.mint(f"{code}:perf{i}", w, Decimal(1), at=T0, verified=True)
    dt = time.perf_counter() - t0
    rate = n / dt
    record_property("postings_per_s", round(rate))
    print(f"\n{ledger.db.dialect}: {rate:.0f} transactions/s ({2 * rate:.0f} postings/s)")
    assert ledger.balance(w) == n
