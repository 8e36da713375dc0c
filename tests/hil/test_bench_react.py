"""The bench's fast path: a meter change between control steps gets a control step at once.

The site meter is physical for the bench: a SunSpec meter served over Modbus TCP by the
test, whose reading the test changes; the control step is 5 s, the meter is polled every
20 ms.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from devices.sunspec.devices import SiteMeterDevice
from hil.bench_file import parse_bench
from hil.runtime import BenchRuntime
from hil.session import run_bench
from twin.scenario import ScenarioError


def _doc(meter_port: int, react: dict | None) -> dict:
    run: dict = {"step_s": 5.0}
    if react is not None:
        run["react"] = react
    return {
        "name": "react-test",
        "site": {"grid_limit_kw": 40},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [{"id": f"CS00{i}", "meter_interval_s": 1} for i in (1, 2)],
        "emulated_stations": {"stations": ["CS001", "CS002"],
                              "vehicles": [{"evse": "CS001/1"}, {"evse": "CS002/1"}]},
        "site_devices": {"meter": {"binding": "physical", "host": "127.0.0.1",
                                   "port": meter_port, "unit": 1, "base": 40000}},
        "shadow": {"enabled": False},
        "run": run,
    }


async def _profiles_after_jump(tmp_path: Path, react: dict | None) -> tuple[float, pd.DataFrame]:
    meter = SiteMeterDevice(datetime.now(UTC))
    port = await meter.start("127.0.0.1", 0)

    async def set_kw(kw: float) -> None:
        meter.set_power_w(kw * 1000 / 3, kw * 1000 / 3, kw * 1000 / 3)
        await meter.advance(datetime.now(UTC))

    await set_kw(5.0)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(_doc(port, react)), encoding="utf-8")
    out = tmp_path / "run"
    ready: asyncio.Future[BenchRuntime] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(run_bench(path, out=out, stop=stop,
                                         on_ready=lambda rt: ready.set_result(rt)))
    await asyncio.wait_for(ready, 10)
    await asyncio.sleep(6.0)  # one scheduled step: both EVSEs charging under the limit
    t_jump = time.time()
    await set_kw(30.0)  # the building load jumps: 10 kW left for two EVSEs
    await asyncio.sleep(2.0)  # well before the next scheduled step (at 10 s)
    stop.set()
    await task
    await meter.close()
    events = pd.read_parquet(out / "events.parquet")
    return t_jump, events


async def test_meter_jump_gets_new_profiles_before_the_next_step(tmp_path: Path) -> None:
    t_jump, events = await _profiles_after_jump(
        tmp_path, {"meter_poll_s": 0.02, "threshold_kw": 2.0})
    reacts = events[events.kind == "bench.react"]
    assert len(reacts) >= 1
    assert json.loads(reacts.payload.iloc[0])["import_kw"] == pytest.approx(30.0, abs=0.5)
    after = events[(events.kind == "profile.installed")
                   & (events.time > pd.Timestamp(t_jump, unit="s", tz="UTC"))]
    assert set(after.source) == {"CS001", "CS002"}  # both stations got a new limit
    first = (after.time.min() - pd.Timestamp(t_jump, unit="s", tz="UTC")).total_seconds()
    assert first < 0.5


async def test_without_react_the_jump_waits_for_the_next_step(tmp_path: Path) -> None:
    t_jump, events = await _profiles_after_jump(tmp_path, None)
    assert "bench.react" not in set(events.kind)
    after = events[(events.kind == "profile.installed")
                   & (events.time > pd.Timestamp(t_jump, unit="s", tz="UTC"))]
    assert after.empty  # next step at 10 s, the bench stopped at ~8 s


def test_react_needs_a_meter() -> None:
    doc = _doc(502, {"meter_poll_s": 0.05})
    del doc["site_devices"]
    with pytest.raises(ScenarioError, match="react"):
        parse_bench(doc)
