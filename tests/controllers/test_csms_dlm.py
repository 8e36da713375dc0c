"""CSMS control loop over real websockets: step() -> SetChargingProfile TxProfiles."""

from datetime import datetime, timedelta

import pytest
from csms_testkit import NOW, Harness, MakeHarness, iso, kw_for_a
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from controllers.csms import EvseConfig, SiteConfig

T1 = NOW + timedelta(seconds=60)
AC32 = [EvseConfig(evse_id=1, max_current_a=32)]


async def step(h: Harness, t: datetime) -> None:
    await h.csms.step(t)
    await h.csms.drain()


async def test_two_stations_get_setpoints_whose_sum_fits_the_limit(harness: MakeHarness) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32, "CP2": AC32})
    cp1 = await h.station("CP1", "2.0.1")
    cp2 = await h.station("CP2", "1.6")
    tx1 = await cp1.start_tx(1, "T1", NOW)
    tx2 = await cp2.start_tx(1, "T2", NOW)
    await step(h, T1)

    p1, p2 = cp1.tx_profiles(1)[-1], cp2.tx_profiles(1)[-1]
    assert p1["charging_profile_purpose"] == p2["charging_profile_purpose"] == "TxProfile"
    assert p1["transaction_id"] == tx1 and p2["transaction_id"] == int(tx2)
    assert p1["charging_schedule"][0]["charging_rate_unit"] == "A"
    a1, a2 = cp1.last_limit(1), cp2.last_limit(1)
    assert a1 + a2 <= 40.0 + 1e-9
    assert (a1, a2) == (34.0 - 2.0, 8.0)  # CP1 first on the key tie-break, 32 A max
    assert h.csms.setpoints() == {("CP1", 1): a1, ("CP2", 1): a2}
    assert h.csms.available_power_kw() == pytest.approx(kw_for_a(40))
    changes = h.kinds("dlm.setpoint")
    assert [(c["station"], c["old"], c["new"]) for c in changes] == [
        ("CP1", 0.0, a1),
        ("CP2", 0.0, a2),
    ]
    assert all(e[0] == T1 for e in h.events if e[2] == "dlm.setpoint")

    # nothing changed: nothing is sent again
    before = len(cp1.profiles) + len(cp2.profiles)
    await cp1.meter(1, T1, currents=(a1, a1, a1))
    await cp2.meter(1, T1, currents=(a2, a2, a2))
    await step(h, T1 + timedelta(seconds=60))
    assert len(cp1.profiles) + len(cp2.profiles) == before
    assert len(h.kinds("dlm.setpoint")) == 2


async def test_equal_strategy_splits_between_stations(harness: MakeHarness) -> None:
    h = await harness(kw_for_a(30), evses={"CP1": AC32, "CP2": AC32}, dlm={"strategy": "equal"})
    cp1, cp2 = await h.station("CP1"), await h.station("CP2")
    await cp1.start_tx(1, "T1", NOW)
    await cp2.start_tx(1, "T2", NOW)
    await step(h, T1)
    assert cp1.last_limit(1) == cp2.last_limit(1) == 15.0


async def test_driver_priority_and_departure_order_the_allocation(harness: MakeHarness) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32, "CP2": AC32})
    h.csms.set_driver_input("T2", requested_energy_kwh=30, departure=NOW + timedelta(hours=1))
    cp1, cp2 = await h.station("CP1"), await h.station("CP2")
    await cp1.start_tx(1, "T1", NOW)
    await cp2.start_tx(1, "T2", NOW)
    await step(h, T1)
    assert (cp1.last_limit(1), cp2.last_limit(1)) == (8.0, 32.0)
    h.csms.set_driver_input("T1", None, None, priority=1)
    await cp1.meter(1, T1, currents=(8.0, 8.0, 8.0))
    await cp2.meter(1, T1, currents=(32.0, 32.0, 32.0))
    await step(h, T1 + timedelta(seconds=60))
    assert (cp1.last_limit(1), cp2.last_limit(1)) == (32.0, 8.0)


async def test_one_phase_vehicles_on_rotated_evses_use_different_phases(
    harness: MakeHarness,
) -> None:
    evses = {
        "CP1": [
            EvseConfig(evse_id=1, max_current_a=32, phase_rotation="RST"),
            EvseConfig(evse_id=2, max_current_a=32, phase_rotation="STR"),
        ],
    }
    h = await harness(kw_for_a(20), evses=evses)
    cp = await h.station("CP1")
    await cp.start_tx(1, "A", NOW, currents=(10.0, 0.0, 0.0))
    await cp.start_tx(2, "B", NOW, currents=(10.0, 0.0, 0.0))
    await step(h, T1)
    # EVSE 1's L1 is site L1, EVSE 2's L1 is site L2: both get the full 20 A
    assert (cp.last_limit(1), cp.last_limit(2)) == (20.0, 20.0)


async def test_dc_evse_gets_a_power_setpoint_in_watts(harness: MakeHarness) -> None:
    evses = {"CP1": [EvseConfig(evse_id=1, kind="DC", max_power_kw=150, min_power_kw=5)]}
    h = await harness(50.0, evses=evses)
    cp = await h.station("CP1", "1.6")
    await cp.start_tx(1, "D", NOW)
    await step(h, T1)
    schedule = cp.tx_profiles(1)[-1]["charging_schedule"]
    assert schedule["charging_rate_unit"] == "W"
    assert cp.last_limit(1) == 50000.0


@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
async def test_stale_evse_telemetry_counts_as_its_maximum(
    harness: MakeHarness, version: str
) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32, "CP2": AC32})
    cp1, cp2 = await h.station("CP1", version), await h.station("CP2", version)
    await cp1.start_tx(1, "T1", NOW)
    await cp2.start_tx(1, "T2", NOW)
    await step(h, T1)
    assert (cp1.last_limit(1), cp2.last_limit(1)) == (32.0, 8.0)

    # CP2 stops reporting; CP1 and the site meter keep going
    late = NOW + timedelta(seconds=400)
    h.csms.set_now(late)
    h.csms.set_non_ev_load(0.0, late)
    await cp1.meter(1, late, currents=(32.0, 32.0, 32.0))
    await step(h, late)
    allocation = h.csms.last_result.allocations[("CP2", 1)]  # type: ignore[union-attr]
    assert allocation.worst_case and allocation.reserved_a == 32.0
    assert cp2.last_limit(1) == 8.0  # held, never raised while stale
    assert cp1.last_limit(1) == 8.0  # 40 A - 32 A reserved for the silent one
    assert sum(h.csms.last_result.phase_reserved_a) <= 3 * 40.0 + 1e-9  # type: ignore[union-attr]


async def test_stale_site_meter_removes_all_headroom(harness: MakeHarness) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32})
    cp = await h.station("CP1")
    await cp.start_tx(1, "T1", NOW)
    await step(h, T1)
    assert cp.last_limit(1) == 32.0
    late = NOW + timedelta(seconds=400)
    h.csms.set_now(late)
    await cp.meter(1, late, currents=(32.0, 32.0, 32.0))
    await step(h, late)  # the non-EV load was last measured at NOW
    assert h.csms.available_power_kw() <= 0
    assert cp.last_limit(1) == 0.0
    assert h.kinds("dlm.setpoint")[-1]["reason"] == "no_headroom"


async def test_stale_site_meter_with_a_configured_worst_case_holds_the_minimum(
    harness: MakeHarness,
) -> None:
    site = SiteConfig(grid_limit_kw=kw_for_a(40), non_ev_load_worst_case_kw=kw_for_a(20))
    h = await harness(site=site, evses={"CP1": AC32})
    cp = await h.station("CP1")
    await cp.start_tx(1, "T1", NOW)
    late = NOW + timedelta(seconds=400)
    h.csms.set_now(late)
    await cp.meter(1, late, currents=(0.0, 0.0, 0.0))
    await step(h, late)
    # 20 A of headroom left by the worst case, but no fill while the meter is stale
    assert h.csms.available_power_kw() == pytest.approx(kw_for_a(20))
    assert cp.last_limit(1) == 6.0
    assert h.kinds("dlm.setpoint")[-1]["reason"] == "fail_safe_min"


async def test_lost_site_meter_holds_the_minimum_until_a_fresh_value(
    harness: MakeHarness,
) -> None:
    # a configured worst case leaves room for the minimums (without one: no headroom)
    site = SiteConfig(grid_limit_kw=kw_for_a(40), non_ev_load_worst_case_kw=kw_for_a(10))
    h = await harness(site=site, evses={"CP1": AC32, "CP2": AC32})
    cp1, cp2 = await h.station("CP1", "2.0.1"), await h.station("CP2", "1.6")
    await cp1.start_tx(1, "T1", NOW)
    await cp2.start_tx(1, "T2", NOW)
    await step(h, T1)
    assert (cp1.last_limit(1), cp2.last_limit(1)) == (32.0, 8.0)

    # the site controller loses its meter; the last value (at NOW) is not yet timed out
    t2 = T1 + timedelta(seconds=60)
    h.csms.set_now(t2)
    h.csms.set_non_ev_load(None, t2)
    await cp1.meter(1, t2, currents=(32.0, 32.0, 32.0))
    await cp2.meter(1, t2, currents=(8.0, 8.0, 8.0))
    await step(h, t2)
    result = h.csms.last_result
    assert result is not None and result.non_ev_stale
    assert (cp1.last_limit(1), cp2.last_limit(1)) == (6.0, 6.0)
    assert {c["reason"] for c in h.kinds("dlm.setpoint")[-2:]} == {"fail_safe_min"}

    # a fresh value clears the loss: both rise again
    t3 = t2 + timedelta(seconds=60)
    h.csms.set_now(t3)
    h.csms.set_non_ev_load(0.0, t3)
    await cp1.meter(1, t3, currents=(6.0, 6.0, 6.0))
    await cp2.meter(1, t3, currents=(6.0, 6.0, 6.0))
    await step(h, t3)
    result = h.csms.last_result
    assert result is not None and not result.non_ev_stale
    assert (cp1.last_limit(1), cp2.last_limit(1)) == (32.0, 8.0)


async def test_ev_power_and_ev_minimum_sum_the_open_transactions(
    harness: MakeHarness,
) -> None:
    evses = {
        "CP1": AC32,
        "CP2": [EvseConfig(evse_id=1, max_current_a=32, phase_rotation="RST")],
        "CP3": [EvseConfig(evse_id=1, kind="DC", max_power_kw=150, min_power_kw=5)],
    }
    h = await harness(kw_for_a(100), evses=evses)
    assert (h.csms.ev_power_kw(), h.csms.ev_minimum_kw()) == (0.0, 0.0)
    cp1 = await h.station("CP1", "2.0.1")
    cp2 = await h.station("CP2", "2.0.1")
    cp3 = await h.station("CP3", "1.6")
    await cp1.start_tx(1, "T1", NOW)
    await cp2.start_tx(1, "T2", NOW, currents=(10.0, 0.0, 0.0))  # a 1-phase vehicle
    await cp3.start_tx(1, "T3", NOW)
    power = [{"value": 7000.0, "measurand": "Power.Active.Import"}]
    await cp1._event("Updated", 1, T1, power)
    await cp3.call(
        call16.MeterValues(
            connector_id=1,
            transaction_id=int(cp3.tx_ids[1]),
            meter_value=[
                {
                    "timestamp": iso(T1),
                    "sampled_value": [{"value": "11000", "measurand": "Power.Active.Import"}],
                }
            ],
        )
    )
    await h.csms.drain()
    # CP2 reported no power: it counts 0
    assert h.csms.ev_power_kw() == pytest.approx(7.0 + 11.0)
    # AC 3 x 6 A x 230 V, AC 1 x 6 A x 230 V, DC 5 kW
    assert h.csms.ev_minimum_kw() == pytest.approx(3 * 6 * 0.23 + 6 * 0.23 + 5.0)

    await cp1.end_tx(1, T1, 1000.0)
    await h.csms.drain()
    assert h.csms.ev_power_kw() == pytest.approx(11.0)
    assert h.csms.ev_minimum_kw() == pytest.approx(6 * 0.23 + 5.0)


async def test_rejected_profile_makes_the_evse_worst_case_and_is_retried(
    harness: MakeHarness,
) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32, "CP2": AC32})
    stubborn = await h.station("CP1", status="Rejected")
    other = await h.station("CP2")
    await stubborn.start_tx(1, "T1", NOW)
    await other.start_tx(1, "T2", NOW)
    await step(h, T1)
    assert h.kinds("dlm.setpoint_failed")[0]["status"] == "Rejected"
    await step(h, T1 + timedelta(seconds=60))
    result = h.csms.last_result
    assert result is not None and result.allocations[("CP1", 1)].worst_case
    assert len(stubborn.tx_profiles(1)) == 2  # sent again
    assert other.last_limit(1) == 8.0  # 40 - 32 reserved for the uncontrolled EVSE


async def test_disconnected_station_is_worst_case_and_not_commanded(
    harness: MakeHarness,
) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32, "CP2": AC32})
    cp1, cp2 = await h.station("CP1"), await h.station("CP2")
    await cp1.start_tx(1, "T1", NOW)
    await cp2.start_tx(1, "T2", NOW)
    await step(h, T1)
    await cp2._connection.close()
    await h.csms.drain()
    await cp1.meter(1, T1, currents=(32.0, 32.0, 32.0))
    await step(h, T1 + timedelta(seconds=30))
    assert h.kinds("station.disconnected")[0]["station"] == "CP2"
    result = h.csms.last_result
    assert result is not None and result.allocations[("CP2", 1)].worst_case
    assert cp1.last_limit(1) == 8.0


async def test_taper_over_the_wire_frees_capacity(harness: MakeHarness) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32, "CP2": AC32})
    cp1, cp2 = await h.station("CP1"), await h.station("CP2")
    await cp1.start_tx(1, "T1", NOW)
    await cp2.start_tx(1, "T2", NOW)
    await step(h, T1)
    t2 = T1 + timedelta(seconds=60)
    h.csms.set_now(t2)
    await cp1.meter(1, t2, currents=(10.0, 10.0, 10.0))  # battery nearly full
    await cp2.meter(1, t2, currents=(8.0, 8.0, 8.0))
    await step(h, t2)
    assert cp1.last_limit(1) == 12.0  # 10 A measured + 2 A headroom
    assert cp2.last_limit(1) == 28.0


async def test_transaction_end_forgets_the_setpoint(harness: MakeHarness) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32})
    cp = await h.station("CP1")
    await cp.start_tx(1, "T1", NOW)
    await step(h, T1)
    assert h.csms.setpoints() == {("CP1", 1): 32.0}
    await cp.end_tx(1, T1, 5000.0)
    await step(h, T1 + timedelta(seconds=60))
    assert h.csms.setpoints() == {}
    await cp.start_tx(1, "T3", T1)  # a new session starts from the default (0 A)
    assert h.csms.setpoints() == {("CP1", 1): 0.0}


async def test_external_limit_binds_until_it_expires(harness: MakeHarness) -> None:
    h = await harness(kw_for_a(40), evses={"CP1": AC32})
    cp = await h.station("CP1")
    await cp.start_tx(1, "T1", NOW)
    h.csms.set_external_limit(kw_for_a(10), valid_until=T1 + timedelta(seconds=30))
    await step(h, T1)
    assert cp.last_limit(1) == 10.0
    t2 = T1 + timedelta(seconds=60)
    h.csms.set_now(t2)
    h.csms.set_non_ev_load(0.0, t2)
    await cp.meter(1, t2, currents=(10.0, 10.0, 10.0))
    await step(h, t2)
    assert cp.last_limit(1) == 32.0


async def test_evse_missing_from_the_configuration_is_assumed_conservatively(
    harness: MakeHarness,
) -> None:
    h = await harness(kw_for_a(40), unknown_evse_max_current_a=16)
    cp = await h.station("CP1")
    await cp.start_tx(1, "T1", NOW, currents=(10.0, 0.0, 0.0))  # a 1-phase vehicle
    await step(h, T1)
    allocation = h.csms.last_result.allocations[("CP1", 1)]  # type: ignore[union-attr]
    assert cp.last_limit(1) == 16.0
    # unknown phase rotation: its one phase may be any site phase, so all are reserved
    assert h.csms.last_result.phase_reserved_a == (16.0, 16.0, 16.0)  # type: ignore[union-attr]
    assert allocation.unit == "A"


async def test_a_station_connecting_again_replaces_its_old_connection(
    harness: MakeHarness,
) -> None:
    h = await harness()
    old = await h.station("CP1")
    new = await h.station("CP1")
    await h.csms.drain()
    assert old._connection.close_code is not None
    assert (await new.call(call201.Heartbeat())).current_time
    assert h.csms.registry.stations["CP1"].connected
    assert [e["station"] for e in h.kinds("station.connected")] == ["CP1", "CP1"]
    assert not h.kinds("station.disconnected")  # the live connection is the new one
