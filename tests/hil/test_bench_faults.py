"""Station faults in bench files: validation, and a link drop on the wall clock.

Real sockets, the real CSMS and emulator; offsets count from the bench start.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from controllers.csms import Csms, CsmsConfig, SiteConfig
from hil.bench_file import parse_bench
from hil.session import run_bench
from hil.station import run_station, station_faults
from twin.scenario import ScenarioError


def _bench(mode: str = "in_process", faults: list[dict] | None = None) -> dict:
    link_drop = [{"kind": "link_drop", "start_s": 1.5, "end_s": 3.0}]
    return {
        "name": "bench-faults",
        "site": {"grid_limit_kw": 30, "base_load": {"power_kw": 2}},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [
            {"id": "CS001", "meter_interval_s": 1,
             "faults": link_drop if faults is None else faults},
            {"id": "CS002", "meter_interval_s": 1},
        ],
        "emulated_stations": {
            "mode": mode,
            "stations": ["CS001", "CS002"],
            "vehicles": [{"evse": f"CS00{i}/1", "plug_in_s": 0} for i in (1, 2)],
        },
        "run": {"step_s": 0.5},
    }


def test_faults_on_a_physical_station_are_rejected() -> None:
    doc = _bench()
    doc["emulated_stations"]["stations"] = ["CS002"]
    doc["emulated_stations"]["vehicles"] = [{"evse": "CS002/1", "plug_in_s": 0}]
    with pytest.raises(ScenarioError, match="CS001: faults are injected into emulated"):
        parse_bench(doc)


def test_bench_fault_windows_are_validated_and_converted() -> None:
    with pytest.raises(ScenarioError, match="end_s must be after start_s"):
        parse_bench(_bench(faults=[{"kind": "link_drop", "start_s": 5, "end_s": 5}]))
    with pytest.raises(ScenarioError, match="clock_skew needs skew_s"):
        parse_bench(_bench(faults=[{"kind": "clock_skew", "start_s": 0, "end_s": 5}]))
    bench = parse_bench(_bench(faults=[
        {"kind": "overshoot", "start_s": 10, "end_s": 70, "factor": 1.2}]))
    t0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
    faults = station_faults(bench.station("CS001"), t0)
    assert faults is not None
    (f,) = faults.faults
    assert (f.kind, f.start, f.end, f.factor) == (
        "overshoot", t0 + timedelta(seconds=10), t0 + timedelta(seconds=70), 1.2)
    assert station_faults(bench.station("CS002"), t0) is None


async def test_link_drop_on_the_bench_disconnects_and_reconnects(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(_bench()), encoding="utf-8")
    out = tmp_path / "run"
    await run_bench(path, out=out, duration_s=5.0)
    events = pd.read_parquet(out / "events.parquet")
    started = events[events.kind == "bench.started"].time.iloc[0]
    csms = events[events.source == "csms"]
    mine = [(t, k) for t, k, p in csms[["time", "kind", "payload"]].itertuples(index=False)
            if json.loads(p).get("station") == "CS001"
            and k in ("station.connected", "station.disconnected")]
    kinds = [k for _, k in mine]
    assert kinds[:3] == ["station.connected", "station.disconnected", "station.connected"]
    drop_s = (mine[1][0] - started).total_seconds()
    back_s = (mine[2][0] - started).total_seconds()
    assert 1.5 <= drop_s < 2.5
    assert 3.0 <= back_s
    cs1 = events[events.source == "CS001"]
    assert "link_drop" in {json.loads(p).get("kind")
                           for p in cs1[cs1.kind == "fault.started"].payload}


async def test_process_station_takes_its_faults_from_the_bench_start() -> None:
    """What ``python -m hil.station --bench-start ...`` runs, against the real CSMS."""
    events: list[tuple[datetime, str, dict]] = []
    csms = Csms(CsmsConfig(site=SiteConfig(grid_limit_kw=30)),
                on_event=lambda t, s, k, p: events.append((t, k, p)))
    csms.set_now(datetime.now(UTC))
    port = await csms.start("127.0.0.1", 0)
    bench = parse_bench(_bench("process"))
    start = datetime.now(UTC) - timedelta(seconds=1.0)  # the bench started a second ago
    stop = asyncio.Event()

    async def clock() -> None:  # the CSMS's injected time, as the bench gives it
        while not stop.is_set():
            csms.set_now(datetime.now(UTC))
            await asyncio.sleep(0.05)

    ticker = asyncio.create_task(clock())
    try:
        await run_station(f"ws://127.0.0.1:{port}", bench.station("CS001"), [], step_s=0.25,
                          duration_s=4.0, stop=stop, bench_start=start)
    finally:
        stop.set()
        await ticker
        await csms.stop()
    seen = [(t, k) for t, k, p in events if k in ("station.connected", "station.disconnected")]
    assert [k for _, k in seen][:3] == [
        "station.connected", "station.disconnected", "station.connected"]
    assert 1.2 <= (seen[1][0] - start).total_seconds() < 2.5  # opens at 1.5 s (CSMS clock lags)
    assert (seen[2][0] - start).total_seconds() >= 3.0
