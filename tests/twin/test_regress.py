"""``migrid regress``: tolerance and direction rules, reports, baselines, the command."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from twin.cli import app
from twin.regress import (
    BETTER,
    Case,
    CaseResult,
    RegressError,
    Tolerance,
    baseline_doc,
    changelog_entry,
    compare_kpi,
    compare_kpis,
    default_tolerance,
    discover,
    junit_xml,
    markdown_report,
    select,
)
from twin.scenario import load_scenario
from twin.scenario_regress import KpiTolerance

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
REPLAYED = SCENARIOS / "replayed"
runner = CliRunner()


def kpi(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit}


# --- default tolerances ---------------------------------------------------------------


def test_default_tolerances_by_unit() -> None:
    assert default_tolerance("energy_cost", "EUR", "12.34") == Tolerance(
        abs=Decimal("0.01"), better="lower")
    assert default_tolerance("limit_violations", "1", 0) == Tolerance(better="lower")
    assert default_tolerance("energy_met_share", "1", 0.9).abs == Decimal("0.005")
    kwh = default_tolerance("site_import_kwh", "kWh", 1000.0)
    assert (kwh.abs, kwh.rel, kwh.better) == (Decimal("0.001"), Decimal("0.005"), None)
    assert kwh.band(Decimal(1000)) == Decimal(5)  # 0.5 % of 1000 kWh
    assert kwh.band(Decimal(0)) == Decimal("0.001")  # the floor of a zero baseline
    assert kwh.describe() == "±max(0.001, 0.5 %)"
    assert Tolerance().describe() == "exact"


def test_money_is_compared_to_the_cent_in_decimal() -> None:
    base = kpi("12.34", "EUR")
    assert compare_kpi("s", "energy_cost", base, kpi("12.35", "EUR")).verdict == "ok"
    worse = compare_kpi("s", "energy_cost", base, kpi("12.36", "EUR"))
    assert (worse.verdict, worse.delta) == ("regressed", Decimal("0.02"))
    assert compare_kpi("s", "energy_cost", base, kpi("12.32", "EUR")).verdict == "improved"
    # a saving is better when higher
    assert compare_kpi("s", "energy_cost_saving", base, kpi("12.40", "EUR")).verdict == \
        "improved"


def test_counts_are_exact() -> None:
    assert compare_kpi("s", "sessions_completed", kpi(36, "1"), kpi(36, "1")).verdict == "ok"
    # sessions_completed has no better direction: any change is a failure
    assert compare_kpi("s", "sessions_completed", kpi(36, "1"), kpi(37, "1")).verdict == \
        "changed"
    assert compare_kpi("s", "limit_violations", kpi(0, "1"), kpi(1, "1")).verdict == \
        "regressed"


def test_missing_new_unit_change_and_override() -> None:
    checks = {c.kpi: c for c in compare_kpis(
        "s",
        {"a_kwh": kpi(1.0, "kWh"), "gone_kw": kpi(2.0, "kW"), "u": kpi(1.0, "kW")},
        {"a_kwh": kpi(1.05, "kWh"), "u": kpi(1.0, "kWh"), "extra": kpi(3, "1")},
        {"a_kwh": KpiTolerance(rel=0.1)},
    )}
    assert checks["a_kwh"].verdict == "ok"  # within the scenario's 10 %
    assert checks["a_kwh"].tolerance == "±10 %"
    assert checks["gone_kw"].verdict == "missing" and checks["gone_kw"].failing
    assert checks["u"].verdict == "changed"
    assert checks["extra"].verdict == "new" and not checks["extra"].failing
    # better: none removes a built-in direction; better: higher adds one
    peak = compare_kpi("s", "peak_import_kw", kpi(100.0, "kW"), kpi(90.0, "kW"),
                       KpiTolerance(abs=1, better="none"))
    assert peak.verdict == "changed"
    up = compare_kpi("s", "site_import_kwh", kpi(100.0, "kWh"), kpi(110.0, "kWh"),
                     KpiTolerance(abs=1, better="higher"))
    assert up.verdict == "improved"


# --- the tolerance rule, for any numbers ---------------------------------------------

decimals = st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=3,
                       allow_nan=False, allow_infinity=False)
shares = st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=3)
names = st.sampled_from(["energy_unmet_kwh", "energy_met_share", "site_import_kwh",
                         "peak_import_kw", "bess_charged_kwh"])


@given(name=names, baseline=decimals, now=decimals,
       abs_tol=st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=3),
       rel_tol=shares)
def test_verdict_follows_band_and_direction(
    name: str, baseline: Decimal, now: Decimal, abs_tol: Decimal, rel_tol: Decimal
) -> None:
    override = KpiTolerance(abs=float(abs_tol), rel=float(rel_tol))
    check = compare_kpi("s", name, kpi(str(baseline), "kWh"), kpi(str(now), "kWh"), override)
    band = max(abs_tol, rel_tol * abs(baseline))
    delta = now - baseline
    assert check.delta == delta
    if abs(delta) <= band:
        assert check.verdict == "ok"
    elif BETTER.get(name) is None:
        assert check.verdict == "changed"
    elif (delta < 0) == (BETTER[name] == "lower"):
        assert check.verdict == "improved" and not check.failing
    else:
        assert check.verdict == "regressed" and check.failing


@given(name=names, baseline=decimals, delta=decimals)
def test_verdict_is_mirrored_by_the_direction(name: str, baseline: Decimal,
                                              delta: Decimal) -> None:
    """Moving up and moving down by the same amount: ok both, or improved/regressed."""
    tol = KpiTolerance(abs=1.0, rel=0.01)
    up = compare_kpi("s", name, kpi(str(baseline), "kWh"), kpi(str(baseline + delta), "kWh"),
                     tol)
    down = compare_kpi("s", name, kpi(str(baseline), "kWh"), kpi(str(baseline - delta), "kWh"),
                       tol)
    pairs = {("ok", "ok"), ("changed", "changed"), ("improved", "regressed"),
             ("regressed", "improved")}
    assert (up.verdict, down.verdict) in pairs


@given(baseline=st.floats(min_value=0, max_value=1e5, allow_nan=False),
       factor=st.floats(min_value=0.0, max_value=0.0049))
def test_default_relative_band_holds_for_floats(baseline: float, factor: float) -> None:
    now = baseline * (1 + factor)
    check = compare_kpi("s", "site_import_kwh", kpi(baseline, "kWh"), kpi(now, "kWh"))
    assert check.verdict == "ok"


# --- discovery ------------------------------------------------------------------------


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def test_discover_and_select(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"name": "a", "regression": True})
    write(tmp_path / "sub" / "b.yaml", {"name": "b", "regression": "fast"})
    write(tmp_path / "c.yaml", {"name": "c"})
    write(tmp_path / "d.yaml", {"name": "d", "regression": False})
    (tmp_path / "e.yaml").write_text("[not, a, mapping]")
    cases = discover(tmp_path)
    assert [(c.name, c.fast) for c in cases] == [("a", False), ("b", True)]
    assert [c.name for c in select(cases, fast=True)] == ["b"]
    assert [c.name for c in select(cases, only=["a"])] == ["a"]
    assert select(cases, only=["a"], fast=True) == []
    with pytest.raises(RegressError, match="zzz"):
        select(cases, only=["zzz"])
    write(tmp_path / "f.yaml", {"name": "a", "regression": True})
    with pytest.raises(RegressError, match="two regression scenarios"):
        discover(tmp_path)


def test_committed_cases_are_valid_and_have_baselines() -> None:
    cases = discover(SCENARIOS)
    names = {c.name for c in cases}
    assert {"ercot_uri_2021-02-15", "nl_negative_prices_2023-08-08", "caltech_pv_bess",
            "caltech_link_loss_2019-09-10"} <= names
    assert any(c.path.parent == REPLAYED for c in cases)
    for c in cases:
        assert load_scenario(c.path).regression in (True, "fast")
        base = json.loads((SCENARIOS / "baselines" / f"{c.name}.json").read_text())
        assert base["scenario"] == c.name and base["kpis"] and base["updated"]["reason"]


# --- reports --------------------------------------------------------------------------


def results() -> list[CaseResult]:
    ok = CaseResult(Case("good", Path("good.yaml"), True), run_dir=Path("runs/x/good"),
                    kpis={"kpis": {}}, run_time_s=1.5)
    ok.checks = compare_kpis("good", {"limit_violations": kpi(0, "1"),
                                      "energy_cost": kpi("5.00", "USD")},
                             {"limit_violations": kpi(0, "1"),
                              "energy_cost": kpi("4.00", "USD")})
    bad = CaseResult(Case("bad", Path("bad.yaml"), False), kpis={"kpis": {}},
                     assertion_failures=["limit_violations = 3 > max 0"], run_time_s=2.0)
    bad.checks = compare_kpis("bad", {"limit_violations": kpi(0, "1"),
                                      "energy_met_share": kpi(0.9, "1")},
                              {"limit_violations": kpi(3, "1"),
                               "energy_met_share": kpi(0.901, "1")})
    broken = CaseResult(Case("broken", Path("broken.yaml"), False),
                        error="ScenarioError: broken.yaml: invalid scenario")
    return [ok, bad, broken]


def test_junit_xml_parses_and_has_the_failures() -> None:
    root = ET.fromstring(junit_xml(results()))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("9", "2", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"good", "bad", "broken"}
    bad_cases = {tc.get("name"): tc for tc in suites["bad"].iter("testcase")}
    assert set(bad_cases) == {"run", "assertions", "limit_violations", "energy_met_share"}
    failure = bad_cases["limit_violations"].find("failure")
    assert failure is not None and failure.get("type") == "regressed"
    assert "baseline 0" in (failure.get("message") or "")
    assert bad_cases["assertions"].find("failure") is not None
    assert bad_cases["energy_met_share"].find("failure") is None
    good_cost = next(tc for tc in suites["good"].iter("testcase")
                     if tc.get("name") == "energy_cost")
    assert good_cost.find("failure") is None and good_cost.find("system-out") is not None
    assert suites["broken"].find("testcase/error") is not None
    assert results()[0].verdict == "improved" and results()[1].verdict == "failed"


def test_markdown_report() -> None:
    text = markdown_report(results(), meta={"subset": "fast"})
    assert "**FAILED** (1 of 3 scenarios pass)" in text
    assert "| limit_violations | 1 | 0 | 3 | +3 | exact | lower | ❌ regressed" in text
    assert "improved" in text and "ScenarioError" in text and "- subset: fast" in text


def test_baseline_history_and_changelog(tmp_path: Path) -> None:
    r = CaseResult(Case("s", tmp_path / "s.yaml", True), kpis={
        "seed": 1, "kpis": {"a_kwh": kpi(2.0, "kWh"), "n": kpi(1, "1")}}, run_time_s=3.21)
    first = {"reason": "first", "date": "2026-01-01T00:00:00Z", "commit": None,
             "dirty": None, "user": "u", "host": "h"}
    doc = baseline_doc(r, first, None, tmp_path)
    assert doc["scenario_file"] == "s.yaml" and doc["history"] == [] and doc["seed"] == 1
    second = {**first, "reason": "second", "commit": "abcdef1234567890"}
    doc2 = baseline_doc(r, second, doc, tmp_path)
    assert doc2["updated"]["reason"] == "second" and doc2["history"] == [first]
    entry = changelog_entry(second, [("s", {"a_kwh": kpi(1.0, "kWh"), "n": kpi(1, "1")},
                                      r.kpis["kpis"] if r.kpis else {}), ("t", None, {})])
    assert "second" in entry and "commit abcdef123456" in entry
    assert "a_kwh 1 → 2" in entry and "`t`: new baseline" in entry


# --- the command, on the replayed bench session (a one-minute scenario) --------------


def replay_case(folder: Path, **site: Any) -> Path:
    """The committed replayed scenario and its CSVs copied to ``folder`` (site changed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in REPLAYED.iterdir():
        shutil.copy(f, folder / f.name)
    path = next(folder.glob("*.yaml"))
    doc = yaml.safe_load(path.read_text())
    doc["regression"] = True
    doc["site"].update(site)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.slow
def test_update_then_pass_then_a_real_regression_fails(tmp_path: Path) -> None:
    cases, baselines = tmp_path / "cases", tmp_path / "baselines"
    replay_case(cases)
    reason = "first baseline of the replayed bench session"
    up = runner.invoke(app, ["regress", str(cases), "--baselines", str(baselines),
                             "--update", "--reason", reason, "--out", str(tmp_path / "u")])
    assert up.exit_code == 0, up.output
    (base_file,) = baselines.glob("*.json")
    base = json.loads(base_file.read_text())
    assert base["updated"]["reason"] == reason and base["updated"]["date"].endswith("Z")
    assert base["updated"]["user"] and base["updated"]["host"]
    assert reason in (baselines / "CHANGELOG.md").read_text()
    assert runner.invoke(app, ["regress", str(cases), "--update", "--baselines",
                               str(baselines)]).exit_code == 2  # no reason

    # the same scenario again: the twin is deterministic, every KPI ok
    same = runner.invoke(app, ["regress", str(cases), "--baselines", str(baselines),
                               "--out", str(tmp_path / "same")])
    assert same.exit_code == 0, same.output
    root = ET.parse(tmp_path / "same" / "junit.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"

    # a worse site: 12 kW instead of 30 kW of grid limit, the DLM cannot serve the EVs
    replay_case(cases, grid_limit_kw=12.0)
    junit, report = tmp_path / "j.xml", tmp_path / "r.md"
    worse = runner.invoke(app, ["regress", str(cases), "--baselines", str(baselines),
                                "--out", str(tmp_path / "worse"), "--junit", str(junit),
                                "--report", str(report)])
    assert worse.exit_code == 1, worse.output
    assert "REGRESSION" in worse.output
    failures = {tc.get("name"): f.get("type") for tc in ET.parse(junit).getroot().iter("testcase")
                for f in tc.findall("failure")}
    assert failures.get("energy_unmet_kwh") == "regressed"
    assert "❌ regressed" in report.read_text()


def test_a_case_without_baseline_or_that_cannot_run_fails(tmp_path: Path) -> None:
    write(tmp_path / "cases" / "broken.yaml", {"name": "broken", "regression": True,
                                               "site": {"grid_limit_kw": "lots"}})
    out = runner.invoke(app, ["regress", str(tmp_path / "cases"), "--baselines",
                              str(tmp_path / "b"), "--out", str(tmp_path / "o")])
    assert out.exit_code == 1
    assert "site.grid_limit_kw" in (tmp_path / "o" / "report.md").read_text()
    none = runner.invoke(app, ["regress", str(tmp_path / "cases"), "--only", "nope"])
    assert none.exit_code == 2


@pytest.mark.slow
def test_committed_cases_pass_against_their_baselines(tmp_path: Path) -> None:
    """Two committed cases end to end; `.ci/run` runs the whole fast subset after pytest
    (`migrid regress --fast`, ~1.5 min) and keeps its junit.xml and report.md."""
    cases = ["caltech_link_loss_2019-09-10", "emulated-3-20261204T161025Z-replay"]
    args = ["regress", "--fast", "--out", str(tmp_path / "runs")]
    for name in cases:
        args += ["--only", name]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    root = ET.parse(tmp_path / "runs" / "junit.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"
    assert {s.get("name") for s in root.iter("testsuite")} == set(cases)
