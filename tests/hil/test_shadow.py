"""The shadow twin beside a bench: real sockets on the wall clock, a few seconds each."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml
from hypothesis import given
from hypothesis import strategies as st

from dashboards.event_log import is_marker_kind
from hil.divergence import DivergenceMonitor
from hil.session import run_bench
from hil.shadow import shadow_run_dir

T0 = datetime(2026, 12, 4, tzinfo=UTC)


def _bench(tmp_path: Path, **overrides: object) -> Path:
    doc: dict = {
        "name": "shadow-test",
        # 40 kW: both vehicles (11 + 7.4 kW) at their own limit, a steady field
        "site": {"grid_limit_kw": 40, "base_load": {"power_kw": 2}},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [{"id": f"CS00{i}", "meter_interval_s": 1} for i in (1, 2)],
        "emulated_stations": {
            "mode": "in_process", "stations": ["CS001", "CS002"],
            "vehicles": [{"evse": "CS001/1", "plug_in_s": 0, "ac_max_power_kw": 11},
                         {"evse": "CS002/1", "plug_in_s": 1, "ac_max_power_kw": 7.4,
                          "ac_phases": 1}],
        },
        "shadow": {"window_s": 2.0},
        "run": {"step_s": 0.5},
    }
    doc.update(overrides)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


async def test_shadow_follows_an_emulated_field_within_tolerance(tmp_path: Path) -> None:
    out = tmp_path / "run"
    await run_bench(_bench(tmp_path), out=out, duration_s=8.0)
    shadow = shadow_run_dir(out)
    # the shadow wrote a twin run folder beside the field's
    scen = yaml.safe_load((shadow / "scenario.yaml").read_text())
    assert scen["kind"] == "twin" and scen["shadow_of"] == "run"
    assert json.loads((shadow / "status.json").read_text())["state"] == "finished"
    twin = pd.read_parquet(shadow / "traces.parquet")
    power = twin[(twin.entity == "CS001/1") & (twin.quantity == "power_kw")]
    assert power.value.max() > 5.0  # the shadow's vehicle charged
    # residuals in the field's traces, small: same controllers, same vehicles
    field = pd.read_parquet(out / "traces.parquet")
    res = field[field.quantity == "power_kw_residual"]
    assert set(res.entity) == {"CS001/1", "CS002/1"}
    # the shadow settles each step, the field's meter values arrive up to a step later:
    # a change of power shows as a spike of a step or two, which the persistence window
    # absorbs (no alarm below); most of the time both sides agree
    for _, per_evse in res.groupby("entity"):
        assert per_evse.value.abs().median() < 0.5
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["shadow"]["divergences"] == 0
    assert kpis["shadow"]["residuals"]["power_kw"]["mean_abs"] < 1.0
    events = pd.read_parquet(out / "events.parquet")
    assert "shadow.divergence" not in set(events.kind)


async def test_real_vehicle_unlike_the_model_raises_a_divergence_alarm(
        tmp_path: Path) -> None:
    """A physical charger (the emulator as its own process): the shadow assumes a 22 kW
    vehicle, the real one takes 3.7 kW; the residual persists and the alarm fires."""
    bench = _bench(
        tmp_path,
        stations=[{"id": "REAL01", "meter_interval_s": 1}, {"id": "CS001", "meter_interval_s": 1}],
        emulated_stations={"mode": "in_process", "stations": ["CS001"],
                           "vehicles": [{"evse": "CS001/1", "plug_in_s": 0}]},
        shadow={"window_s": 2.0, "vehicle": {"ac_max_power_kw": 22}},
    )
    out = tmp_path / "run"
    import asyncio
    import sys

    from hil.session import run_bench as go

    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(go(bench, out=out, duration_s=9.0, stop=stop,
                                  on_ready=lambda rt: ready.set_result(rt.port or 0)))
    port = await asyncio.wait_for(ready, 10)
    plugs = [{"evse": "REAL01/1", "plug_in_s": 0, "ac_max_power_kw": 3.7, "ac_phases": 1}]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil.station", "--url", f"ws://127.0.0.1:{port}",
        "--station", json.dumps({"id": "REAL01", "meter_interval_s": 1}),
        "--plugs", json.dumps(plugs), "--step-s", "0.5",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await task
    finally:
        proc.terminate()
        await proc.wait()
    events = pd.read_parquet(out / "events.parquet")
    alarms = events[events.kind == "shadow.divergence"].payload.map(json.loads)
    assert any(a["entity"] == "REAL01/1" and a["quantity"] == "power_kw" for a in alarms)
    real = next(a for a in alarms if a["entity"] == "REAL01/1")
    assert real["field"] < real["twin"] - 1.5 and real["duration_s"] >= 2.0
    # the emulated station's vehicle is known exactly: no alarm on it
    assert not any(a["entity"] == "CS001/1" for a in alarms)
    # the alarm is in the shadow's run folder too and is drawn on the dashboard
    twin_events = pd.read_parquet(shadow_run_dir(out) / "events.parquet")
    assert "shadow.divergence" in set(twin_events.kind)
    assert is_marker_kind("shadow.divergence")
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["shadow"]["divergences"] >= 1


def test_bench_without_shadow_writes_no_shadow_folder(tmp_path: Path) -> None:
    import asyncio

    out = tmp_path / "run"
    asyncio.run(run_bench(_bench(tmp_path, shadow={"enabled": False}), out=out,
                          duration_s=1.5))
    assert not shadow_run_dir(out).exists()
    assert "shadow" not in json.loads((out / "kpis.json").read_text())


# --------------------------------------------------------------- divergence monitor
def test_alarm_after_window_once_then_converged() -> None:
    mon = DivergenceMonitor({"power_kw": 1.0}, window_s=10)
    out = [mon.update(T0 + timedelta(seconds=s), "CS/1", "power_kw", 5.0, 2.0)
           for s in range(0, 16, 5)]
    kinds = [a.kind if a else None for a in out]
    assert kinds == [None, None, "shadow.divergence", None]
    assert mon.active == [("CS/1", "power_kw")]
    back = mon.update(T0 + timedelta(seconds=20), "CS/1", "power_kw", 2.5, 2.0)
    assert back is not None and back.kind == "shadow.converged" and not mon.active
    # an unmonitored quantity or a missing side never alarms
    assert mon.update(T0, "CS/1", "energy_kwh", 9.0, 0.0) is None
    assert mon.update(T0, "CS/1", "power_kw", None, 0.0) is None


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=60),
       st.floats(0, 3), st.integers(0, 10))
def test_alarm_iff_residual_persists_beyond_window(
        residuals: list[float], tol: float, window_steps: int) -> None:
    """An alarm is raised exactly when |residual| > tol for window_steps + 1 steps in a
    row (1 s steps), at most once per stretch; converged only after an alarm."""
    mon = DivergenceMonitor({"power_kw": tol}, window_s=window_steps)
    run = 0
    alarmed = False
    for k, r in enumerate(residuals):
        a = mon.update(T0 + timedelta(seconds=k), "e", "power_kw", r, 0.0)
        if abs(r) > tol:
            run += 1
            expect = "shadow.divergence" if run == window_steps + 1 else None
            if expect:
                alarmed = True
        else:
            expect = "shadow.converged" if alarmed else None
            run, alarmed = 0, False
        assert (a.kind if a else None) == expect
