"""V2G over OCPP 2.1: the station emulator against the real CSMS, over real websockets.

Both ends validate every message against the official OCPP 2.1 JSON schemas shipped with
the ``ocpp`` package (the emulator with compiled schemas, the CSMS through the library);
on top of that every frame the station sent or received is checked here once more with
``jsonschema`` against the same schema files.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import ocpp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.exceptions import OCPPError
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201

from controllers.csms import Csms, CsmsConfig, EvseConfig, SiteConfig
from controllers.csms.station import Station21
from devices.charging_station import ChargingStation, EvseSpec, StationSpec
from devices.charging_station.station import REASON_NO_V2X, REASON_UNSUPPORTED_MODE
from devices.vehicle import VehicleSpec, VehicleState, charge, discharge

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
V2G_CAR = VehicleSpec(
    "V2G van", 60.0, 11.0, 3, 50.0, v2g=True, ac_max_discharge_kw=11.0, dc_max_discharge_kw=10.0
)
PLAIN_CAR = VehicleSpec("Plain van", 60.0, 11.0, 3, 50.0)
SCHEMAS = {
    "2.1": Path(ocpp.__file__).parent / "v21" / "schemas",
    "2.0.1": Path(ocpp.__file__).parent / "v201" / "schemas",
}


class Events(list[tuple[Any, str, str, dict[str, Any]]]):
    def __call__(self, t: Any, source: str, kind: str, payload: dict[str, Any]) -> None:
        self.append((t, source, kind, payload))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for _, _, k, p in self if k == kind]


class Site:
    """The real CSMS and one emulated station connected to it, stepped in lock-step."""

    def __init__(self) -> None:
        self.csms_events = Events()
        self.station_events = Events()
        self.csms: Csms | None = None
        self.cs: ChargingStation | None = None
        self.now = T0

    async def start(
        self,
        version: str = "2.1",
        *,
        bidirectional: bool = True,
        configured_bidirectional: bool = True,
        grid_limit_kw: float = 100.0,
    ) -> ChargingStation:
        config = CsmsConfig(
            site=SiteConfig(grid_limit_kw=grid_limit_kw),
            evses={"V1": [EvseConfig(evse_id=1, kind="DC", max_power_kw=50.0,
                                     bidirectional=configured_bidirectional)]},
        )
        self.csms = Csms(config, on_event=self.csms_events)
        self.csms.set_now(T0)
        self.csms.set_non_ev_load(0.0, T0)
        port = await self.csms.start()
        spec = StationSpec("V1", version, (EvseSpec(1, "DC", 50.0, bidirectional=bidirectional),),
                           meter_interval_s=60)  # type: ignore[arg-type]
        self.cs = ChargingStation(spec, f"ws://127.0.0.1:{port}/ocpp",
                                  on_event=self.station_events, record_frames=True)
        await self.cs.connect(T0)
        await self.settle()
        return self.cs

    async def settle(self) -> None:
        assert self.csms is not None and self.cs is not None
        for _ in range(3):
            await self.cs.drain()
            await self.csms.drain()

    async def step(self, minutes: int = 1) -> None:
        assert self.csms is not None and self.cs is not None
        for _ in range(minutes):
            self.now += timedelta(minutes=1)
            await self.cs.advance(self.now)
            await self.settle()
            self.csms.set_non_ev_load(0.0, self.now)  # a fresh site measurement
            await self.csms.step(self.now)
            await self.settle()

    def link(self) -> Any:
        assert self.csms is not None
        return self.csms._links["V1"]

    async def close(self) -> None:
        if self.cs is not None:
            await self.cs.close()
        if self.csms is not None:
            await self.csms.stop()


@pytest.fixture
async def site() -> Any:
    s = Site()
    yield s
    await s.close()
    assert_frames_valid(s.station_events, s.cs.spec.ocpp_version if s.cs else "2.1")


def _schema(version: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS[version] / f"{name}.json").read_text("utf-8-sig"))
    return data


def assert_frames_valid(events: Events, version: str) -> int:
    """Validate every recorded frame against the official schemas; returns the count."""
    actions: dict[str, str] = {}
    n = 0
    frames = [json.loads(f["raw"]) for f in events.of("ocpp.frame")]
    refused = {m[1] for m in frames if m[0] == 4}  # deliberately invalid CALLs of a test
    for msg in frames:
        if msg[1] in refused:
            continue
        if msg[0] == 2:
            actions[msg[1]] = msg[2]
            jsonschema.validate(msg[3], _schema(version, msg[2] + "Request"))
            n += 1
        elif msg[0] == 3 and msg[1] in actions:
            jsonschema.validate(msg[2], _schema(version, actions[msg[1]] + "Response"))
            n += 1
    return n


def sampled(events: Events, measurand: str) -> list[float]:
    """Values of ``measurand`` in the TransactionEvents the station sent."""
    out: list[float] = []
    for frame in events.of("ocpp.frame"):
        msg = json.loads(frame["raw"])
        if frame["direction"] != "out" or msg[0] != 2 or msg[2] != "TransactionEvent":
            continue
        for mv in msg[3].get("meterValue", []):
            out += [sv["value"] for sv in mv["sampledValue"] if sv.get("measurand") == measurand]
    return out


# ----------------------------------------------------------------------------- V2G flows
async def test_v21_station_discharges_on_a_central_setpoint(site: Site) -> None:
    cs = await site.start()
    assert site.station_events.of("ocpp.connected")[0]["subprotocol"] == "ocpp2.1"
    assert isinstance(site.link(), Station21)
    await cs.plug_in(1, V2G_CAR, VehicleState(0.6, 0.9, min_soc=0.3), "TAG", site.now)
    await site.settle()
    await site.step(2)  # the DLM lets it charge
    assert cs.evse_state(1).power_kw > 0
    assert site.csms is not None
    site.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await site.step(1)  # the set-point goes out; physics from now on
    soc0, export0 = cs.evse_state(1).soc, cs.evse_state(1).export_register_kwh
    await site.step(5)
    r = cs.evse_state(1)
    assert r.operation_mode == "CentralSetpoint"
    assert r.power_kw == pytest.approx(-7.0)
    assert r.export_register_kwh - export0 == pytest.approx(7.0 * 5 / 60)
    assert r.soc is not None and soc0 is not None
    assert (soc0 - r.soc) * 60.0 == pytest.approx(7.0 * 5 / 60 / 0.92)  # battery loss
    assert r.current_a[0] < 0  # site phases see the export
    # The CentralSetpoint TxProfile as the station received it.
    profile = site.station_events.of("profile.installed")[-1]
    assert profile["operation_modes"] == ["CentralSetpoint"] and profile["setpoints"] == [-7000.0]
    # MeterValues (TransactionEvent Updated) report the export; the CSMS keeps it.
    assert max(sampled(site.station_events, "Energy.Active.Export.Register")) > 500.0
    assert 7000.0 in sampled(site.station_events, "Power.Active.Export")
    tx = site.csms.registry.active_transaction_on("V1", 1)
    assert tx is not None and tx.power_w == pytest.approx(-7000.0)
    assert tx.energy_exported_wh == pytest.approx(r.export_register_kwh * 1000.0)
    # Back to the DLM: the next TxProfile replaces the set-point, the export stops.
    site.csms.set_evse_setpoint_kw("V1", 1, None)
    await site.step(2)
    assert cs.evse_state(1).operation_mode == "ChargingOnly"
    assert cs.evse_state(1).power_kw >= 0.0
    await cs.plug_out(1, site.now)
    await site.settle()
    ended = site.csms_events.of("transaction.ended")[0]
    final_export_wh = cs.evse_state(1).export_register_kwh * 1000.0
    assert ended["exported_wh"] == pytest.approx(final_export_wh) and final_export_wh > 583.0


async def test_discharge_stops_at_the_v2g_floor(site: Site) -> None:
    cs = await site.start()
    await cs.plug_in(1, V2G_CAR, VehicleState(0.32, 0.9, min_soc=0.3), "TAG", site.now)
    await site.settle()
    assert site.csms is not None
    site.csms.set_evse_setpoint_kw("V1", 1, -10.0)
    await site.step(20)  # 1.2 kWh above the floor: ~7 min at 10 kW
    r = cs.evse_state(1)
    assert r.soc == pytest.approx(0.3)
    assert r.export_register_kwh == pytest.approx(0.02 * 60.0 * 0.92)
    assert r.power_kw == pytest.approx(0.0)
    assert r.charging_state == "SuspendedEV"


async def test_non_v2g_vehicle_rejects_the_setpoint(site: Site) -> None:
    cs = await site.start()
    await cs.plug_in(1, PLAIN_CAR, VehicleState(0.6, 0.9), "TAG", site.now)
    await site.settle()
    assert site.csms is not None
    site.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await site.step(5)
    rejected = site.station_events.of("profile.rejected")
    assert rejected and rejected[0]["reason"] == REASON_NO_V2X
    assert site.csms_events.of("v2g.setpoint_rejected")[0]["status"] == "Rejected"
    assert cs.evse_state(1).export_register_kwh == 0.0
    assert cs.evse_state(1).power_kw == pytest.approx(0.0)  # clamped to 0 for the tx


async def test_non_bidirectional_evse_rejects_the_setpoint(site: Site) -> None:
    # The operator's configuration says bidirectional, the EVSE is not: the station says no.
    cs = await site.start(bidirectional=False)
    await cs.plug_in(1, V2G_CAR, VehicleState(0.6, 0.9), "TAG", site.now)
    await site.settle()
    assert site.csms is not None
    site.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await site.step(3)
    assert site.station_events.of("profile.rejected")[0]["reason"] == REASON_NO_V2X
    assert cs.evse_state(1).export_register_kwh == 0.0


async def test_csms_clamps_when_evse_not_configured_bidirectional(site: Site) -> None:
    cs = await site.start(configured_bidirectional=False)
    await cs.plug_in(1, V2G_CAR, VehicleState(0.6, 0.9), "TAG", site.now)
    await site.settle()
    assert site.csms is not None
    site.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await site.step(3)
    assert site.csms_events.of("v2g.setpoint_clamped")
    assert not site.station_events.of("profile.rejected")
    assert cs.evse_state(1).power_kw == pytest.approx(0.0)
    assert cs.evse_state(1).export_register_kwh == 0.0


async def test_v201_station_never_discharges(site: Site) -> None:
    cs = await site.start("2.0.1", bidirectional=True)
    assert site.station_events.of("ocpp.connected")[0]["subprotocol"] == "ocpp2.0.1"
    await cs.plug_in(1, V2G_CAR, VehicleState(0.6, 0.9), "TAG", site.now)
    await site.settle()
    assert site.csms is not None
    site.csms.set_evse_setpoint_kw("V1", 1, -7.0)
    await site.step(3)
    assert site.csms_events.of("v2g.setpoint_clamped")
    assert cs.evse_state(1).power_kw == pytest.approx(0.0)
    assert cs.evse_state(1).export_register_kwh == 0.0
    # A 2.1 period sent to a 2.0.1 station anyway breaks its schema: FormatViolation.
    tx = cs.evse_state(1).transaction_id
    profile = _setpoint_profile(tx, "CentralSetpoint", -7000.0, limit=0.0)
    with pytest.raises(OCPPError) as err:
        await site.link().call(call201.SetChargingProfile(evse_id=1, charging_profile=profile),
                               suppress=False, skip_schema_validation=True)
    assert err.value.code == "FormatViolation"
    assert cs.evse_state(1).export_register_kwh == 0.0


def _setpoint_profile(
    tx: str | None, mode: str, setpoint_w: float | None, limit: float | None = None
) -> dict[str, Any]:
    period: dict[str, Any] = {"start_period": 0, "operation_mode": mode}
    if limit is not None:
        period["limit"] = limit
    if setpoint_w is not None:
        period["setpoint"] = setpoint_w
    return {
        "id": 77, "stack_level": 1, "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Relative", "transaction_id": tx,
        "charging_schedule": [{"id": 77, "charging_rate_unit": "W",
                               "charging_schedule_period": [period]}],
    }


@pytest.mark.parametrize(
    "mode", ["ExternalSetpoint", "ExternalLimits", "CentralFrequency", "LocalFrequency",
             "LocalLoadBalancing"])
async def test_unsupported_operation_mode_is_rejected(site: Site, mode: str) -> None:
    cs = await site.start()
    await cs.plug_in(1, V2G_CAR, VehicleState(0.6, 0.9), "TAG", site.now)
    await site.settle()
    tx = cs.evse_state(1).transaction_id
    reply = await site.link().request(call21.SetChargingProfile(
        evse_id=1, charging_profile=_setpoint_profile(tx, mode, -5000.0)))
    assert reply.status == "Rejected"
    assert reply.status_info["reason_code"] == REASON_UNSUPPORTED_MODE
    await site.step(2)
    assert cs.evse_state(1).export_register_kwh == 0.0


async def test_idle_mode_transfers_nothing_and_charging_setpoint_caps(site: Site) -> None:
    cs = await site.start()
    await cs.plug_in(1, V2G_CAR, VehicleState(0.6, 0.9), "TAG", site.now)
    await site.settle()
    tx = cs.evse_state(1).transaction_id
    reply = await site.link().request(call21.SetChargingProfile(
        evse_id=1, charging_profile=_setpoint_profile(tx, "Idle", None)))
    assert reply.status == "Accepted"
    await cs.advance(site.now + timedelta(minutes=1))
    await cs.advance(site.now + timedelta(minutes=2))
    await site.settle()
    r = cs.evse_state(1)
    assert r.operation_mode == "Idle" and r.power_kw == 0.0 and r.charging_state == "SuspendedEVSE"
    # CentralSetpoint +5 kW: charges at 5 kW although the limit would allow more.
    reply = await site.link().request(call21.SetChargingProfile(
        evse_id=1, charging_profile=_setpoint_profile(tx, "CentralSetpoint", 5000.0)))
    assert reply.status == "Accepted"
    await cs.advance(site.now + timedelta(minutes=3))
    await cs.advance(site.now + timedelta(minutes=4))
    await site.settle()
    assert cs.evse_state(1).power_kw == pytest.approx(5.0)


# ----------------------------------------------------------------------------- physics
@settings(max_examples=200, deadline=None)
@given(
    soc0=st.floats(0.0, 1.0),
    floor=st.floats(0.0, 0.9),
    eta_c=st.floats(0.5, 1.0),
    eta_d=st.floats(0.5, 1.0),
    steps=st.lists(
        st.tuples(st.floats(-60.0, 60.0), st.floats(0.0, 7200.0), st.sampled_from(["AC", "DC"])),
        min_size=1, max_size=30),
)
def test_energy_is_conserved_and_soc_stays_within_floor_and_one(
    soc0: float, floor: float, eta_c: float, eta_d: float,
    steps: list[tuple[float, float, str]],
) -> None:
    spec = VehicleSpec("V", 40.0, 11.0, 3, 50.0, charge_efficiency=eta_c, v2g=True,
                       ac_max_discharge_kw=11.0, dc_max_discharge_kw=25.0,
                       discharge_efficiency=eta_d)
    state = VehicleState(soc0, 1.0, min_soc=floor)
    imported = exported = 0.0
    low = min(soc0, floor)
    for power_kw, dt_s, kind in steps:
        if power_kw >= 0:
            state, e = charge(spec, state, power_kw, dt_s, kind)  # type: ignore[arg-type]
            imported += e
            assert e * 3600.0 <= max(power_kw, 0.0) * dt_s + 1e-9
        else:
            state, x = discharge(spec, state, -power_kw, dt_s, kind)  # type: ignore[arg-type]
            exported += x
            assert x * 3600.0 <= -power_kw * dt_s + 1e-9
        assert low - 1e-12 <= state.soc <= 1.0
    battery_kwh = (state.soc - soc0) * spec.battery_capacity_kwh
    assert math.isclose(battery_kwh, imported * eta_c - exported / eta_d, abs_tol=1e-6)
    assert math.isclose(state.energy_into_battery_kwh, imported * eta_c, abs_tol=1e-9)
    assert math.isclose(state.energy_out_of_battery_kwh, exported / eta_d, abs_tol=1e-9)


def test_a_vehicle_without_v2g_never_discharges() -> None:
    state, x = discharge(PLAIN_CAR, VehicleState(0.8), 10.0, 3600.0, "DC")
    assert x == 0.0 and state.soc == 0.8
