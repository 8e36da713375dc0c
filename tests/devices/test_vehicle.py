"""Property tests of the vehicle battery model (devices.vehicle)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.vehicle import (
    TAPER_FLOOR_FRACTION,
    VehicleSpec,
    VehicleState,
    ac_current_a,
    ac_power_kw,
    charge,
    phases_used,
)

specs = st.builds(
    VehicleSpec,
    model=st.just("EV"),
    battery_capacity_kwh=st.floats(10, 120),
    ac_max_power_kw=st.floats(1.0, 22.0),
    ac_phases=st.sampled_from([1, 3]),
    dc_max_power_kw=st.floats(20.0, 350.0),
    charge_efficiency=st.floats(0.8, 1.0),
    taper_knee_soc=st.floats(0.5, 0.95),
)
states = st.builds(
    VehicleState,
    soc=st.floats(0.0, 1.0),
    target_soc=st.floats(0.0, 1.0),
    energy_into_battery_kwh=st.floats(0.0, 50.0),
)
kinds = st.sampled_from(["AC", "DC"])


@given(specs, states, st.floats(0.0, 400.0), st.floats(0.0, 7200.0), kinds)
@settings(max_examples=400, deadline=None)
def test_invariants(
    spec: VehicleSpec, state: VehicleState, offered: float, dt: float, kind: str
) -> None:
    new, metered = charge(spec, state, offered, dt, kind)  # type: ignore[arg-type]
    # soc never exceeds the target or 1 (and never decreases)
    assert new.soc >= state.soc
    assert new.soc <= max(state.soc, min(state.target_soc, 1.0)) + 1e-12
    assert new.soc <= 1.0
    # conservation: metered x efficiency == battery energy gain == delta soc x capacity
    gain = new.energy_into_battery_kwh - state.energy_into_battery_kwh
    assert metered * spec.charge_efficiency == pytest.approx(gain, rel=1e-9, abs=1e-9)
    assert gain == pytest.approx(
        (new.soc - state.soc) * spec.battery_capacity_kwh, rel=1e-9, abs=1e-9
    )
    assert metered >= 0.0
    if dt > 0 and metered > 0:
        mean_kw = metered * 3600.0 / dt
        assert mean_kw <= offered * (1 + 1e-9) + 1e-9
        assert mean_kw <= spec.power_limit_kw(state.soc, kind) * (1 + 1e-9) + 1e-9  # type: ignore[arg-type]


@given(specs, states, st.floats(0.0, 7200.0), kinds)
def test_zero_offer_zero_energy(
    spec: VehicleSpec, state: VehicleState, dt: float, kind: str
) -> None:
    new, metered = charge(spec, state, 0.0, dt, kind)  # type: ignore[arg-type]
    assert metered == 0.0 and new == state


@given(specs, st.floats(0.0, 0.99), st.floats(0.5, 400.0), kinds)
@settings(max_examples=200, deadline=None)
def test_step_length_does_not_matter(
    spec: VehicleSpec, soc: float, offered: float, kind: str
) -> None:
    """One 60 s step == sixty 1 s steps (within 0.5 %; exact integration gives ~1e-9)."""
    s0 = VehicleState(soc=soc, target_soc=1.0)
    big, e_big = charge(spec, s0, offered, 60.0, kind)  # type: ignore[arg-type]
    s, e_small = s0, 0.0
    for _ in range(60):
        s, e = charge(spec, s, offered, 1.0, kind)  # type: ignore[arg-type]
        e_small += e
    assert e_small == pytest.approx(e_big, rel=5e-3, abs=1e-9)
    assert e_small == pytest.approx(e_big, rel=1e-7, abs=1e-9)
    assert s.soc == pytest.approx(big.soc, abs=1e-9)


def test_taper_shape() -> None:
    spec = VehicleSpec("EV", 60.0, 11.0, 3, 100.0, taper_knee_soc=0.8)
    assert spec.power_limit_kw(0.5, "DC") == 100.0
    assert spec.power_limit_kw(0.8, "DC") == 100.0
    assert spec.power_limit_kw(0.9, "DC") == pytest.approx(100.0 * (1 - 0.95 / 2))
    assert spec.power_limit_kw(1.0, "DC") == pytest.approx(100.0 * TAPER_FLOOR_FRACTION)


def test_full_charge_is_finite_and_reaches_target() -> None:
    spec = VehicleSpec("EV", 60.0, 11.0, 3, 100.0)
    s, _ = charge(spec, VehicleState(0.1, 1.0), 150.0, 24 * 3600.0, "DC")
    assert s.soc == 1.0
    s, e = charge(spec, VehicleState(0.1, 0.5), 150.0, 24 * 3600.0, "DC")
    assert s.soc == 0.5
    assert e == pytest.approx(0.4 * 60.0 / spec.charge_efficiency)


def test_taper_matches_numerical_integration() -> None:
    """The closed form equals a fine Euler integration of dsoc/dt = eta P_lim(soc)/C."""
    spec = VehicleSpec("EV", 40.0, 11.0, 3, 80.0, taper_knee_soc=0.7)
    state = VehicleState(0.65, 1.0)
    new, e = charge(spec, state, 60.0, 1800.0, "DC")
    soc, energy, h = 0.65, 0.0, 0.01
    for _ in range(int(1800 / h)):
        p = min(60.0, spec.power_limit_kw(soc, "DC"))
        soc += spec.charge_efficiency * p * h / 3600.0 / 40.0
        energy += p * h / 3600.0
    assert new.soc == pytest.approx(soc, abs=1e-5)
    assert e == pytest.approx(energy, rel=1e-4)


def test_ac_power_from_current() -> None:
    assert ac_power_kw(16.0, 3) == pytest.approx(11.04)
    assert ac_power_kw(32.0, 1, 230.0) == pytest.approx(7.36)
    assert ac_current_a(ac_power_kw(13.0, 3), 3) == pytest.approx(13.0)
    assert phases_used(3, 1) == 1 and phases_used(1, 3) == 1 and phases_used(3, 3) == 3


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        VehicleSpec("EV", 0.0, 11.0, 3, 50.0)
    with pytest.raises(ValueError):
        VehicleSpec("EV", 50.0, 11.0, 2, 50.0)
    with pytest.raises(ValueError):
        VehicleState(1.2)
    assert math.isfinite(VehicleSpec("EV", 50.0, 11.0, 1, 50.0).power_limit_kw(0.99, "AC"))
