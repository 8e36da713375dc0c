"""SunSpec devices over real Modbus TCP sockets: pysunspec2's client, mbpoll, pymodbus."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from devices.sunspec.devices import (
    BessDevice,
    BuildingLoadDevice,
    PvInverterDevice,
    SiteMeterDevice,
    SunSpecDevice,
)
from devices.sunspec.image import IllegalValueError

NOON = datetime(2026, 6, 21, 17, tzinfo=UTC)  # 12:00 local standard time at the TMY site


def _scan(port: int, unit: int) -> dict[int, dict[str, Any]]:
    """Scan with pysunspec2 and return the computed values of each model."""
    d = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    try:
        d.scan()
        assert d.base_addr == 40000
        out: dict[int, dict[str, Any]] = {}
        for mid, models in d.models.items():
            if isinstance(mid, int):
                models[0].read()
                out[mid] = models[0].get_dict(computed=True)
        return out
    finally:
        d.close()


def _write(port: int, unit: int, model: int, values: dict[str, Any]) -> None:
    d = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port, timeout=5)
    try:
        d.scan()
        m = d.models[model][0]
        for name, value in values.items():
            getattr(m, name).cvalue = value
        m.write()
    finally:
        d.close()


def _close_to(device: SunSpecDevice, key: str, got: Any, want: float) -> None:
    sf = device.image.scale_factor(key)
    assert got is not None, key
    assert abs(got - want) <= 10.0**sf / 2 + 1e-9, (key, got, want)


@pytest.fixture
async def served() -> AsyncIterator[list[SunSpecDevice]]:
    started: list[SunSpecDevice] = []
    yield started
    for d in started:
        await d.close()


async def test_meter_models_and_values_through_pysunspec2(served: list[SunSpecDevice]) -> None:
    meter = SiteMeterDevice(NOON, unit=1, config={"max_power_w": 500_000})
    served.append(meter)
    port = await meter.start()
    meter.set_power_w(10_000, 12_345, -3_000)
    await meter.advance(NOON + timedelta(hours=1))
    models = await asyncio.to_thread(_scan, port, 1)
    assert sorted(models) == [1, 203]
    assert models[1]["Mn"] == "MiGrid"
    m = models[203]
    _close_to(meter, "203.WphB", m["WphB"], 12_345)
    _close_to(meter, "203.WphC", m["WphC"], -3_000)
    _close_to(meter, "203.W", m["W"], 19_345)
    _close_to(meter, "203.AphA", m["AphA"], 10_000 / 230)
    assert m["TotWhImp"] == 22_345
    assert m["TotWhExp"] == 3_000
    assert m["Hz"] == pytest.approx(50.0)


async def test_bess_models_setpoint_and_soc(served: list[SunSpecDevice]) -> None:
    cfg = {"capacity_kwh": 200, "max_charge_kw": 100, "max_discharge_kw": 100, "soc": 0.5}
    bess = BessDevice(NOON, unit=7, config=cfg)
    served.append(bess)
    port = await bess.start()
    models = await asyncio.to_thread(_scan, port, 7)
    assert sorted(models) == [1, 701, 702, 704, 713, 802]
    assert models[802]["SoC"] == pytest.approx(50.0)
    assert models[713]["WHRtg"] == pytest.approx(200_000)
    assert models[802]["Typ"] == 4  # LITHIUM_ION
    # charge at 50 kW for one hour: negative set-point
    await asyncio.to_thread(_write, port, 7, 704, {"WSetEna": 1, "WSet": -50_000})
    await bess.drain()
    await bess.advance(NOON + timedelta(hours=1))
    models = await asyncio.to_thread(_scan, port, 7)
    soc = 50 + 50 * 0.95 / 200 * 100
    assert models[802]["SoC"] == pytest.approx(soc, abs=0.05)
    assert models[713]["SoC"] == pytest.approx(soc, abs=0.05)
    _close_to(bess, "701.W", models[701]["W"], -50_000)
    _close_to(bess, "802.W", models[802]["W"], -50_000)
    assert models[701]["TotWhAbs"] == 50_000


async def test_pv_curtailed_by_wmaxlimpct_next_interval(served: list[SunSpecDevice]) -> None:
    pv = PvInverterDevice(NOON, unit=2, config={"rated_kw": 100})
    served.append(pv)
    port = await pv.start()
    await pv.advance(NOON + timedelta(minutes=15))
    models = await asyncio.to_thread(_scan, port, 2)
    assert sorted(models) == [1, 701, 702, 704]
    free_w = models[701]["W"]
    assert free_w > 30_000
    _close_to(pv, "701.W", free_w, pv.pv.power_kw * 1000)
    assert models[702]["WMaxRtg"] == pytest.approx(100_000)
    await asyncio.to_thread(_write, port, 2, 704, {"WMaxLimPct": 20})
    await pv.advance(NOON + timedelta(minutes=30))
    models = await asyncio.to_thread(_scan, port, 2)
    assert models[704]["WMaxLimPct"] == pytest.approx(20)
    assert models[701]["W"] <= 20_000 + 10.0 ** pv.image.scale_factor("701.W")
    assert models[701]["InvSt"] == 4  # THROTTLED


async def test_building_sub_meter(served: list[SunSpecDevice]) -> None:
    b = BuildingLoadDevice(NOON, unit=4, config={"annual_kwh": 100_000})
    served.append(b)
    port = await b.start()
    await b.advance(NOON + timedelta(hours=1))
    models = await asyncio.to_thread(_scan, port, 4)
    _close_to(b, "203.W", models[203]["W"], b.load.power_kw * 1000)
    assert models[203]["TotWhImp"] == int(b.load.energy_kwh * 1000)


async def _mbpoll(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    return proc.returncode or 0, out.decode()


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="Debian mbpoll not installed")
async def test_mbpoll_reads_and_errors(served: list[SunSpecDevice]) -> None:
    pv = PvInverterDevice(NOON, unit=5, config={"rated_kw": 100})
    served.append(pv)
    port = await pv.start()
    base = ["-m", "tcp", "-p", str(port), "-a", "5", "-0", "-1", "-t", "4:hex"]
    rc, out = await _mbpoll(*base, "-r", "40000", "-c", "4", "127.0.0.1")
    assert rc == 0, out
    assert "[40000]: \t0x5375" in out and "[40001]: \t0x6E53" in out
    assert "[40002]: \t0x0001" in out
    rc, out = await _mbpoll(*base, "-r", str(pv.image.end), "-c", "2", "127.0.0.1")
    assert rc == 1 and "Illegal data address" in out, out
    rc, out = await _mbpoll(*base, "-r", "39990", "-c", "2", "127.0.0.1")
    assert rc == 1 and "Illegal data address" in out, out
    addr = pv.image.points["704.WMaxLimPct"].address
    rc, out = await _mbpoll(*base[:-2], "-r", str(addr), "127.0.0.1", "5000")  # 500 %
    assert rc == 1 and "Illegal data value" in out, out
    rc, out = await _mbpoll(*base[:-2], "-r", str(addr), "127.0.0.1", "500")  # 50 %
    assert rc == 0, out
    assert pv.pv.limit_pct == pytest.approx(50)
    rc, out = await _mbpoll(*base, "-r", "40000", "-c", "2", "127.0.0.1")
    assert rc == 0, out


async def test_pymodbus_exceptions_and_server_survives(served: list[SunSpecDevice]) -> None:
    bess = BessDevice(NOON, unit=9)
    served.append(bess)
    port = await bess.start()
    img = bess.image
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        wset = img.points["704.WSet"].address
        ena = img.points["704.WSetEna"].address
        # read-only point: illegal address
        rr = await client.write_register(img.points["802.SoC"].address, 10, device_id=9)
        assert rr.isError() and rr.exception_code == 2
        # writable in the model but not implemented by this device: illegal address
        rr = await client.write_register(img.points["704.VarSetEna"].address, 1, device_id=9)
        assert rr.isError() and rr.exception_code == 2
        # half of a 32-bit point: illegal address
        rr = await client.write_register(wset + 1, 0, device_id=9)
        assert rr.isError() and rr.exception_code == 2
        # not a symbol of the enum: illegal value
        rr = await client.write_register(ena, 7, device_id=9)
        assert rr.isError() and rr.exception_code == 3
        # beyond the discharge limit (100 kW): illegal value (FC16)
        rr = await client.write_registers(wset, [0x0002, 0x0000], device_id=9)  # 131072 W
        assert rr.isError() and rr.exception_code == 3
        # outside the image: illegal address
        rr = await client.read_holding_registers(img.end, count=1, device_id=9)
        assert rr.isError() and rr.exception_code == 2
        # a good write takes effect; reads still work
        rr = await client.write_registers(wset, [0xFFFF, 0x3CB0], device_id=9)  # -50000 W
        assert not rr.isError()
        rr = await client.write_register(ena, 1, device_id=9)
        assert not rr.isError()
        assert bess.bess.setpoint_kw == pytest.approx(-50)
        rr = await client.read_holding_registers(40000, count=2, device_id=9)
        assert rr.registers == [0x5375, 0x6E53]
    finally:
        client.close()


async def test_bad_update_leaves_image_untouched_and_garbage_does_not_kill(
    served: list[SunSpecDevice],
) -> None:
    meter = SiteMeterDevice(NOON, unit=1, config={"max_power_w": 100_000})
    served.append(meter)
    port = await meter.start()
    before = list(meter.image.registers)
    with pytest.raises(IllegalValueError, match=r"203\.W="):
        await meter.server.update({"203.Hz": 49.9, "203.W": 10_000_000})
    assert meter.image.registers == before
    assert not meter.busy
    await meter.drain()
    # garbage on the wire, then a fresh client still gets answers
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x00\x01\x00\x00\x00\xff\x01\x03garbage" * 3)
    await writer.drain()
    writer.close()
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        rr = await client.read_holding_registers(40000, count=2, device_id=1)
        assert rr.registers == [0x5375, 0x6E53]
        rr = await client.read_holding_registers(40000, count=2, device_id=99)
        assert rr.isError()
        rr = await client.read_holding_registers(40002, count=2, device_id=1)
        assert rr.registers == [1, 66]
    finally:
        client.close()
