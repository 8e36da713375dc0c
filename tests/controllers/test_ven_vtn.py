"""The project's VEN against the project's emulated VTN: real HTTP, real MQTT broker.

Token, registration, webhook and MQTT notifications, polling, and reports; both sides
are the ones a run uses (controllers/ven, devices/vtn), with nothing stubbed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from controllers.ven.client import Ven
from controllers.ven.config import VenConfig
from controllers.ven.reports import IntervalReading
from devices.vtn.config import ClientConfig, VtnConfig
from devices.vtn.replay import GridEventFile
from devices.vtn.server import VtnServer
from twin.openadr_conformance import ValidatingTransport

T0 = datetime(2021, 2, 15, 7, 0, tzinfo=UTC)
MQTT_URL = os.environ.get("MIGRID_MQTT_URL", "mqtt://127.0.0.1:1883")


def grid_file() -> GridEventFile:
    return GridEventFile.model_validate({
        "programs": [{"id": "eea", "programName": "ERCOT-EEA"},
                     {"id": "other", "programName": "OTHER"}],
        "events": [
            {"publish_at": (T0 + timedelta(minutes=1)).isoformat(), "id": "eea3",
             "programID": "eea", "eventName": "EEA3",
             "intervalPeriod": {"start": (T0 + timedelta(minutes=1)).isoformat(),
                                "duration": "PT1H"},
             "reportDescriptors": [{"payloadType": "USAGE"}, {"payloadType": "DEMAND"}],
             "intervals": [{"id": 0, "payloads": [
                 {"type": "IMPORT_CAPACITY_LIMIT", "values": [30]}]}]},
            {"publish_at": (T0 + timedelta(minutes=1)).isoformat(), "id": "noise",
             "programID": "other", "eventName": "not ours",
             "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [3]}]}]},
        ],
    })


@pytest.fixture
async def vtn():
    config = VtnConfig(
        clients=[ClientConfig(id="bl", secret="bl-secret", role="BL"),
                 ClientConfig(id="ven-1", secret="ven-1-secret", role="VEN")],
        mqtt_url=MQTT_URL, topic_prefix=f"t{uuid.uuid4().hex[:8]}/",
    )
    server = VtnServer(config, T0)
    server.load_grid_events(grid_file())
    await server.start()
    yield server
    await server.stop()


def ven_for(
    vtn: VtnServer, mode: str, events: list, transport: ValidatingTransport | None = None
) -> Ven:
    config = VenConfig(vtn_url=vtn.base_url, client_id="ven-1", client_secret="ven-1-secret",
                       ven_name=f"depot-{mode}", program_names=["ERCOT-EEA"],
                       resources=[{"name": "site-meter"}], notification=mode,
                       poll_interval_s=60)
    return Ven(config, on_event=lambda kind, payload: events.append((kind, payload)),
               transport=transport)


async def settle(vtn: VtnServer, ven: Ven) -> None:
    for _ in range(50):
        await vtn.drain()
        await ven.drain()
        if not vtn.busy and not ven.busy and ven.events:
            return
        await asyncio.sleep(0.02)  # a push crosses the broker on the wall clock


@pytest.mark.parametrize("mode", ["webhook", "mqtt"])
async def test_event_pushed_to_the_ven(vtn, mode) -> None:
    events: list = []
    wire = ValidatingTransport()  # every request and response checked against the spec
    ven = ven_for(vtn, mode, events, wire)
    try:
        await ven.start(T0)
        assert ven.ven_id is not None and "site-meter" in ven.resource_ids
        assert ven.notification_mode == mode
        assert ven.events == {}  # nothing published yet
        await vtn.advance(T0 + timedelta(minutes=1))  # the VTN publishes EEA3 and noise
        await settle(vtn, ven)
        assert set(ven.events) == {"eea3"}  # the other program's event is not ours
        assert ven.notifications_applied >= 1
        kinds = [k for k, _ in events]
        assert "ven.registered" in kinds and "ven.event_received" in kinds
        assert wire.checked >= 6 and wire.failures == []
    finally:
        await ven.close()


async def test_polling_and_report_reach_the_vtn(vtn) -> None:
    events: list = []
    wire = ValidatingTransport()
    ven = ven_for(vtn, "poll", events, wire)
    try:
        await ven.start(T0)
        t1 = T0 + timedelta(minutes=1)
        await vtn.advance(t1)
        await ven.step(t1)  # the poll interval (60 s) has passed: polls
        assert set(ven.events) == {"eea3"} and ven.last_poll == t1
        t2 = T0 + timedelta(seconds=90)
        vtn.set_now(t2)
        await ven.step(t2)  # 30 s later: no poll
        assert ven.last_poll == t1
        report = await ven.report("eea3", {"site-meter": {
            0: IntervalReading(usage_kwh=12.5, demand_kw=29.0)}}, t2)
        assert report is not None
        # the utility (BL) sees the report with both payloads
        async with httpx.AsyncClient(base_url=vtn.base_url) as bl:
            token = (await bl.post("/auth/token", data={
                "grant_type": "client_credentials", "client_id": "bl",
                "client_secret": "bl-secret"})).json()["access_token"]
            reports = (await bl.get("/reports", params={"eventID": "eea3"},
                                    headers={"Authorization": f"Bearer {token}"})).json()
        assert len(reports) == 1
        payloads = {p["type"]: p["values"][0]
                    for r in reports[0]["resources"] for i in r["intervals"]
                    for p in i["payloads"]}
        assert payloads == {"USAGE": 12.5, "DEMAND": 29.0}
        assert wire.failures == []  # the report POST included
    finally:
        await ven.close()


async def test_wrong_secret_leaves_the_ven_running_without_state(vtn) -> None:
    events: list = []
    config = VenConfig(vtn_url=vtn.base_url, client_id="ven-1", client_secret="wrong",
                       ven_name="depot-x", notification="poll")
    ven = Ven(config, on_event=lambda kind, payload: events.append((kind, payload)))
    try:
        await ven.start(T0)
        await ven.step(T0 + timedelta(minutes=5))  # never raises
        assert ven.events == {} and ven.ven_id is None
        assert any(k == "ven.warning" for k, _ in events)
    finally:
        await ven.close()


async def test_migrid_ven_prints_held_events_and_control(vtn) -> None:
    """`migrid ven` as its own OS process against the VTN, on the wall clock."""
    import json
    import shutil
    import sys
    from pathlib import Path

    exe = shutil.which("migrid") or str(Path(sys.executable).with_name("migrid"))
    now = datetime.now(UTC)
    vtn.set_now(now)
    vtn.create("EVENT", {"programID": "eea", "eventName": "EEA3",
                         "intervalPeriod": {"start": "0001-01-01T00:00:00Z",
                                            "duration": "P9999Y"},
                         "intervals": [{"id": 0, "payloads": [
                             {"type": "ALERT_GRID_EMERGENCY", "values": ["EEA3"]},
                             {"type": "IMPORT_CAPACITY_LIMIT", "values": [30]}]}]})
    proc = await asyncio.create_subprocess_exec(
        exe, "ven", "--vtn", vtn.base_url, "--client-id", "ven-1", "--client-secret",
        "ven-1-secret", "--program", "ERCOT-EEA", "--notification", "poll", "--step-s", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    lines: list[dict] = []
    try:
        async with asyncio.timeout(30):
            while not any(x["kind"] == "control" and x["emergency"] for x in lines):
                raw = await proc.stdout.readline()
                assert raw, (await proc.stderr.read()).decode()
                lines.append(json.loads(raw))
    finally:
        proc.terminate()
        await proc.wait()
    held = [x for x in lines if x["kind"] == "held" and x["events"]]
    assert held and held[-1]["events"][0]["name"] == "EEA3"
    control = next(x for x in lines if x["kind"] == "control" and x["emergency"])
    assert control["import_limit_kw"] == 30 and control["ev_share"] == 0
