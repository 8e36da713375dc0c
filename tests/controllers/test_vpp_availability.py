"""Availability forecast from session history, on synthetic data with a known answer."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from controllers.vpp import availability_forecast

TZ = "America/Los_Angeles"
ZONE = ZoneInfo(TZ)
NOW = datetime(2019, 9, 9, 7, tzinfo=UTC)  # Monday 00:00 PDT


def local(day: date, hh: int, mm: int = 0, ss: int = 0) -> pd.Timestamp:
    return pd.Timestamp(datetime.combine(day, time(hh, mm, ss), ZONE)).tz_convert("UTC")


def history(zero_weekdays: int = 2) -> pd.DataFrame:
    """4 weeks before NOW: 5 vehicles 08:07:30-17:00 on weekdays (9 kWh each), 2 vehicles
    10:00-14:00 on weekend days (4 kWh); the first ``zero_weekdays`` weekdays are empty."""
    rows = []
    first = date(2019, 8, 12)
    weekdays_seen = 0
    for d in range(28):
        day = first + timedelta(days=d)
        if day.weekday() < 5:
            weekdays_seen += 1
            if weekdays_seen <= zero_weekdays:
                continue
            rows += [(f"CA-{i}", local(day, 8, 7, 30), local(day, 17), 9.0) for i in range(5)]
        else:
            rows += [(f"CA-{i}", local(day, 10), local(day, 14), 4.0) for i in range(2)]
    # noise that must be ignored: before the window, on NOW's day, bad rows
    rows.append(("CA-9", local(date(2019, 8, 5), 12), local(date(2019, 8, 5), 13), 1.0))
    rows.append(("CA-9", local(date(2019, 9, 9), 12), local(date(2019, 9, 9), 13), 1.0))
    rows.append(("CA-8", local(date(2019, 8, 20), 12), local(date(2019, 8, 20), 11), 1.0))
    frame = pd.DataFrame(rows, columns=["station_id", "arrival", "departure",
                                        "delivered_energy_kwh"])
    return frame


def test_known_answer_weekday_weekend() -> None:
    fc = availability_forecast(history(), NOW, weeks=4, slot_minutes=15, timezone=TZ)
    table = fc.table
    noon_weekday = table.loc[("weekday", 48)]
    assert noon_weekday["days"] == 20
    assert noon_weekday["plugged_mean"] == pytest.approx(18 * 5 / 20)  # 4.5
    # P10 of [0, 0, 5 x 18], linear: position 1.9 -> 0.9 * 5
    assert noon_weekday["plugged_q"] == pytest.approx(4.5)
    per_session = 9.0 * (17 - 12.125) / (17 - 8.125)  # uniform delivery, slot midpoint
    assert noon_weekday["energy_mean_kwh"] == pytest.approx(18 / 20 * 5 * per_session)
    assert table.loc[("weekday", 32), "plugged_mean"] == pytest.approx(0.9 * 2.5)  # half
    assert table.loc[("weekday", 80), "plugged_mean"] == 0.0  # 20:00
    assert table.loc[("weekend", 48), "plugged_mean"] == pytest.approx(2.0)
    assert table.loc[("weekend", 48), "plugged_q"] == pytest.approx(2.0)
    assert table.loc[("weekend", 48), "days"] == 8
    assert table.loc[("weekend", 56), "plugged_mean"] == 0.0  # 14:00: departed


def test_on_grid_maps_local_slots_and_day_types() -> None:
    fc = availability_forecast(history(), NOW, timezone=TZ)
    grid = fc.on_grid(datetime(2019, 9, 10, 19, tzinfo=UTC), 0.25, 4)  # Tue 12:00 PDT
    assert list(grid["plugged_mean"]) == pytest.approx([4.5] * 4)
    weekend = fc.on_grid(datetime(2019, 9, 14, 17, tzinfo=UTC), 1.0, 1)  # Sat 10:00
    assert weekend["plugged_mean"].iloc[0] == pytest.approx(2.0)
    assert grid.index[0] == pd.Timestamp("2019-09-10 19:00", tz="UTC")


def test_dst_change_keeps_wall_clock_slots() -> None:
    now = datetime(2019, 11, 11, 8, tzinfo=UTC)  # Monday 00:00 PST, DST ended 3 Nov
    rows = []
    for d in range(1, 15):
        day = date(2019, 11, 11) - timedelta(days=d)
        rows.append(("CA-1", local(day, 12), local(day, 13), 2.0))
    frame = pd.DataFrame(rows, columns=["station_id", "arrival", "departure",
                                        "delivered_energy_kwh"])
    fc = availability_forecast(frame, now, weeks=2, timezone=TZ, slot_minutes=60)
    for kind in ("weekday", "weekend"):
        assert fc.table.loc[(kind, 12), "plugged_mean"] == pytest.approx(1.0)
        assert fc.table.loc[(kind, 12), "plugged_q"] == pytest.approx(1.0)
        assert fc.table.loc[(kind, 11), "plugged_mean"] == 0.0


def test_errors_and_day_counts() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        availability_forecast(history(), datetime(2019, 9, 9), timezone=TZ)
    with pytest.raises(ValueError, match="divide 1440"):
        availability_forecast(history(), NOW, slot_minutes=7)
    with pytest.raises(ValueError, match="lack columns"):
        availability_forecast(history().drop(columns="departure"), NOW)
    fc = availability_forecast(history(), NOW, weeks=1, timezone=TZ)
    assert fc.table.loc[("weekend", 0), "days"] == 2
    assert fc.table.loc[("weekday", 0), "days"] == 5
    assert np.isfinite(fc.table["plugged_mean"]).all()


ACN = Path.home() / ".cache" / "migrid" / "data" / "acn_caltech"


@pytest.mark.slow
@pytest.mark.skipif(not ACN.exists(), reason="ACN-Data Caltech not fetched "
                    "(migrid data fetch acn_caltech)")
def test_forecast_of_the_flagship_week_from_four_weeks_of_acn_data() -> None:
    from twin.inputs.acn_sessions import load_acn_sessions

    start = datetime(2019, 9, 9, 7, tzinfo=UTC)
    past = load_acn_sessions("caltech", start - timedelta(weeks=4), start)
    week = load_acn_sessions("caltech", start, start + timedelta(days=7))
    fc = availability_forecast(past, start, weeks=4, timezone=TZ)
    grid = fc.on_grid(start, 0.25, 7 * 96)
    times = grid.index
    actual = np.array([((week.arrival <= t) & (week.departure > t)).sum() for t in times])
    # recorded (README): MAE about 1.3 vehicles, actual >= P10 in about 95 % of intervals
    assert np.abs(actual - grid["plugged_mean"].to_numpy()).mean() < 2.0
    assert (actual >= grid["plugged_q"].to_numpy() - 1e-9).mean() > 0.85
