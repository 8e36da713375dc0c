"""Billing API over real HTTP (uvicorn in a thread, httpx), on SQLite and PostgreSQL.

Roles (a driver never sees another driver's records: 404 like a missing one; 403 on
list filters naming another driver and on operator-only endpoints), 401 with
``WWW-Authenticate: Bearer``, 422 with reasons, decimal strings, exact tariff numbers,
ledger pagination; a schemathesis run against the live app with an operator token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from test_ledger_fixtures import *  # noqa: F403  (fixtures)
from test_ledger_fixtures import T0

from controllers.billing.audit import AuditResult, AuditStatus
from controllers.billing.invoice import Cdr, FleetPaysShare, split
from controllers.billing.store import BillingStore, SessionRecord
from controllers.billing.tariffs.ocpi import CostLine, Tariff
from controllers.billing.tariffs.utility import Bill, LineItem, MonthlyBill
from controllers.billing_api import TokenConfig, TokenFileError, create_app, hash_token, load_tokens
from controllers.ledger import AccountRef, Ledger, open_ledger

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKENS = {"op-secret": ("operator", "ops"), "ann-secret": ("driver", "ann"),
          "ben-secret": ("driver", "ben")}
OP = {"Authorization": "Bearer op-secret"}
ANN = {"Authorization": "Bearer ann-secret"}
BEN = {"Authorization": "Bearer ben-secret"}
TARIFF = {"country_code": "DE", "party_id": "MGT", "id": "t-ac", "currency": "EUR",
          "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 19,
                                              "step_size": 1}]}],
          "last_updated": "2026-03-01T00:00:00Z"}


def token_config() -> TokenConfig:
    return TokenConfig.model_validate({"tokens": [
        {"sha256": hash_token(t), "role": r, "subject": s} for t, (r, s) in TOKENS.items()]})


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 (port 0: any free one) in a daemon thread."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "no server"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _cdr(session: SessionRecord, cents: str) -> Cdr:
    amount = Decimal(cents)
    gross = (amount * Decimal("1.19")).quantize(Decimal("0.01"))
    return Cdr(session.session_id, session.station_id, session.evse_id, session.id_token,
               session.start, session.end, session.energy_kwh, "t-ac", "EUR",
               (CostLine("ENERGY", session.energy_kwh, session.energy_kwh, amount,
                         amount * Decimal("1.19"), amount, gross),),
               amount, gross, AuditStatus.VERIFIED)


def seed(target: str) -> None:
    """Two drivers' sessions with audit, CDR and invoice; ledger entries; a site bill."""
    db = open_ledger(target)
    try:
        store, ledger = BillingStore(db), Ledger(db)
        for i, driver in enumerate(["ann", "ann", "ben"]):
            start = T0 + timedelta(hours=i)
            rec = SessionRecord(f"s-{driver}-{i}", "cs1", "e1", driver, "fleet-1", start,
                                start + timedelta(minutes=45), Decimal("10.125"), 0.2, 0.35,
                                60.0, run_id="run-1")
            store.save_session(rec)
            store.save_audit(AuditResult(rec.session_id, AuditStatus.VERIFIED, 0.01,
                                         10.0, ()), at=rec.end)
            cdr = _cdr(rec, "2.53")
            store.save_cdr(cdr)
            store.save_invoice(split(cdr, FleetPaysShare(Decimal(40))))
            ledger.mint(f"reward:{rec.session_id}:defer", AccountRef.wallet(driver, "MGT"),
                        Decimal("1.5"), at=rec.end, verified=True, session_id=rec.session_id,
                        rule_id="defer")
        ledger.freeze("freeze-ann", "ann", "MGT", Decimal("0.5"),
                      at=T0 + timedelta(hours=5), actor="fleet-manager")
        ledger.transfer("gift", AccountRef.wallet("ann", "MGT"),
                        AccountRef.wallet("ben", "MGT"), Decimal("0.25"),
                        at=T0 + timedelta(hours=6))
        item = LineItem(month="2026-03", kind="energy", description="TOU peak",
                        quantity=Decimal("123.456"), unit="kWh", rate=Decimal("0.31234"),
                        amount_exact=Decimal("38.56024704"), amount=Decimal("38.56"))
        store.save_site_bill("run-1", Bill("USD", (MonthlyBill(
            "2026-03", (item,), Decimal("38.56"), Decimal("123.456"), Decimal("40.1")),),
            Decimal("38.56")), tariff_id="pge-b19")
    finally:
        db.close()


@pytest.fixture(scope="module")
def base(ledger_target: str) -> Iterator[str]:
    seed(ledger_target)
    app = create_app(ledger_target, token_config(), clock=lambda: NOW)
    with LiveServer(app) as url:
        yield url


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as c:
        yield c


# -- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic b3A6c2VjcmV0"}])
def test_401_without_or_with_bad_token(http: httpx.Client, headers: dict[str, str]) -> None:
    r = http.get("/sessions", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "token" in r.json()["detail"]


# -- roles --------------------------------------------------------------------------------


def test_operator_sees_all_driver_sees_own(http: httpx.Client) -> None:
    ids = [s["session_id"] for s in http.get("/sessions", headers=OP).json()]
    assert ids == ["s-ann-0", "s-ann-1", "s-ben-2"]
    mine = http.get("/sessions", headers=ANN).json()
    assert [s["session_id"] for s in mine] == ["s-ann-0", "s-ann-1"]
    assert [i["session_id"] for i in http.get("/invoices", headers=BEN).json()] == ["s-ben-2"]
    assert len(http.get("/invoices", headers=OP, params={"id_token": "ann"}).json()) == 2


def test_driver_cannot_see_another_drivers_records(http: httpx.Client) -> None:
    for path in ("/sessions/{}", "/sessions/{}/audit", "/sessions/{}/cdr", "/invoices/{}"):
        theirs = http.get(path.format("s-ben-2"), headers=ANN)
        missing = http.get(path.format("s-nobody"), headers=ANN)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json()  # existence is not leaked
        assert http.get(path.format("s-ben-2"), headers=BEN).status_code == 200
    assert http.get("/wallets/ben", headers=ANN).status_code == 404
    r = http.get("/sessions", headers=ANN, params={"id_token": "ben"})
    assert r.status_code == 403 and "own" in r.json()["detail"]
    assert http.get("/invoices", headers=ANN, params={"id_token": "ben"}).status_code == 403
    assert http.get("/ledger/entries", headers=ANN,
                    params={"owner": "ben"}).status_code == 403


def test_driver_cannot_write_or_read_site_bills(http: httpx.Client) -> None:
    r = http.put("/tariffs/t-x", headers=ANN, json={**TARIFF, "id": "t-x"})
    assert r.status_code == 403 and r.json() == {"detail": "operator role required"}
    assert http.put("/reward-rules/r1", headers=ANN, json={
        "rule_id": "r1", "kind": "v2g_export", "rate": "2", "currency": "EUR"}
    ).status_code == 403
    assert http.get("/site-bills/run-1", headers=ANN).status_code == 403
    assert http.get("/tariffs/t-x", headers=OP).status_code == 404


# -- content, decimal strings -------------------------------------------------------------


def _no_floats_in(doc: Any, keys: set[str]) -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in keys:
                assert isinstance(v, str), (k, v)
                Decimal(v)
            _no_floats_in(v, keys)
    elif isinstance(doc, list):
        for v in doc:
            _no_floats_in(v, keys)


MONEY_KEYS = {"excl_vat", "incl_vat", "total_excl_vat", "total_incl_vat", "driver_total",
              "fleet_total", "fleet_share", "energy_kwh", "volume", "billed_volume",
              "excl_vat_exact", "incl_vat_exact", "wallet", "escrow", "amount", "total",
              "quantity", "rate", "amount_exact", "peak_kw"}


def test_invoice_and_cdr_money_are_decimal_strings(http: httpx.Client) -> None:
    inv = http.get("/invoices/s-ann-0", headers=ANN).json()
    assert inv["total_incl_vat"] == "3.01" and inv["total_excl_vat"] == "2.53"
    assert Decimal(inv["driver_total"]) + Decimal(inv["fleet_total"]) == Decimal("3.01")
    assert inv["fleet_share"] == "0.4"
    cdr = http.get("/sessions/s-ann-0/cdr", headers=ANN).json()
    assert cdr["lines"][0]["incl_vat_exact"] == "3.0107"
    assert cdr["energy_kwh"] == "10.125"
    audit = http.get("/sessions/s-ann-0/audit", headers=ANN).json()
    assert audit["status"] == "verified" and audit["variance"] == 0.01
    bill = http.get("/site-bills/run-1", headers=OP).json()
    assert bill["total"] == "38.56"
    assert bill["months"][0]["lines"][0]["amount_exact"] == "38.56024704"
    for doc in (inv, cdr, bill, http.get("/sessions", headers=OP).json()):
        _no_floats_in(doc, MONEY_KEYS)


def test_wallet_balances(http: httpx.Client) -> None:
    ann = http.get("/wallets/ann", headers=ANN).json()
    assert ann == {"driver": "ann", "balances": [
        {"code": "MGT", "wallet": "2.250000", "escrow": "0.500000"}]}
    ben = http.get("/wallets/ben", headers=OP).json()
    assert ben["balances"][0]["wallet"] == "1.750000"
    assert http.get("/wallets/nobody", headers=OP).json() == {"driver": "nobody",
                                                               "balances": []}


def test_ledger_entries_paginated_and_filtered(http: httpx.Client) -> None:
    seen: list[int] = []
    after = 0
    while True:
        page = http.get("/ledger/entries", headers=OP,
                        params={"after": after, "limit": 2}).json()
        seen += [e["txn_id"] for e in page["entries"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert len(seen) == 5 and seen == sorted(seen)
    by_session = http.get("/ledger/entries", headers=OP,
                          params={"session_id": "s-ben-2"}).json()["entries"]
    assert [e["event_id"] for e in by_session] == ["reward:s-ben-2:defer"]
    assert by_session[0]["postings"][1]["amount"] == "1.500000"
    ann = http.get("/ledger/entries", headers=ANN).json()["entries"]
    assert [e["event_id"] for e in ann] == ["reward:s-ann-0:defer", "reward:s-ann-1:defer",
                                            "freeze-ann", "gift"]
    gift = ann[-1]["postings"]
    assert {p["owner"] for p in gift} == {"ann", "(other)"}  # ben is not named to ann
    assert http.get("/ledger/entries", headers=OP,
                    params={"limit": 0}).status_code == 422


# -- writes -------------------------------------------------------------------------------


def test_put_tariff_versions_and_exact_numbers(http: httpx.Client) -> None:
    doc = {**TARIFF, "id": "t-exact"}
    body = json.dumps(doc).replace('"price": 0.25', '"price": 0.123456789012345678901')
    r = http.put("/tariffs/t-exact", headers={**OP, "Content-Type": "application/json"},
                 content=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == 1 and out["updated_at"] == "2026-03-02T09:00:00Z"
    comp = out["tariff"]["elements"][0]["price_components"][0]
    assert comp["price"] == "0.123456789012345678901"  # exact, never via float
    assert http.put("/tariffs/t-exact", headers={**OP, "Content-Type": "application/json"},
                    content=body).json()["version"] == 1
    r2 = http.put("/tariffs/t-exact", headers=OP, json=doc)
    assert r2.json()["version"] == 2
    got = http.get("/tariffs", headers=ANN).json()
    assert any(t["tariff"]["id"] == "t-exact" and t["version"] == 2 for t in got)


@pytest.mark.parametrize(("body", "loc", "why"), [
    ({**TARIFF, "id": "t-bad", "currency": "euro"}, ["body", "currency"], "ISO 4217"),
    ({**TARIFF, "id": "t-bad", "elements": []}, ["body", "elements"], "non-empty"),
    ({**TARIFF, "id": "t-other"}, ["body", "id"], "differs"),
    ({**TARIFF, "id": "t-bad", "elements": [{"price_components": [
        {"type": "ENERGY", "price": -1, "step_size": 1}]}]},
     ["body", "elements", 0, "price_components", 0, "price"], "not valid"),
    ({**TARIFF, "id": "t-bad", "last_updated": "yesterday"}, ["body", "last_updated"],
     "datetime"),
])
def test_put_tariff_422_with_reason(http: httpx.Client, body: dict[str, Any],
                                    loc: list[Any], why: str) -> None:
    r = http.put("/tariffs/t-bad", headers=OP, json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"] == loc and why in e["msg"] for e in errors), errors
    assert http.get("/tariffs/t-bad", headers=OP).status_code == 404


def test_put_tariff_not_json(http: httpx.Client) -> None:
    r = http.put("/tariffs/t-bad", headers={**OP, "Content-Type": "application/json"},
                 content=b"{nope")
    assert r.status_code == 422 and "not JSON" in r.json()["detail"][0]["msg"]


def test_put_reward_rule(http: httpx.Client) -> None:
    rule = {"rule_id": "v2g", "kind": "v2g_export", "rate": "2.5", "currency": "EUR"}
    r = http.put("/reward-rules/v2g", headers=OP, json=rule)
    assert r.status_code == 200 and r.json()["rule"]["rate"] == "2.5"
    assert http.put("/reward-rules/v2g", headers=OP, json={**rule, "rate": 3}
                    ).json()["version"] == 2
    bad = http.put("/reward-rules/v2g", headers=OP, json={**rule, "kind": "nope"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "kind"]
    assert [x["rule"]["rule_id"] for x in http.get("/reward-rules", headers=BEN).json()] \
        == ["v2g"]


# -- OpenAPI ------------------------------------------------------------------------------


def test_openapi_and_docs(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "Bearer token (see the tokens file)"}
    assert {"HTTPBearer": []} in spec["paths"]["/sessions"]["get"]["security"]
    money = spec["components"]["schemas"]["InvoiceOut"]["properties"]["total_incl_vat"]
    assert money["type"] == "string"
    assert "text/html" in http.get("/docs").headers["content-type"]


# -- tokens file --------------------------------------------------------------------------


def test_tokens_file(tmp_path: Path) -> None:
    good = tmp_path / "tokens.yaml"
    good.write_text(yaml.safe_dump({"tokens": [
        {"sha256": hash_token("s3cret"), "role": "driver", "subject": "ann"}]}))
    cfg = load_tokens(good)
    who = cfg.lookup("s3cret")
    assert who is not None and (who.role, who.subject) == ("driver", "ann")
    assert cfg.lookup("other") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tokens": [{"token": "s3cret", "role": "driver",
                                               "subject": "ann"}]}))
    with pytest.raises(TokenFileError, match=r"tokens\.0\.token: Extra inputs"):
        load_tokens(bad)
    bad.write_text(yaml.safe_dump({"tokens": [{"sha256": "abc", "role": "root",
                                               "subject": "x"}]}))
    with pytest.raises(TokenFileError, match=r"tokens\.0\.sha256.*tokens\.0\.role"):
        load_tokens(bad)


# -- schemathesis -------------------------------------------------------------------------

CHECKS = ",".join(["not_a_server_error", "status_code_conformance",
                   "content_type_conformance", "response_schema_conformance",
                   "negative_data_rejection"])
PARAMETERS = """[parameters]
"path.session_id" = "s-ann-0"
"path.driver" = "ann"
"path.run_id" = "run-1"
"path.tariff_id" = "t-ac"
"""


def test_schemathesis_operator(tmp_path: Path) -> None:
    """No 5xx, documented statuses and content types, responses match their schemas,
    schema-violating requests rejected. (The ``coverage`` phase is left out: it crashes
    inside hypothesis' lambda reflection on this CPython, a runtime error of the tool.)"""
    run = tmp_path / "run"
    run.mkdir()
    seed(str(run))
    db = open_ledger(run)
    BillingStore(db).put_tariff(Tariff.model_validate(TARIFF), at=T0)
    db.close()
    app = create_app(run, token_config(), clock=lambda: NOW)
    config = tmp_path / "schemathesis.toml"
    config.write_text(PARAMETERS, encoding="utf-8")
    exe = Path(sys.executable).with_name("schemathesis")
    with LiveServer(app) as url:
        proc = subprocess.run(
            [str(exe), "--config-file", str(config), "run", f"{url}/openapi.json",
             "--checks", CHECKS, "--phases", "examples,fuzzing",
             "--max-examples", "20", "--seed", "1", "--workers", "2",
             "--request-timeout", "5", "--header", "Authorization: Bearer op-secret",
             "--no-color", "--suppress-health-check", "all", "--max-failures", "20"],
            capture_output=True, text=True, timeout=150, cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]


# -- CLI ----------------------------------------------------------------------------------


def test_cli_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from twin.cli_billing import billing_api_command

    cli = typer.Typer()
    cli.command()(billing_api_command)
    served: list[tuple[FastAPI, str, int]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **_: served.append(
        (app, host, port)))
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"sha256": hash_token("op-secret"), "role": "operator", "subject": "ops"}]}))
    r = CliRunner().invoke(cli, ["--db", str(tmp_path), "--tokens", str(tokens),
                                 "--port", "8123"])
    assert r.exit_code == 0, r.output
    assert [(h, p) for _, h, p in served] == [("127.0.0.1", 8123)]
    assert (tmp_path / "ledger.sqlite").exists()
    tokens.write_text("tokens: [{token: plain}]")
    r = CliRunner().invoke(cli, ["--db", str(tmp_path), "--tokens", str(tokens)])
    assert r.exit_code == 2
