"""Loaders of real data: ACN sessions, NL and ERCOT day-ahead prices, EV model specs."""

from __future__ import annotations

import gzip
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from twin.inputs.acn_sessions import COLUMNS, load_acn_sessions
from twin.inputs.ev_specs import (
    draw_ev_models,
    load_ev_specs,
    on_board_charger_phases,
)
from twin.inputs.prices import (
    ercot_settlement_points,
    load_ercot_dam_spp,
    load_nl_day_ahead,
    price_at,
    resample_prices,
)

LA = ZoneInfo("America/Los_Angeles")
CHICAGO = ZoneInfo("America/Chicago")
HOUR = pd.Timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------- ACN sessions


@pytest.fixture(scope="module")
def caltech_sep_2019(data_sets: dict[str, Path]) -> pd.DataFrame:
    return load_acn_sessions("caltech", utc(2019, 9, 1), utc(2019, 10, 1))


def test_caltech_september_2019(caltech_sep_2019: pd.DataFrame) -> None:
    frame = caltech_sep_2019
    assert len(frame) == 828  # arrivals in [2019-09-01Z, 2019-10-01Z)
    assert tuple(frame.columns) == COLUMNS
    for column in ("arrival", "departure", "estimated_departure"):
        assert str(frame[column].dtype) == "datetime64[ns, UTC]"
    assert frame["requested_energy_kwh"].dtype == np.float64
    assert frame["delivered_energy_kwh"].dtype == np.float64
    assert frame["claimed"].dtype == bool
    assert (frame["departure"] > frame["arrival"]).all()
    assert frame["arrival"].is_monotonic_increasing
    assert frame["session_id"].is_unique
    assert (frame["arrival"] >= pd.Timestamp("2019-09-01T00:00Z")).all()
    assert (frame["arrival"] < pd.Timestamp("2019-10-01T00:00Z")).all()
    assert frame.attrs["rejected_rows"] == 0
    assert frame.attrs["site"] == "caltech"
    assert int(frame["claimed"].sum()) == 715  # claimed in the app: a request exists
    assert frame["station_id"].str.match(r"^CA-\d+$").all()
    assert frame["station_id"].nunique() == 46
    assert frame["delivered_energy_kwh"].sum() == pytest.approx(7304.913, abs=1e-3)


def test_caltech_month_in_local_time(data_sets: dict[str, Path]) -> None:
    local = load_acn_sessions(
        "caltech", datetime(2019, 9, 1, tzinfo=LA), datetime(2019, 10, 1, tzinfo=LA)
    )
    assert len(local) == 829
    assert len(load_acn_sessions("jpl", utc(2019, 9, 1), utc(2019, 10, 1))) == 1419


def test_local_offsets_convert_to_utc(caltech_sep_2019: pd.DataFrame) -> None:
    # file row: 2019-09-01 09:56:18-07:00, 10:35:38-07:00, 0.747, 0.747, CA-311, ...
    row = caltech_sep_2019.set_index("session_id").loc["2_39_125_21_2019-09-01 16:56:17.548838"]
    assert row["arrival"] == pd.Timestamp("2019-09-01T16:56:18Z")
    assert row["departure"] == pd.Timestamp("2019-09-01T17:35:38Z")
    assert row["station_id"] == "CA-311"
    assert row["requested_energy_kwh"] == 0.747 and row["delivered_energy_kwh"] == 0.747
    assert not row["claimed"]


def test_standard_time_after_dst_end(data_sets: dict[str, Path]) -> None:
    # 2019-11-03 is the DST fall-back day; file row: 2019-11-03 09:02:19-08:00 (PST)
    frame = load_acn_sessions("caltech", utc(2019, 11, 3, 8), utc(2019, 11, 4, 8))
    row = frame.set_index("session_id").loc["2_39_79_377_2019-11-03 17:02:19.327425"]
    assert row["arrival"] == pd.Timestamp("2019-11-03T17:02:19Z")
    assert row["departure"] == pd.Timestamp("2019-11-04T02:05:28Z")
    assert row["estimated_departure"] == pd.Timestamp("2019-11-04T02:59:19Z")


def test_all_sessions_of_a_site(data_sets: dict[str, Path]) -> None:
    total = 0
    for start, end in [
        (utc(2019, 5, 1, 7), utc(2020, 1, 1, 8)),
        (utc(2020, 2, 1, 8), utc(2020, 6, 1, 7)),
        (utc(2021, 5, 1, 7), utc(2021, 9, 1, 7)),
    ]:
        frame = load_acn_sessions("jpl", start, end)
        assert (frame["departure"] > frame["arrival"]).all()
        total += len(frame)
    assert total == 17605


def test_period_outside_the_data_is_refused(data_sets: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"does not cover .*covered: \[2019-05-01T07:00:00\+00:00"):
        load_acn_sessions("caltech", utc(2020, 7, 1), utc(2020, 8, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        load_acn_sessions("caltech", datetime(2019, 9, 1), utc(2019, 10, 1))
    with pytest.raises(ValueError, match="unknown ACN site"):
        load_acn_sessions("pasadena", utc(2019, 9, 1), utc(2019, 10, 1))  # type: ignore[arg-type]


def test_invalid_rows_are_dropped_and_counted(data_sets: dict[str, Path], tmp_path: Path) -> None:
    real = data_sets["acn_caltech"] / "2019-09-01 2019-12-31.csv.gz"
    lines = gzip.decompress(real.read_bytes()).decode().splitlines()
    header, rows = lines[0], lines[1:51]
    # row 1: departure before arrival; row 2: negative delivered energy; row 3: repeat of 4
    fields = rows[1].split(",")
    fields[0], fields[1] = fields[1], fields[0]
    rows[1] = ",".join(fields)
    fields = rows[2].split(",")
    fields[3] = "-1.5"
    rows[2] = ",".join(fields)
    rows[3] = rows[4]
    broken = tmp_path / "sessions.csv.gz"
    broken.write_bytes(gzip.compress(("\n".join([header, *rows]) + "\n").encode()))
    frame = load_acn_sessions(
        "caltech", utc(2019, 9, 1), utc(2019, 10, 1), source=broken, require_coverage=False
    )
    assert frame.attrs["rejected_rows"] == 3
    assert frame.attrs["rejected_by_reason"] == {
        "departure not after arrival": 1,
        "missing or negative energy": 1,
        "repeated session id": 1,
    }
    assert len(frame) == 47
    assert (frame["departure"] > frame["arrival"]).all()


# --------------------------------------------------------------------------- ERCOT


def ercot_local_day(point: str, day: datetime) -> pd.DataFrame:
    start = day.replace(tzinfo=CHICAGO)
    end = (day + timedelta(days=1)).replace(tzinfo=CHICAGO)
    return load_ercot_dam_spp(point, start, end)


def test_ercot_winter_storm_uri(data_sets: dict[str, Path]) -> None:
    feb15 = ercot_local_day("HB_HOUSTON", datetime(2021, 2, 15))
    assert len(feb15) == 24
    assert feb15["time"].iloc[0] == pd.Timestamp("2021-02-15T06:00Z")  # 00:00 CST
    assert (feb15["time"].diff().dropna() == HOUR).all()
    assert feb15.attrs["currency"] == "USD" and feb15.attrs["interval"] == timedelta(hours=1)
    prices = feb15["price_per_mwh"]
    assert prices.iloc[0] == 3056.91  # hour ending 01:00
    assert prices.min() == 2996.08 and prices.max() == 7891.45
    assert (prices > 2900).all()  # scarcity all day (a normal day is 20-50 USD/MWh)
    # The day-ahead price reached the 9000 USD/MWh offer cap region on 17 February.
    feb17 = ercot_local_day("HB_HOUSTON", datetime(2021, 2, 17))
    assert len(feb17) == 24
    assert int((feb17["price_per_mwh"] >= 8900).sum()) == 18
    assert feb17["price_per_mwh"].max() == 8995.11
    assert (feb17["price_per_mwh"] <= 9000).all()


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        (datetime(2021, 3, 14), 23),
        (datetime(2021, 11, 7), 25),
        (datetime(2022, 3, 13), 23),
        (datetime(2022, 11, 6), 25),
        (datetime(2021, 7, 1), 24),
    ],
)
def test_ercot_dst_days(data_sets: dict[str, Path], day: datetime, hours: int) -> None:
    frame = ercot_local_day("LZ_NORTH", day)
    assert len(frame) == hours
    assert (frame["time"].diff().dropna() == HOUR).all()


def test_ercot_repeated_hour_is_standard_time(data_sets: dict[str, Path]) -> None:
    frame = ercot_local_day("HB_HOUSTON", datetime(2021, 11, 7))
    by_time = frame.set_index("time")["price_per_mwh"]
    # hour ending 02:00 twice: 01:00-02:00 CDT (N) = 06:00Z, then 01:00-02:00 CST (Y) = 07:00Z
    assert by_time[pd.Timestamp("2021-11-07T06:00Z")] != by_time[pd.Timestamp("2021-11-07T07:00Z")]
    assert by_time[pd.Timestamp("2021-11-07T07:00Z")] == 28.14  # the Y row in the workbook


def test_ercot_whole_range_is_contiguous(data_sets: dict[str, Path]) -> None:
    frame = load_ercot_dam_spp(
        "HB_HOUSTON", datetime(2021, 1, 1, tzinfo=CHICAGO), datetime(2023, 1, 1, tzinfo=CHICAGO)
    )
    assert len(frame) == 2 * 8760
    assert (frame["time"].diff().dropna() == HOUR).all()
    assert frame.attrs["gaps"] == []
    points = ercot_settlement_points()
    assert len(points) == 15 and "HB_HOUSTON" in points and "LZ_WEST" in points


def test_ercot_errors(data_sets: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"unknown ERCOT settlement point 'HB_MARS'.*HB_HOUSTON"):
        load_ercot_dam_spp("HB_MARS", utc(2021, 2, 15), utc(2021, 2, 16))
    with pytest.raises(ValueError, match=r"covers \[2021-01-01T06:00:00\+00:00, 2023-01-01T06:00"):
        load_ercot_dam_spp("HB_HOUSTON", utc(2023, 2, 1), utc(2023, 2, 2))


def test_ercot_parsed_cache_makes_reloads_fast(data_sets: dict[str, Path]) -> None:
    from twin.inputs import prices

    load_ercot_dam_spp("HB_NORTH", utc(2022, 1, 1, 6), utc(2022, 1, 2, 6))  # parses or reuses
    parsed = sorted((data_sets["ercot_dam_spp"] / "_parsed").glob("*.parquet"))
    assert [p.name.split(".xlsx.")[0][-15:] for p in parsed] == [
        "DAMLZHBSPP_2021",
        "DAMLZHBSPP_2022",
    ]
    prices._memo.clear()  # what a new process sees
    began = time.perf_counter()
    again = load_ercot_dam_spp("HB_NORTH", utc(2022, 1, 1, 6), utc(2022, 1, 2, 6))
    assert time.perf_counter() - began < 1.0
    assert len(again) == 24


# --------------------------------------------------------------------------- Netherlands


@pytest.fixture(scope="module")
def nl_all(data_sets: dict[str, Path]) -> pd.DataFrame:
    return load_nl_day_ahead(utc(2015, 1, 1), utc(2025, 1, 8))


def test_nl_known_values(nl_all: pd.DataFrame) -> None:
    assert str(nl_all["time"].dtype) == "datetime64[ns, UTC]"
    assert nl_all["time"].iloc[0] == pd.Timestamp("2015-01-01T00:00Z")
    assert nl_all["price_per_mwh"].iloc[0] == 34.94
    assert nl_all.attrs["currency"] == "EUR" and nl_all.attrs["interval"] == timedelta(hours=1)
    assert nl_all["time"].is_unique and nl_all["time"].is_monotonic_increasing
    assert nl_all["time"].iloc[-1] == pd.Timestamp("2025-01-07T23:00Z")
    negative = nl_all["price_per_mwh"] < 0
    assert int(negative.sum()) == 1029
    assert nl_all["price_per_mwh"].min() == -500.0
    # day-first rows (2023 on) read as day-first: 2023-01-01 00:00 UTC is -1.46 EUR/MWh
    assert nl_all.set_index("time")["price_per_mwh"][pd.Timestamp("2023-01-01T00:00Z")] == -1.46


def test_nl_gaps_are_reported_not_filled(nl_all: pd.DataFrame) -> None:
    assert nl_all.attrs["gaps"] == [
        (pd.Timestamp("2023-12-30T23:00Z"), pd.Timestamp("2023-12-31T00:00Z")),
        (pd.Timestamp("2024-12-30T23:00Z"), pd.Timestamp("2024-12-31T00:00Z")),
    ]
    with pytest.raises(ValueError, match="inside a gap"):
        price_at(nl_all, [utc(2023, 12, 30, 23, 30)])
    assert (
        len(nl_all)
        == (pd.Timestamp("2025-01-08T00:00Z") - pd.Timestamp("2015-01-01T00:00Z")) / HOUR - 2
    )


def test_nl_dst_day_in_utc(data_sets: dict[str, Path]) -> None:
    amsterdam = ZoneInfo("Europe/Amsterdam")
    spring = load_nl_day_ahead(
        datetime(2023, 3, 26, tzinfo=amsterdam), datetime(2023, 3, 27, tzinfo=amsterdam)
    )
    autumn = load_nl_day_ahead(
        datetime(2023, 10, 29, tzinfo=amsterdam), datetime(2023, 10, 30, tzinfo=amsterdam)
    )
    assert (len(spring), len(autumn)) == (23, 25)


def test_price_in_force_on_a_grid(data_sets: dict[str, Path]) -> None:
    frame = load_nl_day_ahead(utc(2015, 1, 1), utc(2015, 1, 2))
    assert len(frame) == 24
    grid = pd.date_range("2015-01-01T00:00Z", periods=8, freq="15min")
    series = resample_prices(frame, grid)
    assert series.tolist() == [34.94] * 4 + [32.19] * 4
    assert series.attrs["currency"] == "EUR"
    assert price_at(frame, utc(2015, 1, 1, 23, 59)).tolist() == [frame["price_per_mwh"].iloc[-1]]
    with pytest.raises(
        ValueError, match=r"outside the data.*\[2015-01-01T00:00:00\+00:00, 2015-01-02T00:00"
    ):
        price_at(frame, [utc(2015, 1, 2)])
    with pytest.raises(ValueError, match="timezone-aware"):
        price_at(frame, [datetime(2015, 1, 1, 1)])
    with pytest.raises(ValueError, match=r"covers \[2015-01-01T00:00:00\+00:00"):
        load_nl_day_ahead(utc(2014, 12, 31), utc(2015, 1, 2))


# --------------------------------------------------------------------------- EV specs


def test_ev_specs(data_sets: dict[str, Path]) -> None:
    specs = {spec.model: spec for spec in load_ev_specs()}
    assert len(specs) == 13
    model3 = specs["Tesla Model 3"]
    assert (model3.registrations, model3.battery_capacity_kwh) == (45545, 57.5)
    assert (model3.max_ac_charge_power_kw, model3.max_dc_charge_power_kw) == (11.0, 170.0)
    assert model3.ac_phases == 3 and round(model3.max_ac_charge_current_a, 1) == 15.9
    assert specs["Peugeot 208"].ac_phases == 1  # 7.4 kW = 32 A on one phase
    assert specs["Nissan Leaf"].ac_phases == 1 and specs["Nissan Leaf"].dc_v2g
    assert (
        specs["Renault Zoe"].ac_phases == 3
        and round(specs["Renault Zoe"].max_ac_charge_current_a) == 32
    )
    assert {m for m, s in specs.items() if s.dc_v2g} == {"Nissan Leaf", "Volkswagen ID.4"}
    assert not any(s.ac_v2g for s in specs.values())
    v2g = load_ev_specs("v2g_enabled2024")
    assert len(v2g) == 8 and all(s.ac_v2g and s.dc_v2g for s in v2g)
    assert (on_board_charger_phases(7.4), on_board_charger_phases(7.5)) == (1, 3)


def test_ev_draws_are_deterministic_and_weighted(data_sets: dict[str, Path]) -> None:
    first = draw_ev_models(np.random.default_rng(42), 50)
    again = draw_ev_models(np.random.default_rng(42), 50)
    other = draw_ev_models(np.random.default_rng(43), 50)
    assert [s.model for s in first] == [s.model for s in again]
    assert [s.model for s in first] != [s.model for s in other]
    specs = load_ev_specs()
    total = sum(s.registrations for s in specs)
    n = 20_000
    counts = Counter(s.model for s in draw_ev_models(np.random.default_rng(1), n, specs))
    for spec in specs:
        expected = n * spec.registrations / total
        assert abs(counts[spec.model] - expected) < 4 * np.sqrt(expected), spec.model
    assert counts.most_common(1)[0][0] == "Tesla Model 3"
    assert draw_ev_models(np.random.default_rng(0), 0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        draw_ev_models(np.random.default_rng(0), -1)


def test_sessions_replayed_from_another_day(data_sets: dict[str, Path]) -> None:
    """A run on 15 Feb 2021 (no ACN-Data then) replays Monday 9 Sep 2019's sessions."""
    from twin.run_inputs import resolve_inputs
    from twin.scenario import parse_scenario

    def scenario(start: str, replay_from: str | None) -> dict:
        return {
            "name": "replay", "site": {"grid_limit_kw": 100},
            "stations": [{"count": 40}],
            "sessions": {"dataset": "acn_caltech", "replay_from": replay_from},
            "vehicles": {"fleet": [{"name": "van", "battery_capacity_kwh": 60,
                                    "ac_max_power_kw": 11}]},
            "run": {"start": start, "duration_h": 24},
        }

    source = resolve_inputs(parse_scenario(scenario("2019-09-09T07:00:00Z", None)))
    replay = resolve_inputs(parse_scenario(
        scenario("2021-02-15T06:00:00Z", "2019-09-09T07:00:00Z")))
    a, b = source.plan.sessions, replay.plan.sessions
    assert len(a) == len(b) > 20
    shift = datetime(2021, 2, 15, 6, tzinfo=UTC) - datetime(2019, 9, 9, 7, tzinfo=UTC)
    assert [s.arrival + shift for s in a] == [s.arrival for s in b]
    assert [s.needed_kwh for s in a] == [s.needed_kwh for s in b]
