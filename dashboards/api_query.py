"""Checks of the read API's query parameters, each refusal with its reason.

Times are ISO 8601 with a zone; a naive or unparsable time, or a start after the end, is
a 422. Entity and quantity names are checked against the run's catalog: a name the run
does not hold is a 404 that lists what it does hold.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
from fastapi import HTTPException
from pydantic import WithJsonSchema

from dashboards.formatting import HEADLINE_KPIS
from twin.run_folder import RunInfo

#: Fields ``GET /api/runs?sort=`` accepts (a ``-`` prefix sorts descending).
SORT_FIELDS = (
    "id", "scenario", "kind", "state", "start", "end", "duration_h", "step_s",
    *HEADLINE_KPIS,
)

#: Schema of a time query parameter: documented as RFC 3339 ``date-time``, checked by
#: :func:`parse_time` (so that a refusal says why).
ISO_TIME = WithJsonSchema({"type": "string", "format": "date-time"})

#: Most names listed in a 404 about unknown entities or quantities.
_MAX_LISTED = 40


def parse_time(name: str, value: str | None) -> datetime | None:
    """``value`` (ISO 8601 with a zone) as an aware UTC datetime.

    Raises:
        HTTPException: 422 for an unparsable or naive time, with the reason.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        t = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        hint = ""
        if " " in text and text.count(":") >= 3:
            hint = " (a '+' in a URL query is read as a space: write it as %2B, or use Z)"
        raise HTTPException(
            422,
            f"{name}={value!r} is not an ISO 8601 time; use e.g. "
            f"2019-09-10T14:00:00Z or 2019-09-10T07:00:00-07:00{hint}",
        ) from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise HTTPException(
            422,
            f"{name}={value!r} has no time zone; add one, e.g. {text}Z for UTC "
            "or an offset such as -07:00",
        )
    return t.astimezone(UTC)


def time_range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    """Parsed ``start`` and ``end``.

    Raises:
        HTTPException: 422 for a bad time, or a start after the end.
    """
    t0, t1 = parse_time("start", start), parse_time("end", end)
    if t0 is not None and t1 is not None and t0 > t1:
        raise HTTPException(
            422, f"start ({t0.isoformat()}) is after end ({t1.isoformat()})"
        )
    return t0, t1


def check_names(
    what: str, asked: list[str] | None, known: list[str], run_id: str | None = None
) -> None:
    """Refuse names the run does not hold; ``what`` is ``entity`` or ``quantity``.

    Raises:
        HTTPException: 404 naming the unknown ones and listing the known ones.
    """
    if not asked:
        return
    have = set(known)
    missing = [a for a in dict.fromkeys(asked) if a not in have]
    if not missing:
        return
    listed = ", ".join(known[:_MAX_LISTED]) or "none"
    more = f" and {len(known) - _MAX_LISTED} more" if len(known) > _MAX_LISTED else ""
    noun = what if len(missing) == 1 else what[:-1] + "ies"
    raise HTTPException(
        404,
        f"unknown {noun} {', '.join(repr(m) for m in missing)}; "
        f"{'this run' if run_id is None else f'run {run_id!r}'} has: {listed}{more}",
    )


def estimate_rows(
    catalog: pd.DataFrame,
    info: RunInfo,
    entities: list[str] | None,
    quantities: list[str] | None,
    start: datetime | None,
    end: datetime | None,
) -> int | None:
    """Upper estimate of the trace rows a query matches, without reading the traces.

    Series matched times the steps of the run window within [start, end]; None when the
    run window or step is unknown.
    """
    if info.start is None or info.end is None or not info.step_s:
        return None
    keys = catalog
    if entities:
        keys = keys[keys["entity"].isin(entities)]
    if quantities:
        keys = keys[keys["quantity"].isin(quantities)]
    t0 = max(start, info.start) if start else info.start
    t1 = min(end, info.end) if end else info.end
    if t1 < t0:
        return 0
    steps = math.floor((t1 - t0).total_seconds() / info.step_s) + 1
    return len(keys) * steps


def kpi_entry(doc: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """``{"value", "unit"}`` of KPI ``name`` from a KPI document, None when absent.

    Money (``energy_cost``) is always a decimal string.
    """
    if not doc:
        return None
    for section in ("kpis", "wall"):
        entry = (doc.get(section) or {}).get(name)
        if isinstance(entry, dict) and "value" in entry:
            out = {"value": entry["value"], "unit": str(entry.get("unit", ""))}
            if name == "energy_cost" and not isinstance(out["value"], str):
                out["value"] = str(Decimal(repr(out["value"])))
            return out
    return None


def money_safe(doc: dict[str, Any]) -> dict[str, Any]:
    """A KPI document with ``energy_cost`` as a decimal string wherever it appears."""
    out = dict(doc)
    for section in ("kpis", "wall"):
        entries = out.get(section)
        if isinstance(entries, dict) and "energy_cost" in entries:
            out[section] = dict(entries)
            out[section]["energy_cost"] = kpi_entry(doc, "energy_cost")
    return out


def sort_key(field: str, row: dict[str, Any]) -> Any:
    """Sort key of a run-list row by ``field``: comparable values of one type."""
    if field in HEADLINE_KPIS:
        entry = row["kpis"].get(field)
        if entry is None:
            return None
        value = entry["value"]
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    value = row.get(field)
    return value


def sort_runs(rows: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    """``rows`` sorted by ``sort`` (``-`` prefix: descending); runs lacking it go last.

    Raises:
        HTTPException: 422 for a field that cannot be sorted by.
    """
    if not sort:
        return rows
    descending = sort.startswith("-")
    field = sort.lstrip("-+")
    if field not in SORT_FIELDS:
        raise HTTPException(
            422, f"cannot sort by {field!r}; sort by one of {', '.join(SORT_FIELDS)} "
            "(prefix - for descending)"
        )
    have = [r for r in rows if sort_key(field, r) is not None]
    lack = [r for r in rows if sort_key(field, r) is None]
    have.sort(key=lambda r: sort_key(field, r), reverse=descending)
    return have + lack
