"""`migrid device check`: emulated devices served on real sockets, bound as physical."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from typer.testing import CliRunner

from devices.sunspec.serve import make_device
from devices.transformer.server import NAMESPACE_URI, TransformerServer, TransformerSpec
from twin.cli import app
from twin.device_check import DeviceCheck, check_devices, load_site_devices
from twin.scenario import ScenarioError

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "bench" / "real_meter_inverter.yaml"
MIGRID = [sys.executable, "-c", "from twin.cli import app; app()"]
NODE_IDS = {
    "limit_kw": f"nsu={NAMESPACE_URI};s=Transformer.SiteImportLimit",
    "loading_pct": f"nsu={NAMESPACE_URI};s=YPTR1.Loading",
    "hot_spot_c": f"nsu={NAMESPACE_URI};s=YPTR1.HotSpotTemp",
}

# one set of emulators for the module (an OPC UA server takes seconds to start and stop)
module_loop = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Bench:
    meter_port: int
    pv_port: int
    transformer_url: str

    def site_devices(self, **override: Any) -> dict[str, Any]:
        devices: dict[str, Any] = {
            "meter": {"binding": "physical", "host": "127.0.0.1", "port": self.meter_port},
            "pv": {
                "binding": "physical",
                "host": "127.0.0.1",
                "port": self.pv_port,
                "base": 40000,
                "timeout_s": 0.5,
            },
            "bess": {"binding": "emulated"},
            "transformer": {
                "binding": "physical",
                "endpoint": self.transformer_url,
                "node_ids": NODE_IDS,
            },
        }
        devices.update(override)
        return devices

    def write(self, tmp_path: Path, **override: Any) -> Path:
        path = tmp_path / "bench.yaml"
        doc = {"name": "test bench", "site_devices": self.site_devices(**override)}
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bench() -> AsyncIterator[Bench]:
    meter = make_device("meter", T0, {"power_w": [1000, 2000, 3000]})
    pv = make_device("pv", T0, {})
    transformer = TransformerServer(TransformerSpec(site_import_limit_kw=321.0))
    meter_port = await meter.start("127.0.0.1", 0)
    pv_port = await pv.start("127.0.0.1", 0)
    url = await transformer.start()
    await meter.advance(T0)
    await pv.advance(T0)
    await transformer.advance(T0, (100.0, 100.0, 100.0), 20.0)
    try:
        yield Bench(meter_port, pv_port, url)
    finally:
        await meter.close()
        await pv.close()
        await transformer.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _by_name(checks: list[DeviceCheck]) -> dict[str, DeviceCheck]:
    return {c.name: c for c in checks}


async def _migrid(*args: str) -> tuple[int, str]:
    """Run the CLI in a subprocess without blocking the loop that serves the emulators."""
    proc = await asyncio.create_subprocess_exec(
        *MIGRID,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "250"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@module_loop
async def test_check_reads_meter_pv_and_transformer(bench: Bench, tmp_path: Path) -> None:
    devices = load_site_devices(bench.write(tmp_path))
    checks = _by_name(await check_devices(devices, T0))
    assert list(checks) == ["meter", "pv", "bess", "transformer"]

    meter = checks["meter"]
    assert meter.ok and meter.error is None and meter.kind == "sunspec"
    assert meter.models == [1, 203]
    assert meter.address == f"127.0.0.1:{bench.meter_port} unit 1 base 40000"
    assert meter.values["power_kw"] == pytest.approx(6.0)
    assert meter.values["power_kw_l1"] == pytest.approx(1.0)
    assert meter.values["power_kw_l3"] == pytest.approx(3.0)
    assert meter.values["frequency_hz"] == pytest.approx(50.0)
    assert "energy_import_kwh" in meter.values and "energy_export_kwh" in meter.values

    pv = checks["pv"]
    assert pv.ok and pv.models == [1, 701, 702, 704]
    assert isinstance(pv.values["power_kw"], float) and pv.values["power_kw"] >= 0
    assert pv.values["power_limit_pct"] == pytest.approx(100.0)

    bess = checks["bess"]
    assert bess.skipped and bess.ok and bess.address == "emulated" and bess.error is None

    tr = checks["transformer"]
    assert tr.ok and tr.kind == "opcua" and tr.address == bench.transformer_url
    assert tr.values["limit_kw"] == pytest.approx(321.0)
    assert isinstance(tr.values["loading_pct"], float) and tr.values["loading_pct"] > 0
    assert isinstance(tr.values["hot_spot_c"], float)


@module_loop
async def test_meter_mounted_the_other_way_round(bench: Bench, tmp_path: Path) -> None:
    path = bench.write(
        tmp_path,
        meter={
            "binding": "physical",
            "host": "127.0.0.1",
            "port": bench.meter_port,
            "import_positive": False,
        },
    )
    checks = _by_name(await check_devices(load_site_devices(path), T0))
    assert checks["meter"].values["power_kw"] == pytest.approx(-6.0)
    assert checks["meter"].values["power_kw_l2"] == pytest.approx(-2.0)


@module_loop
async def test_cli_prints_the_table_and_exits_0(bench: Bench, tmp_path: Path) -> None:
    code, out = await _migrid("device", "check", str(bench.write(tmp_path)))
    assert code == 0, out
    assert "power_kw=6" in out
    assert "1 203" in out and "1 701 702 704" in out
    assert "limit_kw=321" in out
    assert "skipped (emulated)" in out
    assert "Traceback" not in out


@module_loop
async def test_closed_port_is_unreachable_others_still_read(bench: Bench, tmp_path: Path) -> None:
    port = _closed_port()
    path = bench.write(
        tmp_path, meter={"binding": "physical", "host": "127.0.0.1", "port": port, "timeout_s": 0.5}
    )
    checks = _by_name(await check_devices(load_site_devices(path), T0))
    meter = checks["meter"]
    assert not meter.ok and meter.models == [] and meter.values == {}
    assert meter.error is not None and meter.error.startswith("unreachable")
    assert checks["pv"].ok and checks["pv"].models == [1, 701, 702, 704]
    assert checks["transformer"].ok

    code, out = await _migrid("device", "check", str(path))
    assert code == 1, out
    assert "unreachable" in out and f"127.0.0.1:{port}" in out
    assert "1 701 702 704" in out


def test_example_bench_file_validates() -> None:
    devices = load_site_devices(EXAMPLE)
    assert devices.meter.binding == "physical" and devices.meter.host == "192.0.2.10"
    assert devices.meter.port == 502 and devices.meter.base == 40000
    assert devices.pv is not None and devices.pv.binding == "physical"
    assert devices.pv.host == "192.0.2.11"
    assert devices.bess is not None and devices.bess.binding == "emulated"
    assert devices.transformer is not None and devices.transformer.binding == "emulated"


def test_bad_file_is_rejected_with_the_field_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("site_devices:\n  meter:\n    binding: physical\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"site_devices\.meter: .*needs host and port"):
        load_site_devices(path)

    result = CliRunner().invoke(app, ["device", "check", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert "site_devices.meter" in result.output and "host and port" in result.output
    assert "Traceback" not in result.output


def test_file_without_site_devices_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("name: nothing here\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="site_devices: missing"):
        load_site_devices(path)
    result = CliRunner().invoke(
        app, ["device", "check", str(tmp_path / "nope.yaml")], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 2 and "cannot read file" in result.output


@module_loop
async def test_all_checks_emulated_devices_that_have_an_address(
    bench: Bench, tmp_path: Path
) -> None:
    meter = {"binding": "emulated", "host": "127.0.0.1", "port": bench.meter_port}
    devices = load_site_devices(bench.write(tmp_path, meter=meter))
    only_physical = _by_name(await check_devices(devices, T0))
    assert only_physical["meter"].skipped and only_physical["meter"].values == {}
    every = _by_name(await check_devices(devices, T0, only_physical=False))
    assert every["meter"].ok and every["meter"].values["power_kw"] == pytest.approx(6.0)
    assert every["bess"].skipped  # emulated without an address: nothing to contact
