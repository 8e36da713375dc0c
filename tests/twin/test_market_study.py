"""The market study (issue 7 item 4) on the real NL negative-price day, coarse steps.

The whole day of ``scenarios/nl_negative_prices_2023-08-08.yaml`` (real NL day-ahead
prices, real ACN sessions, 14 OCPP 2.1 bidirectional EVSEs and a V2G fleet) with a
5-minute control step instead of 1 minute, so that the three twin runs and the LP take
~25 s together. The study runs once per module.

Tolerances (the twin's physics are not the LP's): the twin's AC EVSEs cannot charge below
6 A (the optimiser pulses the minimum), the DLM quantises and may give less than a
set-point, and a 5-minute step is coarse against 15-minute intervals. Hence cost
orderings are checked with ``COST_TOL`` (EUR) and the optimiser may leave
``UNMET_TOL_KWH`` more unmet energy than the DLM alone (0.4 kWh measured at this step).
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.market_study import StudyResult, run_study
from twin.market_variants import VARIANTS
from twin.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "nl_negative_prices_2023-08-08.yaml"
COST_TOL = Decimal("0.50")
UNMET_TOL_KWH = 1.0  # ~0.25 % of the 425 kWh the day's sessions ask for


@pytest.fixture(scope="module")
def study(data_sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> StudyResult:
    sc = load_scenario(SCENARIO)
    sc = sc.model_copy(update={"run": sc.run.model_copy(update={"step_s": 300})})
    out = tmp_path_factory.mktemp("market")
    return asyncio.run(run_study(sc, out, perf_counter=time.perf_counter))


def test_every_variant_settles_and_reconciles(study: StudyResult) -> None:
    assert tuple(study.variants) == VARIANTS
    for v in study.variants.values():
        v.settlement.reconcile()
        assert v.settlement.currency == "EUR"
        assert len(v.settlement.lines) == 96
        assert v.cost == v.settlement.amount_due


def test_cost_order_perfect_foresight_rolling_dlm(study: StudyResult) -> None:
    v = study.variants
    assert v["perfect_foresight"].cost <= v["rolling"].cost + COST_TOL
    assert v["rolling"].cost <= v["dlm"].cost + COST_TOL
    # on the LP's own physics the rolling horizon is feasible for the whole day: never
    # below the optimum (exact up to the 15-min settlement rounding)
    assert v["perfect_foresight"].cost <= v["rolling_lp"].cost + Decimal("0.05")
    # the optimiser moves charging into the negative-price hours: a real saving
    assert v["rolling"].cost < v["dlm"].cost - Decimal("5")


def test_rolling_optimiser_in_the_twin_within_5_percent_of_perfect_foresight(
    study: StudyResult,
) -> None:
    # issue 7's target (3.9 % at this 5-minute step, 2.6 % at the scenario's 1 minute)
    gap = study.rolling_gap
    assert gap is not None and gap <= Decimal("0.05")


def test_optimiser_adds_no_unmet_energy_beyond_tolerance(study: StudyResult) -> None:
    v = study.variants
    assert v["rolling"].unmet_kwh <= v["dlm"].unmet_kwh + UNMET_TOL_KWH


def test_v2g_discharges_on_the_negative_price_day(study: StudyResult) -> None:
    v = study.variants
    assert v["rolling"].extra["v2g_discharge_kwh"] > 0.0
    assert v["perfect_foresight"].extra["v2g_discharge_kwh"] > 0.0
    assert v["rolling_lp"].extra["v2g_discharge_kwh"] > 0.0
    # neither the DLM nor the uncontrolled run ever discharges
    assert v["dlm"].extra["v2g_discharge_kwh"] == 0.0
    assert v["uncontrolled"].extra["v2g_discharge_kwh"] == 0.0


def test_site_limit_respected_by_the_optimiser_in_the_twin(study: StudyResult) -> None:
    roll = study.variants["rolling"]
    assert roll.extra["limit_violations"] == 0
    assert roll.peak_import_kw <= 150.0 + 0.1
    assert roll.extra["lp_solves"] > 0 and roll.extra["lp_infeasible"] == 0


def test_comparison_json_written(study: StudyResult) -> None:
    run_dir = study.variants["dlm"].run_dir
    assert run_dir is not None
    doc = json.loads((run_dir.parent / "market_comparison.json").read_text())
    assert set(doc["variants"]) == set(VARIANTS)
    assert doc["variants"]["rolling"]["cost"] == str(study.variants["rolling"].cost)
    assert doc["rolling_gap_to_perfect_foresight"] is not None
    for name in ("uncontrolled", "dlm", "rolling"):
        assert (run_dir.parent / name / "kpis.json").exists()


def test_cli_lists_market_command() -> None:
    result = CliRunner().invoke(app, ["market", "--help"])
    assert result.exit_code == 0
    assert "--out" in result.output
