"""Run-folder reader: finished and live runs, filters, run list, bad folders."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from twin.recorder import EventWriter, TraceWriter
from twin.run_folder import RunFolder, RunFolderError, list_runs

T0 = datetime(2019, 9, 10, 7, tzinfo=UTC)


def make_run(path: Path, *, finish: bool, steps: int = 30) -> tuple[TraceWriter, EventWriter]:
    path.mkdir(parents=True)
    (path / "scenario.yaml").write_text(yaml.safe_dump({
        "name": "demo", "kind": "field",
        "run": {"start": T0.isoformat(), "duration_h": 1, "step_s": 60}}))
    traces = TraceWriter(path / "traces.parquet", flush_interval_s=0.0)
    events = EventWriter(path / "events.parquet", flush_interval_s=0.0)
    for k in range(steps):
        t = T0 + timedelta(minutes=k + 1)
        traces.add_many(t, [("site", "import_kw", float(k), "kW"),
                            ("CS001/1", "power_kw", float(k % 5), "kW")])
        events.sink(t, "csms", "dlm.setpoint", {"evse": 1, "new": k})
        events.commit_step()
        traces.maybe_flush()
        events.maybe_flush()
    if finish:
        traces.close()
        events.close()
        (path / "kpis.json").write_text(json.dumps(
            {"kpis": {"peak_import_kw": {"value": 29.0, "unit": "kW"}}, "wall": {}}))
    return traces, events


def test_finished_run_filters_by_entity_quantity_and_time(tmp_path: Path) -> None:
    make_run(tmp_path / "r", finish=True)
    run = RunFolder(tmp_path / "r")
    info = run.info()
    assert (info.scenario, info.kind, info.state, info.duration_h) == ("demo", "field",
                                                                       "finished", 1.0)
    assert info.kpi("peak_import_kw") == 29.0
    sel = run.traces(quantities=["import_kw"], start=T0 + timedelta(minutes=5),
                     end=T0 + timedelta(minutes=9))
    assert list(sel["value"]) == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert str(sel["time"].dt.tz) == "UTC"
    assert set(run.traces(entities=["CS001/1"])["quantity"]) == {"power_kw"}
    assert list(run.catalog()["entity"]) == ["CS001/1", "site"]
    assert run.time_range() == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=30))
    assert len(run.events(text='"new": 7}')) == 1
    assert len(run.events(kinds=["other"])) == 0


def test_live_run_is_read_from_its_parts(tmp_path: Path) -> None:
    traces, events = make_run(tmp_path / "live", finish=False, steps=10)
    run = RunFolder(tmp_path / "live")
    assert run.live and run.kpis() is None
    assert run.info().state == "running"
    assert len(run.traces(quantities=["import_kw"])) == 10
    traces.add(T0 + timedelta(minutes=11), "site", "import_kw", 99.0, "kW")
    traces.flush()
    assert run.traces(quantities=["import_kw"])["value"].iloc[-1] == 99.0
    traces.close()
    events.close()
    assert not run.live
    assert len(run.traces(quantities=["import_kw"])) == 11


def test_list_runs_skips_what_is_not_a_run(tmp_path: Path) -> None:
    make_run(tmp_path / "runs" / "b", finish=True)
    make_run(tmp_path / "runs" / "a", finish=True)
    (tmp_path / "runs" / "junk").mkdir()
    broken = tmp_path / "runs" / "broken"
    make_run(broken, finish=True)
    (broken / "scenario.yaml").write_text("[not a mapping")
    assert [r.name for r in list_runs(tmp_path / "runs")] == ["b", "a"]
    assert list_runs(tmp_path / "nowhere") == []
    with pytest.raises(RunFolderError, match="not a run folder"):
        RunFolder(tmp_path / "runs" / "junk")

