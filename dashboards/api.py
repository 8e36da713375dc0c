"""The read API: runs, KPIs, traces and events of run folders over HTTP (JSON, CSV, Parquet).

:func:`create_api` builds a FastAPI app whose routes all live under ``/api``, so the Dash
app can be mounted at ``/`` of the same app (``dashboards.server``). OpenAPI docs are at
``/api/docs``, the schema at ``/api/openapi.json``.

Conventions of every route:

* Times are ISO 8601 with a zone (``2019-09-10T14:00:00Z``, ``...-07:00``); answers give
  UTC with ``Z``. A time without a zone, or one that does not parse, is a 422.
* Every refusal (4xx) is ``{"detail": "<reason>"}``. An unknown run is a 404 that lists
  known run ids; an unknown entity or quantity is a 404 that lists what the run holds.
* Values are in the unit named next to them (``unit``), and quantity names carry their
  unit (``power_kw``, ``energy_kwh``, ``soc`` 0..1). Money is a decimal string.
* A run still being written (``live``) is served from its part files like a finished one;
  its KPIs are missing until it ends.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pandas as pd
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dashboards import api_encode as enc
from dashboards.api_models import (
    ErrorBody,
    EventsBody,
    RunCatalogBody,
    RunDetail,
    RunList,
    TracesBody,
)
from dashboards.api_query import (
    ISO_TIME,
    SORT_FIELDS,
    check_names,
    estimate_rows,
    kpi_entry,
    money_safe,
    sort_runs,
    time_range,
)
from dashboards.catalog import RunCatalog, UnknownRunError
from dashboards.formatting import HEADLINE_KPIS
from twin.recorder import EVENT_SCHEMA, TRACE_SCHEMA, parts_dir
from twin.run_folder import RunFolder, RunFolderError, RunInfo

API_TITLE = "MiGrid Twin read API"
API_VERSION = "1.0.0"

#: JSON answers above this many rows are refused (413) unless downsampled.
JSON_MAX_ROWS = 2_000_000

#: A JSON trace query is refused before reading when the run window and step say it
#: would match more than this many times :data:`JSON_MAX_ROWS` rows.
_ESTIMATE_FACTOR = 4

#: Run catalogs (distinct series) remembered, by run folder.
_CATALOG_CACHE_SIZE = 64

Format = Literal["json", "csv", "parquet"]
T = TypeVar("T")

_DESCRIPTION = """
Read access to the run folders of MiGrid Twin (twin runs and field runs recorded on the
bench): the run list with headline KPIs, each run's scenario, status, KPIs, catalog of
recorded series, traces and protocol/domain events.

* **Times**: ISO 8601 with a zone in queries (`2019-09-10T14:00:00Z`; write `+` as `%2B`
  in a URL); UTC with `Z` in answers. A time range `[start, end]` is inclusive.
* **Units**: every value comes with its unit; quantity names carry it too (`power_kw` kW,
  `energy_kwh` kWh, `current_a` A, `soc` 0..1, `price_per_mwh` currency/MWh). Site power
  is positive when importing from the grid.
* **Money** (`energy_cost`) is a decimal string with an ISO 4217 currency, never a float.
* **Errors**: every 4xx answer is `{"detail": "<reason>"}`.
* **Live runs**: a run still being written is served from its part files; it has no KPIs
  until it ends.
* **Large answers**: JSON is limited to {max_rows:,} rows; use `format=parquet` or `csv`
  (downloads) or `max_points` (downsampling per series) for more.
"""


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        404: "Unknown run, entity or quantity (the reason lists what exists)",
        413: "Answer too large for JSON (use format=parquet/csv or max_points)",
        422: "Bad query parameter (the reason says which and why)",
        501: "Not available in this build",
    }
    return {c: {"model": ErrorBody, "description": reasons[c]} for c in codes}


_DOWNLOAD_CONTENT = {
    "text/csv": {"schema": {"type": "string"}},
    enc.PARQUET_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
}


@dataclass
class _Cached:
    """A run's series catalog and time span, valid while ``key`` (file identity) holds."""

    key: Any
    catalog: pd.DataFrame
    span: tuple[datetime, datetime] | None = None
    span_known: bool = False


class _ReadApi:
    """Route handlers over one :class:`RunCatalog`."""

    def __init__(self, catalog: RunCatalog, json_max_rows: int) -> None:
        self.catalog = catalog
        self.json_max_rows = json_max_rows
        self._cache: OrderedDict[Path, _Cached] = OrderedDict()
        self._lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------
    def _run(self, run_id: str) -> RunFolder:
        try:
            return self.catalog.get(run_id)
        except UnknownRunError as err:
            raise HTTPException(404, str(err)) from None
        except RunFolderError as err:
            raise HTTPException(404, f"run {run_id!r} is no longer readable: {err}") from None

    @staticmethod
    def _read(run: RunFolder, read: Callable[[RunFolder], T]) -> T:
        """``read(run)``, once more on a fresh reader if the files changed under it.

        A live run's part files are merged and removed when the run ends; a read that
        races with that sees a missing file and is retried on the final file.
        """
        try:
            return read(run)
        except OSError:
            return read(RunFolder(run.path))

    def _cached(self, run: RunFolder) -> _Cached:
        """What is remembered of a run's traces while its files stay as they are."""
        final = run.path / "traces.parquet"
        if final.is_file():
            st = final.stat()
            key: Any = ("final", st.st_mtime_ns, st.st_size)
        else:
            key = ("parts", tuple(sorted(p.name for p in parts_dir(final).glob("*.parquet"))))
        with self._lock:  # handlers run in a thread pool
            hit = self._cache.get(run.path)
            if hit is not None and hit.key == key:
                self._cache.move_to_end(run.path)
                return hit
        entry = _Cached(key, self._read(run, lambda r: r.catalog()))
        with self._lock:
            self._cache[run.path] = entry
            while len(self._cache) > _CATALOG_CACHE_SIZE:
                self._cache.popitem(last=False)
        return entry

    def _series_catalog(self, run: RunFolder) -> pd.DataFrame:
        """Distinct (entity, quantity, unit) of a run's traces."""
        return self._cached(run).catalog

    def _time_span(self, run: RunFolder) -> tuple[datetime, datetime] | None:
        """First and last sample time of a run's traces."""
        entry = self._cached(run)
        if not entry.span_known:
            entry.span = self._read(run, lambda r: r.time_range())
            entry.span_known = True
        return entry.span

    @staticmethod
    def _summary(run_id: str, info: RunInfo, live: bool) -> dict[str, Any]:
        return {
            "id": run_id,
            "scenario": info.scenario,
            "kind": info.kind,
            "state": info.state,
            "start": info.start,
            "end": info.end,
            "duration_h": info.duration_h,
            "step_s": info.step_s,
            "live": live,
            "kpis": {name: kpi_entry(info.kpis, name) for name in HEADLINE_KPIS},
        }

    # -- routes -------------------------------------------------------------------------
    def list_runs(
        self,
        kind: Annotated[
            str | None, Query(description="Only runs of this kind: `twin` or `field`.")
        ] = None,
        state: Annotated[
            str | None,
            Query(description="Only runs in this state: `finished`, `running`, `failed`, "
                  "`interrupted`."),
        ] = None,
        scenario: Annotated[
            str | None,
            Query(description="Only runs whose scenario name contains this (any case)."),
        ] = None,
        sort: Annotated[
            str | None,
            Query(description="Sort by one of: " + ", ".join(SORT_FIELDS) + "; prefix `-` "
                  "for descending. Runs without the field go last. Default: newest id "
                  "first."),
        ] = None,
    ) -> dict[str, Any]:
        """List the runs with their window, state and headline KPIs.

        Headline KPIs: `peak_import_kw` (kW), `energy_delivered_kwh` (kWh),
        `energy_met_share` (0..1), `limit_violations` (count), `energy_cost` (decimal
        string, ISO 4217 currency); each is null while the run has no KPIs.
        """
        rows = []
        for run_id, info in self.catalog.infos():
            if kind is not None and info.kind != kind:
                continue
            if state is not None and info.state != state:
                continue
            if scenario is not None and scenario.lower() not in info.scenario.lower():
                continue
            live = not (info.path / "traces.parquet").is_file()
            rows.append(self._summary(run_id, info, live))
        rows = sort_runs(rows, sort)
        return {"count": len(rows), "runs": rows}

    def get_run(
        self, run_id: Annotated[str, PathParam(description="Run id (see `/api/runs`).")]
    ) -> dict[str, Any]:
        """One run: its summary, `status.json` and the resolved scenario it ran."""
        run = self._run(run_id)
        try:
            info = run.info()
            scenario = run.scenario()
        except (OSError, ValueError) as err:
            raise HTTPException(404, f"run {run_id!r} is not readable: {err}") from None
        return {
            "run": self._summary(run_id, info, run.live),
            "status": run.status(),
            "scenario": scenario,
        }

    def get_kpis(
        self, run_id: Annotated[str, PathParam(description="Run id (see `/api/runs`).")]
    ) -> dict[str, Any]:
        """The run's `kpis.json`: `{"kpis": {name: {value, unit}}, "wall": {...}}`.

        `kpis` are deterministic for a scenario and seed; `wall` holds wall-clock figures
        (`wall_time_s` s, `speedup`, `ocpp_calls`, `ocpp_rtt_p50_ms`/`p99_ms` ms). Money
        (`energy_cost`) is a decimal string. 404 while the run is still being written.
        """
        run = self._run(run_id)
        doc = run.kpis()
        if doc is None:
            state = str(run.status().get("state", "running"))
            if run.live or state == "running":
                raise HTTPException(404, f"run {run_id!r} has no KPIs yet: run is still "
                                    "being written")
            raise HTTPException(404, f"run {run_id!r} has no KPIs (state: {state})")
        return money_safe(doc)

    def get_catalog(
        self, run_id: Annotated[str, PathParam(description="Run id (see `/api/runs`).")]
    ) -> dict[str, Any]:
        """What the run's traces hold: entities, quantities and their units, time span."""
        run = self._run(run_id)
        frame = self._series_catalog(run)
        span = self._time_span(run)
        units: dict[str, str] = {}
        for q, u in zip(frame["quantity"], frame["unit"], strict=True):
            units.setdefault(str(q), str(u))
        return {
            "run_id": run_id,
            "entities": sorted({str(e) for e in frame["entity"]}),
            "quantities": sorted(units),
            "units": units,
            "series": [
                {"entity": str(e), "quantity": str(q), "unit": str(u)}
                for e, q, u in zip(frame["entity"], frame["quantity"], frame["unit"],
                                   strict=True)
            ],
            "first": span[0] if span else None,
            "last": span[1] if span else None,
        }

    def get_traces(
        self,
        run_id: Annotated[str, PathParam(description="Run id (see `/api/runs`).")],
        entity: Annotated[
            list[str] | None,
            Query(description="Entity id, repeatable (`CA001/1`, `site`); default all."),
        ] = None,
        quantity: Annotated[
            list[str] | None,
            Query(description="Quantity, repeatable (`power_kw`, `import_kw`); default all."),
        ] = None,
        start: Annotated[
            str | None,
            Query(description="First sample time, ISO 8601 with zone (inclusive)."),
            ISO_TIME,
        ] = None,
        end: Annotated[
            str | None,
            Query(description="Last sample time, ISO 8601 with zone (inclusive)."),
            ISO_TIME,
        ] = None,
        format: Annotated[
            Format, Query(description="`json`, or a `csv` / `parquet` download.")
        ] = "json",
        layout: Annotated[
            Literal["columns", "series"],
            Query(description="JSON shape: `columns` (long format, one array per column) "
                  "or `series` (one object per entity and quantity)."),
        ] = "columns",
        max_points: Annotated[
            int | None,
            Query(ge=3, le=1_000_000,
                  description="Downsample each series to at most this many points "
                  "(LTTB); the answer says `downsampled`."),
        ] = None,
    ) -> Response:
        """Trace samples (long format: time, entity, quantity, value, unit), filtered.

        Value units are per row (`unit`). Without `max_points` the rows come in recorded
        (time) order; with it, series by series (sorted by entity, quantity). JSON is
        limited to the API's row limit (413 above it); CSV and Parquet are downloads with
        the headers `X-Rows`, `X-Source-Rows` and `X-Downsampled`.
        """
        run = self._run(run_id)
        t0, t1 = time_range(start, end)
        lttb = enc.find_lttb() if max_points is not None else None
        if max_points is not None and lttb is None:
            raise HTTPException(501, "max_points needs twin.compare.lttb, which this "
                                "build lacks; ask without max_points")
        keys = self._series_catalog(run)
        check_names("entity", entity, sorted({str(e) for e in keys["entity"]}))
        check_names("quantity", quantity, sorted({str(q) for q in keys["quantity"]}))
        if format == "json" and max_points is None:
            guess = estimate_rows(keys, run.info(), entity, quantity, t0, t1)
            if guess is not None and guess > _ESTIMATE_FACTOR * self.json_max_rows:
                self._too_large(f"about {guess:,}")
        frame = self._read(
            run,
            lambda r: r.traces(entities=entity, quantities=quantity, start=t0, end=t1),
        )
        if format == "json" and max_points is None and len(frame) > self.json_max_rows:
            self._too_large(f"{len(frame):,}")
        series = None
        downsampled = False
        if lttb is not None and max_points is not None:
            series = enc.split_series(frame)
            downsampled = enc.downsample(series, max_points, lttb)
        elif format == "json" and layout == "series":
            series = enc.split_series(frame)
        if format == "json":
            header = {
                "run_id": run_id,
                "layout": layout,
                "source_rows": len(frame),
                "downsampled": downsampled,
                "max_points": max_points,
                "live": run.live,
            }
            body = enc.traces_json(frame, series, layout=layout, header=header)
            return Response(body, media_type="application/json")
        out = enc.series_frame(series) if series is not None else frame
        headers = {
            "X-Rows": str(len(out)),
            "X-Source-Rows": str(len(frame)),
            "X-Downsampled": "true" if downsampled else "false",
        }
        return self._download(run_id, "traces", enc.to_table(out, TRACE_SCHEMA), format,
                              headers)

    def get_events(
        self,
        run_id: Annotated[str, PathParam(description="Run id (see `/api/runs`).")],
        kind: Annotated[
            list[str] | None,
            Query(description="Event kind, repeatable (`transaction.started`, "
                  "`dlm.setpoint`, ...); default all."),
        ] = None,
        source: Annotated[
            list[str] | None,
            Query(description="Source, repeatable (`csms`, `dlm`, a station id); default "
                  "all."),
        ] = None,
        start: Annotated[
            str | None,
            Query(description="Earliest event time, ISO 8601 with zone (inclusive)."),
            ISO_TIME,
        ] = None,
        end: Annotated[
            str | None,
            Query(description="Latest event time, ISO 8601 with zone (inclusive)."),
            ISO_TIME,
        ] = None,
        q: Annotated[
            str | None,
            Query(description="Only events whose JSON payload contains this text (any "
                  "case)."),
        ] = None,
        limit: Annotated[
            int | None,
            Query(ge=1, le=100_000_000, description="At most this many events (the first "
                  "in time order); the JSON answer says `truncated`."),
        ] = None,
        format: Annotated[
            Format, Query(description="`json`, or a `csv` / `parquet` download.")
        ] = "json",
    ) -> Response:
        """Protocol and domain events (time, source, kind, payload), filtered, time order.

        Unknown kinds or sources simply match nothing. In JSON each payload is the JSON
        value itself; in CSV and Parquet it is the JSON text as recorded.
        """
        run = self._run(run_id)
        t0, t1 = time_range(start, end)
        fetch = None if limit is None else limit + 1
        frame = self._read(
            run,
            lambda r: r.events(kinds=kind, sources=source, start=t0, end=t1, text=q,
                               limit=fetch),
        )
        truncated = limit is not None and len(frame) > limit
        if truncated:
            frame = frame.iloc[: limit]
        if format == "json":
            if len(frame) > self.json_max_rows:
                self._too_large(f"{len(frame):,}", events=True)
            header = {"run_id": run_id, "truncated": truncated, "live": run.live}
            return Response(enc.events_json(frame, header), media_type="application/json")
        headers = {"X-Rows": str(len(frame)), "X-Truncated": "true" if truncated else "false"}
        return self._download(run_id, "events", enc.to_table(frame, EVENT_SCHEMA), format,
                              headers)

    # -- answers ------------------------------------------------------------------------
    def _too_large(self, rows: str, events: bool = False) -> None:
        hint = "limit" if events else "max_points=N (downsampling per series)"
        raise HTTPException(
            413,
            f"{rows} rows are too many for JSON (limit {self.json_max_rows:,}); ask for "
            f"format=parquet or format=csv (downloads), narrow the query, or use {hint}",
        )

    @staticmethod
    def _download(
        run_id: str, what: str, table: Any, fmt: str, headers: dict[str, str]
    ) -> Response:
        name = enc.download_name(run_id, what, fmt)
        headers = {**headers, "Content-Disposition": f'attachment; filename="{name}"'}
        if fmt == "csv":
            return StreamingResponse(enc.csv_chunks(table), media_type=enc.CSV_MEDIA_TYPE,
                                     headers=headers)
        return Response(enc.parquet_bytes(table), media_type=enc.PARQUET_MEDIA_TYPE,
                        headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable reason instead of FastAPI's list of error objects."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    reasons = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = f"{loc[0]} parameter {loc[-1]!r}" if len(loc) >= 2 else ".".join(loc)
        given = err.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        reasons.append(f"{where}: {err.get('msg', 'invalid')}{shown}")
    return JSONResponse({"detail": "; ".join(reasons) or "invalid request"}, status_code=422)


def create_api(catalog: RunCatalog, *, json_max_rows: int = JSON_MAX_ROWS) -> FastAPI:
    """The read API over the runs of ``catalog``; every route is under ``/api``.

    Args:
        catalog: the runs to serve (read again on every request, so new runs appear).
        json_max_rows: JSON answers with more rows are refused with 413.
    """
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description=_DESCRIPTION.replace("{max_rows:,}", f"{json_max_rows:,}"),
        docs_url="/api/docs",
        redoc_url="/api/redoc",
        openapi_url="/api/openapi.json",
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    api = _ReadApi(catalog, json_max_rows)
    router = APIRouter(prefix="/api")
    router.add_api_route(
        "/runs", api.list_runs, methods=["GET"], response_model=RunList,
        summary="List runs", responses=_errors(422), tags=["runs"],
    )
    router.add_api_route(
        "/runs/{run_id}", api.get_run, methods=["GET"], response_model=RunDetail,
        summary="One run", responses=_errors(404, 422), tags=["runs"],
    )
    router.add_api_route(
        "/runs/{run_id}/kpis", api.get_kpis, methods=["GET"], response_model=dict[str, Any],
        summary="KPIs of a run", responses=_errors(404, 422), tags=["runs"],
    )
    router.add_api_route(
        "/runs/{run_id}/catalog", api.get_catalog, methods=["GET"],
        response_model=RunCatalogBody, summary="Series recorded in a run",
        responses=_errors(404, 422), tags=["data"],
    )
    router.add_api_route(
        "/runs/{run_id}/traces", api.get_traces, methods=["GET"], response_class=Response,
        summary="Traces of a run",
        responses={
            200: {"model": TracesBody, "content": _DOWNLOAD_CONTENT,
                  "description": "JSON (TracesBody), or a CSV / Parquet download"},
            **_errors(404, 413, 422, 501),
        },
        tags=["data"],
    )
    router.add_api_route(
        "/runs/{run_id}/events", api.get_events, methods=["GET"], response_class=Response,
        summary="Events of a run",
        responses={
            200: {"model": EventsBody, "content": _DOWNLOAD_CONTENT,
                  "description": "JSON (EventsBody), or a CSV / Parquet download"},
            **_errors(404, 413, 422),
        },
        tags=["data"],
    )
    _add_compare(router, api)

    def unknown_route(rest: str, request: Request) -> None:
        if request.method != "GET":
            raise HTTPException(405, f"the read API answers GET only, not {request.method}")
        raise HTTPException(404, f"no route /api/{rest}; see /api/docs")

    # Last: any other /api request gets a JSON 404 or 405, even where the Dash app is
    # mounted at / of the same app.
    router.add_api_route(
        "/{rest:path}", unknown_route, include_in_schema=False,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    )
    app.include_router(router)
    return app


def _add_compare(router: APIRouter, api: _ReadApi) -> None:
    """Add ``/api/compare`` when this build has ``twin.compare``."""
    try:
        from dashboards.api_compare import add_compare_route
    except ImportError:
        return
    add_compare_route(router, api._run, api._read)


__all__ = ["API_TITLE", "API_VERSION", "JSON_MAX_ROWS", "create_api"]
