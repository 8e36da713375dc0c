"""``migrid sweep``: variant expansion, checks before start, real sweeps on Dask.

The cluster tests run a 2-hour slice of caltech_day20 (real sessions; about 3 s a run) on
a LocalCluster with 2 workers, and on a scheduler + worker started as subprocesses.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from twin import sweep as sw
from twin.cli import app
from twin.scenario import ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
VENV_BIN = Path(sys.executable).parent

BASE = {
    "name": "mini",
    "site": {"grid_limit_kw": 60},
    "stations": [{"prefix": "CA", "count": 2}],
    "run": {"start": "2019-09-10T15:00:00Z", "duration_h": 1, "seed": 3},
}


# ------------------------------------------------------------------------ pure parts


def test_parse_param_reads_yaml_scalars_and_keeps_brackets_together() -> None:
    assert sw.parse_param("site.grid_limit_kw=100,150.5") == ("site.grid_limit_kw", [100, 150.5])
    assert sw.parse_param("dlm.strategy = llf, edf") == ("dlm.strategy", ["llf", "edf"])
    assert sw.parse_param("x.y=[1,2],'a,b',true") == ("x.y", [[1, 2], "a,b", True])
    for bad in ("site.grid_limit_kw", "=1", "a.b=1,,2"):
        with pytest.raises(sw.SweepError):
            sw.parse_param(bad)


def test_resolve_path_aliases_indexes_and_rejections() -> None:
    assert sw.resolve_path("dlm.strategy") == ("controllers", "dlm", "strategy")
    assert sw.resolve_path("stations.0.count") == ("stations", 0, "count")
    assert sw.resolve_path("sessions.station_map.X1") == ("sessions", "station_map", "X1")
    with pytest.raises(sw.SweepError, match="site has no field 'grid_limit_kv'"):
        sw.resolve_path("site.grid_limit_kv")
    with pytest.raises(sw.SweepError, match="is a value"):
        sw.resolve_path("site.grid_limit_kw.x")
    with pytest.raises(sw.SweepError, match="not an index"):
        sw.resolve_path("stations.first.count")
    with pytest.raises(sw.SweepError, match="--seeds"):
        sw.resolve_path("run.seed")


AXES = {
    "site.grid_limit_kw": st.lists(st.integers(1, 500), min_size=1, max_size=4, unique=True),
    "dlm.strategy": st.lists(st.sampled_from(["llf", "edf", "equal"]), min_size=1,
                             unique=True),
    "run.step_s": st.lists(st.integers(1, 3600), min_size=1, max_size=3, unique=True),
    "stations.0.count": st.lists(st.integers(1, 40), min_size=1, max_size=3, unique=True),
    "site.safety_margin_kw": st.lists(st.floats(0, 20, allow_nan=False), min_size=1,
                                      max_size=2, unique=True),
}


@st.composite
def sweeps(draw: st.DrawFn) -> tuple[list[tuple[str, list]], int]:
    names = draw(st.lists(st.sampled_from(sorted(AXES)), max_size=4, unique=True))
    axes = [(n, draw(AXES[n])) for n in draw(st.permutations(names))]
    return axes, draw(st.integers(1, 4))


def _texts(axes: list[tuple[str, list]]) -> list[str]:
    return [f"{n}={','.join(json.dumps(v) for v in values)}" for n, values in axes]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweeps())
def test_expansion_count_and_unique_stable_ids(sweep: tuple[list[tuple[str, list]], int]) -> None:
    axes, seeds = sweep
    out = Path("/nonexistent/sweep")
    plan = sw.plan_from_mapping(BASE, _texts(axes), seeds=seeds, out=out)
    n_variants = math.prod(len(v) for _, v in axes)
    assert len(plan.variants) == n_variants
    assert len(plan.runs) == n_variants * seeds
    assert plan.seeds == list(range(3, 3 + seeds))  # from the scenario's seed
    ids = [vid for vid, _ in plan.variants]
    assert len(set(ids)) == len(ids)
    assert all(sw.variant_id(p) == vid for vid, p in plan.variants)
    assert len({r.run_dir for r in plan.runs}) == len(plan.runs)
    assert all(r.run_dir.startswith(f"{out}/{r.variant_id}/seed-") for r in plan.runs)
    # stable: again, and with the axes in reverse order and their full paths
    again = sw.plan_from_mapping(BASE, _texts(axes), seeds=seeds, out=out)
    assert [vid for vid, _ in again.variants] == ids
    full = [(".".join(map(str, sw.resolve_path(n))), v) for n, v in reversed(axes)]
    reordered = sw.plan_from_mapping(BASE, _texts(full), seeds=seeds, out=out)
    assert sorted(vid for vid, _ in reordered.variants) == sorted(ids)
    # every variant's scenario holds its values as the model parsed them
    for run in plan.runs:
        for axis in plan.axes:
            assert sw._get_in(run.scenario, axis.path) == run.params[axis.name]


def test_variant_id_is_pinned() -> None:
    # the id of a variant must not change between releases: run folders are named by it
    assert sw.variant_id({}) == "base"
    vid = sw.variant_id({"controllers.dlm.strategy": "edf", "site.grid_limit_kw": 100.0})
    assert vid.startswith("strategy-edf__grid_limit_kw-100.0-")
    assert vid == sw.variant_id({"site.grid_limit_kw": 100.0, "controllers.dlm.strategy": "edf"})
    assert vid != sw.variant_id({"controllers.dlm.strategy": "edf", "site.grid_limit_kw": 100.5})


@pytest.mark.parametrize(("param", "reason"), [
    ("site.grid_limit_kv=100", "site has no field 'grid_limit_kv'"),
    ("dlm.strategy=llf,lfl", "controllers.dlm.strategy: Input should be 'llf', 'edf' or "
                             "'equal'"),
    ("site.grid_limit_kw=100,-5", "site.grid_limit_kw: Input should be greater than 0"),
    ("site.grid_limit_kw=100,100.0", "given twice"),
    ("stations.2.count=3", "list has 2 item(s)"),
    ("run.seed=1,2", "seeds are swept with --seeds"),
])
def test_bad_param_rejected_before_start(tmp_path: Path, param: str, reason: str) -> None:
    with pytest.raises(sw.SweepError) as err:
        sw.plan_sweep(SCENARIOS / "caltech_day20.yaml", [param], out=tmp_path / "s")
    assert reason in str(err.value)
    # the CLI says the same, exits 2, and starts nothing (no folder, no cluster)
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["sweep", str(SCENARIOS / "caltech_day20.yaml"),
                                      "--param", param, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert not out.exists()


def test_bad_kpi_and_bad_scenario_rejected(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", str(SCENARIOS / "caltech_day20.yaml"), "--kpi", "nope",
                            "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--kpi nope: no such KPI" in r.output
    r = runner.invoke(app, ["sweep", str(SCENARIOS / "caltech_day20.yaml"), "--scheduler",
                            "tcp://127.0.0.1:1", "--workers", "2", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--workers, --retries" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsite: {grid_limit_kw: 0}\n")
    with pytest.raises(ScenarioError):
        sw.plan_sweep(bad, [], out=tmp_path / "b")


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_a_variant_travels_as_json_data(path: Path) -> None:
    # a worker gets the variant as model_dump(mode="json") (data files resolved or inlined)
    # and validates it again from a temporary file elsewhere: nothing may change
    scenario = load_scenario(path)  # every committed scenario loads
    doc = scenario.model_dump(mode="json")
    again = parse_scenario(doc, "copy", base_dir="/nonexistent")
    assert again.model_dump(mode="json") == doc


def test_run_variant_reports_an_exception_as_a_record(tmp_path: Path) -> None:
    spec = sw.RunSpec("v", {}, 1, {"name": "broken"}, str(tmp_path / "run"))
    rec = sw.run_variant(spec)
    assert rec["status"] == "error"
    assert rec["error"].startswith("ScenarioError:")
    assert "Traceback" in rec["traceback"]
    assert rec["kpis"] == {}


def test_results_table_columns_and_units() -> None:
    axes = [sw.ParamAxis("site.grid_limit_kw", ("site", "grid_limit_kw"), (25.0, 60.0))]
    kpis = {"peak_import_kw": {"value": 20.5, "unit": "kW"},
            "energy_met_share": {"value": 0.9, "unit": "1"},
            "energy_cost": {"value": "12.34", "unit": "EUR"}}
    ok = {"variant_id": "a", "params": {"site.grid_limit_kw": 25.0}, "seed": 1, "status": "ok",
          "error": None, "run_time_s": 1.5, "cpu_time_s": 1.2, "run_dir": "/r/a/seed-1",
          "worker": "h:1", "kpis": kpis}
    spec = sw.RunSpec("b", {"site.grid_limit_kw": 60.0}, 1, {}, "/r/b/seed-1")
    dead = sw.failed_record(spec, "worker_died", "KilledWorker: ...")
    t = sw.results_table([ok, dead], axes)
    assert list(t.columns) == ["variant_id", "site.grid_limit_kw", "seed", "status", "error",
                               "run_time_s", "cpu_time_s", "run_dir", "worker",
                               "peak_import_kw",
                               "energy_met_share", "energy_cost_eur"]
    assert t["energy_cost_eur"].iloc[0] == Decimal("12.34")
    assert t["energy_cost_eur"].iloc[1] is None
    assert math.isnan(t["peak_import_kw"].iloc[1])
    assert sw.resolve_kpi(t, "energy_cost") == "energy_cost_eur"
    assert sw.resolve_kpi(t, "nope") is None
    assert sw.counts([ok, dead]) == {"ok": 1, "kpi_failed": 0, "error": 0, "worker_died": 1,
                                     "cancelled": 0}


# --------------------------------------------------------------------- cluster sweeps


@pytest.fixture(scope="module")
def short_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """caltech_day20 cut to 08:00-10:00 Pacific, with a peak assertion at 30 kW.

    With a 25 kW limit the DLM keeps the peak at ~20 kW (ok); with 60 kW it reaches
    ~47 kW and the assertion fails (kpi_failed).
    """
    doc = yaml.safe_load((SCENARIOS / "caltech_day20.yaml").read_text())
    doc["run"].update(start="2019-09-10T15:00:00Z", duration_h=2)
    doc["assertions"] = [{"kpi": "peak_import_kw", "max": 30}]
    path = tmp_path_factory.mktemp("scenario") / "short.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def flaky_task(spec: sw.RunSpec) -> dict:
    """run_variant, but edf/60 kW seed 7 kills its worker and edf/25 kW seed 7 raises."""
    if spec.params["controllers.dlm.strategy"] == "edf" and spec.seed == 7:
        if spec.params["site.grid_limit_kw"] == 60.0:
            os._exit(3)
        raise RuntimeError("deliberate failure")
    return sw.run_variant(spec)


@pytest.mark.slow
def test_local_sweep_reports_failures_and_goes_on(
    short_scenario: Path, tmp_path: Path
) -> None:
    from distributed import Client

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import us
    plan = sw.plan_sweep(short_scenario, ["site.grid_limit_kw=25,60", "dlm.strategy=llf,edf"],
                         seeds=2, out=tmp_path / "sweep")
    assert len(plan.runs) == 8
    seen: list[str] = []
    with sw.local_cluster(2) as cluster, Client(cluster) as client:
        facts = sw.cluster_facts(client)
        records = sw.gather(client, plan.runs, task=flaky_task,
                            on_result=lambda r: seen.append(r["status"]))
    assert facts["workers"] == 2 and facts["worker_death_retries"] == 0
    assert len(seen) == 8
    doc = sw.write_results(plan, records, {"cluster": facts}, ["peak_import_kw", "energy_cost"])
    table = pd.read_parquet(tmp_path / "sweep" / "sweep.parquet")
    assert len(table) == 8
    status = {(r.variant_id.split("-")[1][:3], r["site.grid_limit_kw"], r.seed): r.status
              for _, r in table.iterrows()}
    assert status == {
        ("llf", 25.0, 7): "ok", ("llf", 25.0, 8): "ok",
        ("llf", 60.0, 7): "kpi_failed", ("llf", 60.0, 8): "kpi_failed",
        ("edf", 25.0, 7): "error", ("edf", 25.0, 8): "ok",
        ("edf", 60.0, 7): "worker_died", ("edf", 60.0, 8): "kpi_failed",
    }
    by = table.set_index(["controllers.dlm.strategy", "site.grid_limit_kw", "seed"])
    assert "RuntimeError: deliberate failure" in by.loc[("edf", 25.0, 7), "error"]
    assert by.loc[("edf", 60.0, 7), "error"].startswith("KilledWorker")
    assert "peak_import_kw" in by.loc[("llf", 60.0, 7), "error"]
    has_kpis = table["status"].isin(["ok", "kpi_failed"])
    assert table.loc[has_kpis, "peak_import_kw"].notna().all()
    assert table.loc[~has_kpis, "peak_import_kw"].isna().all()
    assert (table.loc[has_kpis & (table["site.grid_limit_kw"] == 25.0), "peak_import_kw"]
            <= 25.0 + 0.1).all()
    assert table.loc[has_kpis, "energy_cost_eur"].map(type).eq(Decimal).all()
    for _, r in table[has_kpis].iterrows():
        assert (Path(r.run_dir) / "kpis.json").is_file()
        assert r.run_dir == str(tmp_path / "sweep" / r.variant_id / f"seed-{r.seed}")
    assert doc["counts"] == {"ok": 3, "kpi_failed": 3, "error": 1, "worker_died": 1,
                             "cancelled": 0}
    assert doc["kpis_plotted"] == ["peak_import_kw", "energy_cost_eur"]
    assert (tmp_path / "sweep" / "sweep.html").is_file()
    written = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert {f["status"] for f in written["failures"]} == {"kpi_failed", "error",
                                                         "worker_died"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dask did not start (exit {proc.poll()})")
        time.sleep(0.2)


@pytest.mark.slow
def test_cli_sweep_against_an_existing_scheduler(short_scenario: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(sched_file)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for(sched_file, procs[0])
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen(
            [str(VENV_BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
             "--host", "127.0.0.1", "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = tmp_path / "sweep"
        result = CliRunner().invoke(app, [
            "sweep", str(short_scenario), "--param", "site.grid_limit_kw=25,60",
            "--scheduler", address, "--out", str(out), "--kpi", "peak_import_kw"])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    assert result.exit_code == 1, result.output  # one run failed its KPI assertion
    assert "1 ok, 1 failed" in result.output
    table = pd.read_parquet(out / "sweep.parquet")
    assert list(table["site.grid_limit_kw"]) == [25.0, 60.0]
    assert list(table["status"]) == ["ok", "kpi_failed"]
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["cluster"]["kind"] == "external"
    assert doc["cluster"]["scheduler"] == address
    assert doc["retries"] == {"worker_death": 0, "exceptions_and_kpi_failures": 0}
    assert doc["files"]["html"] == "sweep.html"
