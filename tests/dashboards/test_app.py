"""The dashboard in a real browser (headless Debian Chromium driven by Playwright).

The app is served on 127.0.0.1 on a free port from a background thread; every wait is
bounded. Screenshots of each view go to a pytest temporary folder; their paths are
printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from dashboards.app import create_dash
from dashboards.catalog import RunCatalog
from twin.recorder import EventWriter, TraceWriter

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian Chromium")

#: Points (or heatmap cells) per trace of a plotly graph in the page, by trace name.
GRAPH_POINTS_JS = """
(id) => {
  const g = document.querySelector('#' + id + ' .js-plotly-plot');
  if (!g || !g._fullData) { return null; }
  return g._fullData.map(t => ({
    name: t.name, type: t.type,
    n: t.type === 'heatmap' ? (t.z ? t.z.length * (t.z[0] ? t.z[0].length : 0) : 0)
                            : (t.x ? t.x.length : 0),
    rows: t.type === 'heatmap' && t.z ? t.z.length : null,
    x0: t.x && t.x.length ? t.x[0] : null,
  }));
}
"""

TABLE_JS = """
(id) => {
  const table = document.querySelector('#' + id + ' table');
  if (!table) { return null; }
  const heads = Array.from(table.querySelectorAll('thead tr th, tr:first-child th'))
    .map(th => th.innerText.trim());
  const rows = Array.from(table.querySelectorAll('tbody tr')).filter(tr => tr.querySelector('td'));
  return {heads: heads, rows: rows.map(tr => Array.from(tr.querySelectorAll('td'))
    .map(td => td.innerText.trim()))};
}
"""


# --------------------------------------------------------------------------- serving


@contextlib.contextmanager
def serve(wsgi_app) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 on a free port in a daemon thread; yield its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture(scope="module")
def base_url(runs_root: Path) -> Iterator[str]:
    app = create_dash(RunCatalog(runs_root))
    with serve(app.server) as url:
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def screenshot(page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def wait_graph(page, graph_id: str, min_traces: int = 1, timeout: float = 15_000) -> list:
    page.wait_for_function(
        "([js, id, k]) => { const d = eval(js)(id); return d && d.length >= k "
        "&& d.every(t => t.n > 0); }",
        arg=[GRAPH_POINTS_JS, graph_id, min_traces], timeout=timeout,
    )
    return page.evaluate(GRAPH_POINTS_JS, graph_id)


# --------------------------------------------------------------------------- views


def test_run_list_shows_both_runs_and_links_to_compare(page, base_url, shots) -> None:
    page.goto(base_url + "/")
    page.wait_for_selector("#runs-table td")
    table = page.evaluate(TABLE_JS, "runs-table")
    text = json.dumps(table["rows"])
    assert "morning_a" in text and "morning_b" in text
    states = {r[table["heads"].index("state")] for r in table["rows"]}
    assert states == {"finished"}
    # The run link goes to the run view.
    href = page.get_attribute("#runs-table a[href*='/run/morning_a']", "href")
    assert href == "/run/morning_a"
    # Selecting two rows enables the compare link.
    boxes = page.locator("#runs-table td.dash-select-cell input")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.wait_for_function(
        "() => !document.querySelector('#runs-compare').className.includes('disabled')",
        timeout=5_000)
    link = page.get_attribute("#runs-compare", "href")
    assert link.startswith("/compare?") and "morning_a" in link and "morning_b" in link
    screenshot(page, shots, "run_list")


def test_run_view_graphs_render_with_data_and_share_zoom(page, base_url, shots,
                                                         run_a: Path) -> None:
    page.goto(base_url + "/run/morning_a")
    site = {t["name"]: t for t in wait_graph(page, "run-site", 5)}
    heat = wait_graph(page, "run-heatmap")
    soc = wait_graph(page, "run-soc")
    # 6 h at 60 s: every site sample is sent (fewer than 2,000).
    assert site["grid import"]["n"] == 360
    assert site["grid limit"]["n"] == 360 and site["price"]["n"] == 360
    assert "EV load" in site and "base load" in site
    assert any(name.startswith("session.") for name in site)  # domain events as markers
    assert heat[0]["type"] == "heatmap" and heat[0]["rows"] == 8
    assert heat[0]["n"] == 8 * 360
    assert len(soc) == 8 and all(t["type"] == "scatter" for t in soc)
    # KPI cards carry the values of kpis.json.
    kpis = json.loads((run_a / "kpis.json").read_text())["kpis"]
    cards = page.inner_text("#run-kpis")
    assert "Peak grid import" in cards
    assert f"{kpis['peak_import_kw']['value']:.4g} kW" in cards
    assert f"{kpis['energy_cost']['value']} EUR" in cards
    # Event log: server-side pages and filter.
    page.wait_for_selector("#run-events td")
    assert "238 events in the run" in page.inner_text("#run-events-info")
    page.fill("#run-events th.dash-filter[data-dash-column=kind] input", "session")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#run-events-info').innerText.includes('matching')",
        timeout=5_000)
    kinds = {r[2] for r in page.evaluate(TABLE_JS, "run-events")["rows"]}
    assert kinds and all(k.startswith("session.") for k in kinds)
    screenshot(page, shots, "run_view")

    # Zoom the site graph to one hour: every graph follows, data read again for the hour.
    page.evaluate(
        "() => Plotly.relayout(document.querySelector('#run-site .js-plotly-plot'), "
        "{'xaxis.range[0]': '2019-09-10 16:00:00', 'xaxis.range[1]': '2019-09-10 17:00:00'})")
    page.wait_for_function(
        """() => ['run-heatmap', 'run-soc'].every(id => {
             const g = document.querySelector('#' + id + ' .js-plotly-plot');
             const r = g && g.layout.xaxis.range;
             return r && String(r[0]).startsWith('2019-09-10 16:00'); })""",
        timeout=10_000)
    page.wait_for_function(
        "([js]) => { const d = eval(js)('run-heatmap'); return d && d[0].n === 8 * 61; }",
        arg=[GRAPH_POINTS_JS], timeout=10_000)
    assert "showing 2019-09-10 16:00" in page.inner_text("#run-range-text")
    screenshot(page, shots, "run_view_zoomed")


def _expected_deltas(a: dict, b: dict) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """KPI name -> (A, B, B - A) as exact decimals of the values written in the JSON."""
    out = {}
    for section in ("kpis", "wall"):
        for name in set(a.get(section, {})) & set(b.get(section, {})):
            va = Decimal(str(a[section][name]["value"]))
            vb = Decimal(str(b[section][name]["value"]))
            out[name] = (va, vb, vb - va)
    return out


def test_compare_view_shows_kpi_deltas_of_the_two_kpis_json(page, base_url, shots,
                                                            run_a: Path, run_b: Path) -> None:
    page.goto(base_url + "/compare?a=morning_a&b=morning_b")
    page.wait_for_selector("#cmp-kpis td")
    table = page.evaluate(TABLE_JS, "cmp-kpis")
    heads = table["heads"]
    col = {h: heads.index(h) for h in heads}
    shown = {r[col["KPI"]]: r for r in table["rows"]}
    expected = _expected_deltas(json.loads((run_a / "kpis.json").read_text()),
                                json.loads((run_b / "kpis.json").read_text()))
    assert set(shown) == set(expected)
    delta_col = next(h for h in heads if h.startswith("\N{GREEK CAPITAL LETTER DELTA} (B"))
    for name, (va, vb, delta) in expected.items():
        row = shown[name]
        assert Decimal(row[col["A"]]) == va, name
        assert Decimal(row[col["B"]]) == vb, name
        assert Decimal(row[col[delta_col]]) == delta, (name, row[col[delta_col]], delta)
    # Money is shown as the decimal strings of kpis.json.
    assert shown["energy_cost"][col["A"]] == json.loads(
        (run_a / "kpis.json").read_text())["kpis"]["energy_cost"]["value"]

    page.wait_for_function(
        "() => document.querySelector('#cmp-statement').innerText.startsWith('aligned on')",
        timeout=15_000)
    statement = page.inner_text("#cmp-statement")
    assert "morning_a" in statement and "morning_b" in statement
    overlay = wait_graph(page, "cmp-overlay", 2)
    assert {t["name"] for t in overlay} == {"morning_a", "morning_b"}
    wait_graph(page, "cmp-residual", 1)
    page.wait_for_selector("#cmp-metrics td")
    metrics = page.evaluate(TABLE_JS, "cmp-metrics")
    assert "import_kw" in {r[0] for r in metrics["rows"]}
    assert "periods with |B" in page.inner_text("#cmp-exceed")
    screenshot(page, shots, "compare")


# --------------------------------------------------------------------------- live


STEP = timedelta(seconds=60)
T0 = datetime(2024, 1, 8, 6, 0, tzinfo=UTC)


def _write_steps(writer: TraceWriter, first: int, count: int) -> None:
    for k in range(first, first + count):
        t = T0 + (k + 1) * STEP
        ev = 7.0 + (k % 5)
        writer.add_many(t, [
            ("CA001/1", "power_kw", ev, "kW"), ("CA001/1", "soc", 0.2 + 0.01 * k, "1"),
            ("CA001/1", "offered_current_a", 16.0, "A"),
            ("site", "import_kw", ev + 3.0, "kW"), ("site", "ev_power_kw", ev, "kW"),
            ("site", "base_load_kw", 3.0, "kW"), ("site", "limit_kw", 40.0, "kW"),
            ("site", "price_per_mwh", 55.0, "EUR/MWh"),
        ])
    writer.flush()


def _site_points(page) -> int:
    data = page.evaluate(GRAPH_POINTS_JS, "run-site") or []
    return next((t["n"] for t in data if t["name"] == "grid import"), 0)


def test_live_view_follows_a_run_being_written(page, tmp_path, shots) -> None:
    root = tmp_path / "runs"
    folder = root / "live_demo"
    folder.mkdir(parents=True)
    (folder / "scenario.yaml").write_text(yaml.safe_dump({
        "name": "live_demo",
        "run": {"start": T0.isoformat(), "duration_h": 2, "step_s": 60, "seed": 1}}))
    traces = TraceWriter(folder / "traces.parquet", flush_interval_s=3600)
    events = EventWriter(folder / "events.parquet", flush_interval_s=3600)
    events.sink(T0, "vtn", "openadr.event", {"start": (T0 + 5 * STEP).isoformat(),
                                             "duration": "PT10M", "limit_kw": 20})
    events.commit_step()
    events.flush()
    _write_steps(traces, 0, 10)

    app = create_dash(RunCatalog(root))
    try:
        with serve(app.server) as url:
            page.goto(url + "/live/live_demo")
            wait_graph(page, "run-site", 3)
            assert _site_points(page) == 10
            assert "running" in page.inner_text("#run-header")
            for first in (10, 15):
                _write_steps(traces, first, 5)
                flushed = time.monotonic()
                page.wait_for_function(
                    "([js, n]) => { const d = eval(js)('run-site'); return d && "
                    "d.some(t => t.name === 'grid import' && t.n === n); }",
                    arg=[GRAPH_POINTS_JS, first + 5], timeout=2_000)
                lag = time.monotonic() - flushed
                print(f"live view showed rows {first}..{first + 4} {lag:.2f} s after flush")
                assert lag < 2.0
            # The heatmap follows too.
            heat = page.evaluate(GRAPH_POINTS_JS, "run-heatmap")
            assert heat[0]["n"] == 20
            screenshot(page, shots, "live_view")

            # The run finishes: final files, KPIs, status; the page shows them and stops.
            traces.close()
            events.close()
            (folder / "kpis.json").write_text(json.dumps(
                {"kpis": {"peak_import_kw": {"value": 14.0, "unit": "kW"}}}))
            now = datetime.now(UTC).isoformat()
            (folder / "status.json").write_text(json.dumps(
                {"state": "finished", "started_at": now, "updated_at": now,
                 "finished_at": now}))
            page.wait_for_function(
                "() => document.querySelector('#run-header').innerText.includes('finished')",
                timeout=3_000)
            assert "Peak grid import" in page.inner_text("#run-kpis")
            stats = page.inner_text("#run-stats")
            assert "refreshing" not in stats
            n_calls = _count_updates(page, seconds=2.5)
            assert n_calls == 0, "the page still refreshes a finished run"
    finally:
        with contextlib.suppress(Exception):
            traces.close()
            events.close()
        shutil.rmtree(root, ignore_errors=True)


def _count_updates(page, seconds: float) -> int:
    """Callback requests of the run view's figures during ``seconds``."""
    seen: list[str] = []

    def on_request(req) -> None:
        if "_dash-update-component" in req.url and "run-site.figure" in (req.post_data or ""):
            seen.append(req.url)

    page.on("request", on_request)
    page.wait_for_timeout(seconds * 1000)
    page.remove_listener("request", on_request)
    return len(seen)


# --------------------------------------------------------------------------- mounted


def test_mounted_under_a_prefix_in_fastapi(page, runs_root: Path, shots) -> None:
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from a2wsgi import WSGIMiddleware
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/api/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    dash_app = create_dash(RunCatalog(runs_root), requests_pathname_prefix="/dash/")
    api.mount("/dash", WSGIMiddleware(dash_app.server))
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        page.goto(base + "/dash/")
        page.wait_for_selector("#runs-table td")
        href = page.get_attribute("#runs-table a[href*='morning_b']", "href")
        assert href == "/dash/run/morning_b"
        page.click("#runs-table a[href='/dash/run/morning_b']")
        page.wait_for_url("**/dash/run/morning_b")
        site = {t["name"]: t for t in wait_graph(page, "run-site", 5)}
        assert site["grid import"]["n"] == 360
        screenshot(page, shots, "mounted_run_view")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
