"""Figure builders of the run and compare views: plain plotly figure dicts, no I/O.

Every builder takes already-read data (:class:`dashboards.series.RunView`, event
frames, aligned residuals) and returns a figure as a dict (faster than ``go.Figure``
validation on large arrays); x values are epoch milliseconds on a date axis, sent as
typed arrays (:func:`dashboards.series.typed`).

The site stack is generic: every site-level ``*_kw`` series is drawn (those of the
entity ``site`` when there is one: it carries each device's contribution), by role:
``import_kw`` as the grid-import line, any ``*limit*`` as a dashed limit line (the grid
limit, an external OpenADR limit), ``*available*``/``*headroom*`` dotted and hidden
until clicked, loads (EV, base, building, BESS charging ...) as a stacked area, series
that are never positive (PV feed-in) as a stack below zero, and series of both signs
(a BESS) as lines. The price (``price*``) goes on a secondary axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dashboards.event_log import MAX_MARKERS_PER_KIND, Overlay
from dashboards.series import (
    LINE_POINTS,
    SOC_POINTS_TOTAL,
    RunView,
    Series,
    bin_mean,
    downsample_line,
    gap_threshold,
    to_ms,
    typed,
)
from twin.compare import lttb_indices

Figure = dict[str, Any]

_NAMES = {
    ("site", "import_kw"): "grid import",
    ("site", "limit_kw"): "grid limit",
    ("site", "external_limit_kw"): "external limit",
    ("site", "ev_power_kw"): "EV load",
    ("site", "base_load_kw"): "base load",
    ("site", "building_kw"): "building load",
    ("site", "building_load_kw"): "building load",
    ("site", "pv_kw"): "PV",
    ("site", "bess_kw"): "BESS",
    ("site", "control_limit_kw"): "control limit",
    ("site", "ev_available_kw"): "EV headroom",
    ("site", "price_per_mwh"): "price",
}
_COLORS = {
    "grid import": "#111111",
    "grid limit": "#d62728",
    "external limit": "#ff7f0e",
    "EV load": "#1f77b4",
    "base load": "#9c9c9c",
    "building load": "#8c564b",
    "PV": "#e8b10c",
    "BESS": "#2ca02c",
    "EV headroom": "#17becf",
    "price": "#9467bd",
}
_MARKER_SYMBOLS = ("triangle-down", "circle", "square", "diamond", "x", "star", "cross")
_BAND_COLORS = ("rgba(255,127,14,0.18)", "rgba(214,39,40,0.15)", "rgba(148,103,189,0.18)")

_BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 60, "t": 40, "b": 40},
    "hovermode": "x unified",
    "legend": {"orientation": "h", "y": -0.12},
    "template": "plotly_white",
}


def _name(s: Series) -> str:
    return _NAMES.get((s.entity, s.quantity)) or (
        s.quantity.removesuffix("_kw").replace("_", " ") if s.entity == "site"
        else f"{s.entity} {s.quantity.removesuffix('_kw').replace('_', ' ')}"
    )


def axis_text(ms: float) -> str:
    """Epoch ms as a plotly date-axis string (UTC)."""
    return pd.Timestamp(int(ms), unit="ms").strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def xaxis(span: tuple[float, float] | None, fixed: bool, **extra: Any) -> dict[str, Any]:
    """A date x axis: fixed to ``span`` (the run view's graphs all show one range)."""
    ax: dict[str, Any] = {"type": "date", **extra}
    if fixed and span is not None:
        ax["range"] = [axis_text(span[0]), axis_text(span[1])]
        ax["autorange"] = False
    else:
        ax["autorange"] = True
    return ax


def empty_figure(message: str, height: int = 300) -> Figure:
    """A figure without data that says why."""
    return {
        "data": [],
        "layout": {
            **_BASE_LAYOUT, "height": height,
            "xaxis": {"visible": False}, "yaxis": {"visible": False},
            "annotations": [{"text": message, "showarrow": False, "xref": "paper",
                             "yref": "paper", "x": 0.5, "y": 0.5, "font": {"size": 14}}],
        },
    }


def points(fig: Figure) -> int:
    """Number of points (or heatmap cells) a figure sends."""
    n = 0
    for trace in fig.get("data", []):
        for key in ("z", "y"):
            v = trace.get(key)
            if isinstance(v, dict) and "bdata" in v:
                shape = v.get("shape")
                if shape:
                    n += int(np.prod([int(s) for s in str(shape).split(",")]))
                else:
                    size = {"f8": 8, "f4": 4, "i4": 4, "i8": 8}.get(v["dtype"], 8)
                    n += len(v["bdata"]) * 3 // 4 // size
                break
            if isinstance(v, list | tuple):
                n += len(v)
                break
    return n


# --------------------------------------------------------------------------- site stack


def _role(s: Series) -> str:
    q = s.quantity
    if q.startswith("price"):
        return "price"
    if not q.endswith("_kw"):
        return "other"
    if q == "import_kw":
        return "import"
    if "limit" in q:
        return "limit"
    if "available" in q or "headroom" in q:
        return "headroom"
    finite = s.y[np.isfinite(s.y)]
    if len(finite) and finite.max() <= 0 < -finite.min():
        return "supply"
    if len(finite) and finite.min() < 0 < finite.max():
        return "mixed"
    return "load"


def _reduce_shared(series: list[Series], n_out: int) -> dict[tuple[str, str], tuple[
        np.ndarray, np.ndarray]]:
    """Downsample site series; series on the reference's sample times share its points.

    The reference is ``site import_kw`` (else the first series): its LTTB points are the
    points of every series sampled at the same times, so stacked areas line up and the
    import line's peaks are kept.
    """
    out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    if not series:
        return out
    ref = next((s for s in series if (s.entity, s.quantity) == ("site", "import_kw")),
               series[0])
    ok = np.isfinite(ref.y)
    idx = (lttb_indices(ref.x[ok], ref.y[ok], n_out) if ok.sum() > n_out
           else np.arange(int(ok.sum())))
    ref_idx = np.flatnonzero(ok)[idx]
    for s in series:
        if len(s.x) == len(ref.x) and len(s.x) and np.array_equal(s.x, ref.x):
            x, y = s.x[ref_idx], s.y[ref_idx]
            if len(s.x) <= n_out and not np.isfinite(s.y).all():
                x, y = s.x, s.y  # keep NaN gaps (an external limit only while active)
            out[(s.entity, s.quantity)] = (x, y)
        else:
            out[(s.entity, s.quantity)] = downsample_line(s.x, s.y, n_out)
    return out


def site_figure(
    view: RunView,
    events: Overlay | None = None,
    *,
    n_points: int = LINE_POINTS,
    revision: str = "",
    height: int = 440,
) -> Figure:
    """Site power stack, limits, price (secondary axis) and grid/domain events.

    Args:
        view: the run's data for the visible range.
        events: grid bands and event markers to draw (None: none).
        n_points: points per line.
        revision: plotly ``uirevision`` (keeps legend clicks across updates).
        height: figure height [px].
    """
    series = [s for s in view.site.values() if len(s.x)]
    if any(s.entity == "site" for s in series):
        # the site entity carries every device's contribution to the import; the
        # devices' own entities (pv, bess, meter ...) would count them twice
        series = [s for s in series if s.entity == "site"]
    drawable = [s for s in series if _role(s) != "other"]
    if not drawable:
        return empty_figure("no site-level series in this range", height)
    reduced = _reduce_shared(drawable, n_points)
    traces: list[dict[str, Any]] = []
    order = {"supply": 0, "load": 1, "mixed": 2, "headroom": 3, "limit": 4, "import": 5,
             "price": 6}
    unit = "kW"
    for s in sorted(drawable, key=lambda s: (order[_role(s)], s.entity, s.quantity)):
        role, name = _role(s), _name(s)
        x, y = reduced[(s.entity, s.quantity)]
        trace: dict[str, Any] = {
            "type": "scatter", "mode": "lines", "name": name, "x": typed(x), "y": typed(y),
            "hovertemplate": f"%{{y:.2f}} {s.unit}<extra>{name}</extra>",
            "line": {"width": 1.5},
        }
        color = _COLORS.get(name)
        if color:
            trace["line"]["color"] = color
        if role in ("load", "supply"):
            trace["stackgroup"] = role
            trace["line"]["width"] = 0.5
        elif role == "import":
            trace["line"]["width"] = 2.2
        elif role == "limit":
            trace["line"].update(dash="dash" if s.quantity == "limit_kw" else "dashdot",
                                 width=2, shape="hv")
        elif role == "headroom":
            trace["line"]["dash"] = "dot"
            trace["visible"] = "legendonly"
        elif role == "price":
            trace["yaxis"] = "y2"
            trace["line"].update(width=1, shape="hv")
            trace["opacity"] = 0.7
        traces.append(trace)
    price_unit = next((s.unit for s in drawable if _role(s) == "price"), "")
    shapes: list[dict[str, Any]] = []
    if events is not None:
        traces += _event_traces(events)
        shapes = _band_shapes(events)
    layout: dict[str, Any] = {
        **_BASE_LAYOUT,
        "title": {"text": "Site power"},
        "height": height,
        "uirevision": revision,
        "xaxis": xaxis(view.span, True),
        "yaxis": {"title": {"text": unit}, "zeroline": True},
        "yaxis3": {"overlaying": "y", "range": [0, 1], "visible": False,
                   "fixedrange": True},
        "shapes": shapes,
    }
    if price_unit:
        layout["yaxis2"] = {"title": {"text": f"price [{price_unit}]"}, "overlaying": "y",
                            "side": "right", "showgrid": False, "tickformat": ".1f"}
    return {"data": traces, "layout": layout}


def _event_traces(events: Overlay) -> list[dict[str, Any]]:
    """Markers along the top of the site graph: one trace per event kind, grid bands."""
    traces: list[dict[str, Any]] = []
    frame = events.markers
    if len(frame):
        kinds = frame["kind"].astype(str)
        for i, kind in enumerate(sorted(kinds.unique())):
            sub = frame[(kinds == kind).to_numpy(dtype=bool)]
            if len(sub) > MAX_MARKERS_PER_KIND:
                sub = sub.iloc[np.linspace(0, len(sub) - 1, MAX_MARKERS_PER_KIND).astype(int)]
            text = [
                f"{kind} · {src}<br>{str(p)[:160]}"
                for src, p in zip(sub["source"], sub["payload"], strict=True)
            ]
            traces.append({
                "type": "scatter", "mode": "markers", "name": kind, "yaxis": "y3",
                "x": typed(to_ms(sub["time"])), "y": typed(np.full(len(sub), 0.97 - 0.04 * (
                    i % 6))),
                "marker": {"symbol": _MARKER_SYMBOLS[i % len(_MARKER_SYMBOLS)], "size": 8},
                "hovertext": text, "hoverinfo": "text", "legendgroup": "events",
            })
    if events.bands:
        xs = [to_ms(pd.DatetimeIndex([b[0]]))[0] for b in events.bands]
        traces.append({
            "type": "scatter", "mode": "markers", "name": "grid events", "yaxis": "y3",
            "x": typed(np.asarray(xs)), "y": typed(np.full(len(xs), 0.995)),
            "marker": {"symbol": "square", "size": 9, "color": "#ff7f0e"},
            "hovertext": [f"{b[3]}<br>{b[0]:%Y-%m-%d %H:%M} \N{EN DASH} {b[1]:%Y-%m-%d %H:%M}"
                          for b in events.bands],
            "hoverinfo": "text", "legendgroup": "events",
        })
    return traces


def _band_shapes(events: Overlay) -> list[dict[str, Any]]:
    kinds = sorted({b[2] for b in events.bands})
    shapes = []
    for start, end, kind, _label in events.bands:
        color = _BAND_COLORS[kinds.index(kind) % len(_BAND_COLORS)]
        x0, x1 = axis_text(to_ms(pd.DatetimeIndex([start]))[0]), axis_text(
            to_ms(pd.DatetimeIndex([end]))[0])
        if end > start:
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1,
                           "y0": 0, "y1": 1, "fillcolor": color, "line": {"width": 0},
                           "layer": "below"})
        else:
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x0, "x1": x0,
                           "y0": 0, "y1": 1, "line": {"color": "#ff7f0e", "dash": "dot",
                                                      "width": 1.5}})
    return shapes


# --------------------------------------------------------------------------- EVSEs


def heatmap_figure(view: RunView, *, revision: str = "", max_cols: int = 1000) -> Figure:
    """EVSE x time heatmap of ``power_kw``, binned in time by the mean."""
    if not len(view.power.t) or not view.evses:
        return empty_figure("no EVSE power in this range")
    hm = bin_mean(view.power.t, view.power.row, view.power.value, view.evses, max_cols,
                  view.span)
    height = int(min(900, max(300, 110 + 13 * len(hm.entities))))
    per = f"mean over {hm.bin_s:g} s" if hm.bin_s else ""
    return {
        "data": [{
            "type": "heatmap", "x": typed(hm.x), "y": hm.entities,
            "z": typed(hm.z, "f4"), "colorscale": "Viridis", "zmin": 0,
            "colorbar": {"title": {"text": "kW"}},
            "hovertemplate": "%{y}<br>%{x}<br>%{z:.2f} kW<extra></extra>",
        }],
        "layout": {
            **_BASE_LAYOUT, "hovermode": "closest",
            "title": {"text": f"EVSE power ({len(hm.entities)} EVSEs, {per})"},
            "height": height, "uirevision": revision,
            "xaxis": xaxis(view.span, True),
            "yaxis": {"autorange": "reversed", "type": "category",
                      "showticklabels": len(hm.entities) <= 60},
        },
    }


def soc_figure(view: RunView, *, revision: str = "", total_points: int = SOC_POINTS_TOTAL,
               n_points: int = LINE_POINTS) -> Figure:
    """One SoC line per EVSE (the plugged-in vehicle's), broken between sessions.

    Each line gets ``total_points / n_lines`` points (between 100 and ``n_points``).
    """
    lines = [s for s in view.soc.values() if len(s.x)]
    if not lines:
        return empty_figure("no vehicle SoC in this range")
    per = int(min(n_points, max(100, total_points // len(lines))))
    traces = []
    for s in sorted(lines, key=lambda s: view.evses.index(s.entity)
                    if s.entity in view.evses else 0):
        x, y = downsample_line(s.x, s.y * 100.0, per, gap_threshold(s.x))
        traces.append({
            # SVG: faster than WebGL for a few hundred points per line, and WebGL is
            # software-rendered on machines without a GPU.
            "type": "scatter", "mode": "lines", "name": s.entity, "x": typed(x),
            "y": typed(y, "f4"), "line": {"width": 1},
            "hovertemplate": "%{y:.1f} %<extra>" + s.entity + "</extra>",
        })
    return {
        "data": traces,
        "layout": {
            **_BASE_LAYOUT, "hovermode": "closest",
            "title": {"text": "Vehicle SoC"}, "height": 320, "uirevision": revision,
            "showlegend": len(traces) <= 16,
            "xaxis": xaxis(view.span, True),
            "yaxis": {"title": {"text": "SoC [%]"}, "range": [0, 100]},
        },
    }


# --------------------------------------------------------------------------- compare


@dataclass
class CompareSeries:
    """One series of both runs for the compare graphs.

    Attributes:
        label_a: name of run A.
        label_b: name of run B.
        unit: the quantity's unit.
        a: run A's samples (x [ms], y).
        b: run B's samples.
        grid: aligned bin ends [ms].
        residual: ``b - a`` per bin, NaN where a side has no sample.
    """

    label_a: str
    label_b: str
    unit: str
    a: tuple[np.ndarray, np.ndarray]
    b: tuple[np.ndarray, np.ndarray]
    grid: np.ndarray
    residual: np.ndarray


def overlay_figure(cs: CompareSeries, title: str, span: tuple[float, float] | None,
                   fixed: bool, *, revision: str = "", n_points: int = LINE_POINTS) -> Figure:
    """Run A and run B of one series, overlaid."""
    traces = []
    for label, (x, y), color in ((cs.label_a, cs.a, "#1f77b4"), (cs.label_b, cs.b, "#d62728")):
        xs, ys = downsample_line(x, y, n_points)
        traces.append({"type": "scatter", "mode": "lines", "name": label, "x": typed(xs),
                       "y": typed(ys), "line": {"color": color, "width": 1.5},
                       "hovertemplate": f"%{{y:.3f}} {cs.unit}<extra>{label}</extra>"})
    return {"data": traces, "layout": {
        **_BASE_LAYOUT, "title": {"text": title}, "height": 340, "uirevision": revision,
        "xaxis": xaxis(span, fixed), "yaxis": {"title": {"text": cs.unit}}}}


def residual_figure(cs: CompareSeries, periods: pd.DataFrame, tolerance: float,
                    span: tuple[float, float] | None, fixed: bool, *, revision: str = "",
                    n_points: int = LINE_POINTS) -> Figure:
    """Residual ``B - A`` over time, ``±tolerance`` lines, exceedance periods shaded."""
    xs, ys = downsample_line(cs.grid, cs.residual, n_points)
    traces: list[dict[str, Any]] = [{
        "type": "scatter", "mode": "lines", "name": f"{cs.label_b} \N{MINUS SIGN} {cs.label_a}",
        "x": typed(xs), "y": typed(ys), "line": {"color": "#444", "width": 1.3},
        "hovertemplate": f"%{{y:.3f}} {cs.unit}<extra>residual</extra>"}]
    shapes: list[dict[str, Any]] = []
    for sign in (1, -1):
        shapes.append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1,
                       "y0": sign * tolerance, "y1": sign * tolerance,
                       "line": {"color": "#d62728", "dash": "dot", "width": 1}})
    for start, end in zip(periods.get("start", []), periods.get("end", []), strict=True):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper",
                       "x0": axis_text(to_ms(pd.DatetimeIndex([start]))[0]),
                       "x1": axis_text(to_ms(pd.DatetimeIndex([end]))[0]),
                       "y0": 0, "y1": 1, "fillcolor": "rgba(214,39,40,0.2)",
                       "line": {"width": 0}, "layer": "below"})
        if len(shapes) > 500:
            break
    return {"data": traces, "layout": {
        **_BASE_LAYOUT, "title": {"text": f"Residual (|r| > {tolerance:g} {cs.unit} shaded: "
                                          f"{len(periods)} periods)"},
        "height": 300, "uirevision": revision, "shapes": shapes,
        "xaxis": xaxis(span, fixed), "yaxis": {"title": {"text": cs.unit}}}}
