"""Billing wired into runs (issue 8, items 2, 4, 5, 8): the Caltech week billed end to end.

The flagship scenario runs once per module (about 2-4 min on 2 shared cores, billing
included) with its ``billing:`` section: six sessions falsify their telemetry on the
emulated stations' OCPP path plus a seeded 2 % with an under-reading meter. The tests
check the audit, the invoices, the rewards, the site bill, idempotency and crash safety
(SIGKILL of ``migrid bill``) against that one run folder.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.billing.audit import AuditStatus, audit
from controllers.billing.invoice import Cdr, FleetPaysShare, FleetPaysUpToKwh, Payer, split
from controllers.billing.store import BillingStore
from controllers.billing.tariffs.utility import bill
from controllers.ledger import Ledger, open_ledger
from controllers.ledger.rewards import reward_event_id
from devices.charging_station import TelemetryTamper
from twin.billing_run import (
    SessionData,
    bill_run,
    blocks,
    charging_session,
    load_billing,
    read_sessions,
    reason_key,
    site_import_series,
    telemetry,
)
from twin.scenario import ScenarioError, load_scenario, parse_scenario
from twin.scenario_billing import tamper_plan
from twin.session_run import run_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
WEEK = SCENARIOS / "caltech_week.yaml"
MIGRID = Path(sys.executable).with_name("migrid")


# --------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory, data_sets: dict[str, Path]) -> Path:
    """The Caltech week run (billed by ``run_scenario``), its folder."""
    out = tmp_path_factory.mktemp("week") / "caltech_week-billing"
    t0 = time.perf_counter()
    asyncio.run(run_scenario(WEEK, out=out))
    print(f"caltech_week run + billing: {time.perf_counter() - t0:.1f} s")
    return out


def _summary(run: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((run / "billing.json").read_text())
    return doc


def _dishonest(run: Path) -> dict[str, dict[str, Any]]:
    """The twin's ground truth: session id -> injection (never read by billing)."""
    ev = pd.read_parquet(run / "events.parquet", filters=[("kind", "==", "session.dishonest")])
    return {p["session_id"]: p for p in map(json.loads, ev["payload"])}


def snapshot(db_file: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every billing and ledger table, sorted (order of insertion aside)."""
    con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND "
            "(name LIKE 'billing_%' OR name LIKE 'ledger_%') AND name NOT LIKE '%alembic%'")]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in sorted(tables)}
    finally:
        con.close()


def balances(run: Path) -> dict[str, Decimal]:
    db = open_ledger(run)
    try:
        return {f"{a.kind}:{a.owner}:{a.code}": v for a, v in Ledger(db).balances().items()}
    finally:
        db.close()


# --------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_every_session_is_audited_and_billed(week: Path) -> None:
    s = _summary(week)
    kpis = json.loads((week / "kpis.json").read_text())["kpis"]
    assert s["sessions"] == kpis["sessions_completed"]["value"] == 207
    assert s["sessions_open_at_end"] == 0
    db = open_ledger(week)
    try:
        store = BillingStore(db)
        audits = store.audits()
        assert len(audits) == s["sessions"]
        assert len(store.cdrs()) == len(store.invoices()) == s["sessions"]
        assert store.site_bill(week.name) is not None
    finally:
        db.close()
    # billing KPIs: counts, money as strings with the currency
    assert kpis["billing_sessions"] == {"value": 207, "unit": "1"}
    assert kpis["billing_revenue"]["unit"] == "USD"
    assert Decimal(kpis["billing_revenue"]["value"]) == Decimal(s["totals"]["cdr_incl_vat"])
    assert kpis["site_bill_total"]["value"] == s["site_bill"]["total"]
    assert kpis["billing_tokens_minted"]["unit"] == "MGT"


@pytest.mark.slow
def test_honest_sessions_verify(week: Path) -> None:
    s = _summary(week)
    bad = _dishonest(week)
    honest = [p for p in s["per_session"] if p["session_id"] not in bad]
    assert len(honest) == s["sessions"] - len(bad)
    not_verified = [(p["session_id"], p["status"], p["reasons"]) for p in honest
                    if p["status"] != "verified"]
    assert not not_verified
    variances = sorted(p["variance"] for p in honest)
    dist = s["audit"]["variance_verified"]
    print("honest variance: n={n} min={min:.2e} p50={p50:.2e} p95={p95:.2e} "
          "max={max:.2e}".format(**dist))
    assert variances[-1] < 0.15
    assert dist["p95"] < 0.05


@pytest.mark.slow
def test_dishonest_sessions_are_flagged_and_earn_nothing(week: Path) -> None:
    s = _summary(week)
    bad = _dishonest(week)
    assert {tuple(p["kinds"]) for p in bad.values()} == {
        ("meter_drift",), ("soc_spoof",), ("register_rollback",)}
    assert len(bad) >= 8
    per = {p["session_id"]: p for p in s["per_session"]}
    expected = {"meter_drift": "variance at or above threshold",
                "soc_spoof": "variance at or above threshold",
                "register_rollback": "energy register went backwards"}
    db = open_ledger(week)
    try:
        ledger = Ledger(db)
        for sid, inj in bad.items():
            p = per[sid]
            assert p["status"] == "flagged", (sid, inj, p)
            assert expected[inj["kinds"][0]] in {reason_key(r) for r in p["reasons"]}, p
            assert p["tokens"] == "0"
            assert ledger.entry(reward_event_id(sid, "offpeak")) is None
    finally:
        db.close()
    assert s["audit"]["flagged"] == len(bad)
    assert s["audit"]["flagged_reasons"]["energy register went backwards"] == sum(
        1 for p in bad.values() if p["kinds"] == ["register_rollback"])


@pytest.mark.slow
def test_invoices_reconcile_with_cdrs_to_the_cent(week: Path) -> None:
    s = _summary(week)
    db = open_ledger(week)
    try:
        store = BillingStore(db)
        cdrs = {c.session_id: c for c in store.cdrs()}
        invoices = {i.session_id: i for i in store.invoices()}
    finally:
        db.close()
    assert set(cdrs) == set(invoices)
    cent = Decimal("0.01")
    for sid, cdr in cdrs.items():
        inv = invoices[sid]
        assert cdr.total_incl_vat == cdr.total_incl_vat.quantize(cent)
        assert inv.total_incl_vat == cdr.total_incl_vat
        assert inv.driver_total + inv.fleet_total == cdr.total_incl_vat
        assert sum((x.incl_vat for x in inv.lines), Decimal(0)) == cdr.total_incl_vat
        assert sum((x.incl_vat for x in cdr.lines), Decimal(0)) == cdr.total_incl_vat
        if cdr.at_home:
            assert inv.driver_total == 0  # the fleet pays home energy (then reimburses)
    t = s["totals"]
    total = sum((c.total_incl_vat for c in cdrs.values()), Decimal(0))
    assert Decimal(t["cdr_incl_vat"]) == total
    assert Decimal(t["driver"]) + Decimal(t["fleet"]) == total
    assert Decimal(t["driver"]) == sum((i.total(Payer.DRIVER) for i in invoices.values()),
                                       Decimal(0))
    home = [p for p in s["per_session"] if p["at_home"]]
    assert home, "no session at a home station"
    assert Decimal(t["home_reimbursed_to_drivers"]) == sum(
        (Decimal(p["reimbursed"]) for p in home), Decimal(0))


@pytest.mark.slow
def test_site_bill_is_the_utility_tariff_on_the_import_trace(week: Path) -> None:
    config = load_billing(week)
    utility = config.utility("America/Los_Angeles")
    traces = pd.read_parquet(week / "traces.parquet", filters=[
        ("entity", "==", "site"), ("quantity", "==", "import_kw")])
    series = traces.set_index("time")["value"].sort_index()
    series.index = pd.DatetimeIndex(series.index) - pd.Timedelta(seconds=60)  # step end
    expected = bill(utility, series, kind="kw")
    db = open_ledger(week)
    try:
        stored = BillingStore(db).site_bill(week.name)
    finally:
        db.close()
    assert stored is not None
    assert stored.bill.total == expected.total
    assert [x.amount for m in stored.bill.months for x in m.lines] == [
        x.amount for m in expected.months for x in m.lines]
    # independent check of the energy: the integral of the import trace
    kwh = Decimal(str(float((series * 60 / 3600).sum()))).quantize(Decimal("0.001"))
    assert stored.bill.months[0].energy_kwh.quantize(Decimal("0.001")) == kwh
    assert site_import_series(week).equals(series)


@pytest.mark.slow
def test_billing_twice_changes_nothing(week: Path) -> None:
    before_db = snapshot(week / "ledger.sqlite")
    before_bal = balances(week)
    before_json = (week / "billing.json").read_bytes()
    before_kpis = (week / "kpis.json").read_bytes()
    t0 = time.perf_counter()
    rb = bill_run(week)
    print(f"billing alone (second pass): {time.perf_counter() - t0:.1f} s")
    assert snapshot(week / "ledger.sqlite") == before_db
    assert balances(week) == before_bal
    assert (week / "billing.json").read_bytes() == before_json
    assert (week / "kpis.json").read_bytes() == before_kpis
    assert {a.status for b in rb.sessions for a in b.awards} <= {
        "replayed", "skipped_unverified", "skipped_zero"}
    counts = {t: len(rows) for t, rows in before_db.items()}
    assert counts["billing_sessions"] == counts["billing_audits"] == 207
    db = open_ledger(week)
    try:
        assert Ledger(db).verify() == []
    finally:
        db.close()


@pytest.mark.slow
def test_sigkill_mid_bill_then_rerun_loses_and_doubles_nothing(
        week: Path, tmp_path: Path) -> None:
    copy = tmp_path / week.name  # same folder name: same run id
    copy.mkdir()
    for name in ("scenario.yaml", "events.parquet", "traces.parquet", "kpis.json"):
        shutil.copy2(week / name, copy / name)
    db_file = copy / "ledger.sqlite"
    proc = subprocess.Popen([str(MIGRID), "bill", str(copy)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    killed_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if db_file.exists():
            try:
                con = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1)
                n = con.execute("SELECT count(*) FROM billing_invoices").fetchone()[0]
                con.close()
            except sqlite3.Error:
                n = 0
            if n >= 60:
                proc.send_signal(signal.SIGKILL)
                killed_at = n
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "not killed mid-way"
    partial = snapshot(db_file)
    assert 60 <= len(partial["billing_invoices"]) < 207
    assert not (copy / "billing.json").exists()
    done = subprocess.run([str(MIGRID), "bill", str(copy)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(db_file) == snapshot(week / "ledger.sqlite")
    assert balances(copy) == balances(week)
    assert _summary(copy) == _summary(week)


# --------------------------------------------------------------------- fast checks


def _session(registers: list[int], soc: tuple[float, float] | None = (0.2, 0.5),
             cap: float | None = 60.0) -> SessionData:
    t0 = datetime(2019, 9, 9, 15, 7, 13, tzinfo=UTC)
    pts = tuple((t0 + timedelta(seconds=60 * i + (0 if i == 0 else 17)), w)
                for i, w in enumerate(registers))
    return SessionData("S1", "CA001", 1, "CA001-1", "TOK", t0, pts[-1][0], registers[0],
                       registers[-1], soc[0] if soc else None, soc[1] if soc else None, cap,
                       pts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=90), st.integers(0, 10**6),
       st.decimals(0, 100, places=2), st.decimals(0, 80, places=3))
def test_cdr_energy_and_split_invariants(steps: list[int], start: int, percent: Decimal,
                                         kwh: Decimal) -> None:
    regs = [start]
    for d in steps:
        regs.append(regs[-1] + d)
    s = _session(regs)
    assert sum(wh for _, _, wh in blocks(s)) == regs[-1] - regs[0]
    t = telemetry(s, 0.92)
    assert not [r for r in audit(t).reasons if "register" in r]
    config = load_billing(Path("."), SCENARIOS / "caltech_week.yaml")
    cdr = Cdr.build(session_id="S1", station_id="CA001", evse_id="1", id_token="TOK",
                    session=charging_session(s, "America/Los_Angeles"),
                    tariff=config.tariff(), audit_status=AuditStatus.VERIFIED)
    assert cdr.energy_kwh == s.energy_kwh
    for rule in (FleetPaysShare(percent), FleetPaysUpToKwh(kwh)):
        inv = split(cdr, rule)
        assert inv.driver_total + inv.fleet_total == cdr.total_incl_vat
        assert inv.total(Payer.DRIVER, incl_vat=False) + inv.total(
            Payer.FLEET, incl_vat=False) == cdr.total_excl_vat


def test_rollback_between_samples_is_flagged() -> None:
    s = _session([1000, 3000, 5000, 2000, 4000])
    r = audit(telemetry(s, 0.92))
    assert r.status is AuditStatus.FLAGGED
    assert "energy register went backwards" in r.reasons
    assert sum(wh for _, _, wh in blocks(s)) == 6000  # negative steps bill nothing


def test_tamper_plan_is_seeded_and_counts_the_fraction() -> None:
    config = load_scenario(WEEK).billing
    ids = [f"s{i:03d}" for i in range(200)]
    a, b = tamper_plan(config, ids), tamper_plan(config, ids)
    assert a.keys() == b.keys()
    drawn = [sid for sid, (d, _) in a.items() if d.fraction is not None]
    assert len(drawn) == 4  # 2 % of 200
    assert all(t.meter_drift == 0.75 for sid, (_, t) in a.items() if sid in drawn)
    assert tamper_plan(None, ids) == {}


def test_tamper_soc_spoof_exaggerates_the_rise_within_0_1() -> None:
    t = TelemetryTamper(soc_spoof=1.6)
    assert t.reported_soc(0.5, 0.2) == pytest.approx(0.68)
    assert t.reported_soc(0.9, 0.2) == 1.0
    with pytest.raises(ValueError):
        TelemetryTamper(meter_drift=0)


def test_bad_billing_section_is_rejected_with_its_path() -> None:
    doc = yaml.safe_load(WEEK.read_text())
    doc["billing"]["ocpi_tariff"] = str(SCENARIOS / "tariffs" / "caltech_ocpi_usd.json")
    doc["billing"]["utility_tariff"] = str(
        SCENARIOS / "tariffs" / "ca_commercial_tou_illustrative.yaml")
    doc["billing"]["split"] = {"fleet_pays_up_to_kwh": 10, "fleet_pays_percent": 5}
    with pytest.raises(ScenarioError, match=r"billing\.split: .*exactly one"):
        parse_scenario(doc)
    doc["billing"]["split"] = {"fleet_pays_percent": 150}
    with pytest.raises(ScenarioError, match=r"billing\.split\.fleet_pays_percent"):
        parse_scenario(doc)
    doc["billing"]["split"] = {"fleet_pays_percent": 50}
    doc["billing"]["home_stations"] = ["NOPE"]
    with pytest.raises(ScenarioError, match=r"billing: .*unknown stations: NOPE"):
        parse_scenario(doc)
    doc["billing"]["home_stations"] = []
    doc["billing"]["dishonest"] = [{"session": "x", "fraction": 0.1, "meter_drift": 2}]
    with pytest.raises(ScenarioError, match=r"billing\.dishonest\.0: .*either session"):
        parse_scenario(doc)
    doc["billing"]["dishonest"] = []
    doc["billing"]["ocpi_tariff"] = {"id": "T", "currency": "USD", "elements": []}
    with pytest.raises(ScenarioError, match=r"billing\.ocpi_tariff"):
        parse_scenario(doc)
    doc["billing"]["ocpi_tariff"] = "no/such/file.json"
    with pytest.raises(ScenarioError, match=r"billing\.ocpi_tariff: .*cannot read"):
        parse_scenario(doc, base_dir=SCENARIOS)


def test_read_sessions_needs_a_run_folder(tmp_path: Path) -> None:
    from twin.billing_run import BillingRunError

    with pytest.raises(BillingRunError, match=r"no events\.parquet"):
        read_sessions(tmp_path)
    with pytest.raises(BillingRunError, match="no billing section"):
        load_billing(tmp_path)


def _bench_folder(root: Path) -> Path:
    """A bench-like run folder: CSMS events only, registers in ``energy_kwh`` traces."""
    from twin.recorder import EventWriter, TraceWriter

    run = root / "bench-run"
    run.mkdir()
    (run / "scenario.yaml").write_text(yaml.safe_dump(
        {"name": "bench", "kind": "bench", "site": {"timezone": "America/Los_Angeles"}}))
    t0 = datetime(2019, 9, 10, 17, 0, tzinfo=UTC)
    ev, tr = EventWriter(run / "events.parquet"), TraceWriter(run / "traces.parquet")
    # T1 honest: 20 kWh, SoC 0.4 -> 0.4 + 20 * 0.92 / 60; T2 meter reads 30 % high
    for tx, token, evse, kwh, factor in (("T1", "CARD1", 1, 20.0, 1.0),
                                         ("T2", "CARD2", 2, 20.0, 1.3)):
        ev.sink(t0, "csms", "transaction.started", {
            "station": "BENCH-AC-01", "evse": evse, "transaction": tx, "id_token": token,
            "meter_start_wh": 1000.0, "soc": 0.4})
        end = t0 + timedelta(hours=2)
        ev.sink(end, "csms", "transaction.ended", {
            "station": "BENCH-AC-01", "evse": evse, "transaction": tx, "id_token": token,
            "meter_start_wh": 1000.0, "meter_stop_wh": 1000.0 + kwh * factor * 1000,
            "soc_start": 0.4, "soc_end": 0.4 + kwh * 0.92 / 60, "energy_wh": kwh * factor})
        for m in range(1, 120):
            tr.add(t0 + timedelta(minutes=m), f"BENCH-AC-01/{evse}", "energy_kwh",
                   1.0 + kwh * factor * m / 120, "kWh")
    ev.sink(t0, "csms", "transaction.started", {
        "station": "BENCH-AC-01", "evse": 3, "transaction": "T3", "id_token": "CARD3",
        "meter_start_wh": 0.0, "soc": None})
    for m in range(1, 181):
        tr.add(t0 + timedelta(minutes=m), "site", "import_kw", 25.0, "kW")
    ev.commit_step()
    ev.close()
    tr.close()
    return run


def test_a_bench_run_folder_is_billed_from_the_csms_view(tmp_path: Path) -> None:
    run = _bench_folder(tmp_path)
    week = load_scenario(WEEK).billing
    assert week is not None
    doc = week.model_dump(mode="json")
    doc.update(home_stations=[], dishonest=[],
               vehicle_capacity_kwh={"CARD1": 60.0, "CARD2": 60.0})
    file = tmp_path / "billing.yaml"
    file.write_text(yaml.safe_dump({"billing": doc}))
    done = subprocess.run([str(MIGRID), "bill", str(run), "--scenario-billing", str(file)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    s = _summary(run)
    assert (s["sessions"], s["sessions_open_at_end"]) == (2, 1)
    per = {p["session_id"]: p for p in s["per_session"]}
    assert per["BENCH-AC-01/1/T1"]["status"] == "verified"
    assert per["BENCH-AC-01/1/T1"]["variance"] < 1e-3
    assert per["BENCH-AC-01/2/T2"]["status"] == "flagged"
    assert per["BENCH-AC-01/1/T1"]["energy_kwh"] == "20.000"
    # 20 kWh at 0.28 (10:00-12:00 Pacific) + 0.50 per session; fleet pays up to 15 kWh
    assert per["BENCH-AC-01/1/T1"]["total"] == "6.10"
    assert Decimal(per["BENCH-AC-01/1/T1"]["fleet"]) == Decimal("4.58")  # 15/20 of 6.10
    # 3 h at 25 kW: 75 kWh off-peak at 0.14, 25 kW x 20 USD, 8 USD fixed (one day)
    assert s["site_bill"]["total"] == str(Decimal("75") * Decimal("0.14") + 500 + 8)
    bad = subprocess.run([str(MIGRID), "bill", str(run)], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "no billing section" in bad.stdout


async def test_a_bench_with_billing_is_billed_when_it_stops(tmp_path: Path) -> None:
    from hil.session import run_bench

    week = load_scenario(WEEK).billing
    assert week is not None
    billing = week.model_dump(mode="json")
    billing.update(home_stations=[], dishonest=[])
    doc = {
        "name": "bench-billing",
        "site": {"grid_limit_kw": 40, "base_load": {"power_kw": 2},
                 "timezone": "America/Los_Angeles"},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [{"id": f"CS00{i}", "meter_interval_s": 1} for i in (1, 2)],
        "emulated_stations": {
            "mode": "in_process", "stations": ["CS001", "CS002"],
            "vehicles": [{"evse": f"CS00{i}/1", "plug_in_s": 0, "plug_out_s": 4,
                          "battery_kwh": 10, "id_token": f"CARD{i}"} for i in (1, 2)]},
        "run": {"step_s": 0.5},
        "billing": billing,
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    await run_bench(path, out=out, duration_s=6.0)
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    s = _summary(out)
    assert s["sessions"] == 2 and s["audit"]["verified"] == 2, s["per_session"]
    kpis = json.loads((out / "kpis.json").read_text())["kpis"]
    assert kpis["billing_sessions"]["value"] == 2
    doc["billing"]["dishonest"] = [{"fraction": 0.5, "meter_drift": 2}]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ScenarioError, match=r"billing\.dishonest"):
        await run_bench(path, out=tmp_path / "run2", duration_s=1.0)
