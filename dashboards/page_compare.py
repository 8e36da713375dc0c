"""Compare view (``/compare?a=<id>&b=<id>``): run B against run A.

* KPI deltas from the two ``kpis.json`` (:func:`twin.compare.kpi_deltas`; money exact as
  ``Decimal`` strings), in the page as it loads.
* The alignment statement of all common series (:func:`twin.compare.align`), shown
  verbatim, and the per-quantity MAE / RMSE / largest deviation table
  (:func:`twin.compare.metrics`, the ``entity == "*"`` rows); computed once per pair of
  run-folder states and remembered.
* For a chosen quantity and entity: A and B overlaid, the residual ``B - A`` with the
  periods where ``|residual| > tolerance`` shaded (:func:`twin.compare.exceedances`);
  both graphs share one zoom, and each zoom is downsampled again for the visible range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboards.catalog import UnknownRunError
from dashboards.context import Pages, data_table, unknown_run
from dashboards.figures import CompareSeries, empty_figure, overlay_figure, residual_figure
from dashboards.formatting import exact, kpi_label, number
from dashboards.page_run import register_range_sync
from dashboards.series import LruCache, folder_token, parse_time, to_ms, trace_catalog
from twin.compare import align, exceedances, kpi_deltas, metrics, residuals
from twin.run_folder import RunFolder

#: Default tolerance per unit for the residual highlighting.
DEFAULT_TOLERANCE = {"kW": 1.0, "kWh": 0.5, "A": 1.0, "W": 1000.0, "1": 0.02,
                     "EUR/MWh": 1.0}

_SUMMARIES = LruCache(8)
_SERIES = LruCache(16)
_GRAPHS = ("cmp-overlay", "cmp-residual")


# --------------------------------------------------------------------------- tables


def kpi_delta_rows(kpis_a: dict[str, Any], kpis_b: dict[str, Any]) -> list[dict[str, str]]:
    """Table rows of the KPI deltas (``B - A``), every value as exact text."""
    rows = []
    for d in kpi_deltas(kpis_a, kpis_b):
        rows.append({
            "section": d.section,
            "kpi": d.name,
            "label": kpi_label(d.name),
            "unit": d.unit,
            "a": exact(d.a),
            "b": exact(d.b),
            "delta": exact(d.delta),
            "relative": "" if d.relative is None else f"{d.relative * 100:+.2f} %",
        })
    return rows


@dataclass
class Summary:
    """The alignment of all common series of two runs, reduced to what the page shows.

    Attributes:
        statement: :attr:`twin.compare.Alignment.statement`, verbatim.
        rows: per-quantity deviation table rows.
    """

    statement: str
    rows: list[dict[str, Any]]


def metric_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of the per-quantity deviation table (the ``entity == "*"`` rows)."""
    def num(v: Any) -> float | None:
        return None if v is None or v != v else float(f"{float(v):.6g}")

    rows = []
    for r in table[table["entity"] == "*"].to_dict("records"):
        t = r["max_abs_time"]
        when = "" if t is None or t is pd.NaT or t != t else pd.Timestamp(t).strftime(
            "%Y-%m-%d %H:%M")
        rows.append({
            "quantity": str(r["quantity"]), "unit": str(r["unit"]), "n": int(r["n"]),
            "n_excluded": int(r["n_excluded"]), "mae": num(r["mae"]), "rmse": num(r["rmse"]),
            "max_abs": num(r["max_abs"]),
            "where": f"{r['max_abs_entity']} at {when}" if when else "",
            "bias": num(r["bias"]),
        })
    return rows


def summary(a: RunFolder, b: RunFolder, labels: tuple[str, str]) -> Summary:
    """Align every common series of two runs (remembered per folder state)."""
    key = (folder_token(a), folder_token(b), labels)
    found = _SUMMARIES.get(key)
    if found is not None:
        cached: Summary = found
        return cached
    al = align(a.traces(), b.traces(), labels=labels)
    result = Summary(al.statement, metric_rows(metrics(residuals(al))))
    _SUMMARIES.put(key, result)
    return result


def series_pair(a: RunFolder, b: RunFolder, entity: str, quantity: str,
                labels: tuple[str, str]) -> tuple[CompareSeries, pd.DataFrame]:
    """One series of both runs, aligned; and its residual frame."""
    key = (folder_token(a), folder_token(b), entity, quantity, labels)
    found = _SERIES.get(key)
    if found is not None:
        pair: tuple[CompareSeries, pd.DataFrame] = found
        return pair
    ta = a.traces(entities=[entity], quantities=[quantity])
    tb = b.traces(entities=[entity], quantities=[quantity])
    if len(ta) == 0 or len(tb) == 0:
        raise ValueError(f"{entity} {quantity} is not in both runs")
    res = residuals(align(ta, tb, labels=labels))
    unit = str(ta["unit"].iloc[0])
    cs = CompareSeries(
        labels[0], labels[1], unit,
        (to_ms(ta["time"]), ta["value"].to_numpy(dtype=np.float64)),
        (to_ms(tb["time"]), tb["value"].to_numpy(dtype=np.float64)),
        to_ms(res["time"]), res["residual"].to_numpy(dtype=np.float64),
    )
    _SERIES.put(key, (cs, res))
    return cs, res


def _clip(cs: CompareSeries, start: datetime | None, end: datetime | None) -> CompareSeries:
    """The part of a compare series within ``[start, end]``."""
    if start is None and end is None:
        return cs
    lo = to_ms(pd.DatetimeIndex([start]))[0] if start else -np.inf
    hi = to_ms(pd.DatetimeIndex([end]))[0] if end else np.inf

    def cut(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = (x >= lo) & (x <= hi)
        return x[keep], y[keep]

    grid, resid = cut(cs.grid, cs.residual)
    return CompareSeries(cs.label_a, cs.label_b, cs.unit, cut(*cs.a), cut(*cs.b), grid, resid)


# --------------------------------------------------------------------------- layout


def _common(a: RunFolder, b: RunFolder) -> pd.DataFrame:
    """(entity, quantity, unit) present in both runs."""
    ca, cb = trace_catalog(a), trace_catalog(b)
    both = ca.merge(cb, on=["entity", "quantity", "unit"])
    return both.sort_values(["quantity", "entity"]).reset_index(drop=True)


def layout(pages: Pages, a_id: str | None, b_id: str | None) -> html.Div:
    """The compare view of runs ``a_id`` (A) and ``b_id`` (B)."""
    if not a_id or not b_id:
        return html.Div([html.H2("Compare"),
                         html.P("Pick two runs in the run list, or open "
                                "/compare?a=<run id>&b=<run id>."),
                         html.A("all runs", href=pages.href("/"))], className="notice")
    try:
        a, b = pages.folder(a_id), pages.folder(b_id)
    except UnknownRunError as err:
        return unknown_run(pages, err)
    ia, ib = a.info(), b.info()
    common = _common(a, b)
    quantities = sorted(common["quantity"].unique())
    default_q = "import_kw" if "import_kw" in quantities else (quantities[0] if quantities
                                                                 else None)
    if ia.kpis and ib.kpis:
        kpi_rows = kpi_delta_rows(ia.kpis, ib.kpis)
        kpi_note = "B \N{MINUS SIGN} A; relative to |A|. Money is exact (decimal)."
    else:
        kpi_rows = []
        kpi_note = "KPIs appear when both runs have finished."
    delta, minus = "\N{GREEK CAPITAL LETTER DELTA}", "\N{MINUS SIGN}"
    cols = [("kpi", "KPI"), ("label", "name"), ("unit", "unit"), ("a", "A"), ("b", "B"),
            ("delta", f"{delta} (B {minus} A)"), ("relative", f"{delta} rel."),
            ("section", "section")]
    metric_cols = [("quantity", "quantity"), ("unit", "unit"), ("n", "bins"),
                   ("n_excluded", "excluded"), ("mae", "MAE"), ("rmse", "RMSE"),
                   ("max_abs", f"largest |B {minus} A|"), ("where", "where, when"),
                   ("bias", "bias")]

    def side(label: str, run_id: str, info: Any) -> html.Div:
        return html.Div([html.B(f"{label}: "), html.A(run_id, href=pages.run_href(run_id)),
                         html.Span(f" {info.scenario} · {info.kind} · {info.state}",
                                   className="muted")])

    return html.Div(
        [
            dcc.Store(id="cmp-ids", data={"a": a_id, "b": b_id}),
            dcc.Store(id="cmp-range", data=None),
            html.H2("Compare runs"),
            side("A", a_id, ia),
            side("B", b_id, ib),
            html.H3("Alignment"),
            dcc.Loading(html.Div("aligning…", id="cmp-statement", className="statement")),
            html.H3("KPI deltas"),
            html.Div(kpi_note, className="muted"),
            data_table(
                id="cmp-kpis", columns=[{"id": c, "name": n} for c, n in cols],
                data=kpi_rows, sort_action="native",
            ),
            html.H3("Series"),
            html.Div(
                [
                    html.Div([html.Label("quantity"),
                              dcc.Dropdown(id="cmp-quantity", options=quantities,
                                           value=default_q, clearable=False,
                                           style={"width": "240px"})]),
                    html.Div([html.Label("entity"),
                              dcc.Dropdown(id="cmp-entity", clearable=False,
                                           style={"width": "240px"})]),
                    html.Div([html.Label("tolerance (in the quantity's unit)"),
                              dcc.Input(id="cmp-tolerance", type="number", min=0,
                                        step="any", value=1.0, debounce=True)]),
                    html.Button("Full range", id="cmp-reset", className="button"),
                ],
                className="controls",
            ),
            html.Div(id="cmp-exceed", className="muted"),
            html.Div(dcc.Graph(id="cmp-overlay", figure=empty_figure("loading…")),
                     className="panel"),
            html.Div(dcc.Graph(id="cmp-residual", figure=empty_figure("loading…")),
                     className="panel"),
            html.H3("Deviation by quantity (all entities)"),
            dcc.Loading(data_table(
                id="cmp-metrics", columns=[{"id": c, "name": n, **(
                    {"type": "numeric"} if c in ("n", "n_excluded", "mae", "rmse", "max_abs",
                                                 "bias") else {})} for c, n in metric_cols],
                data=[], sort_action="native",
            )),
        ],
        className="page",
    )


# --------------------------------------------------------------------------- callbacks


def register(app: Dash, pages: Pages) -> None:
    """Callbacks of the compare view."""

    def folders(ids: dict[str, str]) -> tuple[RunFolder, RunFolder, tuple[str, str]]:
        a_id, b_id = ids["a"], ids["b"]
        labels = (a_id, b_id) if a_id != b_id else ("A", "B")
        return pages.folder(a_id), pages.folder(b_id), labels

    @app.callback(
        Output("cmp-statement", "children"),
        Output("cmp-metrics", "data"),
        Input("cmp-ids", "data"),
    )
    def aligned(ids: dict[str, str]) -> tuple[Any, Any]:
        try:
            a, b, labels = folders(ids)
            s = summary(a, b, labels)
        except UnknownRunError as err:
            return str(err), []
        except ValueError as err:
            return f"cannot align the runs: {err}", []
        return s.statement, s.rows

    @app.callback(
        Output("cmp-entity", "options"),
        Output("cmp-entity", "value"),
        Output("cmp-tolerance", "value"),
        Input("cmp-quantity", "value"),
        State("cmp-ids", "data"),
        State("cmp-entity", "value"),
    )
    def entities(quantity: str | None, ids: dict[str, str],
                 current: str | None) -> tuple[Any, Any, Any]:
        if not quantity:
            return [], None, no_update
        try:
            a, b, _ = folders(ids)
        except UnknownRunError:
            return [], None, no_update
        common = _common(a, b)
        sel = common[common["quantity"] == quantity]
        names = sorted(sel["entity"].astype(str))
        value = current if current in names else ("site" if "site" in names else
                                                  (names[0] if names else None))
        unit = str(sel["unit"].iloc[0]) if len(sel) else ""
        return names, value, DEFAULT_TOLERANCE.get(unit, 1.0)

    register_range_sync(app, "cmp-range", _GRAPHS, "cmp-reset")

    @app.callback(
        Output("cmp-overlay", "figure"),
        Output("cmp-residual", "figure"),
        Output("cmp-exceed", "children"),
        Input("cmp-entity", "value"),
        Input("cmp-tolerance", "value"),
        Input("cmp-range", "data"),
        State("cmp-quantity", "value"),
        State("cmp-ids", "data"),
    )
    def series(entity: str | None, tolerance: float | None, rng: dict[str, str] | None,
               quantity: str | None, ids: dict[str, str]) -> tuple[Any, Any, Any]:
        if not entity or not quantity:
            msg = empty_figure("choose a quantity and an entity")
            return msg, msg, ""
        tol = float(tolerance) if tolerance is not None and tolerance >= 0 else 0.0
        try:
            a, b, labels = folders(ids)
            cs, res = series_pair(a, b, entity, quantity, labels)
            periods = exceedances(res, tol)
        except (UnknownRunError, ValueError) as err:
            msg = empty_figure(str(err))
            return msg, msg, str(err)
        start = parse_time((rng or {}).get("start"))
        end = parse_time((rng or {}).get("end"))
        shown = _clip(cs, start, end)
        fixed = rng is not None
        span = None
        if fixed and start is not None and end is not None:
            span = (float(to_ms(pd.DatetimeIndex([start]))[0]),
                    float(to_ms(pd.DatetimeIndex([end]))[0]))
        if start is not None and end is not None:
            lo, hi = pd.Timestamp(start), pd.Timestamp(end)
            periods = periods[(periods["end"] >= lo) & (periods["start"] <= hi)]
        rev = f"{ids['a']}|{ids['b']}|{entity}|{quantity}"
        title = f"{entity} {quantity}: A = {labels[0]}, B = {labels[1]}"
        over = overlay_figure(shown, title, span, fixed, revision=rev)
        resid = residual_figure(shown, periods, tol, span, fixed, revision=rev)
        total = float(periods["duration_s"].sum()) if len(periods) else 0.0
        text = (f"{len(periods)} periods with |B \N{MINUS SIGN} A| > {tol:g} {cs.unit}, "
                f"{number(total / 3600.0)} h in total")
        if len(periods):
            top = periods.sort_values("peak_abs", ascending=False).iloc[0]
            text += (f"; largest {number(float(top['peak_abs']))} {cs.unit} at "
                     f"{pd.Timestamp(top['peak_time']).strftime('%Y-%m-%d %H:%M')} UTC")
        return over, resid, text
