"""Record and replay: a real bench session becomes a scenario that `migrid run` replays.

No mocks: a short in-process bench (emulated stations over OCPP-J to the CSMS, emulated
meter and building over Modbus TCP) on the wall clock, then `replay_run` on its run
folder, then the lock-step twin on the written scenario.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hil.session import run_bench
from twin.cli import app
from twin.replay import ReplayError, replay_run
from twin.scenario import ScenarioError, load_scenario, parse_scenario
from twin.session_run import run_scenario

STEP_S = 1.0
#: replayed energy within this share of the field's: arrivals are replayed at their exact
#: times, but the DLM's first profile and the meter-value lag differ by up to a step
ENERGY_TOLERANCE = 0.25


def _bench() -> dict:
    return {
        "name": "replay-bench",
        "site": {"grid_limit_kw": 30, "base_load": {"power_kw": 2}},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [
            {"id": "BENCH-AC-01", "evses": 2, "meter_interval_s": 1},
            {"id": "BENCH-AC-02", "meter_interval_s": 1},
        ],
        "emulated_stations": {
            "mode": "in_process",
            "stations": ["BENCH-AC-01", "BENCH-AC-02"],
            "vehicles": [
                {"evse": "BENCH-AC-01/1", "plug_in_s": 0.5, "plug_out_s": 5.5,
                 "id_token": "TOK-A"},
                {"evse": "BENCH-AC-01/2", "plug_in_s": 1.5, "id_token": "TOK-B"},
                {"evse": "BENCH-AC-02/1", "plug_in_s": 2.5, "plug_out_s": 6.5,
                 "ac_max_power_kw": 7.4, "id_token": "TOK-C"},
            ],
        },
        "site_devices": {"meter": {"binding": "emulated"},
                         "building": {"annual_kwh": 30000}},
        "run": {"step_s": STEP_S},
    }


@pytest.fixture(scope="module")
def field_and_replay(tmp_path_factory):
    """One field run (8 s of wall clock), its replay scenario and the twin run of it."""
    root = tmp_path_factory.mktemp("replay")
    bench = root / "bench.yaml"
    bench.write_text(yaml.safe_dump(_bench()), encoding="utf-8")
    field = root / "field"
    asyncio.run(run_bench(bench, out=field, duration_s=8.0))
    scenario = replay_run(field, root / "scenarios")
    twin = root / "twin"
    asyncio.run(run_scenario(scenario, out=twin))
    return field, scenario, twin


def _field_transactions(field: Path) -> pd.DataFrame:
    events = pd.read_parquet(field / "events.parquet")
    rows = events[(events.source == "csms") & (events.kind == "transaction.started")]
    out = pd.DataFrame([json.loads(p) for p in rows.payload])
    out["evse"] = out.station + "/" + out.evse.astype(str)
    out["time"] = rows.time.to_numpy()
    return out


@pytest.mark.slow
def test_replay_scenario_loads_with_the_normal_loader(field_and_replay) -> None:
    field, path, _ = field_and_replay
    sc = load_scenario(path)
    assert sc.sessions.dataset == "recorded" and Path(sc.sessions.file).is_file()
    assert sc.site.base_load.kind == "series" and Path(sc.site.base_load.file).is_file()
    # field station ids, not prefix + number
    assert [sid for sid, _ in sc.evse_layout()] == ["BENCH-AC-01", "BENCH-AC-02"]
    assert sc.evse_layout()[0][1] == [1, 2]
    # the emulated building is dropped: its load is in the base-load series
    assert sc.site_devices is not None and sc.site_devices.building is None
    assert sc.run.step_s == 1
    started = pd.read_parquet(field / "events.parquet").query("kind == 'bench.started'")
    t0 = started.time.iloc[0].to_pydatetime()
    assert sc.run.start <= t0 < sc.run.start + pd.Timedelta(seconds=1)
    assert sc.run.start.microsecond == 0
    assert 7.5 <= sc.run.duration_h * 3600 <= 11


@pytest.mark.slow
def test_replay_has_the_field_sessions(field_and_replay) -> None:
    field, path, twin = field_and_replay
    tx = _field_transactions(field)
    events = pd.read_parquet(twin / "events.parquet")
    arrived = events[events.kind == "session.arrived"]
    got = pd.DataFrame([json.loads(p) for p in arrived.payload])
    got["time"] = arrived.time.to_numpy()
    assert len(got) == len(tx) == 3
    assert sorted(got.evse) == sorted(tx.evse)
    assert sorted(got.id_token) == ["TOK-A", "TOK-B", "TOK-C"]
    for _, row in tx.iterrows():
        twin_row = got[got.evse == row.evse].iloc[0]
        assert abs((twin_row.time - row.time).total_seconds()) <= STEP_S
    # departures: the two plugged-out vehicles within a step of the field's end events
    ended = pd.read_parquet(field / "events.parquet").query(
        "source == 'csms' and kind == 'transaction.ended'")
    departed = events[events.kind == "session.departed"]
    dep = {json.loads(p)["evse"]: t for t, p in zip(departed.time, departed.payload,
                                                    strict=True)}
    for t, p in zip(ended.time, ended.payload, strict=True):
        p = json.loads(p)
        assert abs((dep[f"{p['station']}/{p['evse']}"] - t).total_seconds()) <= STEP_S
    # the vehicle still plugged at the field's end departs at the field's end
    sessions = pd.read_csv(path.parent / f"{path.stem}_sessions.csv")
    open_row = sessions[sessions.id_token == "TOK-B"].iloc[0]
    assert open_row.needed_kwh > open_row.energy_kwh  # still charging: not finished


@pytest.mark.slow
def test_replayed_energy_is_close_to_the_field(field_and_replay) -> None:
    _, path, twin = field_and_replay
    sessions = pd.read_csv(path.parent / f"{path.stem}_sessions.csv")
    field_kwh = sessions.energy_kwh.sum()
    kpis = json.loads((twin / "kpis.json").read_text())["kpis"]
    twin_kwh = kpis["energy_delivered_kwh"]["value"]
    assert field_kwh > 0.02  # three vehicles at 7-11 kW for a few seconds
    assert abs(twin_kwh - field_kwh) <= ENERGY_TOLERANCE * field_kwh, (field_kwh, twin_kwh)
    assert kpis["sessions_refused"]["value"] == 0
    # a vehicle limit, when the field showed one, is no lower than what it drew
    for _, row in sessions.dropna(subset=["max_power_kw"]).iterrows():
        assert row.max_power_kw <= 22.0
    print(f"field {field_kwh:.4f} kWh, replayed {twin_kwh:.4f} kWh")


@pytest.mark.slow
def test_base_load_series_reproduces_the_field_non_ev_load(field_and_replay) -> None:
    field, _, twin = field_and_replay
    traces = pd.read_parquet(field / "traces.parquet")
    site = traces[traces.entity == "site"].pivot(index="time", columns="quantity",
                                                 values="value")
    field_non_ev = (site.import_kw - site.ev_power_kw).clip(lower=0)
    twin_traces = pd.read_parquet(twin / "traces.parquet")
    base = twin_traces[(twin_traces.entity == "site") & (twin_traces.quantity == "base_load_kw")]
    # the building (~6.5 kW of a 30 MWh/a G25 profile) plus the 2 kW base load
    assert base.value.mean() == pytest.approx(field_non_ev.median(), abs=0.5)
    assert base.value.min() >= 0


def test_twin_run_folder_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.yaml").write_text("name: x\nkind: twin\n", encoding="utf-8")
    with pytest.raises(ReplayError, match="a twin run folder; replay takes a field run"):
        replay_run(run, tmp_path / "out")
    result = CliRunner().invoke(app, ["replay", str(run), "--out", str(tmp_path / "out")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "replay takes a field run" in result.output


def test_field_folder_without_events_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "scenario.yaml").write_text("name: x\nkind: field\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"no events\.parquet"):
        replay_run(run, tmp_path / "out")
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "nope")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "not a run folder" in result.output


@pytest.mark.slow
def test_cli_prints_scenario_and_summary(field_and_replay, tmp_path: Path) -> None:
    field, _, _ = field_and_replay
    result = CliRunner().invoke(app, ["replay", str(field), "--out", str(tmp_path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"scenario: {tmp_path / 'field-replay.yaml'}" in result.output
    assert "3 sessions (1 open at the end)" in result.output and "kWh delivered" in result.output


# ---------------------------------------------------------------- scenario fields

def _doc(**over) -> dict:
    doc = {"name": "t", "site": {"grid_limit_kw": 50},
           "stations": [{"ids": ["BENCH-AC-01", "BENCH-AC-02"], "evses": 2}],
           "run": {"start": "2026-01-05T00:00:00Z", "duration_h": 1}}
    doc.update(over)
    return doc


def _write_sessions(path: Path, rows: list[str]) -> None:
    path.write_text("session_id,evse,arrival,departure,energy_kwh,id_token,arrival_soc\n"
                    + "\n".join(rows) + "\n", encoding="utf-8")


def test_station_ids_name_the_stations() -> None:
    sc = parse_scenario(_doc(stations=[{"ids": ["B-1", "A-2"]}, {"prefix": "CS", "count": 2}]))
    assert [s for s, _ in sc.evse_layout()] == ["B-1", "A-2", "CS001", "CS002"]
    assert sc.stations[0].count == 2
    with pytest.raises(ScenarioError, match=r"stations\.0: Value error, count 3 but 2 ids"):
        parse_scenario(_doc(stations=[{"ids": ["A", "B"], "count": 3}]))
    with pytest.raises(ScenarioError, match="station ids must be distinct across groups"):
        parse_scenario(_doc(stations=[{"ids": ["CS001"]}, {"prefix": "CS"}]))


def test_recorded_sessions_and_series_resolve_against_the_scenario_folder(
    tmp_path: Path
) -> None:
    _write_sessions(tmp_path / "s.csv", [
        "a,BENCH-AC-01/2,2026-01-05T00:10:00Z,2026-01-05T00:40:00Z,5.5,TOK,0.4",
        "b,BENCH-AC-02/1,2026-01-05T00:20:00+01:00,2026-01-05T00:30:00Z,1,,",
    ])
    (tmp_path / "b.csv").write_text("time,power_kw\n2026-01-05T00:00:00Z,3\n"
                                    "2026-01-05T00:30:00Z,5\n", encoding="utf-8")
    doc = _doc(sessions={"dataset": "recorded", "file": "s.csv"})
    doc["site"]["base_load"] = {"kind": "series", "file": "b.csv"}
    path = tmp_path / "sc.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    sc = load_scenario(path)
    assert sc.sessions.file == str((tmp_path / "s.csv").resolve())
    assert sc.datasets == []  # recorded files, no public data set
    bl = sc.site.base_load
    t = pd.Timestamp("2026-01-05T00:29:59Z").to_pydatetime()
    assert bl.power_kw_at(t) == 3 and bl.peak_kw == 5
    assert bl.power_kw_at(pd.Timestamp("2026-01-04T00:00:00Z").to_pydatetime()) == 3
    assert bl.power_kw_at(pd.Timestamp("2026-02-01T00:00:00Z").to_pydatetime()) == 5
    from twin.run_inputs import resolve_inputs

    inputs = resolve_inputs(sc)
    plan = inputs.plan.sessions
    # the +01:00 arrival is 23:20 UTC the day before: outside the run window
    assert [s.session_id for s in plan] == ["a"]
    a = plan[0]
    assert a.evse == "BENCH-AC-01/2" and a.id_token == "TOK" and a.arrival_soc == 0.4
    assert a.needed_kwh == pytest.approx(5.5)
    assert a.model.ac_max_power_kw == 22.0  # no max_power_kw: the EVSE's rating
    assert inputs.sources["sessions_file"]["sha256"]


@pytest.mark.parametrize(("content", "where", "reason"), [
    ("session_id,evse\n", "sessions.file", "missing columns: arrival"),
    ("session_id,evse,arrival,departure,energy_kwh\n"
     "a,BENCH-AC-01/1,2026-01-05T00:10:00,2026-01-05T00:40:00Z,1\n",
     "sessions.file", "row 1: '2026-01-05T00:10:00' needs a time zone"),
    ("session_id,evse,arrival,departure,energy_kwh\n"
     "a,BENCH-AC-01,2026-01-05T00:10:00Z,2026-01-05T00:40:00Z,1\n",
     "sessions.file", "is not '<station id>/<evse id>'"),
    ("session_id,evse,arrival,departure,energy_kwh\n"
     "a,BENCH-AC-01/1,2026-01-05T00:10:00Z,2026-01-05T00:05:00Z,1\n",
     "sessions.file", "departure must be after arrival"),
    ("session_id,evse,arrival,departure,energy_kwh\n"
     "a,NOPE/1,2026-01-05T00:10:00Z,2026-01-05T00:40:00Z,1\n",
     "(top level)", "sessions.file names EVSEs not in stations: NOPE/1"),
])
def test_bad_sessions_file_names_the_field(
    tmp_path: Path, content: str, where: str, reason: str
) -> None:
    (tmp_path / "s.csv").write_text(content, encoding="utf-8")
    doc = _doc(sessions={"dataset": "recorded", "file": "s.csv"})
    with pytest.raises(ScenarioError) as err:
        parse_scenario(doc, "sc.yaml", tmp_path)
    assert where in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize(("base_load", "reason"), [
    ({"kind": "series", "file": "missing.csv"}, "site.base_load.file: Value error"),
    ({"kind": "series"}, "series needs a file"),
    ({"kind": "constant", "file": "b.csv"}, "file goes with kind series"),
])
def test_bad_base_load_series_names_the_field(
    tmp_path: Path, base_load: dict, reason: str
) -> None:
    (tmp_path / "b.csv").write_text("time,power_kw\n2026-01-05T00:00:00Z,1\n",
                                    encoding="utf-8")
    doc = _doc()
    doc["site"]["base_load"] = base_load
    with pytest.raises(ScenarioError, match=r"site\.base_load") as err:
        parse_scenario(doc, "sc.yaml", tmp_path)
    assert reason in str(err.value)


def test_negative_series_value_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("time,power_kw\n2026-01-05T00:00:00Z,-1\n",
                                    encoding="utf-8")
    doc = _doc()
    doc["site"]["base_load"] = {"kind": "series", "file": "b.csv"}
    with pytest.raises(ScenarioError,
                       match=r"site\.base_load\.file: .*power_kw: row 1: must be >= 0"):
        parse_scenario(doc, "sc.yaml", tmp_path)
