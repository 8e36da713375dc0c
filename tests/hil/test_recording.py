"""Traffic recording on the bench and the exchange hooks of the controllers' clients.

Real sockets throughout: emulated SunSpec devices over Modbus TCP, the emulated
transformer over OPC UA, the emulated VTN over HTTP, OCPP-J over websockets; no mocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from controllers.exchange import MAX_ITEMS, MAX_TEXT_CHARS, Exchange, clip, jsonable
from controllers.site_io import ModbusExceptionError, OpcUaClient, SunSpecClient
from controllers.ven.client import Ven
from controllers.ven.config import VenConfig
from controllers.ven.recording import http_operation, redact_text
from devices.vtn.config import ClientConfig, VtnConfig
from devices.vtn.replay import GridEventFile
from devices.vtn.server import VtnServer
from hil.bench_file import BenchRun, parse_bench
from hil.runtime import BenchStatus, shadow_scenario
from hil.session import run_bench
from twin.site_plant import TRANSFORMER_NODES
from twin.site_runtime import site_controller

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
STEPS = 8
MQTT_URL = os.environ.get("MIGRID_MQTT_URL", "mqtt://127.0.0.1:1883")


# ----------------------------------------------------------------------- the bench


def _bench(start: datetime, step_s: float = 0.5, record: bool | None = None) -> dict:
    """One emulated station, every emulated site device, an emulated VTN with reports."""
    t = start.replace(microsecond=0)
    doc: dict[str, Any] = {
        "name": "bench-recording",
        "site": {"grid_limit_kw": 40, "base_load": {"power_kw": 2}},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [{"id": "CS001", "meter_interval_s": 1}],
        "emulated_stations": {
            "mode": "in_process", "stations": ["CS001"],
            "vehicles": [{"evse": "CS001/1", "plug_in_s": 0}],
        },
        "site_devices": {
            "meter": {"binding": "emulated"},
            "building": {"annual_kwh": 30000},
            "pv": {"rated_kw": 10},
            "bess": {"capacity_kwh": 20, "max_charge_kw": 10, "max_discharge_kw": 10,
                     "initial_soc": 0.5},
            "transformer": {"rated_power_kva": 60, "site_import_limit_kw": 40},
        },
        "grid": {
            "ven_name": "bench-ven",
            "programs": [{"id": "dr", "programName": "DR"}],
            "events": [{
                "publish_at": (t - timedelta(hours=1)).isoformat(),
                "id": "ev-1", "programID": "dr", "eventName": "seconds",
                "reportDescriptors": [{"payloadType": "USAGE"}],
                "intervalPeriod": {"start": t.isoformat(), "duration": "PT1S"},
                "intervals": [{"id": i, "payloads": [{"type": "SIMPLE", "values": [0]}]}
                              for i in range(30)],
            }],
        },
        "run": {"step_s": step_s},
    }
    if record is not None:
        doc["run"]["record"] = record
    return doc


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime, datetime]:
    """A bench run of 8 steps of 0.5 s, recording on (the default); folder, wall window."""
    tmp = tmp_path_factory.mktemp("recording")
    path = tmp / "bench.yaml"
    begin = datetime.now(UTC)
    path.write_text(yaml.safe_dump(_bench(begin)), encoding="utf-8")
    out = tmp / "run"

    async def run() -> None:
        stop = asyncio.Event()

        def on_status(status: BenchStatus) -> None:
            if status.step >= STEPS:
                stop.set()

        # a step count, not a duration: start-up (emulators, VTN) takes what it takes
        await asyncio.wait_for(run_bench(path, out=out, stop=stop, on_status=on_status), 60)

    asyncio.run(run())
    return out, begin, datetime.now(UTC)


def _exchanges(events: pd.DataFrame, kind: str) -> pd.DataFrame:
    ex = events[events.kind == kind].copy()
    ex["p"] = ex.payload.map(json.loads)
    return ex


def test_bench_records_every_protocol_with_timestamps(recorded) -> None:
    out, begin, end = recorded
    events = pd.read_parquet(out / "events.parquet")
    kinds = set(events.kind)
    assert {"exchange.modbus", "exchange.opcua", "exchange.openadr", "ocpp.frame"} <= kinds
    for kind in ("exchange.modbus", "exchange.opcua", "exchange.openadr", "ocpp.frame"):
        times = events[events.kind == kind].time
        assert (times >= pd.Timestamp(begin)).all() and (times <= pd.Timestamp(end)).all()
    for kind in ("exchange.modbus", "exchange.opcua", "exchange.openadr"):
        for p in _exchanges(events, kind).p:
            assert set(p) == {"time", "duration_ms", "protocol", "peer", "operation",
                              "direction", "request", "response", "error"}
            assert p["protocol"] == kind.split(".")[1]
            assert begin <= datetime.fromisoformat(p["time"]) <= end
            assert p["duration_ms"] is not None and p["duration_ms"] >= 0


def test_modbus_records_meter_reads_with_values(recorded) -> None:
    out, _, _ = recorded
    events = pd.read_parquet(out / "events.parquet")
    mb = _exchanges(events, "exchange.modbus")
    assert set(mb.source) == {"meter", "pv", "bess"}
    meter = mb[mb.source == "meter"]
    ops = {p["operation"] for p in meter.p}
    assert ops == {"read_holding_registers"}
    for p in meter.p:
        assert p["peer"].startswith("127.0.0.1:") and p["peer"].endswith("/1")
        assert p["error"] is None
        assert len(p["response"]["registers"]) == p["request"]["count"]
    # discovery finds "SunS" at 40000, then every step reads the W..TotWhExp span
    assert meter.p.iloc[0]["request"] == {"address": 40000, "count": 2}
    assert meter.p.iloc[0]["response"] == {"registers": [0x5375, 0x6E53]}
    # the BESS set-point goes out as FC16 writes with their values
    writes = [p for p in mb[mb.source == "bess"].p if p["operation"] == "write_registers"]
    assert writes and all(len(p["request"]["values"]) == p["request"]["count"] for p in writes)


def test_exchange_counts_per_step_match_the_controller_reads(recorded) -> None:
    out, _, _ = recorded
    events = pd.read_parquet(out / "events.parquet")
    traces = pd.read_parquet(out / "traces.parquet")
    steps = sorted(traces[(traces.entity == "site") & (traces.quantity == "import_kw")].time)
    assert len(steps) == STEPS
    step_times = [s.isoformat() for s in pd.to_datetime(steps).to_pydatetime()]
    mb = _exchanges(events, "exchange.modbus")
    ua = _exchanges(events, "exchange.opcua")
    mb["step"] = mb.p.map(lambda p: p["time"])
    ua["step"] = ua.p.map(lambda p: p["time"])
    mb["write"] = mb.p.map(lambda p: p["operation"] == "write_registers")
    assert set(mb.step) <= set(step_times) and set(ua.step) <= set(step_times)
    reads = mb[~mb.write].groupby(["step", "source"]).size().unstack(fill_value=0)
    writes = mb[mb.write].groupby("step").size().reindex(step_times, fill_value=0)
    # after the first step (connection and SunSpec discovery), each step reads the meter's
    # 203 span, PV 701 W, BESS 802 SoC and 701 W (4 Modbus reads), plus the BESS's 704
    # block before a set-point write; and the transformer with 1 OPC UA Read
    for t in step_times[1:]:
        assert (reads.loc[t, "meter"], reads.loc[t, "pv"]) == (1, 1)
        assert reads.loc[t, "bess"] == 2 + (1 if writes[t] else 0)
    assert (reads.loc[step_times[0]] > 1).all()  # discovery reads on the first step
    ua_reads = ua[ua.p.map(lambda p: p["operation"] == "read")]
    assert ua_reads.groupby("step").size().reindex(step_times).eq(1).all()
    for p in ua_reads.p:
        assert p["peer"].startswith("opc.tcp://")
        assert set(p["request"]["nodes"]) == set(p["response"]["values"])
        loading = p["response"]["values"][TRANSFORMER_NODES["loading_pct"]]
        assert isinstance(loading["value"], float) and loading["status"] == "Good"
    # the run's KPI counts controller calls: 4 SunSpec reads and 1 OPC UA read per step,
    # plus one per set-point or curtailment written
    kpis = json.loads((out / "kpis.json").read_text())
    written = events.kind.isin(["site.bess_setpoint", "site.pv_curtailment"]).sum()
    assert kpis["wall"]["fieldbus_exchanges"]["value"] == 5 * STEPS + written


def test_openadr_records_requests_and_reports(recorded) -> None:
    out, _, _ = recorded
    events = pd.read_parquet(out / "events.parquet")
    oa = _exchanges(events, "exchange.openadr")
    assert set(oa.source) == {"ven"}
    ops = [p["operation"] for p in oa.p]
    assert "POST /auth/token" in ops or any(op.endswith("/token") for op in ops)
    assert "POST /vens" in ops and "GET /programs" in ops
    gets = [p for p in oa.p if p["operation"] == "GET /events"]
    # a poll reads programs then events; it happens when poll_interval_s (= step_s) has
    # passed on the wall clock, so not at every step
    assert len(gets) >= 2
    assert len(gets) == sum(1 for p in oa.p if p["operation"] == "GET /programs")
    assert all(p["response"]["status_code"] == 200 for p in gets)
    assert "ev-1" in gets[-1]["response"]["body"]
    assert gets[-1]["request"]["query"].startswith(("programID=dr", "skip="))
    reports = [p for p in oa.p if p["operation"] == "POST /reports"]
    assert reports and all(p["response"]["status_code"] in (200, 201) for p in reports)
    assert len(reports) == (events.kind == "ven.report_sent").sum()
    assert '"eventID":"ev-1"' in reports[0]["request"]["body"]
    # secrets stay out of the run folder
    text = " ".join(events[events.kind == "exchange.openadr"].payload)
    token = next(p for p in oa.p if p["operation"].endswith("/token"))
    assert "***" in token["request"]["body"] and "***" in token["response"]["body"]
    assert '"access_token":"***"' in token["response"]["body"]
    assert "authorization" not in text.lower()  # headers are not recorded


def test_ocpp_frames_are_recorded_by_the_same_flag(recorded) -> None:
    out, _, _ = recorded
    events = pd.read_parquet(out / "events.parquet")
    frames = events[events.kind == "ocpp.frame"].payload.map(json.loads)
    assert {"in", "out"} <= {p["direction"] for p in frames}
    assert any("BootNotification" in (p.get("frame") or p.get("raw")) for p in frames)


async def test_recording_off_writes_no_exchange(tmp_path: Path) -> None:
    doc = _bench(datetime.now(UTC), record=False)
    del doc["grid"]
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    await run_bench(path, out=tmp_path / "run", duration_s=1.5)
    kinds = set(pd.read_parquet(tmp_path / "run" / "events.parquet").kind)
    assert not {k for k in kinds if k.startswith("exchange.")} and "ocpp.frame" not in kinds
    assert "site.bess_setpoint" in kinds or "station.connected" in kinds


def test_record_frames_is_an_alias_of_record() -> None:
    assert BenchRun().record is True
    assert BenchRun.model_validate({"record_frames": False}).record is False
    assert BenchRun.model_validate({"record_frames": True}).record_frames is True
    doc = _bench(T0)
    doc["run"] = {"record": True, "record_frames": False}
    with pytest.raises(Exception, match="record_frames is the former name of record"):
        parse_bench(doc)


# ------------------------------------------------------------------ client hooks


@pytest.fixture
async def plant():
    """The twin's emulated meter, PV, BESS and transformer on loopback."""
    from twin.site_plant import SitePlant

    scenario = shadow_scenario(parse_bench(_bench(T0)), T0)
    assert scenario.site_devices is not None
    p = SitePlant(scenario.site_devices, T0, scenario.site.voltage_v)
    await p.start(T0)
    await p.advance(T0 + timedelta(seconds=60), (1.0, 1.0, 1.0), 2.0)
    try:
        yield scenario, p
    finally:
        await p.close()


async def test_sunspec_hook_sees_each_request(plant) -> None:
    _, p = plant
    seen: list[Exchange] = []
    ticks = iter(range(1000))
    client = SunSpecClient("127.0.0.1", p.ports["meter"], on_exchange=seen.append,
                           perf_counter=lambda: float(next(ticks)))
    try:
        readings = await client.read_points(203, ["W"], T0)
        n_discovery = len(seen) - 1
        assert n_discovery >= 3  # marker, model headers, end marker
        last = seen[-1]
        assert last.operation == "read_holding_registers" and last.time == T0
        assert last.protocol == "modbus" and last.peer == f"127.0.0.1:{p.ports['meter']}/1"
        assert last.duration_ms == 1000.0  # one tick of the injected counter
        assert last.error is None and readings["W"].value is not None
        # one FC3 spanning W .. W_SF of model 203, not the whole block
        assert len(last.response["registers"]) == last.request["count"] < 10
        # a Modbus exception is recorded with its code and error text
        with pytest.raises(ModbusExceptionError):
            await client.read_registers(10, 2, T0)
        assert seen[-1].response == {"exception_code": 2} and "exception 2" in seen[-1].error
    finally:
        await client.close()


async def test_raising_hook_does_not_break_the_client(plant, caplog) -> None:
    _, p = plant
    calls = []

    def bad(record: Exchange) -> None:
        calls.append(record)
        raise RuntimeError("hook broke")

    client = SunSpecClient("127.0.0.1", p.ports["meter"], on_exchange=bad)
    try:
        with caplog.at_level(logging.ERROR, logger="controllers.exchange"):
            first = await client.read_points(203, ["W"], T0)
            second = await client.read_points(203, ["W"], T0 + timedelta(seconds=1))
        assert first["W"].value is not None and second["W"].value is not None
        assert len(calls) >= 5
        logged = [r for r in caplog.records if "on_exchange hook failed" in r.getMessage()]
        assert len(logged) == 1
        assert client._tap.hook_errors == len(calls)
        assert calls[-1].duration_ms is None  # no perf counter given
    finally:
        await client.close()


async def test_opcua_hook_sees_reads(plant) -> None:
    _, p = plant
    seen: list[Exchange] = []
    nodes = [TRANSFORMER_NODES["loading_pct"], TRANSFORMER_NODES["hot_spot_c"]]
    client = OpcUaClient(p.endpoint, nodes, subscribe=False, on_exchange=seen.append)
    try:
        await client.read(T0)
        await client.read(T0 + timedelta(seconds=5))
        assert [r.operation for r in seen] == ["read", "read"]
        assert seen[1].time == T0 + timedelta(seconds=5) and seen[1].peer == p.endpoint
        assert seen[1].request == {"nodes": nodes}
        values = seen[1].response["values"]
        assert set(values) == set(nodes) and values[nodes[0]]["status"] == "Good"
        assert isinstance(values[nodes[0]]["value"], float)
    finally:
        await client.close()


async def test_opcua_hook_sees_writes_with_status(plant) -> None:
    _, p = plant
    seen: list[Exchange] = []
    limit = TRANSFORMER_NODES["limit_kw"]
    client = OpcUaClient(p.endpoint, [limit], limit_node_id=limit, subscribe=False,
                         on_exchange=seen.append)
    try:
        await client.write_import_limit(35.0, T0)
        ops = [r.operation for r in seen]
        assert ops[-1] == "write" and "read_data_type" in ops
        assert seen[-1].request["node"] == limit and seen[-1].request["value"] == 35.0
        assert seen[-1].response == {"status": "Good"} and seen[-1].error is None
    finally:
        await client.close()


async def test_site_controller_passes_the_device_name(plant) -> None:
    scenario, p = plant
    seen: list[tuple[str, Exchange]] = []
    ctl = site_controller(scenario, scenario.site_devices, p.ports, p.endpoint,
                          lambda *a: None, on_exchange=lambda d, r: seen.append((d, r)))

    class _Ev:
        def ev_power_kw(self) -> float:
            return 0.0

        def ev_minimum_kw(self) -> float:
            return 0.0

        def set_non_ev_load(self, kw: float, now: datetime) -> None:
            pass

        def set_external_limit(self, kw: float | None) -> None:
            pass

    try:
        await ctl.step(T0 + timedelta(seconds=60), 60.0, _Ev())  # type: ignore[arg-type]
    finally:
        await ctl.close()
    assert {d for d, _ in seen} == {"meter", "pv", "bess", "transformer"}
    assert {r.protocol for d, r in seen if d == "transformer"} == {"opcua"}


@pytest.mark.parametrize("mode", ["webhook", "mqtt"])
async def test_ven_hook_sees_http_and_notifications(mode: str) -> None:
    secret = "s3cret-s3cret-s3cret"
    vtn = VtnServer(VtnConfig(clients=[ClientConfig(id="ven-1", secret=secret, role="VEN")],
                              mqtt_url=MQTT_URL, topic_prefix=f"t{uuid.uuid4().hex[:8]}/"),
                    T0)
    vtn.load_grid_events(GridEventFile.model_validate({
        "programs": [{"id": "dr", "programName": "DR"}],
        "events": [{"publish_at": (T0 + timedelta(minutes=1)).isoformat(), "id": "ev-1",
                    "programID": "dr", "intervals": [
                        {"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}]}],
    }))
    await vtn.start()
    seen: list[Exchange] = []
    ven = Ven(VenConfig(vtn_url=vtn.base_url, client_id="ven-1", client_secret=secret,
                        ven_name=f"v-{mode}", notification=mode), on_exchange=seen.append,
              perf_counter=time.perf_counter)
    try:
        await ven.start(T0)
        assert ven.notification_mode == mode
        ops = [r.operation for r in seen]
        assert ops[:2] == ["GET /auth/server", "POST /auth/token"]
        assert "POST /vens" in ops and "GET /programs" in ops
        assert ("POST /subscriptions" if mode == "webhook" else "GET /notifiers") in ops
        token = seen[1]
        assert token.response is not None and token.response["status_code"] == 200
        assert secret not in json.dumps(token.payload())
        assert '"access_token":"***"' in token.response["body"]
        assert all(r.direction == "out" and r.time == T0 for r in seen)
        assert {r.peer for r in seen} == {vtn.base_url.rstrip("/")}
        assert all(r.duration_ms is not None and r.duration_ms > 0 for r in seen)
        n = len(seen)
        t1 = T0 + timedelta(minutes=1)
        await vtn.advance(t1)  # the VTN publishes ev-1 and pushes it to the VEN
        for _ in range(100):
            await vtn.drain()
            if "ev-1" in ven.events:
                break
            await asyncio.sleep(0.02)
        received = [r for r in seen[n:] if r.direction == "in"]
        assert received, "no notification recorded"
        note = received[-1]
        assert "ev-1" in note.request["body"]
        if mode == "webhook":
            assert note.operation == "POST /openadr3/notifications"
            assert note.response == {"status_code": 200}
            assert note.peer.startswith("127.0.0.1:")
        else:
            assert note.operation.startswith("PUBLISH ") and note.peer == MQTT_URL
            assert note.request["topic"] == note.operation.split(" ", 1)[1]
    finally:
        await ven.close()
        await vtn.stop()
    assert seen[-1].operation.startswith("DELETE /subscriptions/") or mode == "mqtt"


# ------------------------------------------------------------------ helpers


def test_clip_and_jsonable_limits() -> None:
    long = "x" * (MAX_TEXT_CHARS + 10)
    assert clip(long).endswith("…[+10 chars]") and clip("abc") == "abc"
    items = jsonable(list(range(MAX_ITEMS + 3)))
    assert len(items) == MAX_ITEMS + 1 and items[-1] == "…[+3 items]"
    assert jsonable({"a": (1, b"x", T0)}) == {"a": [1, "x", T0.isoformat()]}


def test_redaction_and_operation_names() -> None:
    form = redact_text("grant_type=client_credentials&client_secret=abc",
                       "application/x-www-form-urlencoded")
    assert "abc" not in form and "client_secret=***" in form
    body = redact_text('{"access_token":"t0k","expires_in":3600}', "application/json")
    assert json.loads(body) == {"access_token": "***", "expires_in": 3600}
    import httpx

    base = "http://127.0.0.1:8080/openadr3/3.1.0"
    assert http_operation(base, "GET", httpx.URL(base + "/events?skip=0")) == (
        base, "GET /events")
    assert http_operation(base, "POST", httpx.URL("https://idp.example/oauth/token")) == (
        "https://idp.example", "POST /oauth/token")
