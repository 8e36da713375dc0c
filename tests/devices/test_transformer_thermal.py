import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.transformer.thermal import (
    ThermalParams,
    ThermalState,
    ageing_rate,
    initial_state,
    load_factor,
    loading_pct,
    steady_state,
    step,
)

P = ThermalParams()
DAY_S = 86_400.0


def run(k: float, ambient: float, seconds: float, dt: float = 60.0) -> ThermalState:
    s = initial_state(ambient)
    for _ in range(round(seconds / dt)):
        s = step(s, k, ambient, dt, P)
    return s


def test_rated_steady_state_is_ambient_plus_rises() -> None:
    s = run(1.0, 20.0, 3 * DAY_S, dt=600.0)
    assert s.top_oil_c == pytest.approx(20.0 + P.d_theta_or_k, abs=1e-3)
    assert s.hot_spot_rise_k == pytest.approx(P.hgr_k, abs=1e-3)
    assert s.hot_spot_c == pytest.approx(20.0 + P.d_theta_or_k + P.hgr_k, abs=1e-3)
    assert s.hot_spot_c == pytest.approx(98.0, abs=1e-3)  # IEC reference hot spot
    assert ageing_rate(s.hot_spot_c) == pytest.approx(1.0, abs=1e-4)


def test_steady_state_function_matches_integration() -> None:
    for k in (0.0, 0.5, 1.3):
        s = run(k, 10.0, 3 * DAY_S, dt=900.0)
        ss = steady_state(P, k, 10.0)
        assert s.top_oil_c == pytest.approx(ss.top_oil_c, abs=1e-3)
        assert s.hot_spot_c == pytest.approx(ss.hot_spot_c, abs=1e-3)


def test_k21_not_one_still_settles_at_hgr() -> None:
    p = ThermalParams(k21=2.0, k22=2.0, tau_o_min=150.0, tau_w_min=7.0)
    s = initial_state(20.0)
    for _ in range(3 * 24 * 4):
        s = step(s, 1.0, 20.0, 900.0, p)
    assert s.hot_spot_c == pytest.approx(20.0 + p.d_theta_or_k + p.hgr_k, abs=1e-3)
    # the hot-spot overshoot that k21 > 1 models (IEC 60076-7 8.2.3)
    s = initial_state(20.0)
    peak = s.hot_spot_rise_k
    for _ in range(120):
        s = step(s, 1.0, 20.0, 60.0, p)
        peak = max(peak, s.hot_spot_rise_k)
    assert peak > p.hgr_k


@settings(max_examples=60, deadline=None)
@given(
    k1=st.floats(0.0, 2.0),
    dk=st.floats(0.01, 1.0),
    ambient=st.floats(-30.0, 45.0),
    minutes=st.integers(1, 600),
)
def test_monotonic_in_load(k1: float, dk: float, ambient: float, minutes: int) -> None:
    a = run(k1, ambient, minutes * 60.0)
    b = run(k1 + dk, ambient, minutes * 60.0)
    assert b.top_oil_c >= a.top_oil_c
    assert b.hot_spot_c >= a.hot_spot_c


@settings(max_examples=100, deadline=None)
@given(
    state=st.builds(
        ThermalState,
        st.floats(-40.0, 200.0),
        st.floats(-50.0, 100.0),
        st.floats(-50.0, 100.0),
    ),
    k=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 3.0)),
    ambient=st.floats(-50.0, 50.0),
    dt=st.floats(0.0, 7 * DAY_S),
)
def test_never_nan(state: ThermalState, k: float, ambient: float, dt: float) -> None:
    s = step(state, k, ambient, dt, P)
    assert all(math.isfinite(v) for v in (s.top_oil_c, s.d_h1_k, s.d_h2_k, s.hot_spot_c))
    assert math.isfinite(ageing_rate(min(s.hot_spot_c, 300.0)))


@settings(max_examples=40, deadline=None)
@given(
    k=st.floats(0.0, 2.0),
    ambient=st.floats(-20.0, 40.0),
    oil0=st.floats(-20.0, 120.0),
    h10=st.floats(0.0, 40.0),
)
def test_one_60s_step_equals_sixty_1s_steps(
    k: float, ambient: float, oil0: float, h10: float
) -> None:
    s0 = ThermalState(oil0, h10, 0.0)
    one = step(s0, k, ambient, 60.0, P)
    many = s0
    for _ in range(60):
        many = step(many, k, ambient, 1.0, P)
    assert one.top_oil_c == pytest.approx(many.top_oil_c, abs=0.01)
    assert one.hot_spot_c == pytest.approx(many.hot_spot_c, abs=0.05)


def test_substep_respects_half_smallest_time_constant() -> None:
    p = ThermalParams(max_substep_s=1e9)
    assert p.max_step_s() == pytest.approx(120.0)  # tau_w / 2 = 4 min / 2
    # a day in one call stays stable (forward Euler would blow up with dt >> tau)
    s = step(initial_state(20.0), 1.0, 20.0, DAY_S, p)
    assert s.hot_spot_c == pytest.approx(98.0, abs=0.5)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        step(initial_state(20.0), 1.0, 20.0, -1.0)
    with pytest.raises(ValueError):
        step(initial_state(20.0), 1.0, math.nan, 1.0)
    with pytest.raises(ValueError):
        load_factor([1.0], 0.0)


def test_loading_and_ageing() -> None:
    assert load_factor([100.0, 150.0, 50.0], 200.0) == pytest.approx(0.75)
    assert loading_pct([100.0, math.nan, -300.0], 200.0) == pytest.approx(150.0)
    assert loading_pct([], 200.0) == 0.0
    assert ageing_rate(104.0) == pytest.approx(2.0)
    assert ageing_rate(92.0) == pytest.approx(0.5)
    assert ageing_rate(110.0, thermally_upgraded=True) == pytest.approx(1.0)
