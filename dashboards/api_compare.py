"""``GET /api/compare``: two runs side by side (twin vs field, or run A vs run B).

Thin over ``twin.compare``: align the series both runs hold on one grid, residuals
``b - a``, error metrics per series and per quantity, periods above a tolerance, and KPI
deltas (money as decimal strings). Importing this module fails without ``twin.compare``;
``dashboards.api`` then serves no compare route.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from dashboards import api_encode as enc
from dashboards.api_models import ErrorBody
from dashboards.api_query import ISO_TIME, check_names, time_range
from twin import compare as cmp
from twin.run_folder import RunFolder

Number = int | float


class AlignmentBody(BaseModel):
    """How the two runs were put on one grid."""

    statement: str = Field(description="What was done: grid, overlap, resampling, gaps.")
    step_s: float = Field(description="Grid step, seconds; bin `t` covers `(t - step, t]`.")
    start: str = Field(description="Start of the first bin (UTC, exclusive).")
    end: str = Field(description="End of the last bin (UTC, inclusive).")
    series: int = Field(description="Series compared (present in both runs).")
    bins: int = Field(description="Grid bins per series.")
    excluded: int = Field(description="Series-bins without data on a side (left out).")
    only_a: list[list[str]] = Field(description="(entity, quantity) only in run A.")
    only_b: list[list[str]] = Field(description="(entity, quantity) only in run B.")


class MetricRow(BaseModel):
    """Error statistics of ``b - a`` for one series, or one quantity (entity ``*``)."""

    entity: str
    quantity: str
    n: int = Field(description="Bins compared.")
    n_excluded: int = Field(description="Bins without data on a side.")
    mae: float | None = Field(description="Mean |b - a|, in `unit`.")
    rmse: float | None = Field(description="Root mean square of b - a, in `unit`.")
    max_abs: float | None = Field(description="Largest |b - a|, in `unit`.")
    max_abs_time: str | None = Field(description="When the largest deviation was (UTC).")
    max_abs_entity: str | None = Field(description="Where the largest deviation was.")
    bias: float | None = Field(description="Mean b - a (positive: B above A), in `unit`.")
    unit: str


class ExceedanceRow(BaseModel):
    """A period in which ``|b - a|`` stayed above the tolerance."""

    entity: str
    quantity: str
    start: str
    end: str
    duration_s: float
    n_bins: int
    peak_abs: float = Field(description="Largest |b - a| in the period, in `unit`.")
    peak_time: str
    tolerance: float
    unit: str


class KpiDeltaRow(BaseModel):
    """One KPI of both runs; decimal values (money) are strings."""

    section: str = Field(description="`kpis` or `wall` (wall-clock figures).")
    name: str
    a: Number | str | None
    b: Number | str | None
    delta: Number | str | None = Field(description="b - a.")
    relative: float | None = Field(description="(b - a) / |a|.")
    unit: str


class CompareBody(BaseModel):
    """The JSON answer of ``GET /api/compare``."""

    a: str = Field(description="Run id of A.")
    b: str = Field(description="Run id of B.")
    alignment: AlignmentBody
    metrics: list[MetricRow]
    exceedances: list[ExceedanceRow] | None = Field(
        description="Periods above `tolerance`; null when no tolerance was given."
    )
    kpi_deltas: list[KpiDeltaRow] | None = Field(
        description="KPI by KPI; null while either run has no KPIs."
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return enc.rfc3339(np.array([value.tz_convert(None).to_datetime64()]))[0]
    raise TypeError(f"cannot encode {type(value).__name__}")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts: times RFC 3339 UTC, NaN and NaT as None."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            times = out[col].dt.tz_convert("UTC").dt.tz_localize(None)
            text = enc.rfc3339(times.to_numpy(dtype="datetime64[us]"))
            out[col] = [None if pd.isna(t) else s for t, s in zip(times, text, strict=True)]
    clean = out.astype(object).where(out.notna(), None)
    return [{str(k): v for k, v in row.items()} for row in clean.to_dict("records")]


def _alignment(al: Any) -> dict[str, Any]:
    return {
        "statement": al.statement,
        "step_s": al.step.total_seconds(),
        "start": _json_default(pd.Timestamp(al.start)),
        "end": _json_default(pd.Timestamp(al.end)),
        "series": len(al.series),
        "bins": al.n_bins,
        "excluded": al.excluded,
        "only_a": [list(k) for k in al.only_a],
        "only_b": [list(k) for k in al.only_b],
    }


def add_compare_route(
    router: APIRouter,
    get_run: Callable[[str], RunFolder],
    read: Callable[[RunFolder, Callable[[RunFolder], Any]], Any],
) -> None:
    """Add ``GET /compare`` to ``router`` (runs looked up with ``get_run``)."""

    def compare_runs(
        a: Annotated[str, Query(description="Run id of A (the reference, e.g. the twin).")],
        b: Annotated[str, Query(description="Run id of B (e.g. the field run).")],
        quantity: Annotated[
            list[str] | None,
            Query(description="Quantity to compare, repeatable; default all in both."),
        ] = None,
        entity: Annotated[
            list[str] | None,
            Query(description="Entity to compare, repeatable; default all in both."),
        ] = None,
        tolerance: Annotated[
            float | None,
            Query(ge=0, allow_inf_nan=False,
                  description="List the periods where |b - a| exceeds this (in each "
                  "series' unit)."),
        ] = None,
        start: Annotated[
            str | None,
            Query(description="Compare from this time, ISO 8601 with zone."),
            ISO_TIME,
        ] = None,
        end: Annotated[
            str | None,
            Query(description="Compare up to this time, ISO 8601 with zone."),
            ISO_TIME,
        ] = None,
        step_s: Annotated[
            float | None,
            Query(gt=0, le=31_536_000, allow_inf_nan=False,
                  description="Grid step, seconds; default the coarser run's step."),
        ] = None,
        format: Annotated[
            Literal["json", "csv", "parquet"],
            Query(description="`json` (alignment, metrics, exceedances, KPI deltas), or "
                  "the residuals (time, entity, quantity, a, b, residual, unit) as a "
                  "`csv` / `parquet` download."),
        ] = "json",
    ) -> Response:
        """Compare two runs: aligned series, error metrics, exceedances, KPI deltas.

        Residuals are `b - a` in each series' unit on a common grid over the overlap of
        the runs (see `alignment.statement`). Metrics per series and per quantity
        (`entity` = `*`): MAE, RMSE, largest deviation (when, where) and bias. 422 when
        the runs do not overlap or a series has different units in A and B.
        """
        run_a, run_b = get_run(a), get_run(b)
        t0, t1 = time_range(start, end)
        frames = []
        for rid, run in ((a, run_a), (b, run_b)):
            keys = read(run, lambda r: r.catalog())
            check_names("entity", entity, sorted({str(e) for e in keys["entity"]}), rid)
            check_names("quantity", quantity, sorted({str(q) for q in keys["quantity"]}),
                        rid)
            frame = read(run, lambda r: r.traces(entities=entity, quantities=quantity,
                                                 start=t0, end=t1))
            if frame.empty:
                raise HTTPException(422, f"run {rid!r} has no samples to compare in the "
                                    "requested range")
            frames.append(frame)
        try:
            al = cmp.align(
                frames[0], frames[1], labels=(a, b),
                step=None if step_s is None else timedelta(seconds=step_s),
            )
        except ValueError as err:
            raise HTTPException(422, f"cannot compare {a!r} and {b!r}: {err}") from None
        res = cmp.residuals(al)
        if format != "json":
            table = pa.Table.from_pandas(res, preserve_index=False)
            name = enc.download_name(f"{a}_vs_{b}", "residuals", format)
            headers = {"Content-Disposition": f'attachment; filename="{name}"',
                       "X-Rows": str(len(res))}
            if format == "csv":
                return Response(b"".join(enc.csv_chunks(table)),
                                media_type=enc.CSV_MEDIA_TYPE, headers=headers)
            return Response(enc.parquet_bytes(table), media_type=enc.PARQUET_MEDIA_TYPE,
                            headers=headers)
        ka, kb = run_a.kpis(), run_b.kpis()
        deltas = None
        if ka is not None and kb is not None:
            try:
                deltas = [vars(d) for d in cmp.kpi_deltas(ka, kb)]
            except (ValueError, TypeError) as err:
                raise HTTPException(422, f"cannot compare the KPIs: {err}") from None
        body = {
            "a": a,
            "b": b,
            "alignment": _alignment(al),
            "metrics": _records(cmp.metrics(res)),
            "exceedances": (
                None if tolerance is None else _records(cmp.exceedances(res, tolerance))
            ),
            "kpi_deltas": deltas,
        }
        content = orjson.dumps(body, default=_json_default,
                               option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z)
        return Response(content, media_type="application/json")

    router.add_api_route(
        "/compare", compare_runs, methods=["GET"], response_class=Response,
        summary="Compare two runs",
        responses={
            200: {"model": CompareBody,
                  "content": {"text/csv": {"schema": {"type": "string"}},
                              enc.PARQUET_MEDIA_TYPE: {"schema": {"type": "string",
                                                                  "format": "binary"}}},
                  "description": "JSON (CompareBody), or the residuals as a download"},
            404: {"model": ErrorBody, "description": "Unknown run, entity or quantity"},
            422: {"model": ErrorBody, "description": "Bad parameter, or runs that cannot "
                  "be compared (no overlap, unit mismatch)"},
        },
        tags=["compare"],
    )
