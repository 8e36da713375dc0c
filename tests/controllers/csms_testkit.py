"""Test kit for the CSMS tests: a CSMS on 127.0.0.1 port 0 and small test-side stations.

The test-side stations are written here with the ocpp library's ChargePoint (the real
station emulator lives in devices/ and is not used by controller tests).
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection, connect

from controllers.csms import Csms

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
V = 230.0


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def kw_for_a(amps_per_phase: float) -> float:
    """Site limit [kW] giving this capacity per phase on 3 x 230 V."""
    return amps_per_phase * 3 * V / 1000


class EmuStation:
    """What the tests need from a station, for both OCPP versions."""

    version = ""
    profiles: list[tuple[int, dict[str, Any]]]
    profile_status: str
    tx_ids: dict[int, str]

    def _init_test(self, status: str) -> None:
        self.profiles = []
        self.profile_status = status
        self.tx_ids = {}

    def tx_profiles(self, evse_id: int) -> list[dict[str, Any]]:
        return [p for e, p in self.profiles if e == evse_id]

    def last_limit(self, evse_id: int) -> float:
        profile = self.tx_profiles(evse_id)[-1]
        schedule = profile["charging_schedule"]
        if isinstance(schedule, list):
            schedule = schedule[0]
        return float(schedule["charging_schedule_period"][0]["limit"])


def _sampled(
    energy_wh: float | None,
    currents: tuple[float, ...] | None,
    soc: float | None,
    string_values: bool,
) -> list[dict[str, Any]]:
    def value(v: float) -> Any:
        return str(v) if string_values else v

    samples: list[dict[str, Any]] = []
    if energy_wh is not None:
        samples.append({"value": value(energy_wh), "measurand": "Energy.Active.Import.Register"})
    for i, current in enumerate(currents or ()):
        samples.append(
            {"value": value(current), "measurand": "Current.Import", "phase": f"L{i + 1}"}
        )
    if soc is not None:
        samples.append({"value": value(soc), "measurand": "SoC"})
    return samples


class Emu201(EmuStation, ChargePoint201):
    version = "2.0.1"

    def __init__(self, station_id: str, ws: ClientConnection, status: str) -> None:
        super().__init__(station_id, ws, response_timeout=5)
        self._init_test(status)
        self._seq = 0

    @on("SetChargingProfile")
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> Any:
        self.profiles.append((evse_id, charging_profile))
        return result201.SetChargingProfile(status=self.profile_status)

    async def boot(self) -> Any:
        return await self.call(
            call201.BootNotification(
                charging_station={"vendor_name": "TestCo", "model": "T201"}, reason="PowerUp"
            )
        )

    async def _event(
        self, kind: str, evse_id: int, t: datetime, meter: list[dict[str, Any]], **extra: Any
    ) -> Any:
        self._seq += 1
        return await self.call(
            call201.TransactionEvent(
                event_type=kind,
                timestamp=iso(t),
                trigger_reason="MeterValuePeriodic",
                seq_no=self._seq,
                transaction_info={"transaction_id": self.tx_ids[evse_id]},
                evse={"id": evse_id, "connector_id": 1},
                meter_value=[{"timestamp": iso(t), "sampled_value": meter}] if meter else None,
                **extra,
            )
        )

    async def start_tx(
        self,
        evse_id: int,
        token: str,
        t: datetime,
        energy_wh: float = 0.0,
        currents: tuple[float, ...] | None = None,
    ) -> str:
        self.tx_ids[evse_id] = f"{self.id}-{evse_id}-{self._seq + 1}"
        await self._event(
            "Started",
            evse_id,
            t,
            _sampled(energy_wh, currents, None, False),
            id_token={"id_token": token, "type": "ISO14443"},
        )
        return self.tx_ids[evse_id]

    async def meter(
        self,
        evse_id: int,
        t: datetime,
        energy_wh: float | None = None,
        currents: tuple[float, ...] | None = None,
        soc: float | None = None,
    ) -> Any:
        return await self._event("Updated", evse_id, t, _sampled(energy_wh, currents, soc, False))

    async def end_tx(self, evse_id: int, t: datetime, energy_wh: float) -> Any:
        return await self._event("Ended", evse_id, t, _sampled(energy_wh, None, None, False))


class Emu16(EmuStation, ChargePoint16):
    version = "1.6"

    def __init__(self, station_id: str, ws: ClientConnection, status: str) -> None:
        super().__init__(station_id, ws, response_timeout=5)
        self._init_test(status)

    @on("SetChargingProfile")
    def on_set_charging_profile16(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> Any:
        self.profiles.append((connector_id, cs_charging_profiles))
        return result16.SetChargingProfile(status=self.profile_status)

    async def boot(self) -> Any:
        return await self.call(
            call16.BootNotification(charge_point_vendor="TestCo", charge_point_model="T16")
        )

    async def start_tx(
        self,
        evse_id: int,
        token: str,
        t: datetime,
        energy_wh: float = 0.0,
        currents: tuple[float, ...] | None = None,
    ) -> str:
        result = await self.call(
            call16.StartTransaction(
                connector_id=evse_id, id_tag=token, meter_start=int(energy_wh), timestamp=iso(t)
            )
        )
        self.tx_ids[evse_id] = str(result.transaction_id)
        if currents:
            await self.meter(evse_id, t, currents=currents)
        return self.tx_ids[evse_id]

    async def meter(
        self,
        evse_id: int,
        t: datetime,
        energy_wh: float | None = None,
        currents: tuple[float, ...] | None = None,
        soc: float | None = None,
    ) -> Any:
        return await self.call(
            call16.MeterValues(
                connector_id=evse_id,
                transaction_id=int(self.tx_ids[evse_id]),
                meter_value=[
                    {"timestamp": iso(t), "sampled_value": _sampled(energy_wh, currents, soc, True)}
                ],
            )
        )

    async def end_tx(self, evse_id: int, t: datetime, energy_wh: float) -> Any:
        return await self.call(
            call16.StopTransaction(
                meter_stop=int(energy_wh),
                timestamp=iso(t),
                transaction_id=int(self.tx_ids[evse_id]),
            )
        )


class Harness:
    """A running CSMS, its events, and the stations connected to it."""

    def __init__(self, csms: Csms, port: int, events: list[tuple[Any, ...]]) -> None:
        self.csms, self.port, self.events = csms, port, events
        self._open: list[tuple[ClientConnection, asyncio.Task[None] | None]] = []

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [e[3] for e in self.events if e[2] == kind]

    async def station(
        self,
        station_id: str,
        version: str = "2.0.1",
        *,
        boot: bool = True,
        status: str = "Accepted",
        prefix: str = "/ocpp",
        **connect_kw: Any,
    ) -> Any:
        ws = await connect(
            f"ws://127.0.0.1:{self.port}{prefix}/{station_id}",
            subprotocols=[f"ocpp{version}"],
            compression=None,
            **connect_kw,
        )
        station: Any = (Emu201 if version == "2.0.1" else Emu16)(station_id, ws, status)
        task = asyncio.create_task(station.start())
        self._open.append((ws, task))
        if boot:
            await station.boot()
            await self.csms.drain()
        return station

    async def raw(
        self, station_id: str, subprotocols: list[str] | None, **connect_kw: Any
    ) -> ClientConnection:
        ws = await connect(
            f"ws://127.0.0.1:{self.port}/{station_id}",
            subprotocols=subprotocols,
            compression=None,
            **connect_kw,
        )  # type: ignore[arg-type]
        self._open.append((ws, None))
        return ws

    async def close(self) -> None:
        for ws, task in self._open:
            if task is not None:
                task.cancel()
            await ws.close()
        await self.csms.drain()
        await self.csms.stop()


async def rpc(ws: ClientConnection, frame: str | list[Any]) -> list[Any]:
    """Send a raw frame and return the next frame received (within 5 s), parsed."""
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    async with asyncio.timeout(5):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


MakeHarness = Callable[..., Awaitable[Harness]]
"""The ``harness`` fixture: ``await harness(grid_limit_kw, evses=..., **CsmsConfig)``."""
