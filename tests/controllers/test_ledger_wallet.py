"""Wallet export: the adapter interface and the JSON-lines reference implementation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from test_ledger_fixtures import *  # noqa: F403  (fixtures)
from test_ledger_fixtures import T0

from controllers.ledger import AccountRef, Ledger
from controllers.ledger.wallet import JsonLinesWalletAdapter, WalletAdapter


def test_jsonl_export_idempotent_and_exact(ledger: Ledger, code: str, tmp_path: Path) -> None:
    w = AccountRef.wallet("zoe", code)
    ledger.mint(
        f"{code}:1", w, Decimal("1.000001"), at=T0, verified=True, session_id="S", rule_id="v2g"
    )
    ledger.transfer(f"{code}:2", w, AccountRef.treasury(code), Decimal("0.5"), at=T0)
    adapter = JsonLinesWalletAdapter(tmp_path / "wallet" / "export.jsonl")
    assert isinstance(adapter, WalletAdapter)
    r1 = adapter.export(ledger.entries(code=code))
    assert r1.exported == (f"{code}:1", f"{code}:2") and r1.skipped == ()
    r2 = adapter.export(ledger.entries(code=code))
    assert r2.exported == () and len(r2.skipped) == 2
    rows = [json.loads(x) for x in adapter.path.read_text().splitlines()]
    assert len(rows) == 2
    assert rows[0]["session_id"] == "S" and rows[0]["rule_id"] == "v2g"
    assert {p["amount"] for p in rows[0]["postings"]} == {"1.000001", "-1.000001"}
    assert rows[0]["created_at"] == "2026-03-01T12:00:00+00:00"


def test_jsonl_export_survives_torn_line(ledger: Ledger, code: str, tmp_path: Path) -> None:
    w = AccountRef.wallet("yan", code)
    ledger.mint(f"{code}:1", w, Decimal(1), at=T0, verified=True)
    path = tmp_path / "export.jsonl"
    path.write_text('{"event_id": "torn')  # a crash mid-write
    adapter = JsonLinesWalletAdapter(path)
    assert adapter.export(ledger.entries(code=code)).exported == (f"{code}:1",)
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["event_id"] == f"{code}:1"
    assert adapter.export(ledger.entries(code=code)).exported == ()
