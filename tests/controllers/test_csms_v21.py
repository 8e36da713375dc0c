"""The CSMS with OCPP 2.1 stations: subprotocol, export metering, signed set-points (V2G).

The test-side stations are the ``ocpp`` library's 2.1 ChargePoint (it validates every
message it sends and receives against the official 2.1 schemas, as the CSMS does).
"""

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from csms_testkit import NOW, MakeHarness, iso
from ocpp.routing import on
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from websockets.asyncio.client import connect

from controllers.csms import EvseConfig
from controllers.csms.meter import parse_meter_values
from controllers.csms.station import Station21

DC = [EvseConfig(evse_id=1, kind="DC", max_power_kw=50.0, bidirectional=True),
      EvseConfig(evse_id=2, kind="DC", max_power_kw=50.0)]


class Emu21(ChargePoint21):
    """A scripted 2.1 station: records profiles, answers with ``status``."""

    def __init__(self, station_id: str, ws: Any, status: str = "Accepted") -> None:
        super().__init__(station_id, ws, response_timeout=5)
        self.profiles: list[tuple[int, dict[str, Any]]] = []
        self.status = status
        self.seq = 0

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any],
                                **_: Any) -> Any:
        self.profiles.append((evse_id, charging_profile))
        return result21.SetChargingProfile(status=self.status)

    def last_period(self, evse_id: int) -> dict[str, Any]:
        profile = [p for e, p in self.profiles if e == evse_id][-1]
        period: dict[str, Any] = profile["charging_schedule"][0]["charging_schedule_period"][0]
        return period

    async def event(self, kind: str, evse_id: int, t: datetime, import_wh: float,
                    export_wh: float, power_w: float, **extra: Any) -> Any:
        self.seq += 1
        info = extra.pop("transaction_info", {"transaction_id": f"T{evse_id}"})
        samples = [
            {"value": import_wh, "measurand": "Energy.Active.Import.Register"},
            {"value": export_wh, "measurand": "Energy.Active.Export.Register"},
            {"value": max(power_w, 0.0), "measurand": "Power.Active.Import"},
            {"value": max(-power_w, 0.0), "measurand": "Power.Active.Export"},
        ]
        return await self.call(call21.TransactionEvent(
            event_type=kind, timestamp=iso(t), trigger_reason="MeterValuePeriodic",
            seq_no=self.seq, transaction_info=info,
            evse={"id": evse_id, "connector_id": 1},
            meter_value=[{"timestamp": iso(t), "sampled_value": samples}], **extra))


async def station21(h: Any, sid: str = "V1", status: str = "Accepted") -> Emu21:
    ws = await connect(f"ws://127.0.0.1:{h.port}/ocpp/{sid}", subprotocols=["ocpp2.1"],
                       compression=None)
    emu = Emu21(sid, ws, status)
    task = asyncio.create_task(emu.start())
    h._open.append((ws, task))
    await emu.call(call21.BootNotification(
        charging_station={"vendor_name": "TestCo", "model": "T21"}, reason="PowerUp"))
    await h.csms.drain()
    return emu


async def start(emu: Emu21, h: Any, evse_id: int, t: datetime = NOW) -> None:
    await emu.event("Started", evse_id, t, 0.0, 0.0, 0.0,
                    id_token={"id_token": "TAG", "type": "ISO14443"})
    await h.csms.drain()


async def step(h: Any, t: datetime) -> None:
    await h.csms.step(t)
    await h.csms.drain()


async def test_ocpp21_is_accepted_and_preferred(harness: MakeHarness) -> None:
    h = await harness()
    ws = await h.raw("CPX", ["ocpp2.0.1", "ocpp2.1", "ocpp1.6"])
    assert ws.subprotocol == "ocpp2.1"
    emu = await station21(h)
    assert isinstance(h.csms._links["V1"], Station21)
    assert h.csms.registry.station("V1").ocpp_version == "2.1"
    assert h.kinds("station.default_profile")[0]["status"] == "Accepted"
    assert emu.profiles[0][1]["charging_profile_purpose"] == "TxDefaultProfile"


async def test_export_metering_is_parsed_and_kept_per_transaction(harness: MakeHarness) -> None:
    h = await harness(evses={"V1": DC})
    emu = await station21(h)
    await start(emu, h, 1)
    await emu.event("Updated", 1, NOW + timedelta(minutes=1), 100.0, 250.0, -7000.0)
    await h.csms.drain()
    tx = h.csms.registry.active_transaction_on("V1", 1)
    assert tx is not None
    assert tx.power_w == -7000.0 and tx.energy_exported_wh == 250.0
    assert h.csms.ev_power_kw() == pytest.approx(-7.0)
    await emu.event("Ended", 1, NOW + timedelta(minutes=2), 100.0, 370.0, 0.0,
                    transaction_info={"transaction_id": "T1", "stopped_reason": "Local"})
    await h.csms.drain()
    ended = h.kinds("transaction.ended")[0]
    assert ended["exported_wh"] == 370.0 and ended["energy_wh"] == 100.0


def test_meter_reading_sign_convention() -> None:
    r = parse_meter_values([{"timestamp": "2025-06-02T08:00:00Z", "sampled_value": [
        {"value": 0.0, "measurand": "Power.Active.Import"},
        {"value": 3.5, "measurand": "Power.Active.Export", "unit_of_measure": {"unit": "kW"}},
        {"value": 1.2, "measurand": "Energy.Active.Export.Register",
         "unit_of_measure": {"unit": "kWh"}},
    ]}])
    assert r.net_power_w == -3500.0 and r.export_energy_wh == 1200.0


async def test_discharge_setpoint_goes_out_as_central_setpoint(harness: MakeHarness) -> None:
    h = await harness(evses={"V1": DC})
    emu = await station21(h)
    await start(emu, h, 1)
    h.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await step(h, NOW + timedelta(seconds=10))
    period = emu.last_period(1)
    assert period == {"start_period": 0, "operation_mode": "CentralSetpoint",
                      "setpoint": -7000.0, "limit": 0.0, "discharge_limit": -7000.0}
    assert [p for _, p in emu.profiles][-1]["transaction_id"] == "T1"
    assert h.kinds("v2g.setpoint")[0]["setpoint_kw"] == -7.0
    n = len(emu.profiles)
    await step(h, NOW + timedelta(seconds=20))  # unchanged: not sent again
    assert len(emu.profiles) == n
    # Removing the target hands the EVSE back to the DLM: a ChargingOnly TxProfile.
    h.csms.set_evse_setpoint_kw("V1", 1, None)
    await step(h, NOW + timedelta(seconds=30))
    assert "operation_mode" not in emu.last_period(1)


async def test_rejected_setpoint_is_clamped_for_the_transaction(harness: MakeHarness) -> None:
    h = await harness(evses={"V1": DC})
    emu = await station21(h, status="Rejected")
    await start(emu, h, 1)
    h.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await step(h, NOW + timedelta(seconds=10))
    assert h.kinds("v2g.setpoint_rejected")[0]["status"] == "Rejected"
    emu.status = "Accepted"
    await step(h, NOW + timedelta(seconds=20))
    assert emu.last_period(1) == {"start_period": 0, "limit": 0.0}  # paused, charge-only


@pytest.mark.parametrize("case", ["2.0.1 station", "not bidirectional"])
async def test_negative_target_clamps_to_zero_on_charge_only_evses(
    harness: MakeHarness, case: str
) -> None:
    h = await harness(evses={"V1": DC})
    if case == "2.0.1 station":
        emu: Any = await h.station("V1", "2.0.1")
        evse_id = 1
        await emu.start_tx(evse_id, "TAG", NOW)
    else:
        emu = await station21(h)
        evse_id = 2  # configured charge-only
        await start(emu, h, evse_id)
    await h.csms.drain()
    h.csms.set_evse_setpoint_kw("V1", evse_id, -7.0)
    await step(h, NOW + timedelta(seconds=10))
    clamped = h.kinds("v2g.setpoint_clamped")
    assert clamped and clamped[0]["requested_kw"] == -7.0
    assert not h.kinds("v2g.setpoint")
    tx_profiles = [p for e, p in emu.profiles if e == evse_id]
    assert not tx_profiles or all(
        "operation_mode" not in p["charging_schedule"][0]["charging_schedule_period"][0]
        for p in tx_profiles)
    assert h.csms.setpoints()[("V1", evse_id)] == 0.0


async def test_metered_export_is_credited_as_site_headroom(harness: MakeHarness) -> None:
    # 20 kW site: EVSE 1 discharges, EVSE 2 (another station) charges.
    evses = {"V1": DC, "V2": [EvseConfig(evse_id=1, kind="DC", max_power_kw=50.0)]}
    h = await harness(20.0, evses=evses)
    v1 = await station21(h, "V1")
    v2 = await station21(h, "V2")
    await start(v1, h, 1)
    await start(v2, h, 1)
    h.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await step(h, NOW + timedelta(seconds=10))
    before = float(v2.last_period(1)["limit"])
    # Commanded but not metered yet: no credit.
    await step(h, NOW + timedelta(seconds=20))
    assert float(v2.last_period(1)["limit"]) == before
    # Metered export of 7 kW: EVSE 2 may take 7 kW more (the site limit still holds).
    await v1.event("Updated", 1, NOW + timedelta(seconds=25), 0.0, 50.0, -7000.0)
    await h.csms.drain()
    await step(h, NOW + timedelta(seconds=30))
    after = float(v2.last_period(1)["limit"])
    assert after == pytest.approx(before + 7000.0)
    assert h.csms.available_power_kw() == pytest.approx(before / 1000.0 + 7.0, abs=0.2)
    # The export stops (V2G floor): the credit goes at the next step.
    await v1.event("Updated", 1, NOW + timedelta(seconds=35), 0.0, 60.0, 0.0)
    await h.csms.drain()
    await step(h, NOW + timedelta(seconds=40))
    assert float(v2.last_period(1)["limit"]) == pytest.approx(before)


async def test_charge_target_caps_the_dlm(harness: MakeHarness) -> None:
    h = await harness(100.0, evses={"V1": DC})
    emu = await station21(h)
    await start(emu, h, 1)
    h.csms.set_evse_setpoint_kw("V1", 1, 5.0)
    await step(h, NOW + timedelta(seconds=10))
    assert emu.last_period(1)["limit"] == 5000.0
    with pytest.raises(ValueError):
        h.csms.set_evse_setpoint_kw("V1", 1, float("nan"))


async def test_charge_target_of_a_single_phase_vehicle_not_yet_drawing(
    harness: MakeHarness,
) -> None:
    # A 2.65 kW target for a 1-phase vehicle on a 3-phase AC EVSE, before any current is
    # measured: divided by three phases it is 3.8 A, below the 6 A minimum, so the vehicle
    # would be paused and never start; stated as a 1-phase vehicle it is 11.5 A.
    ac = [EvseConfig(evse_id=1, kind="AC", max_current_a=32.0, phases=3, phase_rotation="RST")]
    h = await harness(100.0, evses={"V1": ac})
    emu = await station21(h)
    await start(emu, h, 1)
    h.csms.set_evse_setpoint_kw("V1", 1, 2.65)
    await step(h, NOW + timedelta(seconds=10))
    assert all(float(p["charging_schedule"][0]["charging_schedule_period"][0]["limit"]) == 0.0
               for e, p in emu.profiles if e == 1)  # paused (0 A, or nothing beyond default)
    h.csms.set_evse_setpoint_kw("V1", 1, 2.65, vehicle_phases=1)
    await step(h, NOW + timedelta(seconds=20))
    assert emu.last_period(1)["limit"] == pytest.approx(11.5)
    with pytest.raises(ValueError):
        h.csms.set_evse_setpoint_kw("V1", 1, 2.65, vehicle_phases=4)


class _LeavesThenRejects(Emu21):
    """A station whose vehicle leaves while a TxProfile is on its way: it reports the
    end of the transaction, then refuses the profile (no transaction any more)."""

    armed = False

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any],
                                      **_: Any) -> Any:
        self.profiles.append((evse_id, charging_profile))
        if not self.armed:
            return result21.SetChargingProfile(status="Accepted")
        asyncio.get_running_loop().create_task(self.event(
            "Ended", 1, NOW + timedelta(seconds=19), 100.0, 0.0, 0.0,
            transaction_info={"transaction_id": "T1", "stopped_reason": "EVDisconnected"}))
        await asyncio.sleep(0.2)  # the Ended frame goes out before this answer
        return result21.SetChargingProfile(status="Rejected")


async def test_a_decrease_refused_after_plug_out_does_not_hold_the_raises(
    harness: MakeHarness,
) -> None:
    one = [EvseConfig(evse_id=1, kind="DC", max_power_kw=50.0)]
    h = await harness(40.0, evses={"V1": one, "V2": one})
    ws = await connect(f"ws://127.0.0.1:{h.port}/ocpp/V1", subprotocols=["ocpp2.1"],
                       compression=None)
    v1 = _LeavesThenRejects("V1", ws)
    h._open.append((ws, asyncio.create_task(v1.start())))
    await v1.call(call21.BootNotification(
        charging_station={"vendor_name": "TestCo", "model": "T21"}, reason="PowerUp"))
    v2 = await station21(h, "V2")
    await start(v1, h, 1)
    await start(v2, h, 1)
    h.csms.set_evse_setpoint_kw("V1", 1, 20.0)
    h.csms.set_evse_setpoint_kw("V2", 1, 5.0)
    await step(h, NOW + timedelta(seconds=10))
    assert float(v2.last_period(1)["limit"]) == 5000.0
    # V1 down, V2 up: V1's vehicle leaves while its decrease is on its way
    v1.armed = True
    h.csms.set_evse_setpoint_kw("V1", 1, 5.0)
    h.csms.set_evse_setpoint_kw("V2", 1, 20.0)
    await step(h, NOW + timedelta(seconds=20))
    await asyncio.sleep(0.3)
    await h.csms.drain()
    assert h.kinds("dlm.setpoint_moot") and not h.kinds("dlm.increase_held")
    assert float(v2.last_period(1)["limit"]) == 20000.0
