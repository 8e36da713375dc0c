"""The station emulator against a minimal CSMS started in the test (real websockets)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import orjson
import pytest
from conftest import T0, MiniCsms, at
from ocpp.v16 import call as c16
from ocpp.v201 import call as c201

from devices.charging_station import ChargingStation, EvseSpec, StationSpec
from devices.vehicle import VehicleSpec, VehicleState

CAR = VehicleSpec("Zoe", 52.0, 22.0, 3, 50.0)
VERSIONS = ["2.0.1", "1.6"]


class Events(list[tuple[Any, str, str, dict[str, Any]]]):
    def __call__(self, t: Any, source: str, kind: str, payload: dict[str, Any]) -> None:
        self.append((t, source, kind, payload))

    def kinds(self) -> list[str]:
        return [k for _, _, k, _ in self]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for _, _, k, p in self if k == kind]


def make_station(
    csms: MiniCsms, version: str, sid: str = "CS1", **kw: Any
) -> tuple[ChargingStation, Events]:
    events = Events()
    spec = StationSpec(
        sid,
        version,
        (EvseSpec(1, "AC", 22.0), EvseSpec(2, "AC", 22.0)),  # type: ignore[arg-type]
        fail_safe_current_a=kw.pop("fail_safe_current_a", 6.0),
    )
    cs = ChargingStation(spec, csms.url, on_event=events, perf_counter=time.perf_counter, **kw)
    return cs, events


async def run_to(cs: ChargingStation, t: Any) -> None:
    await cs.advance(t)
    await cs.drain()


def tx_id_of(cs: ChargingStation, evse: int = 1) -> str:
    tx = cs.evse_state(evse).transaction_id
    assert tx is not None
    return tx


# ----------------------------------------------------------------------------- payload helpers
def set_profile(
    version: str,
    evse: int,
    pid: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    tx: str | None = None,
    stack: int = 0,
    kind: str = "Relative",
    start: Any = None,
    duration: int | None = None,
) -> Any:
    sched: dict[str, Any] = {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
    }
    if start is not None:
        sched["startSchedule"] = start.isoformat().replace("+00:00", "Z")
    if duration is not None:
        sched["duration"] = duration
    if version == "2.0.1":
        prof: dict[str, Any] = {
            "id": pid,
            "stackLevel": stack,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind,
            "chargingSchedule": [{"id": pid, **sched}],
        }
        if tx is not None:
            prof["transactionId"] = tx
        return c201.SetChargingProfile(evse_id=evse, charging_profile=prof)
    prof = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": "ChargePointMaxProfile"
        if purpose == "ChargingStationMaxProfile"
        else purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": sched,
    }
    if tx is not None:
        prof["transactionId"] = int(tx)
    return c16.SetChargingProfile(connector_id=evse, cs_charging_profiles=prof)


def composite_req(version: str, evse: int, duration: int) -> Any:
    if version == "2.0.1":
        return c201.GetCompositeSchedule(duration=duration, evse_id=evse, charging_rate_unit="A")
    return c16.GetCompositeSchedule(connector_id=evse, duration=duration, charging_rate_unit="A")


def composite_periods(version: str, res: Any) -> list[tuple[int, float]]:
    sched = res.schedule if version == "2.0.1" else res.charging_schedule
    return [(p["start_period"], float(p["limit"])) for p in sched["charging_schedule_period"]]


def clear_req(version: str, pid: int) -> Any:
    if version == "2.0.1":
        return c201.ClearChargingProfile(charging_profile_id=pid)
    return c16.ClearChargingProfile(id=pid)


def stop_req(version: str, tx: str) -> Any:
    if version == "2.0.1":
        return c201.RequestStopTransaction(transaction_id=tx)
    return c16.RemoteStopTransaction(transaction_id=int(tx))


def meter_registers(version: str, peer: Any) -> list[float]:
    """Energy.Active.Import.Register of every periodic sample the CSMS received, Wh."""
    out = []
    if version == "2.0.1":
        msgs = [
            p for p in peer.of("TransactionEvent") if p["trigger_reason"] == "MeterValuePeriodic"
        ]
    else:
        msgs = peer.of("MeterValues")
    for m in msgs:
        for mv in m["meter_value"]:
            for sv in mv["sampled_value"]:
                if sv.get("measurand") == "Energy.Active.Import.Register":
                    out.append(float(sv["value"]))
    return out


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("version", VERSIONS)
async def test_session_with_profiles_and_remote_stop(csms: MiniCsms, version: str) -> None:
    cs, events = make_station(csms, version)
    await cs.connect(T0)
    peer = csms.peers["CS1"]
    assert [a for a, _ in peer.received] == [
        "BootNotification",
        "StatusNotification",
        "StatusNotification",
    ]
    assert events.of("ocpp.boot") == [{"status": "Accepted", "interval": 300}]

    # a station-wide default of 16 A, then a vehicle
    res = await peer.call(set_profile(version, 0, 1, "TxDefaultProfile", [(0, 16.0)]))
    assert res.status == "Accepted"
    await cs.plug_in(1, CAR, VehicleState(0.2, 0.9), "TAG1", at(0))
    tx = tx_id_of(cs)
    if version == "2.0.1":
        started = peer.of("TransactionEvent")[0]
        assert started["event_type"] == "Started" and started["id_token"]["id_token"] == "TAG1"
        assert started["evse"] == {"id": 1, "connector_id": 1}
    else:
        assert peer.of("StartTransaction")[0]["meter_start"] == 0
        assert tx == "101"
    for k in range(1, 4):
        await run_to(cs, at(60 * k))
    r = cs.evse_state(1)
    assert r.power_kw == pytest.approx(16 * 230 * 3 / 1000)
    regs = meter_registers(version, peer)
    assert len(regs) == 3
    assert regs[-1] == pytest.approx(r.energy_register_kwh * 1000, abs=1e-6)
    assert regs[-1] == pytest.approx(r.session_energy_kwh * 1000, abs=1e-6)

    # a TxProfile lowers the current: absolute, 8 A for 600 s, then 10 A until 1800 s
    res = await peer.call(
        set_profile(
            version,
            1,
            2,
            "TxProfile",
            [(0, 8.0), (600, 10.0)],
            tx=tx,
            kind="Absolute",
            start=at(180),
            duration=1800,
        )
    )
    assert res.status == "Accepted"
    await run_to(cs, at(240))
    assert cs.evse_state(1).power_kw == pytest.approx(8 * 230 * 3 / 1000)
    assert cs.evse_state(1).offered_current_a == pytest.approx(8.0)
    # the composite schedule follows the stacking rule: Tx over TxDefault while in force
    res = await peer.call(composite_req(version, 1, 3600), suppress=False)
    assert res.status == "Accepted"
    assert composite_periods(version, res) == [(0, 8.0), (540, 10.0), (1740, 16.0)]
    expect = cs.profiles.composite_schedule(1, at(240), 3600, "A")
    assert [(p.start_period_s, p.limit) for p in expect] == composite_periods(version, res)

    # clearing the TxProfile restores the default
    res = await peer.call(clear_req(version, 2))
    assert res.status == "Accepted"
    await run_to(cs, at(300))
    await run_to(cs, at(360))
    assert cs.evse_state(1).power_kw == pytest.approx(16 * 230 * 3 / 1000)
    res = await peer.call(clear_req(version, 99))
    assert res.status == "Unknown"

    # a TxProfile for an EVSE without a transaction is rejected
    res = await peer.call(set_profile(version, 2, 3, "TxProfile", [(0, 8.0)], tx=tx))
    assert res.status == "Rejected"
    assert events.of("profile.rejected")[-1]["reason"] == "TxNotFound"

    # the CSMS stops the transaction
    res = await peer.call(stop_req(version, tx))
    assert res.status == "Accepted"
    await cs.drain()
    if version == "2.0.1":
        ended = peer.of("TransactionEvent")[-1]
        assert ended["event_type"] == "Ended"
        assert ended["transaction_info"]["stopped_reason"] == "Remote"
        assert ended["trigger_reason"] == "RemoteStop"
    else:
        stop = peer.of("StopTransaction")[-1]
        assert stop["reason"] == "Remote" and stop["transaction_id"] == int(tx)
        assert peer.of("StatusNotification")[-1]["status"] == "Finishing"
    assert events.of("transaction.ended")[-1]["transaction_id"] == tx
    e_stop = cs.evse_state(1).energy_register_kwh
    await run_to(cs, at(420))
    assert cs.evse_state(1).power_kw == 0.0
    assert cs.evse_state(1).energy_register_kwh == e_stop
    res = await peer.call(stop_req(version, tx))
    assert res.status == "Rejected"

    await cs.plug_out(1, at(430))
    assert cs.evse_state(1).connector_status == "Available"
    assert cs.rtt_samples_s and all(s > 0 for s in cs.rtt_samples_s)
    await cs.drain()
    assert not cs.busy
    await cs.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_unplug_ends_transaction(csms: MiniCsms, version: str) -> None:
    cs, events = make_station(csms, version)
    await cs.connect(T0)
    peer = csms.peers["CS1"]
    await cs.plug_in(2, CAR, VehicleState(0.5, 0.6), "TAG2", at(0))
    await run_to(cs, at(60))
    await cs.plug_out(2, at(90))
    await cs.drain()
    e = cs.evse_state(2).energy_register_kwh
    assert e == pytest.approx(22.0 * 90 / 3600)
    if version == "2.0.1":
        ended = peer.of("TransactionEvent")[-1]
        assert ended["transaction_info"]["stopped_reason"] == "EVDisconnected"
        end_reg = ended["meter_value"][0]["sampled_value"][0]
        assert end_reg["context"] == "Transaction.End"
        assert end_reg["value"] == pytest.approx(e * 1000)
        assert peer.of("StatusNotification")[-1]["connector_status"] == "Available"
    else:
        stop = peer.of("StopTransaction")[-1]
        assert stop["reason"] == "EVDisconnected" and stop["meter_stop"] == round(e * 1000)
        assert peer.of("StatusNotification")[-1]["status"] == "Available"
    assert events.of("transaction.ended")[-1]["energy_kwh"] == pytest.approx(e)
    await cs.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_rejected_token_no_energy(csms: MiniCsms, version: str) -> None:
    cs, events = make_station(csms, version)
    await cs.connect(T0)
    csms.peers["CS1"].rejected_tokens.add("STOLEN")
    await cs.plug_in(1, CAR, VehicleState(0.2, 0.9), "STOLEN", at(0))
    await run_to(cs, at(600))
    r = cs.evse_state(1)
    assert r.power_kw == 0.0 and r.transaction_id is None and r.energy_register_kwh == 0.0
    assert events.of("authorization.rejected")[0]["status"] == "Invalid"
    assert "transaction.started" not in events.kinds()
    await cs.close()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("with_default", [True, False])
async def test_offline_fallback_and_reconnect(
    csms: MiniCsms, version: str, with_default: bool
) -> None:
    cs, events = make_station(csms, version, fail_safe_current_a=6.0)
    await cs.connect(T0)
    peer = csms.peers["CS1"]
    if with_default:
        await peer.call(set_profile(version, 0, 1, "TxDefaultProfile", [(0, 13.0)]))
    await cs.plug_in(1, CAR, VehicleState(0.2, 0.9), "TAG", at(0))
    tx = tx_id_of(cs)
    await peer.call(set_profile(version, 1, 2, "TxProfile", [(0, 10.0)], tx=tx))
    await run_to(cs, at(60))
    assert cs.evse_state(1).power_kw == pytest.approx(10 * 690 / 1000)

    port = csms.port
    await csms.stop()
    await run_to(cs, at(120))
    assert not cs.online
    assert events.kinds().count("ocpp.disconnected") == 1
    fallback_a = 13.0 if with_default else 6.0
    assert cs.evse_state(1).offered_current_a == pytest.approx(fallback_a)
    await run_to(cs, at(180))
    assert cs.evse_state(1).power_kw == pytest.approx(fallback_a * 690 / 1000)
    # still down: every failed attempt doubles the back-off (1, 2, 4, 8 s + jitter < 1 s)
    await run_to(cs, at(240))
    failed = events.of("ocpp.reconnect_failed")
    assert [f["attempt"] for f in failed] == [1, 2, 3]
    assert failed[-1]["next_retry"].startswith("2025-01-06T08:04:08")

    csms2 = MiniCsms()
    await csms2.start(port)
    try:
        await run_to(cs, at(241))  # before the back-off elapsed: no attempt
        assert not cs.online
        await run_to(cs, at(300))
        assert cs.online
        await cs.drain()
        assert events.kinds().count("ocpp.connected") == 2
        peer2 = csms2.peers["CS1"]
        # the queued transaction messages arrive, marked offline in 2.0.1
        if version == "2.0.1":
            queued = [p for p in peer2.of("TransactionEvent") if p.get("offline")]
            assert len(queued) >= 3
        else:
            assert len(peer2.of("MeterValues")) >= 3
        assert peer2.of("StatusNotification")
        # back online, the TxProfile is in force again
        await run_to(cs, at(360))
        await run_to(cs, at(420))
        assert cs.evse_state(1).power_kw == pytest.approx(10 * 690 / 1000)
        regs = meter_registers(version, peer) + meter_registers(version, peer2)
        assert regs == sorted(regs)
        assert regs[-1] == pytest.approx(cs.evse_state(1).energy_register_kwh * 1000)
        await cs.close()
    finally:
        await csms2.stop()


BAD_16 = {
    "chargingProfileId": 5,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Relative",
    "chargingSchedule": {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}],
    },
}
BAD_201 = {
    "id": 5,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Relative",
    "chargingSchedule": [
        {
            "id": 1,
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0}],
        }
    ],
}


@pytest.mark.parametrize("version", VERSIONS)
async def test_bad_frames_get_the_right_callerror(csms: MiniCsms, version: str) -> None:
    cs, events = make_station(csms, version)
    await cs.connect(T0)
    peer = csms.peers["CS1"]
    if version == "2.0.1":
        ok_payload = {"evseId": 1, "chargingProfile": BAD_201}
        wrong_type = {"evseId": "one", "chargingProfile": BAD_201}
        missing = {"chargingProfile": BAD_201}
        unsupported = ("UnlockConnector", {"evseId": 1, "connectorId": 1})
        codes = [
            "TypeConstraintViolation",
            "OccurrenceConstraintViolation",
            "FormatViolation",
            "PropertyConstraintViolation",
        ]
    else:
        ok_payload = {"connectorId": 1, "csChargingProfiles": BAD_16}
        wrong_type = {"connectorId": "one", "csChargingProfiles": BAD_16}
        missing = {"csChargingProfiles": BAD_16}
        unsupported = ("UnlockConnector", {"connectorId": 1})
        codes = [
            "TypeConstraintViolation",
            "OccurenceConstraintViolation",
            "FormationViolation",
            "PropertyConstraintViolation",
        ]
    extra = {**ok_payload, "colour": "blue"}
    bad_enum = orjson.loads(orjson.dumps(ok_payload))
    prof = bad_enum["chargingProfile" if version == "2.0.1" else "csChargingProfiles"]
    prof["chargingProfilePurpose"] = "Whatever"

    async def send(uid: str, action: str, payload: Any) -> Any:
        return await peer.raw(orjson.dumps([2, uid, action, payload]).decode())

    for uid, payload, code in zip(
        ["b1", "b2", "b3", "b4"], [wrong_type, missing, extra, bad_enum], codes, strict=True
    ):
        reply = await send(uid, "SetChargingProfile", payload)
        assert (reply.unique_id, reply.error_code) == (uid, code), reply
    reply = await send("b5", "FlyToTheMoon", {})
    assert reply.error_code == "NotImplemented"
    reply = await send("b6", *unsupported)
    assert reply.error_code == "NotSupported"
    if version == "2.0.1":
        reply = await peer.raw("this is not json")
        assert (reply.unique_id, reply.error_code) == ("-1", "RpcFrameworkError")
        reply = await peer.raw('[7,"b7","Heartbeat",{}]')
        assert reply.error_code == "MessageTypeNotSupported"
    assert len(events.of("ocpp.callerror")) >= 6
    # the station keeps working
    reply = await send("ok1", "SetChargingProfile", ok_payload)
    assert reply.payload == {"status": "Accepted"}
    await cs.plug_in(1, CAR, VehicleState(0.2, 0.9), "TAG", at(0))
    await run_to(cs, at(60))
    assert cs.evse_state(1).power_kw == pytest.approx(6 * 690 / 1000)
    assert cs.online
    await cs.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_remote_start_then_plug_in_and_trigger(csms: MiniCsms, version: str) -> None:
    cs, _events = make_station(csms, version)
    await cs.connect(T0)
    peer = csms.peers["CS1"]
    sched = {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}]}
    if version == "2.0.1":
        prof = {
            "id": 9,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, **sched}],
        }
        res = await peer.call(
            c201.RequestStartTransaction(
                id_token={"idToken": "APP", "type": "Central"},
                remote_start_id=7,
                evse_id=2,
                charging_profile=prof,
            )
        )
    else:
        prof = {
            "chargingProfileId": 9,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": sched,
        }
        res = await peer.call(
            c16.RemoteStartTransaction(id_tag="APP", connector_id=2, charging_profile=prof)
        )
    assert res.status == "Accepted"
    await cs.plug_in(2, CAR, VehicleState(0.3, 0.9), "IGNORED", at(0))
    assert not peer.of("Authorize")
    # the TxProfile of the remote start belongs to the new transaction
    assert [(e, p.id, p.transaction_id) for e, p in cs.profiles.profiles] == [
        (2, 9, cs.evse_state(2).transaction_id)
    ]
    await run_to(cs, at(60))
    assert cs.evse_state(2).power_kw == pytest.approx(10 * 690 / 1000)
    if version == "2.0.1":
        started = peer.of("TransactionEvent")[0]
        assert started["trigger_reason"] == "RemoteStart"
        assert started["transaction_info"]["remote_start_id"] == 7
        res = await peer.call(c201.TriggerMessage(requested_message="MeterValues", evse={"id": 2}))
    else:
        assert peer.of("StartTransaction")[0]["id_tag"] == "APP"
        res = await peer.call(c16.TriggerMessage(requested_message="MeterValues", connector_id=2))
    assert res.status == "Accepted"
    await cs.drain()
    mv = peer.of("MeterValues")[-1]
    assert mv["evse_id" if version == "2.0.1" else "connector_id"] == 2
    assert mv["meter_value"][0]["sampled_value"][0]["context"] == "Trigger"
    await cs.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_configuration_reset_and_triggers(csms: MiniCsms, version: str) -> None:
    cs, _events = make_station(csms, version)
    await cs.connect(T0)
    peer = csms.peers["CS1"]
    if version == "2.0.1":
        comp = {"name": "OCPPCommCtrlr"}
        res = await peer.call(
            c201.SetVariables(
                set_variable_data=[
                    {
                        "component": comp,
                        "variable": {"name": "HeartbeatInterval"},
                        "attributeValue": "120",
                    },
                    {
                        "component": comp,
                        "variable": {"name": "HeartbeatInterval"},
                        "attributeValue": "soon",
                    },
                ]
            )
        )
        assert [r["attribute_status"] for r in res.set_variable_result] == ["Accepted", "Rejected"]
        res = await peer.call(
            c201.GetVariables(
                get_variable_data=[
                    {"component": comp, "variable": {"name": "HeartbeatInterval"}},
                    {"component": {"name": "X"}, "variable": {"name": "Nope"}},
                ]
            )
        )
        got = res.get_variable_result
        assert got[0]["attribute_value"] == "120" and got[0]["component"] == comp
        assert got[1]["attribute_status"] == "UnknownVariable"
        res = await peer.call(c201.Reset(type="Immediate"))
        assert res.status == "Accepted"
        triggers = ["BootNotification", "Heartbeat", "StatusNotification", "LogStatusNotification"]
        statuses = [
            (await peer.call(c201.TriggerMessage(requested_message=m))).status for m in triggers
        ]
    else:
        res = await peer.call(c16.ChangeConfiguration(key="HeartbeatInterval", value="120"))
        assert res.status == "Accepted"
        res = await peer.call(c16.ChangeConfiguration(key="HeartbeatInterval", value="soon"))
        assert res.status == "Rejected"
        res = await peer.call(c16.GetConfiguration(key=["HeartbeatInterval", "Nope"]))
        assert res.configuration_key == [
            {"key": "HeartbeatInterval", "readonly": False, "value": "120"}
        ]
        assert res.unknown_key == ["Nope"]
        res = await peer.call(c16.Reset(type="Soft"))
        assert res.status == "Accepted"
        triggers = [
            "BootNotification",
            "Heartbeat",
            "StatusNotification",
            "DiagnosticsStatusNotification",
        ]
        statuses = [
            (await peer.call(c16.TriggerMessage(requested_message=m))).status for m in triggers
        ]
    assert statuses == ["Accepted", "Accepted", "Accepted", "NotImplemented"]
    await cs.drain()
    assert cs.heartbeat_interval_s == 300  # the triggered BootNotification's interval
    assert [a for a, _ in peer.received][-4:] == [
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "StatusNotification",
    ]
    await run_to(cs, at(301))
    assert peer.received[-1][0] == "Heartbeat"
    await cs.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_plug_in_while_offline_then_reconnect(csms: MiniCsms, version: str) -> None:
    """Local authorization offline; the queued transaction messages get through later."""
    events = Events()
    spec = StationSpec(
        "DC1",
        version,
        (EvseSpec(1, "DC", 50.0),),  # type: ignore[arg-type]
        fail_safe_current_a=50.0,
    )
    cs = ChargingStation(spec, csms.url, on_event=events)
    await cs.connect(T0)
    port = csms.port
    await csms.stop()
    await run_to(cs, at(1))
    assert not cs.online
    await cs.plug_in(1, CAR, VehicleState(0.5, 0.9), "TAG", at(10))
    for k in range(1, 4):
        await run_to(cs, at(10 + 60 * k))
    r = cs.evse_state(1)
    assert r.power_kw == pytest.approx(50 * 400 / 1000)  # fail-safe 50 A at 400 V DC
    csms2 = MiniCsms()
    await csms2.start(port)
    try:
        await run_to(cs, at(250))
        assert cs.online
        peer = csms2.peers["DC1"]
        if version == "2.0.1":
            evs = peer.of("TransactionEvent")
            assert evs[0]["event_type"] == "Started" and evs[0]["offline"] is True
            assert [e["seq_no"] for e in evs] == list(range(len(evs)))
            samples = evs[-1]["meter_value"][0]["sampled_value"]
        else:
            assert peer.of("StartTransaction")[0]["meter_start"] == 0
            assert all(m["transaction_id"] == 101 for m in peer.of("MeterValues"))
            assert cs.evse_state(1).transaction_id == "101"
            samples = peer.of("MeterValues")[-1]["meter_value"][0]["sampled_value"]
        soc = [s for s in samples if s["measurand"] == "SoC"]
        assert soc and float(soc[0]["value"]) > 50.0
        assert not peer.of("Authorize")
        await cs.close()
    finally:
        await csms2.stop()


async def test_frames_are_recorded_and_deterministic(csms: MiniCsms) -> None:
    async def run(sid: str) -> list[str]:
        cs, events = make_station(csms, "2.0.1", sid=sid, record_frames=True)
        await cs.connect(T0)
        await cs.plug_in(1, CAR, VehicleState(0.2, 0.9), "TAG", at(0))
        for k in range(1, 4):
            await run_to(cs, at(60 * k))
        await cs.close()
        return [
            p["raw"].replace(sid, "SID") for p in events.of("ocpp.frame") if p["direction"] == "out"
        ]

    a = await run("DET-A")
    b = await run("DET-B")
    assert a == b
    first = orjson.loads(a[0])
    assert first[:3] == [2, "SID-1", "BootNotification"]


async def test_basic_auth_password(csms: MiniCsms) -> None:
    from websockets.asyncio.server import basic_auth

    seen: list[str] = []

    def check(user: str, pw: str) -> bool:
        seen.append(f"{user}:{pw}")
        return pw == "s3cret"

    await csms.stop()
    server = MiniCsms()
    import websockets

    server.server = await websockets.serve(
        server._handler,
        "127.0.0.1",
        0,
        subprotocols=["ocpp2.0.1"],
        compression=None,
        process_request=basic_auth(check_credentials=check),
    )
    server.port = server.server.sockets[0].getsockname()[1]
    try:
        spec = StationSpec("SEC1", "2.0.1", (EvseSpec(1, "AC", 11.0),), password="s3cret")
        cs = ChargingStation(spec, server.url)
        await cs.connect(T0)
        assert cs.online and seen == ["SEC1:s3cret"]
        await cs.close()
        bad = ChargingStation(
            StationSpec("SEC2", "2.0.1", (EvseSpec(1, "AC", 11.0),), password="wrong"), server.url
        )
        with pytest.raises(Exception):  # noqa: B017 - HTTP 401 from the handshake
            await bad.connect(T0)
        assert not bad.online
    finally:
        await server.stop()
        await csms.start()


async def test_busy_while_a_call_waits(csms: MiniCsms) -> None:
    cs, _ = make_station(csms, "2.0.1")
    await cs.connect(T0)
    await cs.plug_in(1, CAR, VehicleState(0.2, 0.9), "TAG", at(0))
    await cs.advance(at(60))
    assert cs.busy
    await asyncio.wait_for(cs.drain(), 5)
    assert not cs.busy
    assert cs.evse_state(1).power_kw == pytest.approx(22.0)
    await cs.advance(at(60) + timedelta(seconds=0))
    await cs.close()
