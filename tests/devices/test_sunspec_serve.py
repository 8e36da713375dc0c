"""The standalone entry point: one device served on a (here: fake) wall clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pymodbus.client import AsyncModbusTcpClient

from devices.sunspec.serve import make_device, serve


async def test_serve_meter_advances_on_the_clock() -> None:
    t = [datetime(2026, 6, 21, 12, tzinfo=UTC)]

    def clock() -> datetime:
        t[0] += timedelta(hours=1)
        return t[0]

    ports: list[int] = []
    stop = asyncio.Event()
    cfg = {"unit": 3, "step_s": 0.01, "power_w": [1000, 1000, 1000]}
    task = asyncio.create_task(serve("meter", 0, cfg, clock=clock, started=ports.append, stop=stop))
    for _ in range(200):
        if ports:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    client = AsyncModbusTcpClient("127.0.0.1", port=ports[0])
    await client.connect()
    try:
        rr = await client.read_holding_registers(40000, count=4, device_id=3)
        assert rr.registers == [0x5375, 0x6E53, 1, 66]
    finally:
        client.close()
    stop.set()
    await asyncio.wait_for(task, 5)


def test_make_device_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown SunSpec device kind"):
        make_device("toaster", datetime(2026, 1, 1, tzinfo=UTC))
