"""Unit tests of the dashboard's data reduction, figure builders and event log (no browser)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards.app import create_dash, route
from dashboards.catalog import RunCatalog
from dashboards.context import Pages
from dashboards.event_log import event_page, event_spans, overlay, parse_duration, parse_filter
from dashboards.figures import heatmap_figure, points, site_figure, soc_figure
from dashboards.page_compare import kpi_delta_rows
from dashboards.page_run import render
from dashboards.series import (
    Power,
    RunView,
    Series,
    bin_mean,
    downsample_line,
    load_view,
    typed,
)
from twin.run_folder import RunFolder

MIN = 60_000.0  # one minute in ms


def decode(spec: dict) -> np.ndarray:
    arr = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
    if "shape" in spec:
        arr = arr.reshape([int(n) for n in spec["shape"].split(",")])
    return arr


def test_typed_arrays_round_trip() -> None:
    z = np.arange(6, dtype=np.float32).reshape(2, 3)
    spec = typed(z, "f4")
    assert spec["shape"] == "2,3"
    np.testing.assert_array_equal(decode(spec), z)


def test_bin_mean_bins_whole_steps_by_the_mean() -> None:
    t = np.repeat(np.arange(10) * MIN, 2)
    rows = np.tile([0, 1], 10)
    values = np.where(rows == 0, np.arange(20) // 2, 100.0)
    hm = bin_mean(t, rows, values.astype(float), ["a", "b"], max_cols=5)
    assert hm.z.shape == (2, 5) and hm.bin_s == 120.0
    np.testing.assert_allclose(hm.z[0], [0.5, 2.5, 4.5, 6.5, 8.5])
    np.testing.assert_allclose(hm.z[1], 100.0)
    np.testing.assert_allclose(hm.x, np.arange(5) * 2 * MIN + MIN / 2)


def test_bin_mean_one_column_per_sample_time_when_few_and_nan_where_missing() -> None:
    t = np.array([0, MIN, 2 * MIN, 0.0])
    rows = np.array([0, 0, 0, 1])
    hm = bin_mean(t, rows, np.array([1.0, 2.0, 3.0, 9.0]), ["a", "b"], max_cols=1000)
    np.testing.assert_allclose(hm.x, [0, MIN, 2 * MIN])
    np.testing.assert_allclose(hm.z[0], [1, 2, 3])
    assert hm.z[1, 0] == 9.0 and np.isnan(hm.z[1, 1:]).all()


def test_downsample_line_keeps_peaks_and_breaks_at_gaps() -> None:
    x1 = np.arange(5000) * MIN
    x2 = x1[-1] + 3600 * 1000 + np.arange(5000) * MIN  # one hour later
    x = np.concatenate([x1, x2])
    y = np.sin(np.arange(10_000) / 50.0)
    y[1234] = 7.0
    xs, ys = downsample_line(x, y, 500)
    assert len(xs) == 501  # 500 points and one NaN at the gap
    assert np.isnan(ys).sum() == 1
    gap = int(np.flatnonzero(np.isnan(ys))[0])
    assert xs[gap - 1] <= x1[-1] and xs[gap + 1] >= x2[0]
    assert 7.0 in ys  # LTTB keeps the spike


def test_downsample_line_returns_short_series_as_is() -> None:
    x = np.arange(100) * MIN
    y = np.arange(100.0)
    xs, ys = downsample_line(x, y, 2000)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)


def _series(entity: str, quantity: str, unit: str, y: np.ndarray) -> Series:
    return Series(entity, quantity, unit, np.arange(len(y)) * MIN, y)


def _view(n: int = 10_080) -> RunView:
    k = np.arange(n)
    ev = 50 + 40 * np.sin(k / 200.0)
    ext = np.where((k > 3000) & (k < 3180), 80.0, np.nan)
    pv = -np.clip(30 * np.sin(k / 300.0), 0, None) - 0.1
    bess = 20 * np.sin(k / 50.0)
    site = {
        ("site", "import_kw"): _series("site", "import_kw", "kW", ev + 10 + pv + bess),
        ("site", "ev_power_kw"): _series("site", "ev_power_kw", "kW", ev),
        ("site", "base_load_kw"): _series("site", "base_load_kw", "kW", np.full(n, 10.0)),
        ("site", "limit_kw"): _series("site", "limit_kw", "kW", np.full(n, 150.0)),
        ("site", "external_limit_kw"): _series("site", "external_limit_kw", "kW", ext),
        ("site", "ev_available_kw"): _series("site", "ev_available_kw", "kW", 140 - ev),
        ("site", "price_per_mwh"): _series("site", "price_per_mwh", "EUR/MWh",
                                           40 + (k // 60) % 7),
        ("site", "pv_kw"): _series("site", "pv_kw", "kW", pv),
        ("site", "bess_kw"): _series("site", "bess_kw", "kW", bess),
        # a device's own entity: its contribution is already on the site entity
        ("pv", "power_kw"): _series("pv", "power_kw", "kW", -pv),
        ("bess", "soc"): _series("bess", "soc", "1", np.full(n, 0.5)),
    }
    t = np.repeat(k * MIN, 3)
    rows = np.tile([0, 1, 2], n)
    power = Power(t, rows, np.tile([1.0, 2.0, 3.0], n))
    soc = {"E1/1": Series("E1/1", "soc", "1", k[:500] * MIN, np.linspace(0.2, 0.9, 500))}
    return RunView(None, None, site, ["E1/1", "E1/2", "E2/1"], power, soc,
                   (0.0, float((n - 1) * MIN)))


def test_site_figure_draws_every_site_level_power_series_by_role() -> None:
    fig = site_figure(_view())
    by_name = {t["name"]: t for t in fig["data"]}
    assert by_name["grid import"]["line"]["width"] > 2
    assert by_name["EV load"]["stackgroup"] == "load"
    assert by_name["base load"]["stackgroup"] == "load"
    assert by_name["PV"]["stackgroup"] == "supply"  # never positive: below zero
    assert "stackgroup" not in by_name["BESS"]  # both signs: a line
    assert "pv power" not in by_name  # the device entity would count PV twice
    assert by_name["grid limit"]["line"]["dash"] == "dash"
    assert by_name["external limit"]["line"]["dash"] == "dashdot"
    assert by_name["EV headroom"]["visible"] == "legendonly"
    assert by_name["price"]["yaxis"] == "y2"
    assert "bess soc" not in by_name  # not a power
    for t in fig["data"]:
        assert len(decode(t["x"])) <= 2001
    # Series sampled at the import's times share its points (the stack lines up).
    np.testing.assert_array_equal(decode(by_name["EV load"]["x"]),
                                  decode(by_name["grid import"]["x"]))
    # The external limit is drawn only while it is in force.
    ext = decode(by_name["external limit"]["y"])
    assert np.isfinite(ext).sum() > 0 and np.isnan(ext).sum() > 0
    assert fig["layout"]["xaxis"]["type"] == "date"


def test_heatmap_and_soc_figures_reduce_to_their_budgets() -> None:
    view = _view()
    heat = heatmap_figure(view)
    z = decode(heat["data"][0]["z"])
    assert z.shape == (3, 917)  # 10,080 steps in bins of 11 steps (<= 1,000 columns)
    np.testing.assert_allclose(z[:, 0], [1.0, 2.0, 3.0])
    assert heat["data"][0]["y"] == ["E1/1", "E1/2", "E2/1"]
    soc = soc_figure(view)
    assert len(soc["data"]) == 1
    assert decode(soc["data"][0]["y"]).max() == pytest.approx(90.0)
    assert points(heat) == z.size


def test_event_spans_read_the_usual_payload_shapes() -> None:
    at = datetime(2024, 1, 1, 12, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert event_spans(at, json.dumps({"start": "2024-01-01T13:00:00Z",
                                       "end": "2024-01-01T15:00:00Z"})) == [
        (at + hour, at + 3 * hour)]
    assert event_spans(at, json.dumps({"duration": "PT30M"})) == [
        (at, at + timedelta(minutes=30))]
    assert event_spans(at, json.dumps({"duration_s": 600})) == [
        (at, at + timedelta(minutes=10))]
    oadr = {"intervalPeriod": {"start": "2024-01-01 14:00:00", "duration": "PT1H"},
            "intervals": [{"interval_period": {"start": "2024-01-01T14:00:00Z",
                                               "duration": "PT15M"}},
                          {"interval_period": {"start": "2024-01-01T14:15:00Z",
                                               "duration": "PT15M"}}]}
    spans = event_spans(at, json.dumps(oadr))
    assert spans == [(at + 2 * hour, at + 2 * hour + timedelta(minutes=15)),
                     (at + 2 * hour + timedelta(minutes=15), at + 2 * hour + 30 * timedelta(
                         minutes=1))]
    assert event_spans(at, json.dumps({"limit_kw": 5})) == []
    assert event_spans(at, "not json") == []
    assert parse_duration("P1DT2H") == timedelta(days=1, hours=2)
    assert parse_duration("soon") is None


def test_overlay_splits_grid_bands_markers_and_chatter() -> None:
    t = pd.Timestamp("2024-01-01T12:00Z")
    events = pd.DataFrame({
        "time": [t, t, t, t],
        "source": ["vtn", "CA001", "csms", "ven"],
        "kind": ["openadr.event", "session.arrived", "ocpp.boot", "grid.limit_lifted"],
        "payload": [json.dumps({"duration": "PT1H"}), "{}", "{}", "{}"],
    })
    ov = overlay(events)
    assert [(b[2], b[1] - b[0]) for b in ov.bands] == [
        ("openadr.event", timedelta(hours=1)), ("grid.limit_lifted", timedelta(0))]
    assert list(ov.markers["kind"]) == ["session.arrived"]


def test_parse_filter_reads_datatable_queries() -> None:
    clauses = parse_filter('{kind} scontains "session" && {source} = CA001 && '
                           "{time} >= 2019-09-10T15:00")
    assert [(c.column, c.op, c.value) for c in clauses] == [
        ("kind", "contains", "session"), ("source", "eq", "CA001"),
        ("time", "ge", "2019-09-10T15:00")]
    with pytest.raises(ValueError, match="unknown column"):
        parse_filter("{nope} = 1")


def test_event_page_filters_and_pages_on_the_server(run_a: Path) -> None:
    rf = RunFolder(run_a)
    every = rf.events()
    page = event_page(rf, "{kind} = session.arrived", 0, 4)
    expected = every[every["kind"] == "session.arrived"]
    assert page.total == len(expected) and page.page_count == -(-len(expected) // 4)
    assert len(page.rows) == 4 and {r["kind"] for r in page.rows} == {"session.arrived"}
    last = event_page(rf, "{kind} = session.arrived", 99, 4)
    assert last.rows[-1]["time"] == expected["time"].iloc[-1].strftime("%Y-%m-%d %H:%M:%S")
    text = event_page(rf, '{payload} icontains "ACCEPTED" && {kind} contains ocpp', 0, 500)
    assert text.total == int((every["payload"].str.contains("Accepted")
                              & every["kind"].str.contains("ocpp")).sum())
    t = datetime(2019, 9, 10, 17, tzinfo=UTC)
    late = event_page(rf, "{time} >= 2019-09-10 17:00", 0, 1000)
    assert late.total == int((every["time"] >= pd.Timestamp(t)).sum())
    typed_time = event_page(rf, "{time} contains 2019-09-10 17:0", 0, 1000)
    assert typed_time.total == int(((every["time"] >= pd.Timestamp(t)) & (
        every["time"] < pd.Timestamp(t + timedelta(minutes=10)))).sum())
    in_range = event_page(rf, "", 0, 10, start=t, end=t + timedelta(hours=1))
    assert in_range.total == int(((every["time"] >= pd.Timestamp(t))
                                  & (every["time"] <= pd.Timestamp(t + timedelta(hours=1))))
                                 .sum())


def test_kpi_delta_rows_are_exact() -> None:
    a = {"kpis": {"energy_cost": {"value": "183.32", "unit": "EUR"},
                  "share": {"value": 0.1, "unit": "1"},
                  "peak_import_kw": {"value": 31.016223, "unit": "kW"},
                  "count": {"value": 3, "unit": "1"}}}
    b = {"kpis": {"energy_cost": {"value": "180.10", "unit": "EUR"},
                  "share": {"value": 0.3, "unit": "1"},
                  "peak_import_kw": {"value": 20.94, "unit": "kW"},
                  "count": {"value": 5, "unit": "1"}}}
    rows = {r["kpi"]: r for r in kpi_delta_rows(a, b)}
    assert rows["energy_cost"]["delta"] == "-3.22"
    assert rows["energy_cost"]["a"] == "183.32"
    assert Decimal(rows["share"]["delta"]) == Decimal("0.2")
    assert Decimal(rows["peak_import_kw"]["delta"]) == Decimal("20.94") - Decimal("31.016223")
    assert rows["count"]["delta"] == "2"


def test_render_reads_and_builds_every_figure_of_a_real_run(run_a: Path) -> None:
    rf = RunFolder(run_a)
    figs = render(rf)
    assert figs.points["site"] > 0 and figs.points["soc"] > 0
    assert figs.points["heatmap"] == 8 * 360
    assert set(figs.timings) >= {"read", "site", "heatmap", "soc", "total"}
    assert ("Peak grid import", "31.02 kW") in figs.kpis
    # One hour: only that hour is read.
    start = datetime(2019, 9, 10, 16, tzinfo=UTC)
    view = load_view(rf, start, start + timedelta(hours=1))
    imp = view.site[("site", "import_kw")]
    assert len(imp.x) == 61
    assert len(view.power.t) == 8 * 61


def test_routes_honour_the_mount_prefix(runs_root: Path) -> None:
    app = create_dash(RunCatalog(runs_root), requests_pathname_prefix="/dash/")
    pages = Pages(app, RunCatalog(runs_root))
    assert pages.run_href("morning_a") == "/dash/run/morning_a"
    assert pages.compare_href("a", "b") == "/dash/compare?a=a&b=b"
    body = route(pages, "/dash/run/morning_a", "")
    assert "run-site" in str(body)
    assert "Run not found" in str(route(pages, "/dash/run/nope", ""))
    assert "cmp-kpis" in str(route(pages, "/dash/compare", "?a=morning_a&b=morning_b"))
