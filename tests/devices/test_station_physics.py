"""Station physics without a CSMS: energy accounting and phase rotation.

The station is never connected: it runs on its offline fallback (the fail-safe current).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.charging_station import ChargingStation, EvseSpec, StationSpec
from devices.vehicle import VehicleSpec, VehicleState

T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
CAR_3PH = VehicleSpec("3ph", 60.0, 11.0, 3, 100.0)
CAR_1PH = VehicleSpec("1ph", 40.0, 7.4, 1, 50.0)


def station(*evses: EvseSpec, fail_safe_a: float = 32.0) -> ChargingStation:
    spec = StationSpec("PHYS", "2.0.1", tuple(evses), fail_safe_current_a=fail_safe_a)
    return ChargingStation(spec, "ws://127.0.0.1:9/none")


@given(
    st.lists(st.integers(1, 900), min_size=1, max_size=40),
    st.floats(0.0, 0.9),
    st.sampled_from(["AC", "DC"]),
)
@settings(max_examples=40, deadline=None)
async def test_metered_energy_is_the_integral_of_power(
    steps: list[int], soc: float, kind: str
) -> None:
    ev = EvseSpec(1, kind, 22.0 if kind == "AC" else 50.0)  # type: ignore[arg-type]
    cs = station(ev, fail_safe_a=32.0 if kind == "AC" else 125.0)
    await cs.advance(T0)
    await cs.plug_in(1, CAR_3PH, VehicleState(soc, 0.95), "TAG", T0)
    t, integral = T0, 0.0
    for s in steps:
        t += timedelta(seconds=s)
        await cs.advance(t)
        r = cs.evse_state(1)
        integral += r.power_kw * s / 3600.0
        assert r.power_kw <= (11.0 if kind == "AC" else 50.0) + 1e-9
    r = cs.evse_state(1)
    assert r.energy_register_kwh == pytest.approx(integral, rel=1e-9, abs=1e-9)
    assert r.session_energy_kwh == pytest.approx(r.energy_register_kwh, rel=1e-12, abs=1e-12)
    sess = cs.evses[1].session
    assert sess is not None
    battery = sess.state.energy_into_battery_kwh
    assert battery == pytest.approx(r.session_energy_kwh * CAR_3PH.charge_efficiency, abs=1e-9)
    assert r.soc is not None and r.soc <= 0.95 + 1e-12


@pytest.mark.parametrize(("rotation", "site_phase"), [("RST", 0), ("STR", 1), ("TRS", 2)])
async def test_one_phase_vehicle_loads_only_its_rotated_phase(
    rotation: str, site_phase: int
) -> None:
    cs = station(EvseSpec(1, "AC", 22.0, phase_rotation=rotation), fail_safe_a=16.0)
    await cs.plug_in(1, CAR_1PH, VehicleState(0.2, 0.9), "TAG", T0)
    await cs.advance(T0 + timedelta(seconds=60))
    r = cs.evse_state(1)
    assert r.power_kw == pytest.approx(16.0 * 230.0 / 1000.0)
    expect = [0.0, 0.0, 0.0]
    expect[site_phase] = 16.0
    assert r.current_a == pytest.approx(tuple(expect))
    # the station's own meter (MeterValues) sees its L1
    assert cs.evses[1].station_current_a == pytest.approx((16.0, 0.0, 0.0))


async def test_three_phase_vehicle_on_one_phase_evse() -> None:
    cs = station(EvseSpec(1, "AC", 7.4, phases=1, phase_rotation="TRS"), fail_safe_a=32.0)
    await cs.plug_in(1, CAR_3PH, VehicleState(0.2, 0.9), "TAG", T0)
    await cs.advance(T0 + timedelta(seconds=60))
    r = cs.evse_state(1)
    assert r.power_kw == pytest.approx(min(32.0 * 230.0, 7400.0) / 1000.0)
    assert r.current_a[2] == pytest.approx(r.power_kw * 1000 / 230.0)
    assert r.current_a[0] == r.current_a[1] == 0.0


async def test_zero_fail_safe_means_no_energy_and_dc_soc_rises() -> None:
    cs = station(EvseSpec(1, "AC", 22.0), EvseSpec(2, "DC", 50.0), fail_safe_a=0.0)
    await cs.plug_in(1, CAR_3PH, VehicleState(0.2, 0.9), "A", T0)
    await cs.plug_in(2, CAR_3PH, VehicleState(0.2, 0.9), "B", T0)
    await cs.advance(T0 + timedelta(minutes=10))
    assert cs.evse_state(1).power_kw == 0.0
    assert cs.evse_state(1).charging_state == "SuspendedEVSE"
    assert cs.evse_state(2).power_kw == 0.0
    with pytest.raises(ValueError):
        await cs.advance(T0)  # time never goes back


async def test_plug_out_ends_session() -> None:
    cs = station(EvseSpec(1, "DC", 50.0), fail_safe_a=125.0)
    await cs.plug_in(1, CAR_3PH, VehicleState(0.2, 0.9), "A", T0)
    await cs.advance(T0 + timedelta(minutes=30))
    r = cs.evse_state(1)
    assert r.power_kw == pytest.approx(50.0)
    assert r.soc == pytest.approx(0.2 + 25.0 * 0.92 / 60.0)
    await cs.plug_out(1, T0 + timedelta(minutes=31))
    r = cs.evse_state(1)
    assert r.soc is None and r.transaction_id is None and r.connector_status == "Available"
    assert r.energy_register_kwh == pytest.approx(25.0 + 50.0 / 60.0)


async def test_vehicle_at_target_is_suspended_ev() -> None:
    cs = station(EvseSpec(1, "DC", 50.0), fail_safe_a=125.0)
    await cs.plug_in(1, CAR_3PH, VehicleState(0.5, 0.51), "A", T0)
    await cs.advance(T0 + timedelta(minutes=1))
    assert cs.evse_state(1).charging_state == "Charging"
    await cs.advance(T0 + timedelta(minutes=2))
    r = cs.evse_state(1)
    assert r.charging_state == "SuspendedEV" and r.power_kw == 0.0
    assert r.soc == pytest.approx(0.51)
