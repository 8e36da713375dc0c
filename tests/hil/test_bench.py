"""The bench runtime on the wall clock: real sockets, no mocks, a few seconds each."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hil.bench_file import load_bench
from hil.runtime import BenchRuntime, BenchStatus
from hil.session import run_bench
from twin.cli import app
from twin.recorder import parts_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "scenarios" / "bench" / "depot_bench.yaml"
MIGRID = Path(sys.executable).with_name("migrid")


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _emulated_bench(step_s: float = 0.5) -> dict:
    return {
        "name": "bench-test",
        "site": {"grid_limit_kw": 30, "base_load": {"power_kw": 2}},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [{"id": f"CS00{i}", "meter_interval_s": 1} for i in (1, 2, 3)],
        "emulated_stations": {
            "mode": "in_process",
            "stations": ["CS001", "CS002", "CS003"],
            "vehicles": [{"evse": f"CS00{i}/1", "plug_in_s": 0} for i in (1, 2, 3)],
        },
        "site_devices": {"meter": {"binding": "emulated"},
                         "building": {"annual_kwh": 30000}},
        "run": {"step_s": step_s},
    }


async def test_in_process_bench_writes_run_folder_live(tmp_path: Path) -> None:
    path = _write(tmp_path, _emulated_bench())
    out = tmp_path / "run"
    seen: list[tuple[float, bool, str]] = []

    def on_status(s: BenchStatus) -> None:
        parts = parts_dir(out / "traces.parquet")
        n_parts = len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
        state = json.loads((out / "status.json").read_text())["state"]
        seen.append((s.elapsed_s, n_parts > 0, state))

    result = await run_bench(path, out=out, duration_s=4.0, on_status=on_status)
    assert result.run_dir == out and result.steps >= 6
    # while running: status running and trace parts readable after the first flush
    assert all(state == "running" for _, _, state in seen)
    assert any(has_parts for t, has_parts, _ in seen if t >= 2.0)
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    assert not parts_dir(out / "traces.parquet").exists()
    assert yaml.safe_load((out / "scenario.yaml").read_text())["kind"] == "field"
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["kind"] == "field" and kpis["kpis"]["control_steps"]["value"] >= 6
    traces = pd.read_parquet(out / "traces.parquet")
    events = pd.read_parquet(out / "events.parquet")
    quantities = set(zip(traces.entity, traces.quantity, strict=True))
    assert {("site", "import_kw"), ("meter", "import_kw"), ("CS001/1", "power_kw"),
            ("CS001/1", "setpoint_a"), ("building", "power_kw")} <= quantities
    kinds = set(events.kind)
    assert {"station.connected", "transaction.started", "dlm.setpoint",
            "profile.installed", "bench.stopped"} <= kinds
    # 3 x 22 kW behind a 30 kW limit: the DLM sent charging profiles to every station
    setpoints = events[events.kind == "dlm.setpoint"].payload.map(json.loads)
    assert {p["station"] for p in setpoints} == {"CS001", "CS002", "CS003"}
    # the field's view of EV power comes from the CSMS's meter values
    ev = traces[(traces.entity == "site") & (traces.quantity == "ev_power_kw")]
    assert ev.value.max() > 0


async def test_physical_station_process_connects_and_gets_profile(tmp_path: Path) -> None:
    doc = {
        "name": "bench-physical",
        "site": {"grid_limit_kw": 10},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [{"id": "REAL-01", "kind": "ac_22kw"}],
        "run": {"step_s": 0.5},
    }
    path = _write(tmp_path, doc)
    out = tmp_path / "run"
    stop = asyncio.Event()
    ready: asyncio.Future[BenchRuntime] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_bench(path, out=out, stop=stop,
                                         on_ready=ready.set_result))
    runtime = await asyncio.wait_for(ready, 10)
    assert runtime.bench.physical_stations == ["REAL-01"]
    station = json.dumps({"id": "REAL-01", "kind": "ac_22kw", "meter_interval_s": 1})
    plugs = json.dumps([{"evse": "REAL-01/1", "plug_in_s": 0.5}])
    # the project's station emulator as a separate OS process, like a real charger
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil.station", "--url", f"ws://127.0.0.1:{runtime.port}",
        "--station", station, "--plugs", plugs, "--step-s", "0.5",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    got: list[dict] = []
    try:
        async def until_profile() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                got.append(json.loads(line))
                if got[-1]["kind"] == "profile.installed" and \
                        "TxProfile" in json.dumps(got[-1]["payload"]):
                    return
        await asyncio.wait_for(until_profile(), 15)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        stop.set()
        await task
    events = pd.read_parquet(out / "events.parquet")
    connected = events[events.kind == "station.connected"].payload.map(json.loads)
    assert [p["station"] for p in connected] == ["REAL-01"]
    assert "dlm.setpoint" in set(events.kind)
    assert "transaction.started" in {e["kind"] for e in got}


def test_migrid_bench_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    path = _write(tmp_path, _emulated_bench())
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [str(MIGRID), "bench", str(path), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = out / "status.json"
            if status.exists() and parts_dir(out / "traces.parquet").exists() and \
                    any(parts_dir(out / "traces.parquet").glob("part-*.parquet")):
                break
            time.sleep(0.2)
        assert json.loads((out / "status.json").read_text())["state"] == "running"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout
    assert "ws://127.0.0.1:" in stdout and "/CS001" in stdout
    assert "meter: emulated" in stdout
    assert f"run folder: {out}" in stdout
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    for name in ("traces.parquet", "events.parquet"):
        assert (out / name).exists() and not parts_dir(out / name).exists()
    assert "bench.stopped" in set(pd.read_parquet(out / "events.parquet").kind)
    assert (out / "kpis.json").exists()


def test_example_bench_file_validates() -> None:
    bench = load_bench(EXAMPLE)
    assert bench.physical_stations == ["BENCH-AC-01"]
    assert bench.site_devices is not None
    assert bench.site_devices.meter.binding == "physical"
    assert bench.site_devices.meter.host == "192.0.2.10"
    assert {n for n, d in bench.site_devices.named().items() if d.binding == "emulated"} == {
        "building", "pv", "bess", "transformer"}


@pytest.mark.parametrize(("patch", "path_text"), [
    ({"stations": [{"id": "CS001", "kind": "ac_99kw"}]}, "stations.0.kind"),
    ({"csms": {"port": 70000}}, "csms.port"),
    ({"emulated_stations": {"stations": ["NOPE"]}}, "unknown stations: NOPE"),
])
def test_bad_bench_file_exits_2_with_field_path(
    tmp_path: Path, patch: dict, path_text: str
) -> None:
    doc = {**_emulated_bench(), **patch}
    if "stations" in patch:
        doc["emulated_stations"] = {}
    path = _write(tmp_path, doc)
    result = CliRunner().invoke(app, ["bench", str(path), "--runs", str(tmp_path / "runs")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert path_text in result.output
    assert not (tmp_path / "runs").exists()


async def test_emulated_stations_as_separate_processes(tmp_path: Path) -> None:
    doc = _emulated_bench()
    doc["emulated_stations"]["mode"] = "process"
    out = tmp_path / "run"
    stop = asyncio.Event()
    seen: list[int] = []

    def on_status(s: BenchStatus) -> None:
        # processes start in ~1-5 s (more on a loaded machine): stop a few steps after
        # all three are connected and charging, or at the cap below
        if len(s.connected) == 3 and s.transactions == 3:
            seen.append(s.step)
            if len(seen) >= 4:
                stop.set()

    await run_bench(_write(tmp_path, doc), out=out, duration_s=45.0, stop=stop,
                    on_status=on_status)
    events = pd.read_parquet(out / "events.parquet")
    connected = events[events.kind == "station.connected"].payload.map(json.loads)
    assert sorted(p["station"] for p in connected) == ["CS001", "CS002", "CS003"]
    assert "dlm.setpoint" in set(events.kind)
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
