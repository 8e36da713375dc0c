"""DLM allocation: one test per situation (EVerest style), then property tests."""

import math
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.dlm import (
    DlmConfig,
    DlmResult,
    EvseInput,
    SiteConfig,
    SiteMeasurement,
    allocate,
    site_phases,
)

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
V = 230.0
TOL = 1e-6


def kw_to_a(kw: float, phases: int = 3) -> float:
    return kw * 1000 / (phases * V)


def fresh(load: float = 0.0, external: float | None = None) -> SiteMeasurement:
    return SiteMeasurement(non_ev_load_kw=load, measured_at=NOW, external_limit_kw=external)


def ac(name: str, evse_id: int = 1, **kw: object) -> EvseInput:
    base = EvseInput(
        key=(name, evse_id), kind="AC", phases=(1, 2, 3), max_current_a=32.0, measured_at=NOW
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def run(
    site: SiteConfig, evses: list[EvseInput], meas: SiteMeasurement | None = None, **cfg: object
) -> DlmResult:
    return allocate(site, meas or fresh(), evses, DlmConfig(**cfg), NOW)  # type: ignore[arg-type]


def sp(result: DlmResult, name: str, evse_id: int = 1) -> float:
    return result.allocations[(name, evse_id)].setpoint


# ---------------------------------------------------------------- situations


def test_single_evse_plenty_of_capacity_gets_its_max() -> None:
    r = run(SiteConfig(grid_limit_kw=100), [ac("a", max_current_a=16)])
    assert sp(r, "a") == 16.0
    assert r.allocations[("a", 1)].reason == "max"


def test_capacity_is_limit_minus_non_ev_load_minus_margin_per_phase() -> None:
    site = SiteConfig(grid_limit_kw=30, safety_margin_kw=2)
    r = run(site, [ac("a", max_current_a=63)], fresh(load=10))
    assert r.available_kw == pytest.approx(18)
    assert r.phase_capacity_a[0] == pytest.approx(kw_to_a(18))
    assert sp(r, "a") == pytest.approx(26.0)  # floor(26.08..) to 0.1 A


def test_external_limit_below_grid_limit_binds() -> None:
    r = run(SiteConfig(grid_limit_kw=100), [ac("a")], fresh(external=11.04))
    assert r.limit_kw == 11.04
    assert sp(r, "a") == 16.0


def test_two_evses_share_and_least_laxity_is_filled_first() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(40))  # 40 A per phase
    urgent = ac("b", departure=NOW + timedelta(hours=1), requested_energy_kwh=20)
    relaxed = ac("a", departure=NOW + timedelta(hours=8), requested_energy_kwh=20)
    r = run(site, [relaxed, urgent])
    assert r.order == (("b", 1), ("a", 1))
    assert sp(r, "b") == 32.0
    assert sp(r, "a") == 8.0


def kw_to_a_inv(amps_per_phase: float, phases: int = 3) -> float:
    return amps_per_phase * phases * V / 1000


def test_below_minimum_pauses_instead_of_trickling() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(10))  # room for one minimum, not two
    r = run(site, [ac("a"), ac("b")])
    assert sp(r, "a") == 10.0
    assert sp(r, "b") == 0.0
    assert r.allocations[("b", 1)].reason == "below_min"


def test_minimums_are_admitted_before_greedy_fill() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(20))
    r = run(site, [ac("a"), ac("b")])
    assert sp(r, "a") == 14.0
    assert sp(r, "b") == 6.0


def test_priority_beats_laxity() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(38))
    urgent = ac("a", departure=NOW + timedelta(minutes=30), requested_energy_kwh=30)
    vip = ac("b", priority=1)
    r = run(site, [urgent, vip])
    assert r.order[0] == ("b", 1)
    assert sp(r, "b") == 32.0
    assert sp(r, "a") == 6.0


def test_unknown_departure_is_served_last() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(38))
    r = run(site, [ac("a"), ac("b", departure=NOW + timedelta(hours=10))])
    assert r.order == (("b", 1), ("a", 1))
    assert sp(r, "b") == 32.0


def test_edf_orders_by_departure_not_laxity() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(38))
    soon_little = ac("a", departure=NOW + timedelta(hours=2), requested_energy_kwh=1)
    later_much = ac("b", departure=NOW + timedelta(hours=3), requested_energy_kwh=60)
    llf = run(site, [soon_little, later_much])
    edf = run(site, [soon_little, later_much], strategy="edf")
    assert llf.order[0] == ("b", 1)
    assert edf.order[0] == ("a", 1)


def test_equal_strategy_water_fills() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(40))
    r = run(site, [ac("a"), ac("b"), ac("c", max_current_a=10)], strategy="equal")
    assert sp(r, "c") == 10.0
    assert sp(r, "a") == 15.0
    assert sp(r, "b") == 15.0


def test_one_phase_vehicles_on_different_phases_do_not_compete() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(20))
    r = run(site, [ac("a", phases=(1,)), ac("b", phases=(2,)), ac("c", phases=(3,))])
    assert [sp(r, n) for n in "abc"] == [20.0, 20.0, 20.0]


def test_one_phase_vehicles_on_the_same_phase_share_it() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(20))
    r = run(site, [ac("a", phases=(2,)), ac("b", phases=(2,)), ac("c", phases=(1, 2, 3))])
    assert sp(r, "a") + sp(r, "b") + sp(r, "c") <= 20.0 + TOL
    assert r.phase_reserved_a[1] <= 20.0 + TOL


def test_phase_rotation_maps_a_one_phase_vehicle_to_its_site_phase() -> None:
    assert site_phases("RST", [1]) == (1,)
    assert site_phases("SRT", [1]) == (2,)
    assert site_phases("TRS", [1, 2]) == (1, 3)
    assert site_phases("Unknown", [1]) == (1, 2, 3)  # worst case: every phase
    assert site_phases("RST", [1, 2, 3], site_phase_count=1) == (1,)


def test_dc_setpoint_is_power_in_watts() -> None:
    site = SiteConfig(grid_limit_kw=50)
    dc = EvseInput(
        key=("d", 1),
        kind="DC",
        phases=(1, 2, 3),
        min_power_w=5000,
        max_power_w=150000,
        measured_at=NOW,
    )
    r = run(site, [dc])
    a = r.allocations[("d", 1)]
    assert a.unit == "W"
    assert a.setpoint == 50000.0
    assert a.current_a == pytest.approx(kw_to_a(50))


def test_tapering_vehicle_is_capped_and_the_rest_goes_to_others() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(40))
    tapering = ac(
        "a",
        previous_setpoint=32.0,
        setpoint_since=NOW - timedelta(minutes=5),
        measured_current_a=(9.0, 9.0, 9.0),
        priority=1,
    )
    r = run(site, [tapering, ac("b")])
    assert sp(r, "a") == 11.0  # 9 A measured + 2 A headroom
    assert r.allocations[("a", 1)].reason == "taper"
    assert sp(r, "b") == 29.0


def test_full_vehicle_is_capped_at_its_minimum_not_trickled() -> None:
    full = ac("a", previous_setpoint=16.0, measured_current_a=(0.0, 0.0, 0.0))
    r = run(SiteConfig(grid_limit_kw=100), [full])
    assert sp(r, "a") == 6.0


def test_measurement_older_than_the_setpoint_does_not_count_as_taper() -> None:
    a = ac(
        "a",
        previous_setpoint=32.0,
        setpoint_since=NOW,
        measured_at=NOW - timedelta(seconds=10),
        measured_current_a=(6.0, 6.0, 6.0),
    )
    r = run(SiteConfig(grid_limit_kw=100), [a])
    assert sp(r, "a") == 32.0


def test_stale_evse_is_reserved_at_max_and_never_raised() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(40))
    stale = ac(
        "a", previous_setpoint=10.0, measured_at=NOW - timedelta(minutes=10), max_current_a=32
    )
    r = run(site, [stale, ac("b")])
    assert r.allocations[("a", 1)].worst_case
    assert sp(r, "a") == 10.0  # held, not raised
    assert sp(r, "b") == 8.0  # 40 - 32 reserved for the stale one
    assert r.phase_reserved_a[0] == pytest.approx(40.0)


def test_never_measured_evse_counts_as_stale() -> None:
    r = run(SiteConfig(grid_limit_kw=100), [ac("a", measured_at=None)])
    assert r.allocations[("a", 1)].worst_case
    assert sp(r, "a") == 0.0


def test_uncontrollable_evse_counts_as_worst_case() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(40))
    r = run(site, [ac("a", controllable=False, previous_setpoint=16.0), ac("b")])
    assert sp(r, "a") == 16.0
    assert sp(r, "b") == 8.0


def test_stale_evse_is_lowered_when_its_hold_no_longer_fits() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(20))
    r = run(site, [ac("a", previous_setpoint=32.0, measured_at=None)])
    assert sp(r, "a") == 20.0


def test_stale_non_ev_load_without_worst_case_leaves_no_headroom() -> None:
    old = SiteMeasurement(non_ev_load_kw=5, measured_at=NOW - timedelta(minutes=10))
    r = run(SiteConfig(grid_limit_kw=100), [ac("a")], old)
    assert r.non_ev_stale
    assert r.available_kw <= 0
    assert sp(r, "a") == 0.0
    assert r.allocations[("a", 1)].reason == "no_headroom"


def test_stale_non_ev_load_uses_configured_worst_case_but_not_less_than_last_value() -> None:
    site = SiteConfig(grid_limit_kw=100, non_ev_load_worst_case_kw=60)
    old_low = SiteMeasurement(non_ev_load_kw=20, measured_at=NOW - timedelta(hours=1))
    old_high = SiteMeasurement(non_ev_load_kw=80, measured_at=NOW - timedelta(hours=1))
    assert run(site, [], old_low).non_ev_load_kw == 60
    assert run(site, [], old_high).non_ev_load_kw == 80
    assert run(site, [], SiteMeasurement()).non_ev_load_kw == 60


def dc(name: str, evse_id: int = 1, **kw: object) -> EvseInput:
    base = EvseInput(
        key=(name, evse_id),
        kind="DC",
        phases=(1, 2, 3),
        min_power_w=5000,
        max_power_w=150000,
        measured_at=NOW,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["llf", "edf", "equal"])
def test_stale_non_ev_load_holds_every_evse_at_its_minimum(strategy: str) -> None:
    # plenty of headroom even with the worst case: still no fill while the meter is stale
    site = SiteConfig(grid_limit_kw=200, non_ev_load_worst_case_kw=10)
    old = SiteMeasurement(non_ev_load_kw=5, measured_at=NOW - timedelta(seconds=301))
    evses = [ac("a"), ac("b", min_current_a=8.0, phases=(2,)), dc("d")]
    r = run(site, evses, old, strategy=strategy)
    assert r.non_ev_stale
    assert r.non_ev_load_kw == 10
    assert r.available_kw > 100
    assert (sp(r, "a"), sp(r, "b"), sp(r, "d")) == (6.0, 8.0, 5000.0)
    assert {a.reason for a in r.allocations.values()} == {"fail_safe_min"}


@pytest.mark.parametrize("strategy", ["llf", "edf", "equal"])
def test_grid_shed_holds_every_evse_at_its_minimum(strategy: str) -> None:
    site = SiteConfig(grid_limit_kw=200)
    shed = SiteMeasurement(non_ev_load_kw=5, measured_at=NOW, hold_minimum=True)
    evses = [ac("a", previous_setpoint=32.0), ac("b", min_current_a=8.0, phases=(2,)),
             dc("d")]
    r = run(site, evses, shed, strategy=strategy)
    assert not r.non_ev_stale and r.available_kw > 100
    assert (sp(r, "a"), sp(r, "b"), sp(r, "d")) == (6.0, 8.0, 5000.0)
    assert {a.reason for a in r.allocations.values()} == {"shed_min"}


def test_lost_non_ev_load_with_a_fresh_timestamp_holds_the_minimum() -> None:
    site = SiteConfig(grid_limit_kw=200, non_ev_load_worst_case_kw=10)
    lost = SiteMeasurement(non_ev_load_kw=5, measured_at=NOW, lost=True)
    evses = [ac("a", previous_setpoint=32.0), dc("d", previous_setpoint=50000.0)]
    r = run(site, evses, lost)
    assert r.non_ev_stale
    assert r.non_ev_load_kw == 10  # the worst case, not the last value
    assert (sp(r, "a"), sp(r, "d")) == (6.0, 5000.0)
    assert {a.reason for a in r.allocations.values()} == {"fail_safe_min"}
    # the same measurement, not lost: filled up to the maxima
    r_ok = run(site, evses, replace(lost, lost=False))
    assert not r_ok.non_ev_stale
    assert sp(r_ok, "a") == 32.0
    assert sp(r_ok, "d") > 5000.0


def test_stale_non_ev_load_pauses_an_evse_whose_minimum_does_not_fit() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(20), non_ev_load_worst_case_kw=kw_to_a_inv(10))
    old = SiteMeasurement(non_ev_load_kw=0, measured_at=NOW - timedelta(hours=1))
    r = run(site, [ac("a"), ac("b")], old)  # 10 A left: one minimum, not two
    assert (sp(r, "a"), sp(r, "b")) == (6.0, 0.0)
    assert r.allocations[("a", 1)].reason == "fail_safe_min"
    assert r.allocations[("b", 1)].reason == "below_min"


def test_non_ev_load_above_limit_allocates_nothing() -> None:
    r = run(SiteConfig(grid_limit_kw=50), [ac("a"), ac("b", phases=(1,))], fresh(load=60))
    assert r.available_kw < 0
    assert all(a.setpoint == 0 for a in r.allocations.values())


def test_small_increase_is_held_by_hysteresis() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(16.5))
    r = run(site, [ac("a", previous_setpoint=16.0)])
    assert sp(r, "a") == 16.0
    assert r.allocations[("a", 1)].reason == "hysteresis_hold"


def test_small_decrease_is_always_sent() -> None:
    site = SiteConfig(grid_limit_kw=kw_to_a_inv(15.5))
    r = run(site, [ac("a", previous_setpoint=16.0)])
    assert sp(r, "a") == 15.5


def test_start_from_pause_is_not_held_by_hysteresis() -> None:
    r = run(SiteConfig(grid_limit_kw=100), [ac("a", previous_setpoint=0.0)], hysteresis_a=10)
    assert sp(r, "a") == 32.0


def test_min_above_max_evse_is_paused() -> None:
    r = run(SiteConfig(grid_limit_kw=100), [ac("a", max_current_a=5.0)])
    assert sp(r, "a") == 0.0
    assert r.allocations[("a", 1)].reason == "min_above_max"


def test_naive_now_and_bad_phases_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        allocate(
            SiteConfig(grid_limit_kw=1), SiteMeasurement(), [], DlmConfig(), datetime(2025, 1, 1)
        )
    with pytest.raises(ValueError, match="phases"):
        run(SiteConfig(grid_limit_kw=10, phases=1), [ac("a", phases=(1, 2))])


# ---------------------------------------------------------------- properties

# DLM_EXAMPLES=5000 for a long search; the default keeps the suite quick.
PROFILE = settings(
    max_examples=int(os.environ.get("DLM_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SiteConfig, SiteMeasurement, list[EvseInput], DlmConfig]:
    phases = draw(st.sampled_from([1, 3]))
    site = SiteConfig(
        grid_limit_kw=draw(st.floats(1, 400)),
        phases=phases,
        voltage_v=draw(st.sampled_from([230.0, 120.0, 240.0])),
        safety_margin_kw=draw(st.floats(0, 20)),
        non_ev_load_worst_case_kw=draw(st.none() | st.floats(0, 300)),
    )
    meas = SiteMeasurement(
        non_ev_load_kw=draw(st.none() | st.floats(-50, 400)),
        measured_at=NOW - timedelta(seconds=draw(st.floats(0, 500))),
        external_limit_kw=draw(st.none() | st.floats(0, 400)),
    )
    phase_sets = [(1,)] if phases == 1 else [(1,), (2,), (3,), (1, 2), (2, 3), (1, 3), (1, 2, 3)]
    evses = []
    for i in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["AC", "AC", "DC"]))
        ph = draw(st.sampled_from(phase_sets if kind == "AC" else [phase_sets[-1]]))
        measured = draw(st.none() | st.floats(0, 80))
        evses.append(
            EvseInput(
                key=(draw(st.sampled_from(["cp1", "cp2", "cp3"])), i),
                kind=kind,
                phases=ph,
                min_current_a=draw(st.sampled_from([6.0, 6.0, 8.0, 10.0])),
                max_current_a=draw(st.floats(4, 80)),
                min_power_w=draw(st.floats(0, 20000)),
                max_power_w=draw(st.floats(0, 350000)),
                measured_current_a=None if measured is None else tuple(measured for _ in ph),
                measured_power_w=None if measured is None else measured * len(ph) * V,
                measured_at=draw(
                    st.none()
                    | st.just(NOW)
                    | st.builds(lambda s: NOW - timedelta(seconds=s), st.floats(0, 600))
                ),
                priority=draw(st.integers(0, 2)),
                requested_energy_kwh=draw(st.none() | st.floats(0, 100)),
                departure=draw(
                    st.none()
                    | st.builds(lambda s: NOW + timedelta(seconds=s), st.floats(-600, 36000))
                ),
                energy_delivered_kwh=draw(st.floats(0, 60)),
                previous_setpoint=draw(st.sampled_from([0.0, 6.0, 16.0, 32.0, 11000.0])),
                setpoint_since=draw(st.none() | st.just(NOW - timedelta(seconds=60))),
                controllable=draw(st.booleans() | st.just(True)),
            )
        )
    config = DlmConfig(
        strategy=draw(st.sampled_from(["llf", "edf", "equal"])),
        hysteresis_a=draw(st.sampled_from([0.0, 1.0, 5.0])),
        telemetry_timeout_s=300.0,
        taper_headroom_a=draw(st.sampled_from([0.0, 2.0])),
    )
    return site, meas, evses, config


def per_phase_load(
    result: DlmResult, evses: list[EvseInput], phases: int, only: set[tuple[str, int]] | None = None
) -> list[float]:
    load = [0.0] * phases
    for e in evses:
        if only is not None and e.key not in only:
            continue
        for p in e.phases:
            load[p - 1] += result.allocations[e.key].current_a
    return load


def total_phase_amps(
    result: DlmResult, evses: list[EvseInput], only: set[tuple[str, int]] | None = None
) -> float:
    return sum(
        len(e.phases) * result.allocations[e.key].current_a
        for e in evses
        if only is None or e.key in only
    )


def dedupe(evses: list[EvseInput]) -> list[EvseInput]:
    seen: dict[tuple[str, int], EvseInput] = {}
    for e in evses:
        seen.setdefault(e.key, e)
    return list(seen.values())


@PROFILE
@given(scenarios())
def test_property_setpoints_fit_every_phase(sc: tuple) -> None:  # type: ignore[type-arg]
    site, meas, evses, config = sc
    evses = dedupe(evses)
    r = allocate(site, meas, evses, config, NOW)
    cap = r.phase_capacity_a[0]
    load = per_phase_load(r, evses, site.phases)
    for p in range(site.phases):
        # Σ set-points + non-EV load (balanced) ≤ limit - margin, on every phase
        assert load[p] <= cap + TOL
        assert r.phase_reserved_a[p] >= load[p] - TOL
    # the EVSEs with fresh telemetry fit in what the worst-case ones leave
    worst = {k for k, a in r.allocations.items() if a.worst_case}
    fresh_keys = {e.key for e in evses} - worst
    fresh_load = per_phase_load(r, evses, site.phases, fresh_keys)
    for p in range(site.phases):
        reserved_worst = sum(
            r.allocations[e.key].reserved_a for e in evses if e.key in worst and p + 1 in e.phases
        )
        assert fresh_load[p] <= max(cap - reserved_worst, 0.0) + TOL


@PROFILE
@given(scenarios())
def test_property_setpoints_are_zero_or_between_min_and_max(sc: tuple) -> None:  # type: ignore[type-arg]
    site, meas, evses, config = sc
    evses = dedupe(evses)
    r = allocate(site, meas, evses, config, NOW)
    for e in evses:
        s = r.allocations[e.key].setpoint
        lo, hi = (
            (e.min_current_a, e.max_current_a) if e.kind == "AC" else (e.min_power_w, e.max_power_w)
        )
        assert s == 0 or lo - TOL <= s <= hi + TOL, (e, s)


@PROFILE
@given(scenarios())
def test_property_nothing_allocated_without_headroom(sc: tuple) -> None:  # type: ignore[type-arg]
    site, meas, evses, config = sc
    evses = dedupe(evses)
    r = allocate(site, meas, evses, config, NOW)
    if r.available_kw <= 0:
        assert all(a.setpoint == 0 for a in r.allocations.values())


@PROFILE
@given(scenarios())
def test_property_stale_non_ev_load_never_allocates_more(sc: tuple) -> None:  # type: ignore[type-arg]
    site, meas, evses, config = sc
    evses = dedupe(evses)
    if meas.non_ev_load_kw is None:
        meas = replace(meas, non_ev_load_kw=10.0)
    fresh_meas = replace(meas, measured_at=NOW)
    stale_meas = replace(meas, measured_at=NOW - timedelta(seconds=301))
    r_fresh = allocate(site, fresh_meas, evses, config, NOW)
    r_stale = allocate(site, stale_meas, evses, config, NOW)
    assert r_stale.available_kw <= r_fresh.available_kw + TOL
    assert total_phase_amps(r_stale, evses) <= total_phase_amps(r_fresh, evses) + TOL


def quantised_minimum(e: EvseInput) -> float:
    """The EVSE's minimum rounded up to the set-point resolution (0.1 A, 1 W)."""
    lo, q = (e.min_current_a, 0.1) if e.kind == "AC" else (e.min_power_w, 1.0)
    return max(math.ceil(max(lo, 0.0) / q - 1e-9) * q, q)


@PROFILE
@given(scenarios(), st.booleans(), st.booleans())
def test_property_non_ev_load_not_fresh_gives_only_minimums(
    sc: tuple,  # type: ignore[type-arg]
    lost: bool,
    missing: bool,
) -> None:
    site, meas, evses, config = sc
    evses = dedupe(evses)
    if missing:
        meas = replace(meas, non_ev_load_kw=None)
    if lost:  # reported lost: stale whatever the timestamp says
        meas = replace(meas, lost=True)
    else:
        meas = replace(meas, measured_at=NOW - timedelta(seconds=301))
    r = allocate(site, meas, evses, config, NOW)
    assert r.non_ev_stale
    for e in evses:
        a = r.allocations[e.key]
        if a.worst_case:
            continue
        assert a.setpoint == 0 or a.setpoint == pytest.approx(quantised_minimum(e), abs=1e-6), (
            e,
            a,
        )
        assert (a.setpoint > 0) == (a.reason == "fail_safe_min"), a


@PROFILE
@given(scenarios(), st.integers(0, 7))
def test_property_stale_evse_never_gives_others_more(sc: tuple, pick: int) -> None:  # type: ignore[type-arg]
    site, meas, evses, config = sc
    evses = dedupe(evses)
    if not evses:
        return
    target = evses[pick % len(evses)]
    stale_evses = [
        replace(e, measured_at=NOW - timedelta(seconds=301)) if e.key == target.key else e
        for e in evses
    ]
    r_fresh = allocate(site, meas, evses, config, NOW)
    r_stale = allocate(site, meas, stale_evses, config, NOW)
    others = {e.key for e in evses} - {target.key}
    assert (
        total_phase_amps(r_stale, evses, others) <= total_phase_amps(r_fresh, evses, others) + TOL
    )
    held = r_stale.allocations[target.key].setpoint
    assert held <= target.previous_setpoint + TOL


@PROFILE
@given(scenarios())
def test_property_hysteresis_never_breaks_capacity(sc: tuple) -> None:  # type: ignore[type-arg]
    site, meas, evses, config = sc
    evses = dedupe(evses)
    r0 = allocate(site, meas, evses, config.model_copy(update={"hysteresis_a": 0.0}), NOW)
    r1 = allocate(site, meas, evses, config.model_copy(update={"hysteresis_a": 8.0}), NOW)
    cap = r1.phase_capacity_a[0]
    for p, load in enumerate(per_phase_load(r1, evses, site.phases)):
        assert load <= cap + TOL
        assert load <= per_phase_load(r0, evses, site.phases)[p] + TOL


@PROFILE
@given(scenarios(), st.randoms(use_true_random=False))
def test_property_input_order_does_not_matter(sc: tuple, rnd) -> None:  # type: ignore[no-untyped-def,type-arg]
    site, meas, evses, config = sc
    evses = dedupe(evses)
    shuffled = list(evses)
    rnd.shuffle(shuffled)
    assert (
        allocate(site, meas, evses, config, NOW).allocations
        == allocate(site, meas, shuffled, config, NOW).allocations
    )
