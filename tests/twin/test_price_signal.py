"""Prices on the run's grid: forward fill, local-clock alignment, range errors."""

import pandas as pd
import pytest

from twin.price_signal import align_times, price_in_force

HOURLY = pd.DataFrame({
    "time": pd.date_range("2019-09-09T00:00Z", periods=72, freq="h"),
    "price_per_mwh": [float(i) for i in range(72)],
})


def test_forward_fill_inside_the_hour() -> None:
    t = pd.DatetimeIndex(["2019-09-09T05:00Z", "2019-09-09T05:59Z", "2019-09-09T06:00Z"])
    assert list(price_in_force(HOURLY, t)) == [5.0, 5.0, 6.0]


def test_outside_the_data_names_the_range() -> None:
    with pytest.raises(ValueError, match="data cover"):
        price_in_force(HOURLY, pd.DatetimeIndex(["2019-09-13T00:00Z"]))


def test_local_clock_alignment_pasadena_to_amsterdam() -> None:
    # 08:00 PDT (15:00Z) looks up 08:00 CEST (06:00Z) in September.
    t = pd.DatetimeIndex(["2019-09-10T15:00Z"])
    looked = align_times(t, "local_clock", "America/Los_Angeles", "Europe/Amsterdam")
    assert looked[0] == pd.Timestamp("2019-09-10T06:00Z")
    assert align_times(t, "utc", "America/Los_Angeles", "Europe/Amsterdam")[0] == t[0]
