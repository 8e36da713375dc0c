"""Grid signal: OpenADR payloads in force to limits, prices, shed levels, emergencies."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controllers.grid_signal import GridInterval, GridResponse, ev_limit_kw, grid_signal

T0 = datetime(2021, 2, 15, 7, 25, tzinfo=UTC)
H = timedelta(hours=1)


def iv(kind: str, value, start=T0, hours: float | None = 1, event="e1", units=None):
    end = None if hours is None else start + timedelta(hours=hours)
    return GridInterval(event, kind, value, start, end, units)


def test_most_restrictive_limit_and_highest_level_win() -> None:
    s = grid_signal([iv("IMPORT_CAPACITY_LIMIT", 80, event="a"),
                     iv("IMPORT_CAPACITY_LIMIT", 50000, event="b", units="W"),
                     iv("SIMPLE", 1, event="c"), iv("SIMPLE", 2, event="d")], T0)
    assert s.import_limit_kw == 50.0
    assert s.simple_level == 2 and s.ev_share == 0.5
    assert s.events == ("a", "b", "c", "d")


def test_intervals_apply_only_while_in_force() -> None:
    ivs = [iv("IMPORT_CAPACITY_LIMIT", 40, start=T0 + H)]
    assert grid_signal(ivs, T0).import_limit_kw is None
    assert grid_signal(ivs, T0 + H).import_limit_kw == 40
    assert grid_signal(ivs, T0 + 2 * H).import_limit_kw is None  # end exclusive
    forever = [iv("IMPORT_CAPACITY_LIMIT", 40, hours=None)]
    assert grid_signal(forever, T0 + 1000 * H).import_limit_kw == 40


def test_emergency_sheds_evs_to_minimum() -> None:
    s = grid_signal([iv("ALERT_GRID_EMERGENCY", "EEA3: rotating outages")], T0)
    assert s.emergency and s.ev_share == 0.0
    # 30 kW other load, EV minimums 12 kW: the DLM may give the minimums only
    assert ev_limit_kw(s, site_limit_kw=150, non_ev_kw=30, ev_minimum_kw=12) == 42


def test_prices_in_per_mwh_and_ceiling() -> None:
    s = grid_signal([iv("PRICE", 9.0, units="USD/KWH"), iv("EXPORT_PRICE", 20.0)], T0,
                    GridResponse(price_ceiling_per_mwh=1000))
    assert s.price_per_mwh == 9000.0 and s.export_price_per_mwh == 20.0
    assert s.ev_share == 0.0  # above the ceiling: EVs at minimum


def test_bad_value_is_skipped_with_a_reason() -> None:
    s = grid_signal([iv("IMPORT_CAPACITY_LIMIT", "lots")], T0)
    assert s.import_limit_kw is None and "not a number" in s.reasons[0]


@given(
    limits=st.lists(st.floats(0, 500), max_size=5),
    level=st.none() | st.integers(0, 3),
    emergency=st.booleans(),
    site=st.floats(1, 500),
    non_ev=st.floats(-100, 300),
    ev_min=st.floats(0, 100),
)
def test_ev_limit_never_above_any_limit_in_force(limits, level, emergency, site, non_ev,
                                                  ev_min) -> None:
    ivs = [iv("IMPORT_CAPACITY_LIMIT", x, event=f"l{n}") for n, x in enumerate(limits)]
    if level is not None:
        ivs.append(iv("SIMPLE", level, event="s"))
    if emergency:
        ivs.append(iv("ALERT_GRID_EMERGENCY", "EEA", event="x"))
    s = grid_signal(ivs, T0)
    limit = ev_limit_kw(s, site, non_ev, ev_min)
    assert limit <= min([site, *limits]) + 1e-9
    if emergency or level == 3:
        # nothing above the EVs' minimum power (or the limit, when that is lower)
        assert abs(limit - min(non_ev + ev_min, *limits, site)) < 1e-9
