"""Tests of controllers.ven.intervals against OpenADR 3.1.0 User Guide 7.3 and 7.4."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.ven.intervals import (
    ActiveInterval,
    IntervalError,
    active_at,
    expand_event,
    next_change,
    parse_duration,
)
from controllers.ven.oadr3_models import Event

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def iso_duration(d: timedelta) -> str:
    total_us = d // timedelta(microseconds=1)
    seconds, us = divmod(total_us, 1_000_000)
    return f"PT{seconds}.{us:06d}S" if us else f"PT{seconds}S"


def event(intervals: list[dict[str, Any]], period: dict[str, Any] | None = None, **kw: Any):
    ev: dict[str, Any] = {"id": "ev1", "programID": "p1", "intervals": intervals, **kw}
    if period is not None:
        ev["intervalPeriod"] = period
    return ev


def price(i: int, *values: float, period: dict[str, Any] | None = None) -> dict[str, Any]:
    iv: dict[str, Any] = {"id": i, "payloads": [{"type": "PRICE", "values": list(values)}]}
    if period is not None:
        iv["intervalPeriod"] = period
    return iv


# --- parse_duration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H", timedelta(hours=1)),
        ("PT0S", timedelta(0)),
        ("P0D", timedelta(0)),
        ("P0S", timedelta(0)),  # as written in User Guide 7.3 randomizeStart
        ("P1DT2H3M4.5S", timedelta(days=1, hours=2, minutes=3, seconds=4.5)),
        ("P2W", timedelta(days=14)),
        ("P1Y", timedelta(days=365)),
        ("P1M", timedelta(days=30)),
        ("P1Y2M3D", timedelta(days=365 + 60 + 3)),
        ("-PT15M", timedelta(minutes=-15)),
        ("P9999Y", None),
        ("P7D", timedelta(days=7)),
    ],
)
def test_parse_duration(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "1H", "PT1X", "P1H", "PT1.5H", "P1DT", 3600])
def test_parse_duration_rejects_malformed(text: Any) -> None:
    with pytest.raises(IntervalError):
        parse_duration(text)


@given(
    d=st.integers(0, 400),
    h=st.integers(0, 48),
    m=st.integers(0, 120),
    s=st.integers(0, 10_000),
)
def test_parse_duration_components_property(d: int, h: int, m: int, s: int) -> None:
    assert parse_duration(f"P{d}DT{h}H{m}M{s}S") == timedelta(days=d, hours=h, minutes=m, seconds=s)


# --- User Guide examples ----------------------------------------------------------------


def test_guide_example_7_2_3_minimal_price_event() -> None:
    ev = {
        "eventName": "simplePriceEvent",
        "programID": "0",
        "intervalPeriod": {"start": "2023-02-10T00:00:00.000Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.17]}]}],
    }
    (iv,) = expand_event(ev, NOW)
    assert iv.start == datetime(2023, 2, 10, tzinfo=UTC)
    assert iv.end == datetime(2023, 2, 10, 1, tzinfo=UTC)
    assert (iv.payload_type, iv.value, iv.program_id, iv.event_name) == (
        "PRICE",
        0.17,
        "0",
        "simplePriceEvent",
    )


def test_guide_example_7_3_1_multi_valued_price_is_three_hourly_prices() -> None:
    ev = {
        "eventName": "multiPriceEvent",
        "programID": "44",
        "payloadDescriptors": [{"payloadType": "PRICE", "units": "KWH", "currency": "USD"}],
        "intervals": [
            {
                "id": 0,
                "intervalPeriod": {"start": "2025-06-25T00:00:00.000Z", "duration": "PT3H"},
                "payloads": [{"type": "PRICE", "values": [0.17, 0.03, 0.11]}],
            }
        ],
    }
    out = expand_event(ev, NOW)
    base = datetime(2025, 6, 25, tzinfo=UTC)
    assert [(iv.start, iv.end, iv.value) for iv in out] == [
        (base, base + timedelta(hours=1), 0.17),
        (base + timedelta(hours=1), base + timedelta(hours=2), 0.03),
        (base + timedelta(hours=2), base + timedelta(hours=3), 0.11),
    ]
    assert {iv.interval_id for iv in out} == {0}  # 7.5: sub-intervals keep the id
    assert [iv.sub_index for iv in out] == [0, 1, 2]


def test_guide_example_7_4_1_variable_intervals_follow_back_to_back() -> None:
    ev = {
        "eventName": "variableIntervalsEvent",
        "programID": "44",
        "intervalPeriod": {"start": "2023-02-10T00:00:00.000Z", "duration": "PT1H"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "PRICE", "values": [0.17]}]},
            {
                "id": 1,
                "intervalPeriod": {"duration": "PT2H"},
                "payloads": [{"type": "PRICE", "values": [0.22]}],
            },
        ],
    }
    a, b = expand_event(ev, NOW)
    base = datetime(2023, 2, 10, tzinfo=UTC)
    assert (a.start, a.end, a.value) == (base, base + timedelta(hours=1), 0.17)
    assert (b.start, b.end, b.value) == (
        base + timedelta(hours=1),
        base + timedelta(hours=3),
        0.22,
    )


def test_guide_do_it_now_alert_starts_now_indefinitely() -> None:
    # 7.3 'do it now' event: start '0001-01-01', duration "P9999Y"
    ev = event(
        [{"id": 0, "payloads": [{"type": "ALERT_GRID_EMERGENCY", "values": ["shed"]}]}],
        {"start": "0001-01-01", "duration": "P9999Y"},
    )
    (iv,) = expand_event(ev, NOW)
    assert (iv.start, iv.end, iv.value) == (NOW, None, "shed")


def test_guide_do_it_now_skip_ahead_to_current_hour() -> None:
    # 7.3: 25 hourly prices from midnight, read at 6 am: the client skips to interval 6
    ev = event(
        [price(i, i / 100) for i in range(25)], {"start": T0.isoformat(), "duration": "PT1H"}
    )
    out = expand_event(ev, T0 + timedelta(hours=6, minutes=30))
    (cur,) = active_at(out, T0 + timedelta(hours=6, minutes=30))
    assert cur.interval_id == 6
    assert next_change(out, T0 + timedelta(hours=6, minutes=30)) == T0 + timedelta(hours=7)


def test_first_interval_beginning_of_time_takes_event_start() -> None:
    ev = event(
        [price(0, 1.0, period={"start": "0001-01-01T00:00:00Z"}), price(1, 2.0)],
        {"start": "2026-03-02T00:00:00Z", "duration": "PT30M"},
    )
    a, b = expand_event(ev, NOW)
    assert a.start == datetime(2026, 3, 2, tzinfo=UTC)
    assert b.start == a.end


def test_first_interval_beginning_of_time_without_event_period_is_now() -> None:
    ev = event([price(0, 1.0, period={"start": "0001-01-01T00:00:00", "duration": "PT1H"})])
    (iv,) = expand_event(ev, NOW)
    assert (iv.start, iv.end) == (NOW, NOW + timedelta(hours=1))


def test_subsequent_beginning_of_time_follows_previous() -> None:
    ev = event(
        [
            price(0, 1.0, period={"start": "2026-03-01T00:00:00Z", "duration": "PT1H"}),
            price(1, 2.0, period={"start": "0001-01-01T00:00:00Z", "duration": "PT2H"}),
        ]
    )
    a, b = expand_event(ev, NOW)
    assert (b.start, b.end) == (a.end, T0 + timedelta(hours=3))


def test_interval_level_start_overrides_and_leaves_gap() -> None:
    ev = event(
        [price(0, 1.0), price(1, 2.0, period={"start": "2026-03-01T05:00:00Z"})],
        {"start": T0.isoformat(), "duration": "PT1H"},
    )
    a, b = expand_event(ev, NOW)
    assert (a.start, a.end) == (T0, T0 + timedelta(hours=1))
    assert (b.start, b.end) == (T0 + timedelta(hours=5), T0 + timedelta(hours=6))
    assert active_at([a, b], T0 + timedelta(hours=2)) == []


def test_absent_duration_is_indefinite() -> None:
    ev = event([price(0, 1.0, period={"start": T0.isoformat()})])
    (iv,) = expand_event(ev, NOW)
    assert iv.end is None


def test_point_payload_keeps_values_together() -> None:
    ev = event(
        [
            {
                "id": 0,
                "payloads": [{"type": "POINT", "values": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}],
            }
        ],
        {"start": T0.isoformat(), "duration": "PT1H"},
    )
    (iv,) = expand_event(ev, NOW)
    assert iv.value == ({"x": 1, "y": 2}, {"x": 3, "y": 4})
    assert iv.end == T0 + timedelta(hours=1)


def test_event_model_input_and_priority() -> None:
    model = Event.model_validate(
        {
            "id": "e9",
            "createdDateTime": "2026-03-01T00:00:00Z",
            "modificationDateTime": "2026-03-01T00:00:00Z",
            "objectType": "EVENT",
            "programID": "p1",
            "priority": 0,
            "intervalPeriod": {"start": "2026-03-01T00:00:00Z"},  # duration unset
            "intervals": [price(0, 0.1)],
        }
    )
    (iv,) = expand_event(model, NOW)
    assert (iv.event_id, iv.priority, iv.start, iv.end) == ("e9", 0, T0, None)


def test_event_duration_clips_intervals() -> None:
    # 7.3 event.duration: 24 hourly prices but duration "PT12H" omits the last 12
    ev = event(
        [price(i, float(i)) for i in range(24)],
        {"start": T0.isoformat(), "duration": "PT1H"},
        duration="PT12H",
    )
    out = expand_event(ev, NOW)
    assert [iv.interval_id for iv in out] == list(range(12))


def test_event_duration_repeats_intervals() -> None:
    # 7.3 event.duration: 24 hourly prices with duration "P7D" repeat for a week
    ev = event(
        [price(i, float(i)) for i in range(24)],
        {"start": T0.isoformat(), "duration": "PT1H"},
        duration="P7D",
    )
    out = expand_event(ev, NOW, horizon=T0 + timedelta(days=30))
    assert len(out) == 24 * 7
    (iv,) = active_at(out, T0 + timedelta(days=3, hours=5, minutes=1))
    assert iv.value == 5.0
    assert next_change(out, T0 + timedelta(days=6, hours=23, minutes=1)) == T0 + timedelta(days=7)
    assert next_change(out, T0 + timedelta(days=7)) is None


def test_event_duration_indefinite_repeats_up_to_horizon() -> None:
    ev = event(
        [price(i, float(i)) for i in range(24)],
        {"start": T0.isoformat(), "duration": "PT1H"},
        duration="P9999Y",
    )
    later = T0 + timedelta(days=100, hours=3, minutes=5)
    out = expand_event(ev, later)
    (iv,) = active_at(out, later)
    assert iv.value == 3.0


@pytest.mark.parametrize(
    "ev",
    [
        event([price(0, 1.0)]),  # 7.4: no intervalPeriod anywhere
        event([price(0, 1.0)], {"start": "2026-03-01T00:00:00", "duration": "PT1H"}),  # naive
        event([price(0, 1.0)], {"start": "yesterday", "duration": "PT1H"}),
        event([price(0, 1.0)], {"start": T0.isoformat(), "duration": "1 hour"}),
        event([price(0, 1.0)], {"start": T0.isoformat(), "duration": "-PT1H"}),
        event([price(0, 1.0), price(1, 2.0)], {"start": T0.isoformat(), "duration": "P9999Y"}),
        event([price(0, 1.0, 2.0)], {"start": T0.isoformat(), "duration": "P9999Y"}),
        event([{"id": "x", "payloads": []}], {"start": T0.isoformat(), "duration": "PT1H"}),
        event([{"id": 0, "payloads": [{"values": [1]}]}], {"start": T0.isoformat()}),
    ],
)
def test_malformed_events_raise_interval_error(ev: dict[str, Any]) -> None:
    with pytest.raises(IntervalError):
        expand_event(ev, NOW)


def test_naive_now_rejected() -> None:
    with pytest.raises(IntervalError):
        expand_event(event([price(0, 1.0)], {"start": T0.isoformat()}), NOW.replace(tzinfo=None))


# --- properties -------------------------------------------------------------------------

durations = st.integers(1, 7 * 24 * 3600).map(lambda s: timedelta(seconds=s))
starts = st.integers(0, 3 * 365 * 24 * 3600).map(lambda s: T0 + timedelta(seconds=s))


@given(start=starts, ds=st.lists(durations, min_size=1, max_size=20))
def test_property_back_to_back(start: datetime, ds: list[timedelta]) -> None:
    ivs = [price(i, float(i), period={"duration": iso_duration(d)}) for i, d in enumerate(ds)]
    out = expand_event(event(ivs, {"start": start.isoformat(), "duration": "PT1H"}), NOW)
    assert out[0].start == start
    for prev, cur, d in zip(out, out[1:], ds[1:], strict=False):
        assert cur.start == prev.end
        assert cur.end == cur.start + d
    assert out[-1].end == start + sum(ds, timedelta(0))


@given(
    start=starts,
    d=durations,
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=48),
    equal=st.booleans(),
)
def test_property_multi_valued_split(
    start: datetime, d: timedelta, values: list[float], equal: bool
) -> None:
    n = len(values)
    if equal:
        d = d * n  # a multiple of N seconds: exactly equal sub-intervals
    ev = event([price(0, *values)], {"start": start.isoformat(), "duration": iso_duration(d)})
    out = expand_event(ev, NOW)
    assert len(out) == n
    assert [iv.value for iv in out] == values
    assert out[0].start == start and out[-1].end == start + d
    lengths = [iv.end - iv.start for iv in out if iv.end is not None]
    assert sum(lengths, timedelta(0)) == d
    assert max(lengths) - min(lengths) <= timedelta(microseconds=1)
    if equal:
        assert set(lengths) == {d / n}
    for prev, cur in pairwise(out):
        assert cur.start == prev.end


@given(
    bound_s=st.integers(1, 3600),
    seed=st.integers(0, 2**32),
    event_id=st.text(min_size=1, max_size=8),
    mode=st.sampled_from(["symmetric", "delay"]),
)
def test_property_randomize_start(bound_s: int, seed: int, event_id: str, mode: Any) -> None:
    bound = timedelta(seconds=bound_s)
    ev = event(
        [price(0, 1.0), price(1, 2.0)],
        {"start": T0.isoformat(), "duration": "PT1H", "randomizeStart": f"PT{bound_s}S"},
    )
    ev["id"] = event_id
    out = expand_event(ev, NOW, seed=seed, randomize_mode=mode)
    offset = out[0].start - T0
    low = timedelta(0) if mode == "delay" else -bound
    assert low <= offset < bound
    if mode == "symmetric":
        assert -bound < offset
    assert out[0].randomized_offset_s == offset.total_seconds()
    # 7.3: following intervals are shifted by the same amount
    assert out[1].start == out[0].end == T0 + timedelta(hours=1) + offset
    assert expand_event(ev, NOW, seed=seed, randomize_mode=mode) == out


def test_randomize_start_differs_across_seeds_and_events() -> None:
    ev = event(
        [price(0, 1.0)], {"start": T0.isoformat(), "duration": "PT1H", "randomizeStart": "PT1H"}
    )
    starts_by_seed = {expand_event(ev, NOW, seed=s)[0].start for s in range(20)}
    assert len(starts_by_seed) > 15
    other = {**ev, "id": "ev2"}
    assert expand_event(other, NOW, seed=1)[0].start != expand_event(ev, NOW, seed=1)[0].start


def test_randomize_absolute_start_interval_keeps_or_redraws_offset() -> None:
    ev = event(
        [
            price(0, 1.0),
            price(1, 2.0, period={"start": "2026-03-01T05:00:00Z"}),
            price(2, 3.0, period={"start": "2026-03-01T09:00:00Z", "randomizeStart": "PT10M"}),
        ],
        {"start": T0.isoformat(), "duration": "PT1H", "randomizeStart": "PT30M"},
    )
    a, b, c = expand_event(ev, NOW, seed=3)
    assert b.start - (T0 + timedelta(hours=5)) == a.start - T0  # same shift (7.3)
    shift_c = c.start - (T0 + timedelta(hours=9))
    assert abs(shift_c) < timedelta(minutes=10)
    assert c.randomized_offset_s == shift_c.total_seconds()


@given(when=st.sampled_from(["0001-01-01", "0001-01-01T00:00:00", "0001-01-01T00:00:00Z"]))
def test_property_now_indefinitely(when: str) -> None:
    for period_at_event in (True, False):
        period = {"start": when, "duration": "P9999Y"}
        ev = (
            event([price(0, 1.0)], period)
            if period_at_event
            else event([price(0, 1.0, period=period)])
        )
        (iv,) = expand_event(ev, NOW)
        assert iv.start == NOW and iv.end is None
        assert active_at([iv], NOW) == [iv]
        assert active_at([iv], NOW - timedelta(microseconds=1)) == []


def _interval(start: datetime, length: timedelta | None, i: int) -> ActiveInterval:
    return ActiveInterval(
        event_id="e",
        program_id="p",
        event_name=None,
        priority=None,
        interval_id=i,
        start=start,
        end=None if length is None else start + length,
        payload_type="PRICE",
        value=float(i),
        randomized_offset_s=0.0,
    )


interval_lists = st.lists(
    st.tuples(
        st.integers(0, 100),
        st.one_of(st.none(), st.integers(0, 50)),
    ),
    max_size=15,
).map(
    lambda rows: [
        _interval(T0 + timedelta(minutes=s), None if n is None else timedelta(minutes=n), i)
        for i, (s, n) in enumerate(rows)
    ]
)


@settings(max_examples=200)
@given(ivs=interval_lists, t_min=st.integers(-5, 160))
def test_property_active_at_exact_end_exclusive(ivs: list[ActiveInterval], t_min: int) -> None:
    t = T0 + timedelta(minutes=t_min)
    got = active_at(ivs, t)
    expected = [iv for iv in ivs if iv.start <= t and (iv.end is None or t < iv.end)]
    assert got == expected
    assert all(iv.end != t for iv in got)  # end exclusive
    nc = next_change(ivs, t)
    bounds = sorted({b for iv in ivs for b in (iv.start, iv.end) if b is not None and b > t})
    assert nc == (bounds[0] if bounds else None)
    if nc is not None:
        # nothing changes strictly between t and the next change
        mid = t + (nc - t) / 2
        assert active_at(ivs, mid) == got
