"""CSMS over real websockets on 127.0.0.1: boot, registry, admission, bad frames."""

import asyncio
import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from csms_testkit import NOW, MakeHarness, iso, rpc
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from websockets.exceptions import ConnectionClosed, InvalidStatus

from controllers.csms import EvseConfig, hash_password
from controllers.csms.auth import parse_basic_auth, verify_password
from controllers.csms.meter import parse_meter_values
from controllers.csms.rpc import station_id_from_path

VERSIONS = ["2.0.1", "1.6"]


# ------------------------------------------------------------------ boot


@pytest.mark.parametrize("version", VERSIONS)
async def test_boot_is_accepted_and_tx_default_profile_installed(
    harness: MakeHarness, version: str
) -> None:
    h = await harness(heartbeat_interval_s=120)
    cs = await h.station("CP1", version, boot=False)
    reply = await cs.boot()
    assert reply.status == "Accepted"
    assert reply.interval == 120
    assert reply.current_time == iso(NOW)
    await h.csms.drain()

    assert len(cs.profiles) == 1
    connector, profile = cs.profiles[0]
    assert connector == 0
    assert profile["charging_profile_purpose"] == "TxDefaultProfile"
    assert profile["stack_level"] == 0
    assert cs.last_limit(0) == 0.0  # a new transaction waits for the DLM
    station = h.csms.registry.stations["CP1"]
    assert (station.ocpp_version, station.vendor, station.connected) == (version, "TestCo", True)
    assert station.default_profile_status == "Accepted"
    assert [e[2] for e in h.events][:3] == [
        "station.connected",
        "station.booted",
        "station.default_profile",
    ]
    assert not h.kinds("ocpp.callerror")
    assert h.csms.rtt_samples_s and all(0 < s < 5 for s in h.csms.rtt_samples_s)


async def test_boot_with_station_max_and_dc_evse_installs_each_profile(
    harness: MakeHarness,
) -> None:
    h = await harness(
        evses={"CP1": [EvseConfig(evse_id=2, kind="DC", max_power_kw=150)]},
        station_max_current_a={"CP1": 63.0},
    )
    cs = await h.station("CP1")
    purposes = [(e, p["charging_profile_purpose"]) for e, p in cs.profiles]
    assert purposes == [
        (0, "TxDefaultProfile"),
        (2, "TxDefaultProfile"),
        (0, "ChargingStationMaxProfile"),
    ]
    dc_schedule = cs.profiles[1][1]["charging_schedule"][0]
    assert dc_schedule["charging_rate_unit"] == "W"
    max_profile = cs.profiles[2][1]
    assert max_profile["charging_profile_kind"] == "Absolute"
    assert max_profile["charging_schedule"][0]["charging_schedule_period"][0]["limit"] == 63.0


async def test_call_ids_of_the_csms_are_a_deterministic_counter(harness: MakeHarness) -> None:
    h = await harness()
    ws = await h.raw("CP1", ["ocpp2.0.1"])
    boot = [
        2,
        "b1",
        "BootNotification",
        {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"},
    ]
    assert (await rpc(ws, boot))[:2] == [3, "b1"]
    async with asyncio.timeout(5):
        call = json.loads(await ws.recv())
    assert call[:3] == [2, "1", "SetChargingProfile"]


async def test_station_id_from_prefix_path_and_trailing_slash(harness: MakeHarness) -> None:
    h = await harness()
    await h.station("CP-A", prefix="")
    await h.station("CP-B", prefix="/ocpp/v2")
    assert {"CP-A", "CP-B"} <= set(h.csms.registry.stations)
    assert station_id_from_path("/ocpp/CP%201/") == "CP 1"
    assert station_id_from_path("/") is None


# -------------------------------------------------------------- registry


@pytest.mark.parametrize("version", VERSIONS)
async def test_transaction_with_meter_values_updates_the_registry(
    harness: MakeHarness, version: str
) -> None:
    h = await harness()
    cs = await h.station("CP1", version)
    tx_id = await cs.start_tx(1, "TOKEN1", NOW, energy_wh=1000.0)
    t1 = NOW + timedelta(seconds=30)
    h.csms.set_now(t1)
    await cs.meter(1, t1, energy_wh=2500.0, currents=(15.5, 15.9, 16.0), soc=42.0)

    tx = h.csms.registry.transaction("CP1", tx_id)
    assert tx is not None and tx.active
    assert (tx.evse_id, tx.id_token, tx.meter_start_wh) == (1, "TOKEN1", 1000.0)
    assert tx.energy_wh == 2500.0
    assert tx.energy_delivered_wh == 1500.0
    assert tx.current_a == {1: 15.5, 2: 15.9, 3: 16.0}
    assert tx.active_phases == (1, 2, 3)
    assert tx.soc == pytest.approx(0.42)
    assert tx.measured_at == t1

    t2 = NOW + timedelta(minutes=5)
    h.csms.set_now(t2)
    await cs.end_tx(1, t2, energy_wh=4000.0)
    assert not tx.active
    assert (tx.stopped_at, tx.meter_stop_wh) == (t2, 4000.0)
    started, ended = h.kinds("transaction.started"), h.kinds("transaction.ended")
    assert started[0]["transaction"] == tx_id and started[0]["id_token"] == "TOKEN1"
    assert ended[0]["energy_wh"] == 3000.0
    assert [e[0] for e in h.events if e[2] == "transaction.ended"] == [t2]
    assert not h.kinds("ocpp.callerror")


async def test_status_notification_learns_evses(harness: MakeHarness) -> None:
    h = await harness()
    ws = await h.raw("CP1", ["ocpp2.0.1"])
    frame = [
        2,
        "s1",
        "StatusNotification",
        {"timestamp": iso(NOW), "connectorStatus": "Occupied", "evseId": 2, "connectorId": 1},
    ]
    assert await rpc(ws, frame) == [3, "s1", {}]
    assert h.csms.registry.stations["CP1"].evses[2].connector_status == {1: "Occupied"}


async def test_authorize_with_allow_list(harness: MakeHarness) -> None:
    h = await harness(allowed_id_tokens=["GOOD"])
    ws = await h.raw("CP1", ["ocpp2.0.1"])
    for token, status in (("GOOD", "Accepted"), ("BAD", "Invalid")):
        reply = await rpc(
            ws, [2, token, "Authorize", {"idToken": {"idToken": token, "type": "ISO14443"}}]
        )
        assert reply == [3, token, {"idTokenInfo": {"status": status}}]


def test_meter_values_of_both_versions_parse_to_si_units() -> None:
    v16 = parse_meter_values(
        [
            {
                "timestamp": "2025-06-02T08:00:00Z",
                "sampled_value": [
                    {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "16", "measurand": "Current.Import", "phase": "L2"},
                    {"value": "230", "measurand": "Voltage", "phase": "L1-N"},
                    {"value": "n/a", "measurand": "Current.Import", "phase": "L1"},
                ],
            }
        ]
    )
    assert (v16.energy_wh, v16.power_w, v16.current_a) == (12500.0, 7400.0, {2: 16.0})
    v201 = parse_meter_values(
        [
            {
                "timestamp": "2025-06-02T08:00:05+00:00",
                "sampled_value": [
                    {
                        "value": 3.0,
                        "measurand": "Energy.Active.Import.Register",
                        "unit_of_measure": {"unit": "Wh", "multiplier": 3},
                    },
                    {"value": 55, "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}},
                ],
            }
        ]
    )
    assert v201.energy_wh == 3000.0 and v201.soc == pytest.approx(0.55)
    assert v201.timestamp is not None and v201.timestamp.second == 5


# ------------------------------------------------------------- admission


@pytest.mark.parametrize("offered", [["ocpp1.5"], None])
async def test_client_without_a_supported_subprotocol_is_refused(
    harness: MakeHarness, offered: list[str] | None, caplog: pytest.LogCaptureFixture
) -> None:
    h = await harness()
    ws = await h.raw("CP1", offered)
    assert ws.subprotocol is None
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
    assert "no supported OCPP subprotocol" in caplog.text
    assert h.kinds("station.rejected")[0]["station"] == "CP1"
    assert "CP1" not in h.csms.registry.stations


async def test_both_subprotocols_offered_prefers_2_0_1(harness: MakeHarness) -> None:
    h = await harness()
    ws = await h.raw("CP1", ["ocpp1.6", "ocpp2.0.1"])
    assert ws.subprotocol == "ocpp2.0.1"


async def test_unknown_station_is_refused_when_a_list_is_configured(
    harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await harness(known_stations=["CP1"])
    with pytest.raises(InvalidStatus) as refused:
        await h.raw("INTRUDER", ["ocpp2.0.1"])
    assert refused.value.response.status_code == 404
    assert "unknown station" in caplog.text and "INTRUDER" in caplog.text
    assert h.kinds("station.rejected") == [
        {"station": "INTRUDER", "reason": "unknown station", "http_status": 404}
    ]
    await h.station("CP1")  # the known one is served


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_http_basic_auth_with_hashed_password(harness: MakeHarness) -> None:
    stored = hash_password("s3cret-s3cret-16")
    h = await harness(station_passwords={"CP1": stored, "CP2": "plain-password-16"})
    assert verify_password(stored, "s3cret-s3cret-16") and not verify_password(stored, "x")
    await h.station("CP1", additional_headers=_basic("CP1", "s3cret-s3cret-16"))
    await h.station("CP2", additional_headers=_basic("CP2", "plain-password-16"))
    for headers in ({}, _basic("CP1", "wrong"), _basic("CP2", "s3cret-s3cret-16")):
        with pytest.raises(InvalidStatus) as refused:
            await h.raw("CP1", ["ocpp2.0.1"], additional_headers=headers)
        assert refused.value.response.status_code == 401
    assert "plain-password-16" not in repr(h.csms.__dict__)
    assert parse_basic_auth("Basic !!!") is None


# ------------------------------------------------------------ bad frames

BOOT_201 = {"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"}
BAD_FRAMES: dict[str, list[tuple[str | list[Any], str, str]]] = {
    # (frame, expected message id, expected code)
    "2.0.1": [
        ("this is not json", "-1", "RpcFrameworkError"),
        ('{"not": "an array"}', "-1", "RpcFrameworkError"),
        ([2, "m1", "Heartbeat"], "m1", "RpcFrameworkError"),
        ([9, "m2", "Heartbeat", {}], "m2", "MessageTypeNotSupported"),
        ([2, "m3", "FooBar", {}], "m3", "NotImplemented"),
        ([2, "m4", "SetChargingProfile", {}], "m4", "NotSupported"),
        (
            [2, "m5", "BootNotification", {"reason": "PowerUp"}],
            "m5",
            "OccurrenceConstraintViolation",
        ),
        (
            [
                2,
                "m6",
                "StatusNotification",
                {
                    "timestamp": iso(NOW),
                    "connectorStatus": "Available",
                    "evseId": "one",
                    "connectorId": 1,
                },
            ],
            "m6",
            "TypeConstraintViolation",
        ),
        ([2, "m7", "Heartbeat", {"extra": 1}], "m7", "FormatViolation"),
    ],
    "1.6": [
        ("this is not json", "-1", "FormationViolation"),
        ([9, "m2", "Heartbeat", {}], "m2", "FormationViolation"),
        ([2, "m3", "FooBar", {}], "m3", "NotImplemented"),
        ([2, "m4", "GetConfiguration", {}], "m4", "NotSupported"),
        ([2, "m5", "BootNotification", {"chargePointVendor": "V"}], "m5", "ProtocolError"),
        (
            [
                2,
                "m6",
                "StatusNotification",
                {"connectorId": "one", "errorCode": "NoError", "status": "Available"},
            ],
            "m6",
            "TypeConstraintViolation",
        ),
        ([2, "m7", "Heartbeat", {"extra": 1}], "m7", "FormationViolation"),
    ],
}


@pytest.mark.parametrize("version", VERSIONS)
async def test_bad_frames_get_the_right_callerror_and_others_are_still_served(
    harness: MakeHarness, version: str
) -> None:
    h = await harness()
    good = await h.station("GOOD", version)
    bad = await h.raw("BAD", [f"ocpp{version}"])
    for frame, message_id, code in BAD_FRAMES[version]:
        reply = await rpc(bad, frame)
        assert reply[:3] == [4, message_id, code], (frame, reply)
        assert isinstance(reply[3], str) and isinstance(reply[4], dict)
        # the connection survives and another station is still served
        assert (await good.call(_heartbeat(version))).current_time == iso(NOW)
    assert (await rpc(bad, [2, "ok", "Heartbeat", {}]))[:2] == [3, "ok"]
    sent = [e for e in h.kinds("ocpp.callerror") if e["direction"] == "sent"]
    assert [e["code"] for e in sent] == [c for _, _, c in BAD_FRAMES[version]]
    assert all(e["station"] == "BAD" for e in sent)


def _heartbeat(version: str) -> Any:
    return call201.Heartbeat() if version == "2.0.1" else call16.Heartbeat()


async def test_response_frames_are_never_answered_with_a_callerror(harness: MakeHarness) -> None:
    h = await harness()
    ws = await h.raw("CP1", ["ocpp2.0.1"])
    await ws.send('[3,"nobody-asked",{}]')
    await ws.send('[4,"nobody-asked","GenericError","",{}]')
    assert (await rpc(ws, [2, "hb", "Heartbeat", {}]))[:2] == [3, "hb"]


async def test_record_frames_emits_every_frame(harness: MakeHarness) -> None:
    h = await harness(record_frames=True)
    ws = await h.raw("CP1", ["ocpp2.0.1"])
    await rpc(ws, [2, "hb", "Heartbeat", {}])
    frames = h.kinds("ocpp.frame")
    assert [f["direction"] for f in frames] == ["in", "out"]
    assert frames[0]["frame"] == '[2, "hb", "Heartbeat", {}]'


async def test_disconnect_is_registered_and_drain_returns(harness: MakeHarness) -> None:
    h = await harness()
    ws = await h.raw("CP1", ["ocpp2.0.1"])
    await rpc(ws, [2, "b", "BootNotification", BOOT_201])
    await ws.close()  # while the TxDefaultProfile call is outstanding
    async with asyncio.timeout(5):
        await h.csms.drain()  # the pending call is cancelled when the socket closes
    assert not h.csms.registry.stations["CP1"].connected
    assert not h.csms.busy
    assert h.kinds("station.disconnected")[0]["station"] == "CP1"
