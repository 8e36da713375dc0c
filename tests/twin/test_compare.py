"""Tests of twin.compare: alignment, residuals, metrics, exceedances, KPI deltas, LTTB."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.compare import (
    Alignment,
    KpiDelta,
    align,
    downsample_frame,
    exceedances,
    kpi_deltas,
    lttb,
    lttb_indices,
    metrics,
    residuals,
)

T0 = datetime(2019, 9, 10, 7, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
DASH = "\N{EN DASH}"
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def trace(
    times: list[datetime],
    values: list[float],
    *,
    entity: str = "site",
    quantity: str = "import_kw",
    unit: str = "kW",
) -> pd.DataFrame:
    """A long-format trace of one series, times stored as timestamp[us, UTC] like the recorder."""
    return pd.DataFrame(
        {
            "time": pd.DatetimeIndex(times).as_unit("us"),
            "entity": entity,
            "quantity": quantity,
            "value": np.asarray(values, dtype=np.float64),
            "unit": unit,
        }
    )


def every(step: timedelta, first: datetime, n: int) -> list[datetime]:
    return [first + i * step for i in range(n)]


def run_60s() -> pd.DataFrame:
    """Run A: 60 s samples 07:01..07:15 with values 1..15 (bin means 3, 8, 13)."""
    return trace(every(MIN, T0 + MIN, 15), list(range(1, 16)))


def run_300s(first_min: int = 5, values: tuple[float, ...] = (3.5, 8.0, 13.0)) -> pd.DataFrame:
    return trace(every(5 * MIN, T0 + first_min * MIN, len(values)), list(values))


def col(frame: pd.DataFrame, entity: str = "site", quantity: str = "import_kw") -> list[float]:
    return frame[(entity, quantity)].tolist()


# --------------------------------------------------------------------------- align: tables


def test_60s_against_300s_bins_the_finer_run_by_interval_mean() -> None:
    al = align(run_60s(), run_300s())
    assert isinstance(al, Alignment)
    assert al.step == timedelta(seconds=300)
    assert al.a_step == timedelta(seconds=60) and al.b_step == timedelta(seconds=300)
    assert al.start == T0 and al.end == T0 + 15 * MIN
    assert list(al.a.index) == [pd.Timestamp(T0 + m * MIN) for m in (5, 10, 15)]
    assert col(al.a) == [3.0, 8.0, 13.0]  # means of 1..5, 6..10, 11..15
    assert col(al.b) == [3.5, 8.0, 13.0]
    assert al.excluded == 0 and al.only_a == [] and al.only_b == []
    s = al.statement
    assert "300 s grid" in s
    assert f"over 2019-09-10T07:00Z{DASH}07:15Z" in s
    assert f"A 2019-09-10T07:00Z{DASH}07:15Z, B 2019-09-10T07:00Z{DASH}07:15Z" in s
    assert "A resampled from 60 s samples by mean" in s and "B as recorded" in s

    res = residuals(al)
    assert list(res.columns) == ["time", "entity", "quantity", "a", "b", "residual", "unit"]
    assert res["residual"].tolist() == [0.5, 0.0, 0.0]
    assert res["unit"].tolist() == ["kW"] * 3
    assert str(res["time"].dt.tz) == "UTC"


def test_shifted_starts_align_over_the_overlap_only() -> None:
    # B's samples 07:10, 07:15, 07:20 cover (07:05, 07:20]; A covers (07:00, 07:15].
    al = align(run_60s(), run_300s(first_min=10, values=(8.5, 12.0, 99.0)))
    assert al.start == T0 + 5 * MIN and al.end == T0 + 15 * MIN
    assert al.a_range == (T0, T0 + 15 * MIN)
    assert al.b_range == (T0 + 5 * MIN, T0 + 20 * MIN)
    assert col(al.a) == [8.0, 13.0]
    assert residuals(al)["residual"].tolist() == [0.5, -1.0]
    assert f"over 2019-09-10T07:05Z{DASH}07:15Z" in al.statement
    assert f"B 2019-09-10T07:05Z{DASH}07:20Z" in al.statement


def test_explicit_step_and_origin() -> None:
    al = align(run_60s(), run_60s(), step=timedelta(minutes=5), origin=T0)
    assert col(al.a) == [3.0, 8.0, 13.0] and col(al.b) == [3.0, 8.0, 13.0]
    assert "A resampled from 60 s samples by mean, B resampled" in al.statement
    al15 = align(run_60s(), run_60s(), step=timedelta(minutes=15), origin=T0)
    assert col(al15.a) == [8.0]


def test_a_gap_leaves_bins_out_of_the_metrics() -> None:
    a = run_60s()
    # A has nothing in (07:05, 07:10] and misses 07:12 → bins 07:10 NaN, 07:15 mean(11,13,14,15).
    minute = (a["time"] - pd.Timestamp(T0)).dt.total_seconds() // 60
    a = a[~minute.isin([6, 7, 8, 9, 10, 12])]
    al = align(a, run_300s())
    a_vals = col(al.a)
    assert a_vals[0] == 3.0 and math.isnan(a_vals[1]) and a_vals[2] == 13.25
    assert al.excluded == 1
    assert "1 of 3 series-bins without data on one or both sides excluded" in al.statement
    m = metrics(residuals(al))
    row = m[m.entity == "site"].iloc[0]
    assert row["n"] == 2 and row["n_excluded"] == 1
    assert row["max_abs"] == pytest.approx(0.5)
    assert row["bias"] == pytest.approx((0.5 - 0.25) / 2)


def test_nan_values_count_as_no_sample() -> None:
    b = run_300s(values=(3.5, float("nan"), 13.0))
    al = align(run_60s(), b)
    assert math.isnan(col(al.b)[1]) and al.excluded == 1


def test_irregular_field_samples() -> None:
    # Field samples at irregular times: 07:02:30, 07:04, 07:09, 07:13:20, 07:15.
    times = [T0 + timedelta(seconds=s) for s in (150, 240, 540, 800, 900)]
    field = trace(times, [1.0, 3.0, 5.0, 7.0, 9.0])
    al = align(run_60s(), field, step=timedelta(minutes=5), origin=T0)
    assert col(al.b) == [2.0, 5.0, 8.0]
    assert "B resampled" in al.statement


def test_series_only_on_one_side_are_listed_not_compared() -> None:
    a = pd.concat(
        [
            run_60s(),
            trace(every(MIN, T0 + MIN, 15), [0.5] * 15, quantity="soc", unit="1", entity="EV1"),
        ]
    )
    b = pd.concat(
        [
            run_300s(),
            trace(
                every(5 * MIN, T0 + 5 * MIN, 3), [1, 2, 3], entity="CA001/1", quantity="power_kw"
            ),
        ]
    )
    al = align(a, b)
    assert al.series == [("site", "import_kw")]
    assert al.only_a == [("EV1", "soc")] and al.only_b == [("CA001/1", "power_kw")]
    assert "only in A: EV1 soc" in al.statement
    assert "only in B: CA001/1 power_kw" in al.statement


def test_unit_mismatch_is_an_error_naming_the_series() -> None:
    b = run_300s()
    b["unit"] = "W"
    with pytest.raises(ValueError, match=r"unit mismatch for import_kw of site: A has 'kW', B"):
        align(run_60s(), b)


def test_two_units_within_one_run_is_an_error() -> None:
    a = run_60s()
    a.loc[3, "unit"] = "W"
    with pytest.raises(ValueError, match="more than one unit"):
        align(a, run_300s())


def test_no_overlap_is_an_error_with_both_ranges() -> None:
    late = trace(every(5 * MIN, T0 + timedelta(hours=2), 3), [1, 2, 3])
    with pytest.raises(ValueError, match="do not overlap") as err:
        align(run_60s(), late)
    assert f"A 2019-09-10T07:00Z{DASH}07:15Z" in str(err.value)
    assert f"B 2019-09-10T08:55Z{DASH}09:10Z" in str(err.value)


def test_overlap_shorter_than_one_step_is_an_error() -> None:
    # B covers (07:10, 07:20], A (07:00, 07:12]: overlap 2 minutes, grid step 300 s.
    a = trace(every(MIN, T0 + MIN, 12), list(range(12)))
    with pytest.raises(ValueError, match="less than one 300 s grid step"):
        align(a, run_300s(first_min=15))


def test_times_must_be_tz_aware_and_other_zones_are_converted() -> None:
    naive = run_60s()
    naive["time"] = naive["time"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="tz-aware"):
        align(naive, run_300s())
    berlin = run_300s()
    berlin["time"] = berlin["time"].dt.tz_convert("Europe/Berlin")
    assert col(align(run_60s(), berlin).b) == [3.5, 8.0, 13.0]


def test_bin_methods() -> None:
    a, b = run_60s(), run_300s()
    assert col(align(a, b, method="last").a) == [5.0, 10.0, 15.0]
    assert col(align(a, b, method="max").a) == [5.0, 10.0, 15.0]
    assert col(align(a, b, method="min").a) == [1.0, 6.0, 11.0]
    with pytest.raises(ValueError, match="unknown bin method"):
        align(a, b, method="median")  # type: ignore[arg-type]


def test_no_common_series_gives_an_empty_alignment() -> None:
    b = run_300s()
    b["entity"] = "other"
    al = align(run_60s(), b)
    assert al.series == [] and "0 series compared" in al.statement
    assert len(residuals(al)) == 0
    assert len(metrics(residuals(al))) == 0


# --------------------------------------------------------------------------- metrics: tables


def residual_frame(rows: list[tuple[str, str, int, float]], unit: str = "kW") -> pd.DataFrame:
    """Residual frame from (entity, quantity, minute, residual) rows, a = 0."""
    df = pd.DataFrame(rows, columns=["entity", "quantity", "minute", "residual"])
    df["time"] = [pd.Timestamp(T0 + m * MIN) for m in df["minute"]]
    df["a"] = 0.0
    df["b"] = df["residual"]
    df["unit"] = unit
    df = df[["time", "entity", "quantity", "a", "b", "residual", "unit"]]
    df.attrs["step_s"] = 60.0
    return df


def test_metrics_hand_computed() -> None:
    res = residual_frame(
        [
            ("e1", "power_kw", 1, 0.5),
            ("e1", "power_kw", 2, -1.0),
            ("e1", "power_kw", 3, 2.0),
            ("e1", "power_kw", 4, float("nan")),
            ("e2", "power_kw", 1, -3.0),
            ("e2", "power_kw", 2, 1.0),
        ]
    )
    m = metrics(res).set_index("entity")
    e1 = m.loc["e1"]
    assert e1["n"] == 3 and e1["n_excluded"] == 1
    assert e1["mae"] == pytest.approx(3.5 / 3)
    assert e1["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 4) / 3))
    assert e1["max_abs"] == 2.0 and e1["max_abs_time"] == pd.Timestamp(T0 + 3 * MIN)
    assert e1["bias"] == pytest.approx(0.5)
    assert e1["unit"] == "kW"
    agg = m.loc["*"]
    assert agg["quantity"] == "power_kw" and agg["n"] == 5
    assert agg["mae"] == pytest.approx(7.5 / 5)
    assert agg["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 4 + 9 + 1) / 5))
    assert agg["max_abs"] == 3.0 and agg["max_abs_entity"] == "e2"
    assert agg["max_abs_time"] == pd.Timestamp(T0 + MIN)
    assert agg["bias"] == pytest.approx(-0.5 / 5)
    assert list(metrics(res)["entity"]) == ["e1", "e2", "*"]


def test_metrics_of_a_series_without_any_bin() -> None:
    res = residual_frame([("e1", "soc", 1, float("nan")), ("e1", "soc", 2, float("nan"))])
    row = metrics(res).iloc[0]
    assert row["n"] == 0 and row["n_excluded"] == 2
    assert math.isnan(row["mae"]) and pd.isna(row["max_abs_time"])


# --------------------------------------------------------------------------- exceedances: tables


def test_exceedances_hand_computed() -> None:
    r = [0.0, 2.0, 3.0, 0.0, float("nan"), 2.0, 2.0, 0.5, -1.5]
    res = residual_frame([("e1", "power_kw", i + 1, v) for i, v in enumerate(r)])
    ex = exceedances(res, 1.0)
    assert ex[["start", "end", "n_bins", "duration_s", "peak_abs"]].values.tolist() == [
        [pd.Timestamp(T0 + MIN), pd.Timestamp(T0 + 3 * MIN), 2, 120.0, 3.0],
        [pd.Timestamp(T0 + 5 * MIN), pd.Timestamp(T0 + 7 * MIN), 2, 120.0, 2.0],
        [pd.Timestamp(T0 + 8 * MIN), pd.Timestamp(T0 + 9 * MIN), 1, 60.0, 1.5],
    ]
    assert ex["peak_time"].tolist() == [pd.Timestamp(T0 + m * MIN) for m in (3, 6, 9)]
    assert ex["unit"].tolist() == ["kW"] * 3 and ex["tolerance"].tolist() == [1.0] * 3
    long = exceedances(res, 1.0, min_duration=timedelta(minutes=2))
    assert long["n_bins"].tolist() == [2, 2]
    assert exceedances(res, 3.0).empty  # strictly above


def test_exceedances_tolerance_per_quantity() -> None:
    res = pd.concat(
        [
            residual_frame([("e1", "power_kw", 1, 2.0), ("e1", "power_kw", 2, 5.0)]),
            residual_frame([("e1", "soc", 1, 0.2), ("e1", "soc", 2, 0.01)], unit="1"),
        ],
        ignore_index=True,
    )
    ex = exceedances(res, {"power_kw": 3.0, "soc": 0.05})
    assert ex[["quantity", "n_bins", "peak_abs"]].values.tolist() == [
        ["power_kw", 1, 5.0],
        ["soc", 1, 0.2],
    ]
    assert len(exceedances(res, {"*": 0.1})) == 2
    with pytest.raises(ValueError, match="no tolerance for quantity"):
        exceedances(res, {"power_kw": 3.0})
    with pytest.raises(ValueError, match=">= 0"):
        exceedances(res, -1.0)


def test_exceedances_gap_in_rows_breaks_a_period() -> None:
    # Rows at minutes 1, 2, 4 (minute 3 missing from the frame): two periods.
    res = residual_frame([("e", "power_kw", m, 9.0) for m in (1, 2, 4)])
    res.attrs.clear()
    assert exceedances(res, 1.0)["n_bins"].tolist() == [2, 1]


# --------------------------------------------------------------------------- align: properties


@st.composite
def runs(draw: st.DrawFn, *, step_s: int | None = None) -> pd.DataFrame:
    """A run of 1-3 series on a 60 s or 300 s grid, with some NaN values."""
    step = step_s or draw(st.sampled_from([60, 300]))
    start = draw(st.integers(0, 10)) * 60
    n = draw(st.integers(2, 25))
    series = draw(
        st.lists(
            st.sampled_from([("site", "import_kw"), ("CA001/1", "power_kw"), ("EV1", "soc")]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    frames = []
    for entity, quantity in series:
        values = draw(
            st.lists(st.one_of(st.floats(-1e3, 1e3), st.just(float("nan"))), min_size=n, max_size=n)
        )
        times = every(timedelta(seconds=step), T0 + timedelta(seconds=start + step), n)
        unit = {"soc": "1"}.get(quantity, "kW")
        frames.append(trace(times, values, entity=entity, quantity=quantity, unit=unit))
    return pd.concat(frames, ignore_index=True)


@PROPS
@given(runs())
def test_a_run_against_itself_has_zero_residuals(run: pd.DataFrame) -> None:
    res = residuals(align(run, run))
    r = res["residual"].dropna()
    assert (r == 0).all()
    m = metrics(res)
    m = m[m["n"] > 0]
    assert (m["mae"] == 0).all() and (m["rmse"] == 0).all() and (m["max_abs"] == 0).all()


@PROPS
@given(runs(), runs())
def test_swapping_the_runs_negates_the_residuals(a: pd.DataFrame, b: pd.DataFrame) -> None:
    try:
        ab = align(a, b)
    except ValueError as exc:
        assert "overlap" in str(exc)
        with pytest.raises(ValueError, match="overlap"):
            align(b, a)
        return
    ba = align(b, a)
    assert ab.step == ba.step and ab.start == ba.start and ab.end == ba.end
    rab, rba = residuals(ab), residuals(ba)
    assert rab["time"].tolist() == rba["time"].tolist()
    np.testing.assert_array_equal(rab["a"], rba["b"])
    np.testing.assert_array_equal(rab["residual"], -rba["residual"])


@PROPS
@given(runs(), st.floats(-100, 100))
def test_constant_offset(run: pd.DataFrame, c: float) -> None:
    shifted = run.assign(value=run["value"] + c)
    m = metrics(residuals(align(run, shifted)))
    m = m[m["n"] > 0]
    for col_ in ("mae", "rmse", "max_abs"):
        assert m[col_].tolist() == pytest.approx([abs(c)] * len(m), abs=1e-9)
    assert m["bias"].tolist() == pytest.approx([c] * len(m), abs=1e-9)


residual_values = st.lists(
    st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=1, max_size=40
)


@PROPS
@given(residual_values, residual_values)
def test_mae_le_rmse_le_max_abs(r1: list[float], r2: list[float]) -> None:
    rows = [("e1", "q", i, v) for i, v in enumerate(r1)]
    rows += [("e2", "q", i, v) for i, v in enumerate(r2)]
    m = metrics(residual_frame(rows))
    m = m[m["n"] > 0]
    assert (m["mae"] <= m["rmse"]).all()
    assert (m["rmse"] <= m["max_abs"]).all()
    assert (m["bias"].abs() <= m["mae"] + 1e-9 * m["max_abs"]).all()


@PROPS
@given(residual_values, residual_values, st.floats(0, 1e6))
def test_exceedance_periods_cover_exactly_the_bins_above_tolerance(
    r1: list[float], r2: list[float], tol: float
) -> None:
    rows = [("e1", "q", i, v) for i, v in enumerate(r1)]
    rows += [("e2", "q", i, v) for i, v in enumerate(r2)]
    res = residual_frame(rows)
    ex = exceedances(res, tol)
    step = pd.Timedelta(minutes=1)
    covered = set()
    for row in ex.itertuples():
        bins = pd.date_range(row.start + step, row.end, freq=step)
        assert len(bins) == row.n_bins and row.duration_s == 60 * row.n_bins
        for t in bins:
            assert (row.entity, t) not in covered  # periods are disjoint
            covered.add((row.entity, t))
        # maximal: the bins just before and after are not above the tolerance
        for t in (row.start, row.end + step):
            assert (row.entity, t) not in set(
                zip(
                    res.entity[res.residual.abs() > tol],
                    res.time[res.residual.abs() > tol],
                    strict=True,
                )
            )
    above = res[res["residual"].abs() > tol]
    assert covered == set(zip(above["entity"], above["time"], strict=True))


# --------------------------------------------------------------------------- KPI deltas


def kpi_doc(
    kpis: dict[str, tuple[object, str]], wall: dict[str, tuple[object, str]] | None = None
) -> dict[str, object]:
    return {
        "scenario": "s",
        "seed": 1,
        "kpis": {k: {"value": v, "unit": u} for k, (v, u) in kpis.items()},
        "wall": {k: {"value": v, "unit": u} for k, (v, u) in (wall or {}).items()},
    }


def test_kpi_deltas_table() -> None:
    a = kpi_doc(
        {
            "energy_cost": ("183.32", "EUR"),
            "peak_import_kw": (100.0, "kW"),
            "limit_violations": (0, "1"),
            "sessions_completed": (10, "1"),
        },
        {"wall_time_s": (2.0, "s")},
    )
    b = kpi_doc(
        {
            "energy_cost": ("183.35", "EUR"),
            "peak_import_kw": (90.0, "kW"),
            "limit_violations": (3, "1"),
            "energy_met_share": (0.97, "1"),
        },
        {"wall_time_s": (3.0, "s")},
    )
    got = {(d.section, d.name): d for d in kpi_deltas(a, b)}
    cost = got[("kpis", "energy_cost")]
    assert cost == KpiDelta(
        "kpis",
        "energy_cost",
        Decimal("183.32"),
        Decimal("183.35"),
        Decimal("0.03"),
        float(Decimal("0.03") / Decimal("183.32")),
        "EUR",
    )
    assert isinstance(cost.delta, Decimal)
    peak = got[("kpis", "peak_import_kw")]
    assert peak.delta == -10.0 and peak.relative == pytest.approx(-0.1) and peak.unit == "kW"
    viol = got[("kpis", "limit_violations")]
    assert viol.delta == 3 and isinstance(viol.delta, int) and viol.relative is None
    only_a = got[("kpis", "sessions_completed")]
    assert (only_a.a, only_a.b, only_a.delta, only_a.relative) == (10, None, None, None)
    only_b = got[("kpis", "energy_met_share")]
    assert (only_b.a, only_b.b, only_b.delta, only_b.unit) == (None, 0.97, None, "1")
    assert got[("wall", "wall_time_s")].relative == pytest.approx(0.5)
    assert [d.section for d in kpi_deltas(a, b)][-1] == "wall"


def test_kpi_deltas_errors() -> None:
    with pytest.raises(ValueError, match=r"unit mismatch for KPI kpis\.energy_cost"):
        kpi_deltas(
            kpi_doc({"energy_cost": ("1.00", "EUR")}), kpi_doc({"energy_cost": ("1.00", "USD")})
        )
    with pytest.raises(ValueError, match="not a decimal number"):
        kpi_deltas(kpi_doc({"x": ("abc", "EUR")}), kpi_doc({"x": ("1", "EUR")}))


money = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False)


@PROPS
@given(money, money)
def test_kpi_deltas_money_is_exact(a: Decimal, b: Decimal) -> None:
    (d,) = kpi_deltas(
        kpi_doc({"energy_cost": (str(a), "EUR")}), kpi_doc({"energy_cost": (str(b), "EUR")})
    )
    assert isinstance(d.delta, Decimal) and d.delta == b - a
    assert d.a + d.delta == d.b  # type: ignore[operator]
    assert (d.relative is None) == (a == 0)


# --------------------------------------------------------------------------- LTTB


def lttb_reference(x: np.ndarray, y: np.ndarray, n_out: int) -> list[int]:
    """Steinarsson's LTTB, point by point, as in his reference implementation."""
    n = len(x)
    if n <= n_out:
        return list(range(n))
    nb = n_out - 2
    out, a = [0], 0
    for i in range(nb):
        lo, hi = 1 + (i * (n - 2)) // nb, 1 + ((i + 1) * (n - 2)) // nb
        nlo, nhi = hi, min(1 + ((i + 2) * (n - 2)) // nb, n)
        if i == nb - 1:
            nlo, nhi = n - 1, n
        cx, cy = float(np.mean(x[nlo:nhi])), float(np.mean(y[nlo:nhi]))
        best, best_area = lo, -1.0
        for j in range(lo, hi):
            area = abs((x[a] - cx) * (y[j] - y[a]) - (x[a] - x[j]) * (cy - y[a])) * 0.5
            if area > best_area:
                best, best_area = j, area
        out.append(best)
        a = best
    out.append(n - 1)
    return out


@PROPS
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=300),
    st.integers(2, 60),
    st.integers(0, 2**32 - 1),
)
def test_lttb_properties(ys: list[float], n_out: int, seed: int) -> None:
    y = np.asarray(ys)
    x = np.cumsum(np.random.default_rng(seed).uniform(0.1, 10.0, len(y)))
    ox, oy = lttb(x, y, n_out)
    assert len(ox) == len(oy) == min(n_out, len(y))
    assert ox[0] == x[0] and ox[-1] == x[-1] and oy[0] == y[0] and oy[-1] == y[-1]
    assert np.all(np.diff(ox) > 0)
    idx = np.searchsorted(x, ox)
    assert np.array_equal(x[idx], ox) and np.array_equal(y[idx], oy)
    assert lttb_indices(x, y, n_out).tolist() == lttb_reference(x, y, n_out)


@PROPS
@given(st.integers(3, 2000), st.integers(2, 50), st.floats(-5, 5), st.floats(-100, 100))
def test_lttb_on_a_straight_line_stays_on_it(n: int, n_out: int, slope: float, c: float) -> None:
    x = np.arange(n, dtype=np.float64) * 0.5
    y = slope * x + c
    ox, oy = lttb(x, y, n_out)
    assert len(ox) == min(n, n_out)
    np.testing.assert_allclose(oy, slope * ox + c, rtol=0, atol=1e-9)


def test_lttb_short_input_is_returned_unchanged_and_nans_are_dropped() -> None:
    x, y = np.arange(5.0), np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ox, oy = lttb(x, y, 10)
    assert ox is x and oy is y
    y_nan = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    ox, oy = lttb(x, y_nan, 10)
    assert ox.tolist() == [0.0, 2.0, 3.0, 4.0] and oy.tolist() == [1.0, 3.0, 4.0, 5.0]
    ox, oy = lttb(x, y_nan, 3)
    assert ox[0] == 0.0 and ox[-1] == 4.0 and len(ox) == 3
    with pytest.raises(ValueError, match="strictly increasing"):
        lttb(np.array([0.0, 2.0, 1.0]), np.zeros(3), 2)
    with pytest.raises(ValueError, match="n_out"):
        lttb(x, y, 1)


def test_lttb_keeps_the_spike() -> None:
    x = np.arange(10_000, dtype=np.float64)
    y = np.zeros_like(x)
    y[4321] = 50.0
    ox, oy = lttb(x, y, 100)
    assert 4321.0 in ox.tolist() and oy.max() == 50.0


def test_lttb_million_points() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(1_000_000, dtype=np.float64)
    y = rng.normal(size=x.size).cumsum()
    ox, oy = lttb(x, y, 2000)
    assert len(ox) == 2000 and ox[0] == 0 and ox[-1] == x[-1]
    idx = ox.astype(np.int64)
    assert np.all(np.diff(idx) > 0) and np.array_equal(y[idx], oy)


def test_downsample_frame_keeps_the_input_times() -> None:
    times = pd.date_range(T0, periods=1000, freq="60s", tz="UTC").as_unit("us")
    values = np.sin(np.arange(1000) / 50.0)
    values[10] = np.nan
    out = downsample_frame(times, values, 100)
    assert list(out.columns) == ["time", "value"] and len(out) == 100
    assert out["time"].iloc[0] == times[0] and out["time"].iloc[-1] == times[-1]
    assert set(out["time"]).issubset(set(times)) and str(out["time"].dt.tz) == "UTC"
    assert not out["value"].isna().any()
    assert out["time"].is_monotonic_increasing
