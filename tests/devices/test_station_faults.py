"""Injected station faults on the wire: the emulator against the project's real CSMS.

Every test runs the real :class:`~controllers.csms.Csms` (with its DLM) on 127.0.0.1 and
real emulated stations (:class:`~devices.charging_station.ChargingStation`) with a
:class:`~devices.charging_station.faults.StationFaults` schedule; time is injected
(lock-step by hand: advance, quiesce, CSMS step, quiesce). Checked per fault kind: what
the station does on the wire, and how the CSMS reacts (events naming the station, fail
safe, no crash).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controllers.csms import Csms, CsmsConfig, DlmConfig, EvseConfig, SiteConfig
from devices.charging_station import ChargingStation, EvseSpec, StationSpec
from devices.charging_station.faults import StationFault, StationFaults
from devices.vehicle import VehicleSpec, VehicleState

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
STEP = timedelta(seconds=60)
EV22 = VehicleSpec("van", 80.0, 22.0, 3, 50.0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def window(kind: str, start_min: float, end_min: float, **kw: Any) -> StationFaults:
    return StationFaults.of([StationFault(kind, at(start_min), at(end_min), **kw)])  # type: ignore[arg-type]


@dataclass
class Rig:
    """A CSMS and its stations, stepped by hand on virtual time."""

    csms: Csms
    url: str
    events: list[tuple[datetime, str, str, dict[str, Any]]] = field(default_factory=list)
    stations: dict[str, ChargingStation] = field(default_factory=dict)
    now: datetime = T0

    def kinds(self, kind: str, source: str | None = None) -> list[dict[str, Any]]:
        return [p for _, s, k, p in self.events if k == kind and (source is None or s == source)]

    def sink(self, t: datetime, source: str, kind: str, payload: dict[str, Any]) -> None:
        self.events.append((t, source, kind, payload))

    async def add(
        self, sid: str, version: str = "2.0.1", faults: StationFaults | None = None
    ) -> ChargingStation:
        spec = StationSpec(sid, version, (EvseSpec(1, "AC", 22.0),))  # type: ignore[arg-type]
        cs = ChargingStation(
            spec, self.url, on_event=self.sink, response_timeout_s=2.0, faults=faults
        )
        self.stations[sid] = cs
        await cs.connect(self.now)
        await self.quiesce()
        return cs

    async def quiesce(self) -> None:
        endpoints = [self.csms, *self.stations.values()]
        while True:
            for e in endpoints:
                await e.drain()
            for _ in range(3):
                await asyncio.sleep(0)
            if not any(e.busy for e in endpoints):
                return

    async def step(self, n: int = 1) -> None:
        """``n`` control steps of 60 s: advance stations, then the CSMS's DLM."""
        for _ in range(n):
            self.now += STEP
            self.csms.set_now(self.now)
            for cs in self.stations.values():
                await cs.advance(self.now)
            await self.quiesce()
            self.csms.set_non_ev_load(0.0, self.now)
            await self.csms.step(self.now)
            await self.quiesce()

    async def plug(self, sid: str, token: str = "TOKEN") -> None:
        self.csms.set_now(self.now)
        await self.stations[sid].plug_in(1, EV22, VehicleState(0.2, 0.9), token, self.now)
        await self.quiesce()


@pytest.fixture
async def rig() -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    made: list[Rig] = []

    async def make(limit_kw: float = 30.0, strategy: str = "llf", **config: Any) -> Rig:
        evses = {sid: [EvseConfig(evse_id=1, max_power_kw=22.0)] for sid in ("CS1", "CS2")}
        csms_cfg = CsmsConfig(
            site=SiteConfig(grid_limit_kw=limit_kw),
            dlm=DlmConfig(strategy=strategy, telemetry_timeout_s=300),  # type: ignore[arg-type]
            evses=evses,
            **config,
        )
        holder: list[Rig] = []
        csms = Csms(csms_cfg, on_event=lambda *e: holder[0].sink(*e),
                    perf_counter=time.perf_counter)
        csms.set_now(T0)
        port = await csms.start("127.0.0.1", 0)
        r = Rig(csms, f"ws://127.0.0.1:{port}")
        holder.append(r)
        made.append(r)
        return r

    yield make
    for r in made:
        for cs in r.stations.values():
            await cs.close()
        await r.csms.stop()


def station_events(r: Rig, sid: str, kind: str) -> list[dict[str, Any]]:
    return r.kinds(kind, source=sid)


# ------------------------------------------------------------------------ the model
def test_fault_windows_are_half_open_and_validated() -> None:
    f = StationFaults.of([
        StationFault("overshoot", at(10), at(20), factor=2.0),
        StationFault("drop_responses", at(0), at(5)),
        StationFault("delay_responses", at(3), at(8), delay_s=0.5),
        StationFault("clock_skew", at(0), at(1), skew_s=-90),
    ])
    assert [x.kind for x in f.faults][:2] == ["clock_skew", "drop_responses"]
    assert f.reply_delay_s(at(4)) is None  # dropping wins over delaying
    assert f.reply_delay_s(at(6)) == 0.5
    assert f.reply_delay_s(at(8)) == 0.0  # end is exclusive
    assert f.skew_s(at(0)) == -90 and f.skew_s(at(1)) == 0
    assert f.offer_kw(at(10), 5.0, 22.0) == 10.0
    assert f.offer_kw(at(10), 15.0, 22.0) == 22.0  # capped by the hardware
    assert f.offer_kw(at(20), 5.0, 22.0) == 5.0
    assert not StationFaults() and f.active("link_drop", at(3)) is None
    with pytest.raises(ValueError, match="empty"):
        StationFault("link_drop", at(5), at(5))
    with pytest.raises(ValueError, match="tz-aware"):
        StationFault("link_drop", datetime(2025, 1, 1), at(5))
    with pytest.raises(ValueError, match="unknown fault"):
        StationFault("meltdown", at(0), at(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        StationFault("overshoot", at(0), at(1), factor=0)


# ------------------------------------------------------------------------ link drop
async def test_link_drop_goes_offline_fail_safe_then_reconnects_and_charges(rig) -> None:
    r = await rig(limit_kw=30.0)
    cs = await r.add("CS1", faults=window("link_drop", 5, 15))
    await r.plug("CS1")
    await r.step(4)
    assert cs.evse_state(1).power_kw > 10.0  # charging under its TxProfile
    await r.step(1)  # t = 5 min: the link drops
    assert not cs.online
    assert station_events(r, "CS1", "fault.started")[0]["kind"] == "link_drop"
    assert r.kinds("station.disconnected")[-1]["station"] == "CS1"
    await r.step(9)  # t = 14 min: still inside the window, no reconnect attempt made
    assert not cs.online
    assert not station_events(r, "CS1", "ocpp.reconnect_failed")
    assert len(station_events(r, "CS1", "ocpp.connected")) == 1
    # offline a real charger falls back to its TxDefaultProfile (0 A here): fail safe
    assert cs.evse_state(1).power_kw == 0.0
    # the CSMS counts the EVSE at its maximum: worst case, never raised
    alloc = r.csms.last_result.allocations[("CS1", 1)]  # type: ignore[union-attr]
    assert alloc.worst_case
    await r.step(1)  # t = 15 min: window over, back-off elapsed: reconnect
    assert cs.online
    assert len(station_events(r, "CS1", "ocpp.connected")) == 2
    assert r.kinds("station.connected")[-1]["station"] == "CS1"
    await r.step(3)
    assert cs.evse_state(1).power_kw > 10.0  # charges again
    assert not r.csms.last_result.allocations[("CS1", 1)].worst_case  # type: ignore[union-attr]


async def test_link_drop_at_connect_time_is_retried_after_the_window(rig) -> None:
    r = await rig()
    cs = await r.add("CS1", faults=window("link_drop", 0, 2))  # no crash: starts offline
    assert not cs.online and not r.kinds("station.connected")
    await r.step(1)
    assert not cs.online
    await r.step(2)
    assert cs.online


# ------------------------------------------------------------------------ replies
async def test_delayed_replies_arrive_late_but_within_the_timeout(rig) -> None:
    r = await rig(response_timeout_s=2.0)
    cs = await r.add("CS1", faults=window("delay_responses", 0, 60, delay_s=0.3))
    await r.plug("CS1")
    wall = time.perf_counter()
    n0 = len(r.csms.rtt_samples_s)
    await r.step(1)
    assert time.perf_counter() - wall >= 0.3
    assert min(r.csms.rtt_samples_s[n0:]) >= 0.3  # the SetChargingProfile reply was late
    assert cs.profiles is not None and r.csms.setpoints()[("CS1", 1)] > 0
    assert not r.kinds("station.unresponsive") and not r.kinds("dlm.setpoint_failed")


async def test_late_replies_time_out_and_the_evse_is_counted_at_its_maximum(rig) -> None:
    r = await rig(limit_kw=30.0, response_timeout_s=0.2)
    await r.add("CS1", faults=window("delay_responses", 2, 4, delay_s=0.4))
    await r.plug("CS1")
    await r.step(1)
    assert r.csms.last_result.allocations[("CS1", 1)].setpoint > 0  # type: ignore[union-attr]
    r.csms.set_external_limit(15.0)  # a lower limit: a new set-point must go out
    await r.step(1)  # t = 2 min: the reply comes 0.4 s late, the CSMS gave up at 0.2 s
    unresp = r.kinds("station.unresponsive")
    assert unresp and unresp[0]["station"] == "CS1" and unresp[0]["timeout_s"] == 0.2
    assert r.kinds("dlm.setpoint_failed")[0]["status"] == "Timeout"
    await r.step(1)
    assert r.csms.last_result.allocations[("CS1", 1)].worst_case  # type: ignore[union-attr]
    await r.step(2)  # window over: answered again
    assert r.kinds("station.responsive")[0]["station"] == "CS1"
    assert not r.csms.last_result.allocations[("CS1", 1)].worst_case  # type: ignore[union-attr]


async def test_dropped_replies_time_out_without_blocking_other_stations(rig) -> None:
    r = await rig(limit_kw=30.0, response_timeout_s=0.3)
    cs1 = await r.add("CS1", faults=window("drop_responses", 2, 5))
    cs2 = await r.add("CS2", "1.6")
    await r.plug("CS1", "A")
    await r.plug("CS2", "B")
    await r.step(1)
    r.csms.set_external_limit(20.0)
    wall = time.perf_counter()
    await r.step(1)  # both get a new set-point; CS1 never answers
    assert time.perf_counter() - wall < 2.0  # one timeout, not one per station in series
    assert station_events(r, "CS1", "fault.call_dropped")[0]["action"] == "SetChargingProfile"
    assert [e["station"] for e in r.kinds("station.unresponsive")] == ["CS1"]
    failed = r.kinds("dlm.setpoint_failed")
    assert {e["station"] for e in failed} == {"CS1"}
    # CS2 got its new set-point in the same step
    assert cs2.evse_state(1).offered_power_kw == pytest.approx(
        r.csms.setpoints()[("CS2", 1)] * 3 * 230 / 1000, rel=1e-6)
    await r.step(1)
    res = r.csms.last_result
    assert res is not None and res.allocations[("CS1", 1)].worst_case
    # fail safe: CS1 is reserved at its maximum (22 kW > the 20 kW limit): CS2 paused
    assert res.allocations[("CS1", 1)].reserved_a == pytest.approx(22000 / 690, abs=0.1)
    assert r.csms.setpoints()[("CS2", 1)] == 0.0
    assert cs2.evse_state(1).offered_power_kw == 0.0
    assert cs1.online  # a silent station is not disconnected
    await r.step(3)
    assert r.kinds("station.responsive")[0]["station"] == "CS1"
    assert not r.csms.last_result.allocations[("CS1", 1)].worst_case  # type: ignore[union-attr]


# ------------------------------------------------------------------------ malformed
@pytest.mark.parametrize(
    ("version", "codes"),
    [
        ("2.0.1", ["RpcFrameworkError", "MessageTypeNotSupported", "FormatViolation"]),
        ("1.6", ["FormationViolation", "FormationViolation", "FormationViolation"]),
    ],
)
async def test_malformed_frames_get_callerrors_and_the_link_stays_up(rig, version, codes) -> None:
    r = await rig()
    cs = await r.add("CS1", version, faults=window("malformed_frames", 1, 4))
    await r.plug("CS1")
    await r.step(5)
    sent = station_events(r, "CS1", "fault.malformed_frame")
    assert [e["variant"] for e in sent] == ["invalid_json", "bad_message_type", "bad_payload"]
    answered = [e for e in station_events(r, "CS1", "ocpp.callerror") if e.get("injected")]
    assert [e["code"] for e in answered] == codes
    reported = r.kinds("station.malformed_frame")
    assert [e["station"] for e in reported] == ["CS1"] * 3
    assert [e["code"] for e in reported] == codes
    # the rule: the connection is kept; telemetry and control go on
    assert cs.online and not r.kinds("station.disconnected")
    assert r.csms.registry.active_transaction_on("CS1", 1) is not None
    assert cs.evse_state(1).power_kw > 10.0


# ------------------------------------------------------------------------ clock skew
@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
async def test_clock_skew_is_reported_and_receive_time_is_used(rig, version) -> None:
    r = await rig(clock_skew_tolerance_s=60)
    await r.add("CS1", version, faults=window("clock_skew", 3, 30, skew_s=-600))
    await r.plug("CS1")
    await r.step(2)
    assert not r.kinds("station.clock_skew")
    await r.step(11)  # 1.6 meter values may be queued ones: judged once newer than the link
    skew = r.kinds("station.clock_skew")
    assert len(skew) == 1 and skew[0]["station"] == "CS1"
    assert skew[0]["offset_s"] == pytest.approx(-600)
    tx = r.csms.registry.active_transaction_on("CS1", 1)
    assert tx is not None and tx.measured_at == r.now  # not 10 min old: not stale
    alloc = r.csms.last_result.allocations[("CS1", 1)]  # type: ignore[union-attr]
    assert not alloc.worst_case and alloc.setpoint > 0
    await r.step(20)  # skew over
    assert r.kinds("station.clock_skew_cleared")[0]["station"] == "CS1"


# ------------------------------------------------------------------------ profiles
@pytest.mark.parametrize(
    ("faults", "expect_kw"),
    [
        (window("ignore_profiles", 3, 10), 22.0),
        (window("overshoot", 3, 10, factor=1.3), 19.5),
    ],
)
async def test_profile_violation_is_seen_and_the_measured_power_reserved(
    rig, faults, expect_kw
) -> None:
    r = await rig(limit_kw=30.0, strategy="equal")  # 15 kW each
    bad = await r.add("CS1", faults=faults)
    good = await r.add("CS2")
    await r.plug("CS1", "A")
    await r.plug("CS2", "B")
    await r.step(2)
    sp = r.csms.setpoints()
    assert sp[("CS1", 1)] * 3 * 0.23 == pytest.approx(15.0, abs=0.1)
    assert sp[("CS1", 1)] * 3 * 0.23 + sp[("CS2", 1)] * 3 * 0.23 <= 30.0 + 1e-6
    await r.step(3)  # t = 5 min: the fault is in force since 3 min
    violation = r.kinds("evse.profile_violation")
    assert violation and violation[0]["station"] == "CS1" and violation[0]["evse"] == 1
    assert violation[0]["measured_kw"] > violation[0]["limit_kw"] + violation[0]["tolerance_kw"]
    assert bad.evse_state(1).power_kw == pytest.approx(expect_kw, rel=0.01)
    res = r.csms.last_result
    assert res is not None
    alloc = res.allocations[("CS1", 1)]
    assert alloc.reason == "profile_violation"
    measured_a = bad.evse_state(1).power_kw * 1000 / (3 * 230)
    assert alloc.reserved_a == pytest.approx(measured_a, rel=0.02)
    # the other EVSE was reduced: what both draw fits the limit again
    await r.step(2)
    total = bad.evse_state(1).power_kw + good.evse_state(1).power_kw
    assert total <= 30.0 + 0.1
    assert good.evse_state(1).power_kw == pytest.approx(30.0 - expect_kw, abs=0.2)
    await r.step(6)  # window over: complies again, reservation released
    assert r.kinds("evse.profile_compliant")[0]["station"] == "CS1"
    assert r.csms.last_result.allocations[("CS1", 1)].reason != "profile_violation"  # type: ignore[union-attr]


async def test_missing_default_profile_makes_a_new_transaction_worst_case(rig) -> None:
    """The TxDefaultProfile is lost at boot: nothing limits the station, so the CSMS must
    not assume it draws the default (0 A) when a transaction starts."""
    r = await rig(limit_kw=30.0, response_timeout_s=0.2)
    cs = await r.add("CS1", faults=window("drop_responses", 0, 3))
    assert r.kinds("station.default_profile")[0]["status"] == "Timeout"
    await r.plug("CS1")
    await r.step(1)
    alloc = r.csms.last_result.allocations[("CS1", 1)]  # type: ignore[union-attr]
    assert alloc.worst_case and alloc.reserved_a == pytest.approx(22000 / 690, abs=0.1)
    assert cs.evse_state(1).power_kw == pytest.approx(22.0)  # unlimited: the van's maximum
    await r.step(3)  # answered again: the TxProfile is accepted, control is back
    assert not r.csms.last_result.allocations[("CS1", 1)].worst_case  # type: ignore[union-attr]
