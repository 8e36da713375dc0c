"""Run view (``/run/<id>``) and live view (``/live/<id>``).

Site power stack with price and events, EVSE power heatmap, vehicle SoC lines, KPI cards
and the event log. One time range is shared by every graph: a zoom (or pan) on any graph
goes through ``relayoutData`` into the ``run-range`` store, and the server reads that
range again from the run folder and downsamples it (:func:`render`). While the run is
being written (and always on ``/live/<id>``) a 1 s interval re-reads the folder; it stops
when the run's status is no longer ``running``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
from dash import Dash, Input, Output, State, dcc, html, no_update

from dashboards.catalog import UnknownRunError
from dashboards.context import Pages, badge, data_table, unknown_run
from dashboards.event_log import event_page, overlay, overlay_events
from dashboards.figures import (
    Figure,
    empty_figure,
    heatmap_figure,
    points,
    site_figure,
    soc_figure,
)
from dashboards.formatting import kpi_label, number, share_or_value, when
from dashboards.series import load_view, parse_time, prefetch_catalog
from twin.run_folder import RunFolder, RunFolderError, RunInfo

#: Refresh period of a live run [ms].
LIVE_INTERVAL_MS = 1000
#: Rows per page of the event log.
EVENT_PAGE_SIZE = 15

_GRAPHS = ("run-site", "run-heatmap", "run-soc")


# --------------------------------------------------------------------------- rendering


@dataclass
class RunFigures:
    """Everything the run view shows for one time range, and what it cost.

    Attributes:
        site: site power stack figure.
        heatmap: EVSE power heatmap figure.
        soc: vehicle SoC figure.
        info: the run's summary (state, window, KPIs).
        kpis: KPI cards as ``(label, value text)``.
        timings: seconds per step (``read``: traces, while the events are read beside;
            ``events``: what is left of reading the events; ``site``, ``heatmap``,
            ``soc``: building each figure; ``total``).
        points: points (cells) sent per figure.
    """

    site: Figure
    heatmap: Figure
    soc: Figure
    info: RunInfo
    kpis: list[tuple[str, str]]
    timings: dict[str, float] = field(default_factory=dict)
    points: dict[str, int] = field(default_factory=dict)


def kpi_cards(info: RunInfo, so_far: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """KPI cards of a run: every KPI of ``kpis.json`` (or what is known so far)."""
    if info.kpis:
        section = info.kpis.get("kpis", {}) or {}
        return [
            (kpi_label(name), share_or_value(name, entry.get("value"),
                                             str(entry.get("unit", ""))))
            for name, entry in section.items()
        ]
    cards = [("State", f"{info.state} (KPIs when the run finishes)")]
    cards += list((so_far or {}).items())
    return cards


def render(rf: RunFolder, start: datetime | None = None, end: datetime | None = None,
           revision: str = "") -> RunFigures:
    """Read ``[start, end]`` of a run (None: that end of the run) and build its figures.

    This is the whole server-side work of one run-view update (what the benchmark
    times).
    """
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        events = pool.submit(overlay_events, rf, start, end)
        info = rf.info()
        view = load_view(rf, start, end)
        t1 = time.perf_counter()
        try:
            ev = overlay(events.result())
        except (OSError, pa.ArrowException):
            ev = None
    t2 = time.perf_counter()
    site = site_figure(view, ev, revision=revision)
    t3 = time.perf_counter()
    heat = heatmap_figure(view, revision=revision)
    t4 = time.perf_counter()
    soc = soc_figure(view, revision=revision)
    t5 = time.perf_counter()
    so_far: dict[str, str] = {}
    imp = view.site.get(("site", "import_kw"))
    if imp is not None and len(imp.y):
        so_far["Peak grid import so far"] = f"{number(float(imp.y.max()))} kW"
    if view.span is not None:
        so_far["Data until"] = when(parse_time(view.span[1]))
    cards = kpi_cards(info, so_far)
    figs = RunFigures(site, heat, soc, info, cards)
    figs.timings = {"read": t1 - t0, "events": t2 - t1, "site": t3 - t2, "heatmap": t4 - t3,
                    "soc": t5 - t4, "total": time.perf_counter() - t0}
    figs.points = {"site": points(site), "heatmap": points(heat), "soc": points(soc)}
    return figs


# --------------------------------------------------------------------------- layout


def _cards(cards: list[tuple[str, str]]) -> list[html.Div]:
    return [html.Div([html.Div(label, className="label"), html.Div(value, className="value")],
                     className="card") for label, value in cards]


def _header(pages: Pages, run_id: str, info: RunInfo, live: bool) -> list[Any]:
    window = f"{when(info.start)} \N{EN DASH} {when(info.end)} UTC" if info.start else ""
    links: list[Any] = [html.A("all runs", href=pages.href("/"))]
    if info.state == "running" and not live:
        links += [" · ", html.A("live view", href=pages.run_href(run_id, live=True))]
    if live:
        links += [" · ", html.A("run view", href=pages.run_href(run_id))]
    return [
        html.H2([f"{info.scenario}", badge(info.state),
                 html.Span("LIVE", className="badge badge-running") if live
                 and info.state == "running" else ""]),
        html.Div([f"run {run_id} · {info.kind} · {window}"
                  + (f" · step {info.step_s:g} s" if info.step_s else ""), " · ", *links],
                 className="muted"),
    ]


def layout(pages: Pages, run_id: str, live: bool = False) -> html.Div:
    """The run view of ``run_id``; ``live`` forces the 1 s refresh on."""
    try:
        rf = pages.folder(run_id)
        info = rf.info()
    except UnknownRunError as err:
        return unknown_run(pages, err)
    except (OSError, RunFolderError) as err:
        return html.Div([html.H2("Run not readable"), html.P(str(err))], className="notice")
    prefetch_catalog(rf)  # read while the browser asks for the figures
    running = info.state == "running"
    graph_config: Any = {"displaylogo": False, "scrollZoom": False}
    return html.Div(
        [
            dcc.Store(id="run-id", data=run_id),
            dcc.Store(id="run-range", data=None),
            dcc.Store(id="run-live", data=live),
            dcc.Interval(id="run-tick", interval=LIVE_INTERVAL_MS,
                         disabled=not (live or running)),
            html.Div(_header(pages, run_id, info, live), id="run-header"),
            html.Div(_cards(kpi_cards(info)), id="run-kpis", className="cards"),
            html.Div(
                [html.Button("Full range", id="run-reset", className="button"),
                 html.Span(id="run-range-text", className="muted",
                           style={"marginLeft": "12px"}),
                 html.Span(id="run-stats", className="muted", style={"marginLeft": "12px"})],
            ),
            html.Div(dcc.Graph(id="run-site", config=graph_config,
                               figure=empty_figure("loading…")), className="panel"),
            html.Div(dcc.Graph(id="run-heatmap", config=graph_config,
                               figure=empty_figure("loading…")), className="panel"),
            html.Div(dcc.Graph(id="run-soc", config=graph_config,
                               figure=empty_figure("loading…")), className="panel"),
            html.H3("Events"),
            html.Div(id="run-events-info", className="muted"),
            data_table(
                id="run-events",
                columns=[{"id": c, "name": c} for c in ("time", "source", "kind", "payload")],
                data=[],
                page_action="custom",
                page_current=0,
                page_size=EVENT_PAGE_SIZE,
                filter_action="custom",
                filter_query="",
            ),
        ],
        className="page",
    )


# --------------------------------------------------------------------------- callbacks

#: Browser-side: a graph's relayoutData (or the reset button) -> the shared range store.
#: Runs in the browser so that the autosize relayout a graph emits right after a zoom
#: cannot supersede the zoom's request (Dash drops a callback's stale responses).
RANGE_SYNC_JS = """
function() {
    const cc = window.dash_clientside.callback_context;
    const nothing = window.dash_clientside.no_update;
    if (!cc.triggered || !cc.triggered.length) { return nothing; }
    const trig = cc.triggered[0];
    const prop = String(trig.prop_id);
    if (prop.endsWith(".n_clicks")) { return null; }
    const d = trig.value;
    if (!d) { return nothing; }
    if (d["xaxis.autorange"]) { return null; }
    let lo = d["xaxis.range[0]"], hi = d["xaxis.range[1]"];
    if ((lo === undefined || hi === undefined) && Array.isArray(d["xaxis.range"])) {
        lo = d["xaxis.range"][0]; hi = d["xaxis.range"][1];
    }
    if (lo === undefined || hi === undefined || lo === null || hi === null) { return nothing; }
    return {"start": String(lo), "end": String(hi)};
}
"""


def register_range_sync(app: Dash, store: str, graphs: tuple[str, ...], reset: str) -> None:
    """Keep ``store`` (``{"start", "end"}`` or None) equal to the last x zoom of ``graphs``.

    A zoom or pan on any graph sets the range, a double-click (autorange) or the
    ``reset`` button clears it; autosize and y-only relayouts leave it alone.
    """
    app.clientside_callback(  # type: ignore[no-untyped-call]
        RANGE_SYNC_JS,
        Output(store, "data"),
        *(Input(g, "relayoutData") for g in graphs),
        Input(reset, "n_clicks"),
        prevent_initial_call=True,
    )



def register(app: Dash, pages: Pages) -> None:
    """Callbacks of the run and live views."""
    register_range_sync(app, "run-range", _GRAPHS, "run-reset")

    @app.callback(
        Output("run-site", "figure"),
        Output("run-heatmap", "figure"),
        Output("run-soc", "figure"),
        Output("run-kpis", "children"),
        Output("run-tick", "disabled"),
        Output("run-range-text", "children"),
        Output("run-stats", "children"),
        Output("run-header", "children"),
        Input("run-range", "data"),
        Input("run-tick", "n_intervals"),
        State("run-id", "data"),
        State("run-live", "data"),
    )
    def update(rng: dict[str, str] | None, _tick: int | None, run_id: str,
               live: bool | None) -> tuple[Any, ...]:
        try:
            rf = pages.folder(run_id)
        except UnknownRunError as err:
            msg = empty_figure(str(err))
            return msg, msg, msg, [], True, "", "", no_update
        start = parse_time((rng or {}).get("start"))
        end = parse_time((rng or {}).get("end"))
        try:
            figs = render(rf, start, end, revision=run_id)
        except (OSError, pa.ArrowException, RunFolderError) as err:
            # A live folder can change under the reader (parts merged on close).
            return (no_update, no_update, no_update, no_update, no_update, no_update,
                    f"could not read the run: {err}", no_update)
        running = figs.info.state == "running"
        shown = ("full run" if rng is None
                 else f"showing {when(start)} \N{EN DASH} {when(end)} UTC")
        stats = (f"server {figs.timings['total'] * 1000:.0f} ms, "
                 f"{sum(figs.points.values()):,} points"
                 + (" · refreshing every second" if running else ""))
        return (figs.site, figs.heatmap, figs.soc, _cards(figs.kpis), not running, shown, stats,
                _header(pages, run_id, figs.info, bool(live)))

    @app.callback(
        Output("run-events", "data"),
        Output("run-events", "page_count"),
        Output("run-events-info", "children"),
        Input("run-events", "page_current"),
        Input("run-events", "page_size"),
        Input("run-events", "filter_query"),
        Input("run-range", "data"),
        Input("run-tick", "n_intervals"),
        State("run-id", "data"),
    )
    def events(page: int | None, size: int | None, query: str | None,
               rng: dict[str, str] | None, _tick: int | None,
               run_id: str) -> tuple[Any, ...]:
        try:
            rf = pages.folder(run_id)
            result = event_page(rf, query, page or 0, size or EVENT_PAGE_SIZE,
                                parse_time((rng or {}).get("start")),
                                parse_time((rng or {}).get("end")))
        except UnknownRunError as err:
            return [], 1, str(err)
        except ValueError as err:
            return [], 1, f"filter: {err}"
        except (OSError, pa.ArrowException) as err:
            return no_update, no_update, f"could not read events: {err}"
        scope = "in the visible range" if rng else "in the run"
        return (result.rows, result.page_count,
                f"{result.total:,} events {scope}"
                + (" matching the filter" if query else "")
                + " · filter a column with text, = value, or > / < for times")
