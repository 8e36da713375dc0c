"""Run list (``/``): every run in a sortable, filterable table; pick two to compare."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboards.context import Pages, data_table
from dashboards.formatting import HEADLINE_KPIS, kpi_label, when
from twin.run_folder import RunInfo

#: Seconds between re-reads of the run list (new runs, state changes).
REFRESH_S = 5


def _kpi_cell(info: RunInfo, name: str) -> float | int | str | None:
    """A headline KPI for a table cell: numbers stay numbers (sortable), money text."""
    value = info.kpi(name)
    if value is None:
        return None
    if isinstance(value, str):
        unit = ""
        for section in ("kpis", "wall"):
            entry = (info.kpis or {}).get(section, {}).get(name)
            if entry is not None:
                unit = str(entry.get("unit", ""))
                break
        return f"{value} {unit}".strip()
    if name.endswith("_share"):
        return round(float(value) * 100.0, 2)
    if isinstance(value, float):
        return round(value, 3)
    return value


def run_rows(pages: Pages) -> list[dict[str, Any]]:
    """One table row per run of the catalog (newest id first)."""
    rows = []
    for run_id, info in pages.catalog.infos():
        links = f"[{run_id}]({pages.run_href(run_id)})"
        if info.state == "running":
            links += f" · [live]({pages.run_href(run_id, live=True)})"
        row: dict[str, Any] = {
            "id": run_id,
            "run": links,
            "scenario": info.scenario,
            "kind": info.kind,
            "state": info.state,
            "start": when(info.start),
            "duration_h": None if info.duration_h is None else round(info.duration_h, 3),
        }
        for name in HEADLINE_KPIS:
            row[name] = _kpi_cell(info, name)
        rows.append(row)
    return rows


def columns() -> list[dict[str, Any]]:
    """Table columns: run (link), scenario, kind, state, start, duration, headline KPIs."""
    cols: list[dict[str, Any]] = [
        {"id": "run", "name": "run", "presentation": "markdown"},
        {"id": "scenario", "name": "scenario"},
        {"id": "kind", "name": "kind"},
        {"id": "state", "name": "state"},
        {"id": "start", "name": "start (UTC)"},
        {"id": "duration_h", "name": "duration [h]", "type": "numeric"},
    ]
    units = {"peak_import_kw": " [kW]", "energy_delivered_kwh": " [kWh]",
             "energy_met_share": " [%]"}
    for name in HEADLINE_KPIS:
        numeric = name != "energy_cost"
        col = {"id": name, "name": kpi_label(name) + units.get(name, "")}
        if numeric:
            col["type"] = "numeric"
        cols.append(col)
    return cols


def layout(pages: Pages) -> html.Div:
    """The run list page."""
    rows = run_rows(pages)
    return html.Div(
        [
            html.H2("Runs"),
            html.Div(
                [
                    html.A("Compare selected", id="runs-compare", href="#",
                           className="button disabled"),
                    html.Span("select two runs to compare them", id="runs-hint",
                              className="muted", style={"marginLeft": "12px"}),
                ],
                style={"margin": "8px 0"},
            ),
            data_table(
                id="runs-table",
                columns=columns(),
                data=rows,
                row_selectable="multi",
                selected_rows=[],
                sort_action="native",
                filter_action="native",
                page_action="native",
                page_size=25,
                markdown_options={"link_target": "_self"},
            ),
            html.Div(f"{len(rows)} runs under {pages.catalog.root}", id="runs-count",
                     className="muted"),
            dcc.Interval(id="runs-tick", interval=REFRESH_S * 1000),
        ],
        className="page",
    )


def register(app: Dash, pages: Pages) -> None:
    """Callbacks of the run list."""

    @app.callback(
        Output("runs-table", "data"),
        Output("runs-table", "selected_rows"),
        Output("runs-count", "children"),
        Input("runs-tick", "n_intervals"),
        State("runs-table", "data"),
        State("runs-table", "selected_rows"),
        prevent_initial_call=True,
    )
    def refresh(_n: int, data: list[dict[str, Any]] | None,
                selected: list[int] | None) -> tuple[Any, Any, Any]:
        rows = run_rows(pages)
        if rows == data:
            return no_update, no_update, no_update
        old = data or []
        chosen = {old[i]["id"] for i in (selected or []) if i < len(old)}
        keep = [i for i, r in enumerate(rows) if r["id"] in chosen]
        return rows, keep, f"{len(rows)} runs under {pages.catalog.root}"

    @app.callback(
        Output("runs-compare", "href"),
        Output("runs-compare", "className"),
        Output("runs-hint", "children"),
        Input("runs-table", "selected_rows"),
        State("runs-table", "data"),
    )
    def compare_link(selected: list[int] | None,
                     data: list[dict[str, Any]] | None) -> tuple[str, str, str]:
        rows = data or []
        ids = [rows[i]["id"] for i in (selected or []) if i < len(rows)]
        if len(ids) == 2:
            return (pages.compare_href(ids[0], ids[1]), "button",
                    f"A = {ids[0]}, B = {ids[1]}")
        hint = ("select two runs to compare them" if len(ids) < 2
                else f"{len(ids)} selected: select exactly two")
        return "#", "button disabled", hint
