"""Flexibility envelopes of EVs and a BESS: rules and invariants (controllers.vpp.envelope)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.vpp import (
    BessFlex,
    Envelope,
    EvFlex,
    battery_energy_kwh,
    bess_envelope,
    ev_envelope,
    feasible,
    tighten,
    violations,
)

T0 = datetime(2019, 9, 10, 19, 0, tzinfo=UTC)
DT_H = 0.25
N = 32  # 8 h


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def walk(env: Envelope, fractions: list[float]) -> np.ndarray:
    """A schedule inside the envelope: at each step a point of the reachable range."""
    energy = 0.0
    out = np.zeros(env.n)
    for k in range(env.n):
        lo = max(env.p_min_kw[k], (env.e_min_kwh[k + 1] - energy) / env.dt_h)
        hi = min(env.p_max_kw[k], (env.e_max_kwh[k + 1] - energy) / env.dt_h)
        assert lo <= hi + 1e-9, f"trapped at {k}: {lo} > {hi}"
        p = lo + fractions[k % len(fractions)] * max(hi - lo, 0.0)
        out[k] = p
        energy += p * env.dt_h
    return out


# ---------------------------------------------------------------- strategies

@st.composite
def evs(draw: st.DrawFn, v2g: bool | None = None, lossless: bool = False) -> EvFlex:
    arrival_h = draw(st.floats(-3.0, 6.0))
    stay_h = draw(st.floats(0.1, 12.0))
    capacity = draw(st.floats(20.0, 100.0))
    soc = draw(st.floats(0.05, 0.95))
    can_v2g = draw(st.booleans()) if v2g is None else v2g
    known = True if can_v2g else draw(st.booleans())
    eta = 1.0 if lossless else draw(st.floats(0.85, 1.0))
    return EvFlex(
        evse_id="EV",
        arrival=at(arrival_h),
        departure=at(arrival_h + stay_h),
        energy_needed_kwh=draw(st.floats(0.0, 60.0)),
        max_charge_kw=draw(st.sampled_from([3.7, 7.4, 11.0, 22.0, 50.0])),
        max_discharge_kw=draw(st.sampled_from([3.7, 7.4, 11.0])) if can_v2g else 0.0,
        eta_charge=eta,
        eta_discharge=1.0 if lossless else draw(st.floats(0.85, 1.0)),
        battery_capacity_kwh=capacity if known else None,
        soc=soc if known else None,
        v2g_soc_min=draw(st.floats(0.0, 0.6)),
    )


@st.composite
def bess_units(draw: st.DrawFn, lossless: bool = False) -> BessFlex:
    return BessFlex(
        asset_id="BESS",
        capacity_kwh=draw(st.floats(20.0, 400.0)),
        soc=draw(st.floats(0.0, 1.0)),
        max_charge_kw=draw(st.floats(0.0, 150.0)),
        max_discharge_kw=draw(st.floats(0.0, 150.0)),
        soc_max=draw(st.floats(0.8, 1.0)),
        eta_charge=1.0 if lossless else draw(st.floats(0.85, 1.0)),
        eta_discharge=1.0 if lossless else draw(st.floats(0.85, 1.0)),
    )


fractions = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=N)


def check_invariants(env: Envelope) -> None:
    assert env.e_min_kwh[0] == 0.0 and env.e_max_kwh[0] == 0.0
    assert np.all(env.e_min_kwh <= env.e_max_kwh + 1e-9)
    assert np.all(env.p_min_kw <= env.p_max_kw + 1e-9)
    # both energy bounds are feasible trajectories: p bounds consistent with them
    for e in (env.e_min_kwh, env.e_max_kwh):
        step = np.diff(e) / env.dt_h
        assert np.all(step >= env.p_min_kw - 1e-6)
        assert np.all(step <= env.p_max_kw + 1e-6)
    if np.all(env.p_min_kw >= 0):
        assert np.all(np.diff(env.e_min_kwh) >= -1e-9)
        assert np.all(np.diff(env.e_max_kwh) >= -1e-9)


# ---------------------------------------------------------------- EV rules

def test_ev_alap_and_asap_trajectories() -> None:
    ev = EvFlex("CA-01", departure=at(4.0), energy_needed_kwh=11.0, max_charge_kw=11.0,
                battery_capacity_kwh=60.0, soc=0.5)
    env = ev_envelope(ev, T0, DT_H, N)
    check_invariants(env)
    # ALAP: nothing needed before 3 h (11 kWh at 11 kW takes 1 h), then full power
    assert env.e_min_kwh[12] == pytest.approx(0.0)
    assert env.e_min_kwh[14] == pytest.approx(5.5)
    assert env.e_min_kwh[16] == pytest.approx(11.0)
    assert env.e_min_kwh[-1] == pytest.approx(11.0)
    # ASAP: full power until the battery is full (30 kWh of headroom), frozen at departure
    assert env.e_max_kwh[4] == pytest.approx(11.0)
    assert env.e_max_kwh[16] == pytest.approx(30.0)
    assert env.e_max_kwh[-1] == pytest.approx(30.0)
    assert np.all(env.p_max_kw[16:] == 0.0) and np.all(env.p_min_kw == 0.0)
    assert env.shortfall_kwh == 0.0


def test_ev_partial_intervals_and_future_arrival() -> None:
    ev = EvFlex("CA-02", arrival=at(1.1), departure=at(2.05), energy_needed_kwh=5.0,
                max_charge_kw=10.0)
    env = ev_envelope(ev, T0, DT_H, N)
    check_invariants(env)
    assert np.all(env.p_max_kw[:4] == 0.0)
    assert env.p_max_kw[4] == pytest.approx(10.0 * 0.6)  # plugged 1.1..1.25
    assert env.p_max_kw[8] == pytest.approx(10.0 * 0.2)  # plugged 2.0..2.05
    assert np.all(env.p_max_kw[9:] == 0.0)
    assert env.e_min_kwh[9] == pytest.approx(5.0) and env.e_max_kwh[-1] == pytest.approx(5.0)


def test_ev_unreachable_need_is_capped_and_reported() -> None:
    ev = EvFlex("CA-03", departure=at(1.0), energy_needed_kwh=20.0, max_charge_kw=7.4,
                eta_charge=0.9)
    env = ev_envelope(ev, T0, DT_H, N)
    assert env.e_min_kwh[4] == pytest.approx(7.4)
    assert env.shortfall_kwh == pytest.approx(20.0 / 0.9 - 7.4)
    assert np.allclose(env.p_min_kw[:4], 7.4)  # zero laxity: full power from now on


def test_ev_need_beyond_horizon_uses_alap_at_horizon_end() -> None:
    ev = EvFlex("CA-04", departure=at(10.0), energy_needed_kwh=30.0, max_charge_kw=10.0)
    env = ev_envelope(ev, T0, DT_H, 16)  # 4 h horizon
    assert env.e_min_kwh[-1] == pytest.approx(0.0)  # 6 h left after the horizon: enough
    ev = EvFlex("CA-05", departure=at(5.0), energy_needed_kwh=30.0, max_charge_kw=10.0)
    env = ev_envelope(ev, T0, DT_H, 16)
    assert env.e_min_kwh[-1] == pytest.approx(20.0)  # 10 kWh left for the last hour


def test_ev_v2g_floor_and_departure_target() -> None:
    ev = EvFlex("CA-06", departure=at(6.0), energy_needed_kwh=10.0, max_charge_kw=11.0,
                max_discharge_kw=11.0, battery_capacity_kwh=60.0, soc=0.5, v2g_soc_min=0.3)
    env = ev_envelope(ev, T0, DT_H, N)
    check_invariants(env)
    assert env.p_min_kw[0] == pytest.approx(-11.0)
    assert env.e_min_kwh.min() == pytest.approx(-12.0)  # 30 kWh stored, floor 18 kWh
    # late in the stay the departure target lifts the floor
    assert env.e_min_kwh[24] == pytest.approx(10.0)
    assert env.e_min_kwh[20] == pytest.approx(10.0 - 11.0 * 1.0)


def test_ev_without_battery_data_takes_only_its_need_and_no_v2g() -> None:
    ev = EvFlex("CA-07", departure=at(6.0), energy_needed_kwh=8.0, max_charge_kw=11.0,
                max_discharge_kw=11.0)
    env = ev_envelope(ev, T0, DT_H, N)
    assert np.all(env.p_min_kw == 0.0)
    assert env.e_max_kwh[-1] == pytest.approx(8.0)


def test_bess_energy_between_soc_limits() -> None:
    bess = BessFlex("B1", capacity_kwh=200.0, soc=0.5, max_charge_kw=100.0,
                    max_discharge_kw=100.0, soc_max=0.9, eta_charge=0.95, eta_discharge=0.95)
    env = bess_envelope(bess, T0, DT_H, N)
    check_invariants(env)
    assert env.e_min_kwh.min() == pytest.approx(-60.0 * 0.95)  # 100 kWh -> 40 kWh
    assert env.e_max_kwh.max() == pytest.approx(80.0 / 0.95)  # 100 kWh -> 180 kWh
    assert env.e_max_kwh[1] == pytest.approx(25.0)  # power-limited at the start


def test_bess_below_floor_is_never_pushed_further() -> None:
    bess = BessFlex("B1", capacity_kwh=100.0, soc=0.1, max_charge_kw=50.0,
                    max_discharge_kw=50.0)
    env = bess_envelope(bess, T0, DT_H, N)
    # below soc_min: held where it is (it may give back only what it charged)
    assert np.all(env.e_min_kwh == 0.0) and env.p_min_kw[0] == 0.0


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EvFlex("x", departure=datetime(2019, 1, 1), energy_needed_kwh=1, max_charge_kw=1)
    with pytest.raises(ValueError, match="eta_charge"):
        BessFlex("b", 10, 0.5, 1, 1, eta_charge=0)
    with pytest.raises(ValueError, match="empty envelope"):
        tighten([0.0], [1.0], [0.0, 2.0], [0.0, 3.0], 1.0)
    env = ev_envelope(EvFlex("x", departure=at(1), energy_needed_kwh=1, max_charge_kw=4),
                      T0, DT_H, 4)
    with pytest.raises(ValueError, match="shape"):
        feasible(env, np.zeros(3))
    assert violations(env, np.zeros(4)) == ["x: E < e_min at index 4"]


# ---------------------------------------------------------------- properties

@settings(max_examples=300, deadline=None)
@given(ev=evs(), fr=fractions)
def test_ev_envelope_invariants_and_walks(ev: EvFlex, fr: list[float]) -> None:
    env = ev_envelope(ev, T0, DT_H, N)
    check_invariants(env)
    # zero outside the plugged window
    start = max(ev.arrival or T0, T0)
    for k, t in enumerate(env.times[:-1]):
        if t + timedelta(hours=DT_H) <= start or t >= ev.departure:
            assert env.p_min_kw[k] == 0.0 and env.p_max_kw[k] == 0.0
    schedule = walk(env, fr)  # never trapped: the envelope is tightened
    assert feasible(env, schedule)
    assert np.all(env.p_max_kw <= ev.max_charge_kw + 1e-9)
    assert np.all(env.p_min_kw >= -ev.max_discharge_kw - 1e-9)


@settings(max_examples=300, deadline=None)
@given(ev=evs(v2g=False), fr=fractions)
def test_charge_only_schedule_inside_envelope_meets_the_need(ev: EvFlex,
                                                             fr: list[float]) -> None:
    env = ev_envelope(ev, T0, DT_H, N)
    schedule = walk(env, fr)
    stored = battery_energy_kwh(schedule, DT_H, ev.eta_charge, ev.eta_discharge)
    promised = ev.energy_needed_kwh - ev.eta_charge * env.shortfall_kwh
    if ev.departure <= env.times[-1]:
        assert stored[-1] >= promised - 1e-6
    else:  # still reachable at full power after the horizon
        rest_h = (ev.departure - env.times[-1]).total_seconds() / 3600
        assert stored[-1] + ev.eta_charge * ev.max_charge_kw * rest_h >= promised - 1e-6
    if ev.knows_battery:
        assert ev.soc is not None and ev.battery_capacity_kwh is not None
        assert ev.soc * ev.battery_capacity_kwh + stored.max() <= (
            ev.battery_capacity_kwh * ev.soc_max + 1e-6)


@settings(max_examples=300, deadline=None)
@given(bess=bess_units(), fr=fractions)
def test_bess_schedule_inside_envelope_respects_soc_limits(bess: BessFlex,
                                                           fr: list[float]) -> None:
    env = bess_envelope(bess, T0, DT_H, N)
    check_invariants(env)
    schedule = walk(env, fr)
    stored = bess.soc * bess.capacity_kwh + battery_energy_kwh(
        schedule, DT_H, bess.eta_charge, bess.eta_discharge)
    floor = min(bess.soc, bess.soc_min) * bess.capacity_kwh
    ceiling = max(bess.soc, bess.soc_max) * bess.capacity_kwh
    assert stored.max() <= ceiling + 1e-6  # exact for every schedule
    # floor: exact without cycling, else short by at most the round-trip loss of what
    # was charged before (module docstring of controllers.vpp.envelope)
    loss = 1 / bess.eta_discharge - bess.eta_charge
    charged = np.concatenate(([0.0], np.cumsum(np.maximum(schedule, 0.0)) * DT_H))
    assert np.all(stored >= floor - loss * charged - 1e-6)


@settings(max_examples=200, deadline=None)
@given(bess=bess_units(lossless=True), fr=fractions)
def test_lossless_bess_never_below_floor(bess: BessFlex, fr: list[float]) -> None:
    env = bess_envelope(bess, T0, DT_H, N)
    stored = bess.soc * bess.capacity_kwh + battery_energy_kwh(walk(env, fr), DT_H)
    assert stored.min() >= min(bess.soc, bess.soc_min) * bess.capacity_kwh - 1e-6


@settings(max_examples=200, deadline=None)
@given(ev=evs(v2g=True, lossless=True), fr=fractions)
def test_v2g_schedule_respects_floor_and_departure(ev: EvFlex, fr: list[float]) -> None:
    env = ev_envelope(ev, T0, DT_H, N)
    schedule = walk(env, fr)
    assert ev.soc is not None and ev.battery_capacity_kwh is not None
    start = ev.soc * ev.battery_capacity_kwh
    stored = start + battery_energy_kwh(schedule, DT_H)
    assert stored.min() >= min(start, ev.v2g_soc_min * ev.battery_capacity_kwh) - 1e-6
    if ev.departure <= env.times[-1]:
        promised = ev.energy_needed_kwh - env.shortfall_kwh
        assert stored[-1] - start >= promised - 1e-6


@settings(max_examples=200, deadline=None)
@given(ev=evs(), fr=fractions)
def test_leaving_a_bound_is_detected(ev: EvFlex, fr: list[float]) -> None:
    env = ev_envelope(ev, T0, DT_H, N)
    schedule = walk(env, fr)
    k = int(np.argmax(env.p_max_kw))
    bumped = schedule.copy()
    bumped[k] = env.p_max_kw[k] + 1.0
    assert not feasible(env, bumped)


@settings(max_examples=200, deadline=None)
@given(ev=evs(v2g=True), fr=fractions)
def test_lossy_v2g_shortfall_bounded_by_cycling_loss(ev: EvFlex, fr: list[float]) -> None:
    env = ev_envelope(ev, T0, DT_H, N)
    schedule = walk(env, fr)
    assert ev.soc is not None and ev.battery_capacity_kwh is not None
    start = ev.soc * ev.battery_capacity_kwh
    stored = start + battery_energy_kwh(schedule, DT_H, ev.eta_charge, ev.eta_discharge)
    loss = 1 / ev.eta_discharge - ev.eta_charge
    charged = np.concatenate(([0.0], np.cumsum(np.maximum(schedule, 0.0)) * DT_H))
    discharged = np.concatenate(([0.0], np.cumsum(np.maximum(-schedule, 0.0)) * DT_H))
    floor = min(start, ev.v2g_soc_min * ev.battery_capacity_kwh)
    assert np.all(stored >= floor - loss * charged - 1e-6)
    if ev.departure <= env.times[-1]:
        promised = ev.energy_needed_kwh - ev.eta_charge * env.shortfall_kwh
        assert stored[-1] - start >= promised - loss * discharged[-1] - 1e-6
