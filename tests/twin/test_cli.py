"""The migrid command line: help, bad scenarios, KPI assertions and the run folder."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from twin.cli import app

runner = CliRunner()


def small_scenario(tmp_path: Path, **assertion) -> Path:
    data = {
        "name": "cli_small",
        "site": {"grid_limit_kw": 30, "timezone": "America/Los_Angeles"},
        "stations": [{"count": 3, "kind": "ac_11kw"}],
        "prices": {"dataset": "nl_day_ahead", "align": "local_clock"},
        "run": {"start": "2019-09-10T15:00:00Z", "duration_h": 2, "step_s": 60},
        "assertions": [assertion] if assertion else [],
    }
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_help_documents_every_command() -> None:
    out = runner.invoke(app, ["--help"]).output
    for command in ("run", "data"):
        assert command in out
    assert "fetch" in runner.invoke(app, ["data", "--help"]).output
    run_help = runner.invoke(app, ["run", "--help"]).output
    assert "--out" in run_help and "--seed" in run_help


def test_bad_scenario_exits_2_with_the_field_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "site": {"grid_limit_kw": "lots"},
                                    "stations": [{}], "run": {"start": "2019-09-10T00:00:00Z",
                                                              "duration_h": 1}}))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "site.grid_limit_kw" in result.output
    assert not (tmp_path / "run").exists()


def test_run_writes_folder_and_prints_kpis(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(small_scenario(tmp_path)), "--out", str(out),
                                 "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "peak_import_kw" in result.output
    doc = json.loads((out / "kpis.json").read_text())
    assert doc["seed"] == 3
    resolved = yaml.safe_load((out / "scenario.yaml").read_text())
    assert resolved["sources"]["acn_caltech"]["wheel_sha256"]


def test_failed_kpi_assertion_exits_1(tmp_path: Path) -> None:
    path = small_scenario(tmp_path, kpi="sessions_completed", min=10_000)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "sessions_completed" in result.output and "min" in result.output
    assert (tmp_path / "run" / "kpis.json").is_file()


def test_data_list_shows_the_data_sets() -> None:
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0
    for name in ("acn_caltech", "acn_jpl", "ercot_dam_spp", "nl_day_ahead", "ev_specs"):
        assert name in result.output
