"""Benchmark: how fast the dashboard's run view opens on a large run.

Builds (once, cached under ``$MIGRID_BENCH_DIR`` or the temp dir) a synthetic run folder
of one week of 100 AC EVSEs at a 60 s step with ``twin.recorder.TraceWriter`` and
``EventWriter``: five quantities per EVSE (power, energy, offered current, and set-point
and SoC while a vehicle is plugged in), the site's import, EV load, base load, limit, EV
headroom and price, an external limit while two OpenADR events are active, and the event
log (sessions, set-points, the two grid events): about 3.7 million trace rows, 1 million
of them EVSE power. Then measures:

* server side: :func:`dashboards.page_run.render` (read + every figure of the run view:
  site stack, EVSE heatmap, SoC lines, KPI cards), the event log's first page and the JSON
  of the figures, for the full week and a one-day zoom, cold (caches cleared) and warm;
* in Chromium (when ``/usr/bin/chromium`` is there): page load until all three graphs are
  drawn with data, the HTTP round trip of the figure callback, and a one-day zoom.

    python bench/dash_load.py                 # build if needed, measure, print tables
    python bench/dash_load.py --rebuild       # build the run folder again
    python bench/dash_load.py --no-browser    # server side only
    python bench/dash_load.py --json out.json # also the measurements as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin.recorder import EventWriter, TraceWriter  # noqa: E402

START = datetime(2019, 9, 9, 7, 0, tzinfo=UTC)
DAYS = 7
STEP_S = 60
N_EVSE = 100
LIMIT_KW = 900.0
RUN_NAME = "dash_load_week_100"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def cache_dir() -> Path:
    base = os.environ.get("MIGRID_BENCH_DIR") or os.path.join(tempfile.gettempdir(),
                                                             "migrid-bench")
    return Path(base)


# --------------------------------------------------------------------------- the run


def _sessions(rng: np.random.Generator, n_steps: int) -> list[tuple[int, int, float, float]]:
    """(evse, arrive step, depart step, arrival SoC, capacity kWh) per session."""
    out = []
    steps_per_day = 86_400 // STEP_S
    for evse in range(N_EVSE):
        for day in range(DAYS):
            for _ in range(int(rng.integers(1, 3))):
                arrive = day * steps_per_day + int(rng.integers(0, steps_per_day))
                stay = int(rng.integers(90, 600))
                depart = min(arrive + stay, n_steps - 1)
                out.append((evse, arrive, depart, float(rng.uniform(0.1, 0.6)),
                            float(rng.uniform(40, 90))))
    out.sort()
    # One vehicle at a time per EVSE: drop overlapping sessions.
    kept: list[tuple[int, int, float, float]] = []
    busy_until: dict[int, int] = {}
    for evse, arrive, depart, soc0, cap in out:
        if arrive > busy_until.get(evse, -1):
            kept.append((evse, arrive, depart, soc0, cap))  # type: ignore[arg-type]
            busy_until[evse] = depart
    return kept  # type: ignore[return-value]


def build_run(folder: Path, seed: int = 7) -> dict[str, Any]:
    """Write the synthetic week into ``folder`` (replaced); returns row counts."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n_steps = DAYS * 86_400 // STEP_S
    evse_ids = [f"CS{i // 2 + 1:03d}/{i % 2 + 1}" for i in range(N_EVSE)]
    sessions = _sessions(rng, n_steps)

    plugged = np.zeros((n_steps, N_EVSE), dtype=bool)
    soc = np.full((n_steps, N_EVSE), np.nan)
    power = np.zeros((n_steps, N_EVSE))
    events: list[tuple[int, str, str, dict[str, Any]]] = []
    for evse, arrive, depart, soc0, cap in sessions:
        plugged[arrive:depart, evse] = True
        level = soc0
        for k in range(arrive, depart):
            p = 22.0 if level < 0.8 else 22.0 * max(0.05, (1.0 - level) / 0.2)
            if level >= 0.9:
                p = 0.0
            power[k, evse] = p
            level = min(1.0, level + p * STEP_S / 3600.0 * 0.92 / cap)
            soc[k, evse] = level
        sid = f"{evse_ids[evse]}-{arrive}"
        events.append((arrive, evse_ids[evse].split("/")[0], "session.arrived",
                       {"session": sid, "soc": round(soc0, 3)}))
        events.append((arrive, "csms", "transaction.started", {"evse": evse_ids[evse],
                                                               "session": sid}))
        events.append((depart, evse_ids[evse].split("/")[0], "session.departed",
                       {"session": sid}))
    # DLM: scale EV power down to the headroom.
    t_h = np.arange(n_steps) * STEP_S / 3600.0
    base = 120.0 + 60.0 * np.sin(2 * np.pi * (t_h - 8) / 24.0) + rng.normal(0, 4, n_steps)
    grid_events = [(2 * 1440 + 17 * 60, 3 * 60, 500.0), (4 * 1440 + 18 * 60, 2 * 60, 450.0)]
    external = np.full(n_steps, np.nan)
    for k0, dur, lim in grid_events:
        external[k0:k0 + dur] = lim
        begin = START + timedelta(seconds=k0 * STEP_S)
        events.append((k0, "vtn", "openadr.event", {
            "event": f"ev-{k0}", "start": begin.isoformat(),
            "end": (begin + timedelta(seconds=dur * STEP_S)).isoformat(),
            "limit_kw": lim}))
    limit = np.minimum(LIMIT_KW, np.nan_to_num(external, nan=np.inf))
    available = np.maximum(limit - 5.0 - base, 0.0)
    demand = power.sum(axis=1)
    scale = np.where(demand > available, available / np.maximum(demand, 1e-9), 1.0)
    power *= scale[:, None]
    for k in np.flatnonzero(np.abs(np.diff(scale)) > 0.01)[:20_000]:
        events.append((int(k) + 1, "dlm", "dlm.setpoint", {"scale": round(float(scale[k + 1]),
                                                                          4)}))
    energy = np.cumsum(power, axis=0) * STEP_S / 3600.0
    offered = np.where(plugged, 32.0 * scale[:, None], 0.0)
    ev_total = power.sum(axis=1)
    hourly_price = 35 + 25 * np.sin(2 * np.pi * (np.arange(DAYS * 24) - 6) / 24) \
        + rng.normal(0, 5, DAYS * 24)
    price = hourly_price[(np.arange(n_steps) * STEP_S) // 3600]

    traces = TraceWriter(folder / "traces.parquet", chunk_rows=500_000,
                         flush_interval_s=1e9)
    for k in range(n_steps):
        t = START + timedelta(seconds=(k + 1) * STEP_S)
        rows: list[tuple[str, str, float, str]] = []
        for i, eid in enumerate(evse_ids):
            rows.append((eid, "power_kw", power[k, i], "kW"))
            rows.append((eid, "energy_kwh", energy[k, i], "kWh"))
            rows.append((eid, "offered_current_a", offered[k, i], "A"))
            if plugged[k, i]:
                rows.append((eid, "setpoint_a", offered[k, i], "A"))
                rows.append((eid, "soc", soc[k, i], "1"))
        rows += [
            ("site", "import_kw", ev_total[k] + base[k], "kW"),
            ("site", "ev_power_kw", ev_total[k], "kW"),
            ("site", "base_load_kw", base[k], "kW"),
            ("site", "limit_kw", LIMIT_KW, "kW"),
            ("site", "ev_available_kw", available[k], "kW"),
            ("site", "price_per_mwh", price[k], "EUR/MWh"),
        ]
        if not np.isnan(external[k]):
            rows.append(("site", "external_limit_kw", external[k], "kW"))
        traces.add_many(t, rows)
    traces.close()

    ev_writer = EventWriter(folder / "events.parquet", flush_interval_s=1e9)
    events.sort(key=lambda e: e[0])
    for k, source, kind, payload in events:
        ev_writer.sink(START + timedelta(seconds=k * STEP_S), source, kind, payload)
    ev_writer.close()

    scenario = {
        "name": RUN_NAME, "kind": "twin",
        "site": {"grid_limit_kw": LIMIT_KW},
        "stations": [{"prefix": "CS", "count": N_EVSE // 2, "evses": 2, "kind": "ac_22kw"}],
        "run": {"start": START.isoformat(), "duration_h": DAYS * 24, "step_s": STEP_S,
                "seed": seed},
    }
    (folder / "scenario.yaml").write_text(yaml.safe_dump(scenario), encoding="utf-8")
    import_kw = ev_total + base
    kpis = {
        "scenario": RUN_NAME, "seed": seed,
        "kpis": {
            "energy_delivered_kwh": {"value": round(float(ev_total.sum()) / 60, 6),
                                     "unit": "kWh"},
            "peak_import_kw": {"value": round(float(import_kw.max()), 6), "unit": "kW"},
            "peak_ev_power_kw": {"value": round(float(ev_total.max()), 6), "unit": "kW"},
            "limit_violations": {"value": 0, "unit": "1"},
            "sessions_completed": {"value": len(sessions), "unit": "1"},
            "energy_cost": {"value": f"{float((import_kw * price).sum()) / 60e3:.2f}",
                            "unit": "EUR"},
        },
        "wall": {},
    }
    (folder / "kpis.json").write_text(json.dumps(kpis, indent=2, sort_keys=True),
                                      encoding="utf-8")
    now = datetime.now(UTC).isoformat()
    (folder / "status.json").write_text(json.dumps(
        {"state": "finished", "started_at": now, "updated_at": now, "finished_at": now}),
        encoding="utf-8")
    return {"trace_rows": traces.rows_written, "event_rows": ev_writer.rows_written,
            "sessions": len(sessions)}


def ensure_run(rebuild: bool = False) -> Path:
    """The cached benchmark run folder, built when missing or when asked."""
    folder = cache_dir() / "runs" / RUN_NAME
    if rebuild or not (folder / "kpis.json").is_file():
        t0 = time.perf_counter()
        counts = build_run(folder)
        print(f"built {folder} in {time.perf_counter() - t0:.1f} s: {counts}", flush=True)
    return folder


# --------------------------------------------------------------------------- server side


def _clear_caches() -> None:
    """Forget the dashboard's per-run caches (catalog), for a cold measurement."""
    from dashboards import series

    series._CATALOGS = series.LruCache(32)


def measure_server(folder: Path, repeats: int = 3) -> list[dict[str, Any]]:
    """Time :func:`dashboards.page_run.render` and the event log's first page."""
    from plotly.io.json import to_json_plotly

    from dashboards.event_log import event_page
    from dashboards.page_run import render
    from twin.run_folder import RunFolder

    day = (START + timedelta(days=2), START + timedelta(days=3))
    rows = []
    for label, (start, end) in (("full week", (None, None)), ("one-day zoom", day)):
        for attempt in range(repeats + 1):
            cold = attempt == 0
            if cold:
                _clear_caches()
            rf = RunFolder(folder)
            t0 = time.perf_counter()
            figs = render(rf, start, end)
            t1 = time.perf_counter()
            page = event_page(rf, "", 0, 15, start, end)
            t2 = time.perf_counter()
            body = to_json_plotly([figs.site, figs.heatmap, figs.soc])
            t3 = time.perf_counter()
            rows.append({
                "range": label, "run": "cold" if cold else f"warm {attempt}",
                **{k: figs.timings[k] for k in ("read", "events", "site", "heatmap", "soc")},
                "figures": t1 - t0, "event page": t2 - t1, "json": t3 - t2,
                "total": t3 - t0, "points": sum(figs.points.values()),
                "bytes": len(body), "event rows": page.total,
            })
    return rows


# --------------------------------------------------------------------------- browser


def measure_browser(folder: Path) -> list[dict[str, Any]]:
    """Open the run view in Chromium; time the first render and a one-day zoom."""
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from dashboards.app import create_dash
    from dashboards.catalog import RunCatalog

    _clear_caches()
    app = create_dash(RunCatalog(folder.parent))
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/run/{folder.name}"
    drawn = """() => ['run-site', 'run-heatmap', 'run-soc'].every(id => {
        const g = document.querySelector('#' + id + ' .js-plotly-plot');
        return g && g._fullData && g._fullData.length && g._fullData.every(
            t => (t.type === 'heatmap' ? (t.z && t.z.length) : (t.x && t.x.length)) > 0); })"""
    zoomed = """(lo) => ['run-site', 'run-heatmap', 'run-soc'].every(id => {
        const g = document.querySelector('#' + id + ' .js-plotly-plot');
        const r = g && g.layout.xaxis.range; return r && String(r[0]).startsWith(lo); })"""
    rows: list[dict[str, Any]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            trips: list[tuple[float, float, int]] = []
            started: dict[Any, float] = {}

            def on_request(req: Any) -> None:
                if "_dash-update-component" in req.url and "run-site.figure" in (
                        req.post_data or ""):
                    started[req] = time.perf_counter()

            def on_finished(req: Any) -> None:
                if req in started:
                    end = time.perf_counter()
                    resp = req.response()
                    size = int(resp.headers.get("content-length", 0)) if resp else 0
                    trips.append((started.pop(req), end, size))

            page.on("request", on_request)
            page.on("requestfinished", on_finished)
            for label in ("first open (cold server)", "second open (warm)"):
                trips.clear()
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_function(drawn, timeout=60_000)
                t1 = time.perf_counter()
                trip = trips[0] if trips else (t0, t0, 0)
                rows.append({"what": label, "page load to all graphs drawn": t1 - t0,
                             "figure callback round trip": trip[1] - trip[0],
                             "response bytes": trip[2]})
            trips.clear()
            lo = (START + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
            hi = (START + timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
            t0 = time.perf_counter()
            page.evaluate(
                "([lo, hi]) => Plotly.relayout(document.querySelector('#run-site "
                ".js-plotly-plot'), {'xaxis.range[0]': lo, 'xaxis.range[1]': hi})", [lo, hi])
            page.wait_for_function(zoomed, arg=lo[:13], timeout=60_000)
            page.wait_for_function(drawn, timeout=60_000)
            t1 = time.perf_counter()
            trip = trips[0] if trips else (t0, t0, 0)
            rows.append({"what": "one-day zoom", "page load to all graphs drawn": t1 - t0,
                         "figure callback round trip": trip[1] - trip[0],
                         "response bytes": trip[2]})
            browser.close()
    finally:
        server.shutdown()
    return rows


def _table(rows: list[dict[str, Any]], ms: set[str]) -> str:
    heads = list(rows[0])
    cells = [[(f"{r[h] * 1000:,.0f}" if h in ms else
               f"{r[h]:,}" if isinstance(r[h], int) else str(r[h])) for h in heads]
             for r in rows]
    names = [h + (" [ms]" if h in ms else "") for h in heads]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    line = "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rebuild", action="store_true", help="build the run folder again")
    p.add_argument("--no-browser", action="store_true", help="server-side figures only")
    p.add_argument("--repeats", type=int, default=3, help="warm repeats per range")
    p.add_argument("--json", type=Path, help="also write the measurements as JSON to this file")
    args = p.parse_args()
    folder = ensure_run(args.rebuild)
    from twin.run_folder import RunFolder

    rf = RunFolder(folder)
    n_rows = sum(f.metadata.num_rows for f in [__import__("pyarrow.parquet").parquet
                                               .ParquetFile(folder / "traces.parquet")])
    print(f"run folder {folder}: {n_rows:,} trace rows, {len(rf.events()):,} events, "
          f"{N_EVSE} EVSEs, {DAYS} days at {STEP_S} s, {os.cpu_count()} CPUs")
    print()
    print("Server side: render() = read + figures of the run view; event log first page; "
          "JSON of the three figures")
    ms = {"read", "events", "site", "heatmap", "soc", "figures", "event page", "json",
          "total", "page load to all graphs drawn", "figure callback round trip"}
    result: dict[str, Any] = {"trace_rows": n_rows, "evses": N_EVSE, "days": DAYS,
                              "server": measure_server(folder, args.repeats), "browser": None}
    print(_table(result["server"], ms))
    try:
        if args.no_browser:
            return
        if not Path(CHROMIUM).exists():
            print("\n(no Chromium at /usr/bin/chromium: browser figures skipped)")
            return
        print()
        print("In Chromium (headless), app served by werkzeug on 127.0.0.1")
        result["browser"] = measure_browser(folder)
        print(_table(result["browser"], ms))
    finally:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
