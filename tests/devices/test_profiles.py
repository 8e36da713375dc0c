"""Charging profiles: install/clear rules and the composite schedule vs a brute-force reference."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.charging_station.profiles import (
    ChargingProfile,
    ChargingProfileKind,
    ChargingProfilePurpose,
    ChargingRateUnit,
    ChargingSchedule,
    ChargingSchedulePeriod,
    EvseElectrical,
    ProfileRejectedError,
    ProfileStore,
    RecurrencyKind,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EVSES = [
    EvseElectrical(1, "AC", 22_000.0, phases=3),
    EvseElectrical(2, "AC", 7_360.0, phases=1),
    EvseElectrical(3, "DC", 50_000.0, dc_voltage_v=400.0),
]
P = ChargingProfilePurpose
K = ChargingProfileKind


def profile(
    pid: int,
    purpose: P,
    limits: list[float],
    *,
    stack: int = 0,
    kind: K = K.ABSOLUTE,
    unit: str = "A",
    start: datetime | None = T0,
    starts: list[int] | None = None,
    duration: int | None = None,
    phases: int | None = None,
    **kw: object,
) -> ChargingProfile:
    starts = starts or [i * 600 for i in range(len(limits))]
    return ChargingProfile(
        id=pid,
        stack_level=stack,
        purpose=purpose,
        kind=kind,
        schedule=ChargingSchedule(
            ChargingRateUnit(unit),
            tuple(
                ChargingSchedulePeriod(s, lim, phases)
                for s, lim in zip(starts, limits, strict=True)
            ),
            start_schedule=start if kind is not K.RELATIVE else None,
            duration_s=duration,
        ),
        **kw,  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------- brute force
def _contrib(
    p: ChargingProfile, t: datetime, rel_anchor: datetime
) -> tuple[float, int | None] | None:
    if p.valid_from is not None and t < p.valid_from:
        return None
    if p.valid_to is not None and t >= p.valid_to:
        return None
    s = p.schedule
    if p.kind is K.ABSOLUTE:
        assert s.start_schedule is not None
        anchor = s.start_schedule
    elif p.kind is K.RECURRING:
        assert s.start_schedule is not None
        period = timedelta(days=1 if p.recurrency is RecurrencyKind.DAILY else 7)
        n = math.floor((t - s.start_schedule) / period)
        anchor = s.start_schedule + n * period
    else:
        anchor = rel_anchor
    e = (t - anchor).total_seconds()
    duration = s.duration_s if s.duration_s is not None else math.inf
    if p.kind is K.RECURRING:
        duration = min(duration, 86400 if p.recurrency is RecurrencyKind.DAILY else 7 * 86400)
    if e < 0 or e >= duration:
        return None
    cur = None
    for per in s.periods:
        if per.start_period_s <= e:
            cur = per
    assert cur is not None
    return cur.limit, cur.number_phases


def _to_domain(
    elec: EvseElectrical, unit: ChargingRateUnit, v: tuple[float, int | None]
) -> tuple[float, int]:
    lim, n = v
    if elec.kind == "AC":
        ph = min(n or 3, elec.phases)
        return (lim if unit is ChargingRateUnit.A else lim / (elec.voltage_v * ph)), ph
    return (lim if unit is ChargingRateUnit.W else lim * elec.dc_voltage_v), 0


def brute(
    installed: list[tuple[int, ChargingProfile]],
    evse_id: int,
    t: datetime,
    tx_start: datetime | None,
    window_start: datetime,
) -> tuple[float, int]:
    """The stacking rule evaluated literally at instant t, in the EVSE's domain."""
    elec = next(e for e in EVSES if e.evse_id == evse_id)
    rel = tx_start or window_start

    def winner(purpose: P, on: set[int]) -> tuple[float, int] | None:
        best = None
        for ev, p in installed:
            if p.purpose is not purpose or ev not in on:
                continue
            v = _contrib(p, t, rel)
            if v is None:
                continue
            key = (p.stack_level, ev != 0)
            if best is None or key > best[0]:
                best = (key, _to_domain(elec, p.schedule.charging_rate_unit, v))
        return best[1] if best else None

    value = elec.max_current_a if elec.kind == "AC" else elec.max_power_w
    phases = elec.phases if elec.kind == "AC" else 0
    tx = winner(P.TX, {evse_id}) or winner(P.TX_DEFAULT, {0, evse_id})
    for v in (tx, winner(P.CHARGING_STATION_MAX, {0})):
        if v is not None:
            value, phases = min(value, v[0]), min(phases, v[1])
    return value, phases


# ----------------------------------------------------------------------------- strategies
@st.composite
def profile_sets(draw: st.DrawFn) -> list[tuple[int, ChargingProfile]]:
    out = []
    for pid in range(1, draw(st.integers(0, 7)) + 1):
        purpose = draw(st.sampled_from(list(P)))
        evse = (
            0
            if purpose is P.CHARGING_STATION_MAX
            else (
                draw(st.sampled_from([1, 2, 3]))
                if purpose is P.TX
                else draw(st.sampled_from([0, 1, 2, 3]))
            )
        )
        kind = draw(st.sampled_from(list(K)))
        unit = draw(st.sampled_from(["A", "W"]))
        n = draw(st.integers(1, 4))
        starts = sorted(draw(st.sets(st.integers(1, 3000), min_size=n - 1, max_size=n - 1)))
        hi = 40.0 if unit == "A" else 30_000.0
        limits = [draw(st.floats(0, hi).map(lambda x: round(x, 1))) for _ in range(n)]
        offset = draw(st.integers(-3000, 3000))
        start = T0 + timedelta(seconds=offset)
        recurrency = None
        if kind is K.RECURRING:
            recurrency = draw(st.sampled_from(list(RecurrencyKind)))
            start -= timedelta(
                days=draw(st.integers(1, 3)) * (1 if recurrency is RecurrencyKind.DAILY else 7)
            )
        vf = draw(st.none() | st.integers(-1000, 3600).map(lambda s: T0 + timedelta(seconds=s)))
        vt = draw(st.none() | st.integers(0, 5000).map(lambda s: T0 + timedelta(seconds=s)))
        p = profile(
            pid,
            purpose,
            limits,
            stack=draw(st.integers(0, 3)),
            kind=kind,
            unit=unit,
            start=start,
            starts=[0, *starts],
            phases=draw(st.sampled_from([None, 1, 3])),
            duration=draw(st.none() | st.integers(300, 5000)),
            recurrency=recurrency,
            valid_from=vf,
            valid_to=vt,
        )
        out.append((evse, p))
    return out


@given(
    profile_sets(),
    st.sampled_from([1, 2, 3]),
    st.sampled_from(["A", "W"]),
    st.booleans(),
    st.integers(-2000, 0),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_composite_equals_brute_force(
    candidates: list[tuple[int, ChargingProfile]],
    evse_id: int,
    unit: str,
    with_tx: bool,
    tx_offset: int,
) -> None:
    store = ProfileStore(EVSES)
    tx_start = T0 + timedelta(seconds=tx_offset) if with_tx else None
    if tx_start is not None:
        for e in (1, 2, 3):
            store.set_transaction(e, f"TX{e}", tx_start)
    for evse, p in candidates:
        try:
            store.install(p, evse)
        except ProfileRejectedError:
            pass
    installed = store.profiles
    duration = 3600
    comp = store.composite_schedule(evse_id, T0, duration, unit)
    assert comp[0].start_period_s == 0
    assert all(a.start_period_s < b.start_period_s for a, b in itertools.pairwise(comp))
    elec = next(e for e in EVSES if e.evse_id == evse_id)
    i = 0
    for s in range(duration):
        while i + 1 < len(comp) and comp[i + 1].start_period_s <= s:
            i += 1
        value, phases = brute(installed, evse_id, T0 + timedelta(seconds=s), tx_start, T0)
        if elec.kind == "AC":
            expect = value if unit == "A" else value * elec.voltage_v * phases
            assert comp[i].number_phases == phases, s
        else:
            expect = value if unit == "W" else value / elec.dc_voltage_v
        assert comp[i].limit == pytest.approx(expect, rel=1e-9, abs=1e-9), s
    # limit_at agrees with the composite at its own start
    lim = store.limit_at(evse_id, T0)
    first = comp[0].limit
    if elec.kind == "AC":
        assert (lim.current_a if unit == "A" else lim.power_w) == pytest.approx(first)
    else:
        assert (lim.power_w if unit == "W" else lim.current_a) == pytest.approx(first)


# ----------------------------------------------------------------------------- rules
def test_stacking_example_from_the_spec() -> None:
    """1.6 §3.13.2 figure: a higher stack level of limited duration on top of a base."""
    store = ProfileStore(EVSES)
    store.install(profile(1, P.TX_DEFAULT, [16.0], stack=0, kind=K.RELATIVE), 1)
    store.install(profile(2, P.TX_DEFAULT, [6.0], stack=1, duration=3600), 1)
    comp = store.composite_schedule(1, T0, 7200)
    assert [(p.start_period_s, p.limit, p.number_phases) for p in comp] == [
        (0, 6.0, 3),
        (3600, 16.0, 3),
    ]


def test_tx_overrides_default_and_station_max_caps() -> None:
    store = ProfileStore(EVSES)
    store.install(profile(1, P.TX_DEFAULT, [10.0], stack=5), 0)
    store.install(profile(2, P.CHARGING_STATION_MAX, [20.0]), 0)
    assert store.limit_at(1, T0).current_a == 10.0
    store.set_transaction(1, "T1", T0)
    store.install(profile(3, P.TX, [25.0], stack=0), 1)
    lim = store.limit_at(1, T0)
    assert lim.current_a == 20.0 and lim.phases == 3
    assert lim.power_w == pytest.approx(20.0 * 230 * 3)
    # offline evaluation ignores the TxProfile
    assert store.limit_at(1, T0, include_tx=False).current_a == 10.0
    assert store.end_transaction(1) == [3]
    assert store.limit_at(1, T0).current_a == 10.0


def test_evse_specific_default_beats_station_wide_on_tie() -> None:
    store = ProfileStore(EVSES)
    store.install(profile(1, P.TX_DEFAULT, [10.0], stack=1), 0)
    store.install(profile(2, P.TX_DEFAULT, [12.0], stack=1), 1)
    assert store.limit_at(1, T0).current_a == 12.0
    assert store.limit_at(2, T0).current_a == 10.0


def test_replacement_and_rejections() -> None:
    store = ProfileStore(EVSES)
    store.install(profile(1, P.TX_DEFAULT, [10.0], stack=1), 1)
    assert store.install(profile(1, P.TX_DEFAULT, [8.0], stack=2), 2) == [1]  # same id
    assert store.install(profile(7, P.TX_DEFAULT, [9.0], stack=2), 2) == [
        1
    ]  # same stack/purpose/evse
    assert [p.id for _, p in store.profiles] == [7]
    with pytest.raises(ProfileRejectedError) as e:
        store.install(profile(2, P.TX, [8.0]), 1)
    assert e.value.reason_code == "TxNotFound"
    store.set_transaction(1, "T1", T0)
    with pytest.raises(ProfileRejectedError):
        store.install(profile(2, P.TX, [8.0], transaction_id="OTHER"), 1)
    store.install(profile(2, P.TX, [8.0]), 1)
    assert store.profiles[-1][1].transaction_id == "T1"
    with pytest.raises(ProfileRejectedError):
        store.install(profile(3, P.CHARGING_STATION_MAX, [8.0]), 1)
    with pytest.raises(ProfileRejectedError):
        store.install(profile(4, P.TX_DEFAULT, [8.0]), 9)
    with pytest.raises(ProfileRejectedError):
        store.install(profile(5, P.TX_DEFAULT, [8.0, 6.0], starts=[10, 20]), 1)
    with pytest.raises(ProfileRejectedError):
        store.install(profile(6, P.TX_DEFAULT, [8.0], start=None), 1)
    store.install(profile(6, P.TX_DEFAULT, [8.0], start=None, stack=4), 1, now=T0)


def test_clear_by_id_and_criteria() -> None:
    store = ProfileStore(EVSES)
    store.install(profile(1, P.TX_DEFAULT, [10.0], stack=1), 1)
    store.install(profile(2, P.TX_DEFAULT, [10.0], stack=2), 1)
    store.install(profile(3, P.CHARGING_STATION_MAX, [30.0]), 0)
    assert store.clear(9) == []
    assert store.clear(2) == [2]
    assert store.clear(evse_id=1, purpose=P.TX_DEFAULT) == [1]
    assert store.clear() == [3]


def test_units_conversion() -> None:
    store = ProfileStore(EVSES)
    store.install(profile(1, P.TX_DEFAULT, [6900.0], unit="W"), 1)
    assert store.limit_at(1, T0).current_a == pytest.approx(10.0)
    store.install(profile(2, P.TX_DEFAULT, [10.0], unit="A"), 3)
    lim = store.limit_at(3, T0)
    assert lim.power_w == pytest.approx(4000.0) and lim.phases is None
    comp = store.composite_schedule(1, T0, 60, "W")
    assert comp[0].limit == pytest.approx(6900.0)
    # 1-phase limit on a 3-phase EVSE
    store.install(profile(3, P.TX_DEFAULT, [16.0], stack=3, phases=1), 1)
    lim = store.limit_at(1, T0)
    assert (lim.current_a, lim.phases) == (16.0, 1)
    assert lim.power_w == pytest.approx(16 * 230)


def test_recurring_daily() -> None:
    store = ProfileStore(EVSES)
    night = profile(
        1,
        P.TX_DEFAULT,
        [30.0, 8.0],
        starts=[0, 6 * 3600],
        kind=K.RECURRING,
        recurrency=RecurrencyKind.DAILY,
        start=T0 - timedelta(days=10, hours=12),
    )
    store.install(night, 1)
    # T0 is 12:00; the profile restarts every midnight: 30 A 00-06, 8 A 06-24.
    assert store.limit_at(1, T0).current_a == 8.0
    assert store.limit_at(1, T0 + timedelta(hours=13)).current_a == 30.0
    comp = store.composite_schedule(1, T0, 24 * 3600)
    assert [(p.start_period_s, p.limit) for p in comp] == [
        (0, 8.0),
        (12 * 3600, 30.0),
        (18 * 3600, 8.0),
    ]
    assert replace(night, id=2) != night
