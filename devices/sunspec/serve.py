"""Run one SunSpec device standalone on the wall clock (for a bench or an outside tool).

This entry point is the one place in :mod:`devices` that reads the wall clock and sleeps:
it plays the runtime's part, calling ``advance(now)`` every ``step_s`` seconds of real time
with ``now = datetime.now(UTC)``. Everything it drives stays pure and time-injected.

Config keys (all optional): ``unit`` (Modbus device id, 1), ``host`` ("127.0.0.1"),
``step_s`` (1.0), and the device's own keys (see :mod:`devices.sunspec.devices`); for the
site meter, ``power_w`` ([l1, l2, l3], constant).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from devices.sunspec.devices import (
    BessDevice,
    BuildingLoadDevice,
    PvInverterDevice,
    SiteMeterDevice,
    SunSpecDevice,
)

__all__ = ["KINDS", "make_device", "serve"]

KINDS: dict[str, Callable[..., SunSpecDevice]] = {
    "meter": SiteMeterDevice,
    "pv": PvInverterDevice,
    "bess": BessDevice,
    "building": BuildingLoadDevice,
}


def make_device(
    kind: str, start: datetime, config: Mapping[str, Any] | None = None
) -> SunSpecDevice:
    """Build a device of ``kind`` (``meter``, ``pv``, ``bess``, ``building``)."""
    cfg = dict(config or {})
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown SunSpec device kind {kind!r}; one of {sorted(KINDS)}") from None
    unit = int(cfg.pop("unit", 1))
    device = cls(start, unit=unit, config=cfg)
    if isinstance(device, SiteMeterDevice) and "power_w" in cfg:
        l1, l2, l3 = (float(x) for x in cfg["power_w"])
        device.set_power_w(l1, l2, l3)
    return device


async def serve(
    kind: str,
    port: int,
    config: dict[str, Any] | None = None,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve one device on ``port`` (0: a free one) until cancelled or ``stop`` is set.

    Args:
        kind: ``meter``, ``pv``, ``bess`` or ``building``.
        port: TCP port.
        config: see the module doc.
        clock: the wall clock (replaceable in tests).
        started: called with the bound port once serving.
        stop: set it to end serving.
    """
    cfg = dict(config or {})
    host = str(cfg.pop("host", "127.0.0.1"))
    step_s = float(cfg.pop("step_s", 1.0))
    device = make_device(kind, clock(), cfg)
    bound = await device.start(host, port)
    if started is not None:
        started(bound)
    stop = stop or asyncio.Event()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), step_s)
            except TimeoutError:
                pass
            await device.advance(clock())
            await device.drain()
    finally:
        await device.close()
