"""Response bodies of the read API (``dashboards.api``), as pydantic models.

They document the API (OpenAPI at ``/api/openapi.json``); the large bodies (traces,
events) are encoded directly with orjson in the same shape, so these models are their
contract, not their code path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every 4xx answer: one human-readable reason."""

    detail: str = Field(description="Why the request was refused, and what would work.")


class Kpi(BaseModel):
    """A numeric KPI: value in ``unit`` (``"1"`` for counts and shares)."""

    value: int | float = Field(description="The value, in `unit`.")
    unit: str = Field(description="kW, kWh, 1 (counts, shares 0..1), s, ms ...")


class Money(BaseModel):
    """An amount of money: a decimal string (never a float) and its currency."""

    value: str = Field(
        description="Decimal amount as a string, e.g. `\"3.70\"`; parse it as a decimal.",
        pattern=r"^-?\d+(\.\d+)?$",
    )
    unit: str = Field(description="ISO 4217 currency code, e.g. `EUR`.")


class HeadlineKpis(BaseModel):
    """The KPIs the run list shows; each is null when the run has no ``kpis.json`` yet."""

    peak_import_kw: Kpi | None = Field(description="Largest mean site import over a step, kW.")
    energy_delivered_kwh: Kpi | None = Field(description="Energy metered at the EVSEs, kWh.")
    energy_met_share: Kpi | None = Field(
        description="Delivered / requested energy of the departed sessions, 0..1."
    )
    limit_violations: Kpi | None = Field(
        description="Control steps whose mean import exceeded the grid limit (count)."
    )
    energy_cost: Money | None = Field(
        description="Cost of the site import at day-ahead prices (decimal string + currency)."
    )


class RunSummary(BaseModel):
    """One run as the run list shows it."""

    id: str = Field(description="Run id (the run folder's name); use it in the other routes.")
    scenario: str = Field(description="Scenario name.")
    kind: str = Field(description="`twin` (simulated) or `field` (recorded on a bench).")
    state: str = Field(description="`finished`, `running`, `failed` or `interrupted`.")
    start: datetime | None = Field(description="Start of the run window (UTC).")
    end: datetime | None = Field(description="End of the run window (UTC).")
    duration_h: float | None = Field(description="Length of the run window, hours.")
    step_s: float | None = Field(description="Control step, seconds.")
    live: bool = Field(description="True while the traces are still being written.")
    kpis: HeadlineKpis


class RunList(BaseModel):
    """The answer of ``GET /api/runs``."""

    count: int = Field(description="Number of runs listed (after filters).")
    runs: list[RunSummary]


class RunDetail(BaseModel):
    """The answer of ``GET /api/runs/{run_id}``."""

    run: RunSummary
    status: dict[str, Any] = Field(
        description="`status.json`: state, started_at, updated_at, finished_at, error."
    )
    scenario: dict[str, Any] = Field(
        description="The resolved scenario the run was made from (`scenario.yaml`)."
    )


class SeriesKey(BaseModel):
    """One recorded series: an entity's quantity and its unit."""

    entity: str
    quantity: str
    unit: str


class RunCatalogBody(BaseModel):
    """The answer of ``GET /api/runs/{run_id}/catalog``: what the traces hold."""

    run_id: str
    entities: list[str] = Field(description="Entity ids (EVSEs such as `CA001/1`, `site`).")
    quantities: list[str] = Field(description="Quantity names, with the unit in the name.")
    units: dict[str, str] = Field(description="Unit of each quantity.")
    series: list[SeriesKey] = Field(description="Every (entity, quantity, unit) recorded.")
    first: datetime | None = Field(description="First sample time (UTC), null without traces.")
    last: datetime | None = Field(description="Last sample time (UTC), null without traces.")


class TraceColumns(BaseModel):
    """Trace rows as columns of equal length (long format, time order within a series)."""

    time: list[str] = Field(description="Sample times, RFC 3339 UTC (`...Z`).")
    entity: list[str]
    quantity: list[str]
    value: list[float | None] = Field(description="Values in `unit`; null for NaN.")
    unit: list[str]


class TraceSeries(BaseModel):
    """One series of a per-series answer."""

    entity: str
    quantity: str
    unit: str
    rows: int = Field(description="Points in this answer.")
    source_rows: int = Field(description="Points recorded in the requested range.")
    time: list[str] = Field(description="Sample times, RFC 3339 UTC (`...Z`).")
    value: list[float | None] = Field(description="Values in `unit`; null for NaN.")


class TracesBody(BaseModel):
    """The JSON answer of ``GET /api/runs/{run_id}/traces``.

    ``columns`` is present with ``layout=columns``, ``series`` with ``layout=series``.
    """

    run_id: str
    layout: Literal["columns", "series"]
    rows: int = Field(description="Rows in this answer (after downsampling).")
    source_rows: int = Field(description="Rows recorded in the requested range.")
    downsampled: bool = Field(description="True when some series was cut to `max_points`.")
    max_points: int | None = Field(description="The `max_points` asked for, if any.")
    live: bool = Field(description="True while the run is still being written.")
    columns: TraceColumns | None = None
    series: list[TraceSeries] | None = None


class EventRow(BaseModel):
    """One protocol or domain event."""

    time: str = Field(description="Event time, RFC 3339 UTC (`...Z`).")
    source: str = Field(description="Who emitted it: `csms`, `dlm`, a station id ...")
    kind: str = Field(description="Event kind, e.g. `transaction.started`.")
    payload: Any = Field(description="The event's JSON payload.")


class EventsBody(BaseModel):
    """The JSON answer of ``GET /api/runs/{run_id}/events``."""

    run_id: str
    count: int = Field(description="Events in this answer.")
    truncated: bool = Field(description="True when `limit` cut off further matching events.")
    live: bool = Field(description="True while the run is still being written.")
    events: list[EventRow]
