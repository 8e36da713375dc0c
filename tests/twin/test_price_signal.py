"""Price calendar alignment between a site's clock and a market's."""

import pandas as pd

from twin.price_signal import align_times


def test_local_clock_alignment_pasadena_to_amsterdam() -> None:
    # 08:00 PDT (15:00Z) looks up 08:00 CEST (06:00Z) in September.
    t = pd.DatetimeIndex(["2019-09-10T15:00Z"])
    looked = align_times(t, "local_clock", "America/Los_Angeles", "Europe/Amsterdam")
    assert looked[0] == pd.Timestamp("2019-09-10T06:00Z")
    assert align_times(t, "utc", "America/Los_Angeles", "Europe/Amsterdam")[0] == t[0]
