"""Read API (dashboards.api) over a real HTTP server on two real runs and a live one."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn
import yaml
from fastapi import FastAPI

from dashboards.api import create_api
from dashboards.catalog import RunCatalog
from twin.recorder import TraceWriter
from twin.run_folder import RunFolder

HEADLINE = ("peak_import_kw", "energy_delivered_kwh", "energy_met_share", "limit_violations",
            "energy_cost")
LIVE_START = datetime(2024, 1, 1, tzinfo=UTC)


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 (port 0: any free one) in a daemon thread."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "no server"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _write_live_run(path: Path) -> TraceWriter:
    """A run being written: scenario.yaml and flushed trace parts, no kpis.json."""
    path.mkdir(parents=True)
    scenario = {"name": "live_depot", "kind": "twin",
                "run": {"start": LIVE_START.isoformat(), "duration_h": 1, "step_s": 60}}
    (path / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    writer = TraceWriter(path / "traces.parquet", flush_interval_s=0.0)
    for k in range(1, 21):
        t = LIVE_START + timedelta(minutes=k)
        writer.add_many(t, [("site", "import_kw", 10.0 + k, "kW"),
                            ("CA001/1", "power_kw", float(k % 7), "kW")])
        writer.maybe_flush()
    return writer


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TraceWriter]]:
    path = tmp_path_factory.mktemp("live") / "live_depot-20240101T000000Z"
    writer = _write_live_run(path)
    yield path, writer


@pytest.fixture(scope="module")
def base_url(runs_root: Path, live_run: tuple[Path, TraceWriter]) -> Iterator[str]:
    catalog = RunCatalog(runs_root, extra=[live_run[0]])
    with LiveServer(create_api(catalog)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def _frame(columns: dict) -> pd.DataFrame:
    return pd.DataFrame(columns)


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    """Comparable frame: times as UTC microseconds, text as Python str."""
    out = df.reset_index(drop=True).copy()
    for col in out.columns:
        if col == "time":
            out[col] = pd.to_datetime(out[col], utc=True).astype("datetime64[us, UTC]")
        elif col == "value":
            out[col] = out[col].astype("float64")
        else:
            out[col] = out[col].astype(object).astype(str)
    return out


# ---------------------------------------------------------------------------------- runs


def test_run_list_has_both_runs_with_their_kpis(client, run_a, run_b) -> None:
    r = client.get("/api/runs")
    assert r.status_code == 200
    runs = {row["id"]: row for row in r.json()["runs"]}
    assert {"morning_a", "morning_b"} <= set(runs)
    for path in (run_a, run_b):
        row = runs[path.name]
        doc = json.loads((path / "kpis.json").read_text())
        assert row["state"] == "finished" and row["kind"] == "twin" and not row["live"]
        assert row["start"] == "2019-09-10T14:00:00Z" and row["end"] == "2019-09-10T20:00:00Z"
        assert row["duration_h"] == 6.0 and row["step_s"] == 60.0
        for name in HEADLINE:
            assert row["kpis"][name] == doc["kpis"][name], name
        assert isinstance(row["kpis"]["energy_cost"]["value"], str)  # money: decimal string


def test_run_list_filters_and_sorts(client) -> None:
    by_peak = client.get("/api/runs", params={"sort": "-peak_import_kw", "state": "finished"})
    peaks = [r["kpis"]["peak_import_kw"]["value"] for r in by_peak.json()["runs"]]
    assert len(peaks) == 2 and peaks == sorted(peaks, reverse=True)
    only_b = client.get("/api/runs", params={"scenario": "ING_B"}).json()
    assert [r["id"] for r in only_b["runs"]] == ["morning_b"] and only_b["count"] == 1
    assert client.get("/api/runs", params={"kind": "field"}).json()["runs"] == []
    cost = client.get("/api/runs", params={"sort": "energy_cost"}).json()["runs"]
    assert [r["id"] for r in cost][-1] == "live_depot-20240101T000000Z"  # no KPIs: last


def test_run_detail_and_kpis(client, run_a) -> None:
    detail = client.get("/api/runs/morning_a").json()
    assert detail["run"]["id"] == "morning_a"
    assert detail["status"]["state"] == "finished"
    assert detail["scenario"]["site"]["grid_limit_kw"] == 40.0
    kpis = client.get("/api/runs/morning_a/kpis").json()
    assert kpis == json.loads((run_a / "kpis.json").read_text())


def test_catalog_lists_entities_quantities_units(client, run_a) -> None:
    body = client.get("/api/runs/morning_a/catalog").json()
    cat = RunFolder(run_a).catalog()
    assert body["entities"] == sorted(cat["entity"].unique())
    assert body["quantities"] == sorted(cat["quantity"].unique())
    assert body["units"]["import_kw"] == "kW" and body["units"]["soc"] == "1"
    assert len(body["series"]) == len(cat)
    assert body["first"] == "2019-09-10T14:01:00Z" and body["last"] == "2019-09-10T20:00:00Z"


# -------------------------------------------------------------------------------- traces

WINDOW = {"start": "2019-09-10T08:30:00-07:00", "end": "2019-09-10T16:45:00Z"}


def _expected(run: Path) -> pd.DataFrame:
    return RunFolder(run).traces(
        quantities=["import_kw", "power_kw"],
        start=datetime(2019, 9, 10, 15, 30, tzinfo=UTC),
        end=datetime(2019, 9, 10, 16, 45, tzinfo=UTC),
    )


def test_traces_by_quantity_and_time_equal_the_reader(client, run_a) -> None:
    expected = _expected(run_a)
    assert len(expected) == 76 * 9  # 15:30..16:45 inclusive, site + 8 EVSEs
    r = client.get("/api/runs/morning_a/traces",
                   params={"quantity": ["import_kw", "power_kw"], **WINDOW})
    assert r.status_code == 200
    body = r.json()
    assert body["rows"] == body["source_rows"] == len(expected) and not body["downsampled"]
    pd.testing.assert_frame_equal(_norm(_frame(body["columns"])), _norm(expected))

    series = client.get("/api/runs/morning_a/traces",
                        params={"quantity": "import_kw", "layout": "series", **WINDOW}).json()
    [site] = series["series"]
    want = expected[expected["quantity"] == "import_kw"]
    assert (site["entity"], site["unit"], site["rows"]) == ("site", "kW", 76)
    assert site["value"] == want["value"].tolist()
    assert site["time"][0] == "2019-09-10T15:30:00Z"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_downloads_round_trip(client, run_b, fmt) -> None:
    r = client.get("/api/runs/morning_b/traces",
                   params={"quantity": ["import_kw", "power_kw"], "format": fmt, **WINDOW})
    assert r.status_code == 200
    assert f'filename="morning_b.traces.{fmt}"' in r.headers["content-disposition"]
    assert r.headers["x-downsampled"] == "false"
    if fmt == "csv":
        assert r.headers["content-type"].startswith("text/csv")
        got = pd.read_csv(io.BytesIO(r.content))
    else:
        got = pd.read_parquet(io.BytesIO(r.content))
        assert str(got["time"].dtype) == "datetime64[us, UTC]"
    pd.testing.assert_frame_equal(_norm(got), _norm(_expected(run_b)))


def test_max_points_downsamples_each_series(client, run_a) -> None:
    pytest.importorskip("twin.compare")
    r = client.get("/api/runs/morning_a/traces",
                   params={"quantity": "import_kw", "entity": "site", "max_points": 50,
                           "layout": "series"})
    body = r.json()
    assert r.status_code == 200 and body["downsampled"] and body["max_points"] == 50
    [s] = body["series"]
    assert s["rows"] == 50 and s["source_rows"] == 360
    full = RunFolder(run_a).traces(entities=["site"], quantities=["import_kw"])
    # LTTB keeps real samples, the first and the last among them, in time order.
    recorded = dict(zip(_norm(full)["time"], full["value"], strict=True))
    times = pd.to_datetime(pd.Series(s["time"]), utc=True).astype("datetime64[us, UTC]")
    assert [recorded[t] for t in times] == s["value"]
    assert times.is_monotonic_increasing
    assert (times.iloc[0], times.iloc[-1]) == (full["time"].iloc[0], full["time"].iloc[-1])
    small = client.get("/api/runs/morning_a/traces",
                       params={"quantity": "import_kw", "max_points": 1000}).json()
    assert not small["downsampled"] and small["rows"] == 360
    csv = client.get("/api/runs/morning_a/traces",
                     params={"quantity": "power_kw", "max_points": 20, "format": "csv"})
    assert csv.headers["x-downsampled"] == "true"
    assert len(pd.read_csv(io.BytesIO(csv.content))) == 8 * 20


def test_json_row_limit_refuses_with_a_hint(runs_root) -> None:
    with LiveServer(create_api(RunCatalog(runs_root), json_max_rows=1000)) as url:
        big = httpx.get(f"{url}/api/runs/morning_a/traces", params={"quantity": "power_kw"})
        assert big.status_code == 413
        assert "parquet" in big.json()["detail"] and "max_points" in big.json()["detail"]
        ok = httpx.get(f"{url}/api/runs/morning_a/traces",
                       params={"quantity": "power_kw", "format": "parquet"})
        assert ok.status_code == 200 and ok.headers["x-rows"] == str(8 * 360)


# -------------------------------------------------------------------------------- events


def test_events_filter_by_kind_and_text(client, run_a) -> None:
    run = RunFolder(run_a)
    started = client.get("/api/runs/morning_a/events",
                         params={"kind": "transaction.started"}).json()
    expected = run.events(kinds=["transaction.started"])
    assert started["count"] == len(expected) > 0 and not started["truncated"]
    assert {e["kind"] for e in started["events"]} == {"transaction.started"}
    assert started["events"][0]["payload"] == json.loads(expected["payload"].iloc[0])

    text = client.get("/api/runs/morning_a/events",
                      params={"q": "ca002-1", "source": "csms", "limit": 3}).json()
    assert 0 < text["count"] <= 3
    assert all("CA002-1" in json.dumps(e["payload"]) and e["source"] == "csms"
               for e in text["events"])
    matching = run.events(sources=["csms"], text="ca002-1")
    assert text["truncated"] == (len(matching) > 3)

    parquet = client.get("/api/runs/morning_a/events",
                         params={"kind": ["dlm.setpoint", "ocpp.boot"], "format": "parquet"})
    got = pd.read_parquet(io.BytesIO(parquet.content))
    pd.testing.assert_frame_equal(
        _norm(got), _norm(run.events(kinds=["dlm.setpoint", "ocpp.boot"])))


# ---------------------------------------------------------------------------- bad queries


@pytest.mark.parametrize(
    ("url", "params", "status", "reason"),
    [
        ("/api/runs/no_such_run", {}, 404, "known: "),
        ("/api/runs/no_such_run/traces", {}, 404, "morning_a"),
        ("/api/runs/no_such_run/kpis", {}, 404, "morning_b"),
        ("/api/runs/morning_a/traces", {"start": "2019-09-10T14:00:00"}, 422, "no time zone"),
        ("/api/runs/morning_a/events", {"end": "2019-09-10T14:00:00"}, 422, "no time zone"),
        ("/api/runs/morning_a/traces", {"start": "yesterday"}, 422, "not an ISO 8601"),
        ("/api/runs/morning_a/traces", {"start": "2019-09-10T14:00:00 02:00"}, 422, "%2B"),
        ("/api/runs/morning_a/traces",
         {"start": "2019-09-10T16:00:00Z", "end": "2019-09-10T15:00:00Z"}, 422, "after end"),
        ("/api/runs/morning_a/traces", {"format": "xlsx"}, 422, "'format'"),
        ("/api/runs/morning_a/events", {"format": "xml"}, 422, "'json', 'csv' or 'parquet'"),
        ("/api/runs/morning_a/traces", {"quantity": "power_mw"}, 404, "import_kw"),
        ("/api/runs/morning_a/traces", {"entity": "ZZ9/1"}, 404, "CA001/1"),
        ("/api/runs/morning_a/traces", {"max_points": 1}, 422, "max_points"),
        ("/api/runs/morning_a/traces", {"max_points": "many"}, 422, "max_points"),
        ("/api/runs/morning_a/events", {"limit": 0}, 422, "limit"),
        ("/api/runs", {"sort": "colour"}, 422, "peak_import_kw"),
        ("/api/rnus", {}, 404, "/api/docs"),
    ],
)
def test_bad_queries_get_a_4xx_with_a_reason(client, url, params, status, reason) -> None:
    r = client.get(url, params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str)
    assert reason in body["detail"], body["detail"]


def test_writes_are_refused(client) -> None:
    r = client.post("/api/runs", json={})
    assert r.status_code == 405 and "GET only" in r.json()["detail"]


# ------------------------------------------------------------------------------ live run


def test_live_run_is_listed_as_running_and_served(client, live_run) -> None:
    path, writer = live_run
    rid = path.name
    assert not (path / "traces.parquet").exists() and (path / "traces.parquet.parts").is_dir()
    row = next(r for r in client.get("/api/runs").json()["runs"] if r["id"] == rid)
    assert row["state"] == "running" and row["live"]
    assert all(v is None for v in row["kpis"].values())
    kpis = client.get(f"/api/runs/{rid}/kpis")
    assert kpis.status_code == 404 and "run is still being written" in kpis.json()["detail"]
    body = client.get(f"/api/runs/{rid}/traces", params={"quantity": "import_kw"}).json()
    assert body["live"] and body["rows"] == 20
    assert body["columns"]["value"] == [10.0 + k for k in range(1, 21)]

    writer.add(LIVE_START + timedelta(minutes=21), "site", "import_kw", 31.0, "kW")
    writer.flush()  # a new part: the catalog and traces see it
    body = client.get(f"/api/runs/{rid}/traces", params={"quantity": "import_kw"}).json()
    assert body["rows"] == 21
    assert client.get(f"/api/runs/{rid}/events").json()["count"] == 0

    writer.close()  # the run ends: parts merged into traces.parquet
    done = client.get(f"/api/runs/{rid}/traces",
                      params={"quantity": "import_kw", "start": "2024-01-01T00:21:00Z"}).json()
    assert not done["live"] and done["columns"]["value"] == [31.0]


# ------------------------------------------------------------------------------- compare


def test_compare_two_runs(client, run_a, run_b) -> None:
    pytest.importorskip("twin.compare")
    r = client.get("/api/compare", params={"a": "morning_a", "b": "morning_b",
                                           "quantity": "import_kw", "tolerance": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alignment"]["series"] == 1 and body["alignment"]["bins"] == 360
    per_series = next(m for m in body["metrics"] if m["entity"] == "site")
    a = RunFolder(run_a).traces(quantities=["import_kw"])["value"].to_numpy()
    b = RunFolder(run_b).traces(quantities=["import_kw"])["value"].to_numpy()
    assert per_series["max_abs"] == pytest.approx(abs(b - a).max())
    assert per_series["bias"] == pytest.approx((b - a).mean())
    assert all(e["peak_abs"] > 5 for e in body["exceedances"])
    cost = next(d for d in body["kpi_deltas"] if d["name"] == "energy_cost")
    assert isinstance(cost["delta"], str) and cost["unit"] == "EUR"
    bad = client.get("/api/compare", params={"a": "morning_a", "b": "nope"})
    assert bad.status_code == 404 and "known" in bad.json()["detail"]


# ------------------------------------------------------------------------------- OpenAPI


def test_openapi_document_describes_every_route(client) -> None:
    doc = client.get("/api/openapi.json").json()
    assert doc["info"]["title"] and doc["info"]["version"]
    for path in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/kpis",
                 "/api/runs/{run_id}/catalog", "/api/runs/{run_id}/traces",
                 "/api/runs/{run_id}/events"):
        op = doc["paths"][path]["get"]
        assert op.get("description"), path
        assert "404" in op["responses"] or path == "/api/runs"
    assert client.get("/api/docs").status_code == 200
    try:
        from openapi_spec_validator import validate
    except ImportError:
        return  # schemathesis below validates the document as it loads it
    validate(doc)
