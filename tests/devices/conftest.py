"""A minimal test CSMS (an OCPP peer started inside the tests) for the station emulator.

This is a test peer, not the project's CSMS (that lives in controllers/): it accepts what a
station sends and lets a test send requests or raw frames to a station.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as r16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as r201
from websockets.exceptions import ConnectionClosed

T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class _Recorder:
    received: list[tuple[str, dict[str, Any]]]
    rejected_tokens: set[str]

    def _init_recorder(self) -> None:
        self.received = []
        self.rejected_tokens = set()
        self.next_tx = 100

    def of(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.received if a == action]

    async def raw(self, frame: str) -> Any:
        """Send a raw frame and return the next CALLRESULT/CALLERROR the peer receives."""
        await self._connection.send(frame)  # type: ignore[attr-defined]
        queue = self._response_queue  # type: ignore[attr-defined]
        return await asyncio.wait_for(queue.get(), 5.0)


class Peer201(_Recorder, ChargePoint201):
    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self._init_recorder()

    @on("BootNotification")
    def boot(self, charging_station: dict, reason: str, **kw: Any) -> Any:
        self.received.append(("BootNotification", {"charging_station": charging_station}))
        return r201.BootNotification(current_time=T0.isoformat(), interval=300, status="Accepted")

    @on("StatusNotification")
    def status(self, **kw: Any) -> Any:
        self.received.append(("StatusNotification", kw))
        return r201.StatusNotification()

    @on("Heartbeat")
    def heartbeat(self, **kw: Any) -> Any:
        self.received.append(("Heartbeat", kw))
        return r201.Heartbeat(current_time=T0.isoformat())

    @on("Authorize")
    def authorize(self, id_token: dict, **kw: Any) -> Any:
        self.received.append(("Authorize", {"id_token": id_token}))
        status = "Invalid" if id_token["id_token"] in self.rejected_tokens else "Accepted"
        return r201.Authorize(id_token_info={"status": status})

    @on("TransactionEvent")
    def tx_event(self, **kw: Any) -> Any:
        self.received.append(("TransactionEvent", kw))
        return r201.TransactionEvent()

    @on("MeterValues")
    def meter_values(self, **kw: Any) -> Any:
        self.received.append(("MeterValues", kw))
        return r201.MeterValues()


class Peer16(_Recorder, ChargePoint16):
    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self._init_recorder()

    @on("BootNotification")
    def boot(self, **kw: Any) -> Any:
        self.received.append(("BootNotification", kw))
        return r16.BootNotification(current_time=T0.isoformat(), interval=300, status="Accepted")

    @on("StatusNotification")
    def status(self, **kw: Any) -> Any:
        self.received.append(("StatusNotification", kw))
        return r16.StatusNotification()

    @on("Heartbeat")
    def heartbeat(self, **kw: Any) -> Any:
        self.received.append(("Heartbeat", kw))
        return r16.Heartbeat(current_time=T0.isoformat())

    @on("Authorize")
    def authorize(self, id_tag: str, **kw: Any) -> Any:
        self.received.append(("Authorize", {"id_tag": id_tag}))
        status = "Invalid" if id_tag in self.rejected_tokens else "Accepted"
        return r16.Authorize(id_tag_info={"status": status})

    @on("StartTransaction")
    def start_tx(self, **kw: Any) -> Any:
        self.received.append(("StartTransaction", kw))
        self.next_tx += 1
        return r16.StartTransaction(transaction_id=self.next_tx, id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    def stop_tx(self, **kw: Any) -> Any:
        self.received.append(("StopTransaction", kw))
        return r16.StopTransaction()

    @on("MeterValues")
    def meter_values(self, **kw: Any) -> Any:
        self.received.append(("MeterValues", kw))
        return r16.MeterValues()


class MiniCsms:
    """A websockets server on 127.0.0.1 that hands each station to a Peer201/Peer16."""

    def __init__(self) -> None:
        self.server: Any = None
        self.port = 0
        self.peers: dict[str, Any] = {}
        self.connected: dict[str, asyncio.Event] = {}
        self.password: str | None = None

    async def start(self, port: int = 0) -> None:
        self.server = await websockets.serve(
            self._handler,
            "127.0.0.1",
            port,
            subprotocols=["ocpp2.0.1", "ocpp1.6"],
            compression=None,
            ping_interval=None,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def _handler(self, ws: Any) -> None:
        sid = ws.request.path.rsplit("/", 1)[-1]
        cls = Peer201 if ws.subprotocol == "ocpp2.0.1" else Peer16
        peer = cls(sid, ws, response_timeout=5)
        old = self.peers.get(sid)
        if old is not None:  # keep what the old connection saw
            peer.received = old.received
            peer.next_tx = old.next_tx
            peer.rejected_tokens = old.rejected_tokens
        self.peers[sid] = peer
        self.connected.setdefault(sid, asyncio.Event()).set()
        try:
            await peer.start()
        except ConnectionClosed:
            pass

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def csms() -> AsyncIterator[MiniCsms]:
    c = MiniCsms()
    await c.start()
    yield c
    await c.stop()
