"""Scenario files: valid ones load, bad ones are rejected with the field path."""

from pathlib import Path

import pytest
import yaml

from twin.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def minimal() -> dict:
    return {
        "name": "t",
        "site": {"grid_limit_kw": 50},
        "stations": [{"count": 2}],
        "run": {"start": "2019-09-10T07:00:00Z", "duration_h": 1},
    }


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_load(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.run.start.tzinfo is not None
    assert sc.run.steps > 0


def test_flagship_is_a_week_on_54_evses() -> None:
    sc = load_scenario(SCENARIOS / "caltech_week.yaml")
    assert sum(len(e) for _, e in sc.evse_layout()) == 54
    assert sc.run.duration_h == 168
    assert {g.ocpp_version for g in sc.stations} == {"1.6", "2.0.1"}


@pytest.mark.parametrize(
    ("patch", "path_text"),
    [
        (lambda d: d["site"].update(grid_limit_kw=-5), "site.grid_limit_kw"),
        (lambda d: d["stations"][0].update(kind="ac_7kw"), "stations.0.kind"),
        (lambda d: d["stations"][0].update(ocpp_version="2.2"), "stations.0.ocpp_version"),
        (lambda d: d["run"].update(start="2019-09-10T07:00:00"), "run.start"),
        (lambda d: d["run"].update(step_s=0), "run.step_s"),
        (lambda d: d["site"].update(voltage=230), "site.voltage"),
        (lambda d: d.update(prices={"dataset": "ercot_dam_spp"}), "prices"),
        (lambda d: d.update(assertions=[{"kpi": "peak_import_kw"}]), "assertions.0"),
        (lambda d: d["sessions"].update(station_map={"CA-311": "XX001/1"}) if "sessions" in d
         else d.update(sessions={"station_map": {"CA-311": "XX001/1"}}), "XX001/1"),
    ],
)
def test_bad_field_is_named(patch, path_text: str) -> None:
    data = minimal()
    patch(data)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "bad.yaml")
    assert path_text in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_yaml_syntax_error_is_a_scenario_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(p)


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_roundtrip_of_resolved_scenario() -> None:
    sc = parse_scenario(minimal())
    again = parse_scenario(yaml.safe_load(yaml.safe_dump(sc.model_dump(mode="json"))))
    assert again == sc


def test_own_fleet_replaces_the_drawn_models() -> None:
    data = minimal()
    data["vehicles"] = {"fleet": [{"name": "eVan", "battery_capacity_kwh": 75,
                                   "ac_max_power_kw": 11, "ac_phases": 3}]}
    sc = parse_scenario(data)
    assert "ev_specs" not in sc.datasets
    data["vehicles"]["fleet"][0]["ac_phases"] = 2
    with pytest.raises(ScenarioError, match=r"vehicles\.fleet\.0\.ac_phases"):
        parse_scenario(data)
