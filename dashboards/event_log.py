"""The run's event log for the dashboard: what to draw on the graphs and the table pages.

Events (``time, source, kind, payload``) are of three sorts here:

* grid events (kind ``openadr.*``, ``grid.*``, ``ven.*``, ``vtn.*``, ``dr.*``,
  ``limit.*``): drawn as vertical bands over the period their payload names
  (``start``/``end``, ``start`` plus ``duration_s`` or an ISO 8601 ``duration``, an
  OpenADR ``interval_period``/``intervalPeriod``, or ``intervals`` of those), else as a
  vertical line at the event time;
* chatty protocol events (``ocpp.*``, ``profile.*``, ``station.*``, ``dlm.*``,
  ``transaction.*``, ``vehicle.*``, ``exchange.*`` recorded fieldbus traffic): in the
  table only;
* every other kind (``session.arrived`` ... and kinds later issues add): markers.

The table is filtered and paged on the server: DataTable's ``filter_query`` is parsed by
:func:`parse_filter`; exact kind/source and payload text filters and time bounds go down
to :meth:`twin.run_folder.RunFolder.events`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from twin.run_folder import RunFolder

GRID_PREFIXES = ("openadr.", "grid.", "ven.", "vtn.", "dr.", "limit.")
CHATTY_PREFIXES = ("ocpp.", "profile.", "station.", "dlm.", "transaction.", "vehicle.",
                   "exchange.")

#: Most bands drawn on the site graph; most markers per event kind.
MAX_BANDS = 200
MAX_MARKERS_PER_KIND = 2000


def is_grid_kind(kind: str) -> bool:
    """Whether ``kind`` is a grid event (drawn as a band)."""
    return kind.startswith(GRID_PREFIXES)


def is_marker_kind(kind: str) -> bool:
    """Whether ``kind`` is drawn as a marker (neither grid event nor protocol chatter)."""
    return not kind.startswith(GRID_PREFIXES) and not kind.startswith(CHATTY_PREFIXES)


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: Any) -> timedelta | None:
    """Seconds (a number) or an ISO 8601 duration such as ``PT2H30M`` as a timedelta."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return timedelta(seconds=float(text))
    if not isinstance(text, str):
        return None
    m = _DURATION.match(text.strip().upper())
    if not m or not any(m.groupdict().values()):
        return None
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _span(doc: dict[str, Any], at: datetime) -> tuple[datetime, datetime] | None:
    """The period one mapping names, relative to the event time ``at``."""
    for key in ("interval_period", "intervalPeriod"):
        inner = doc.get(key)
        if isinstance(inner, dict):
            found = _span(inner, at)
            if found:
                return found
    start = _time(doc.get("start")) or _time(doc.get("start_time"))
    end = _time(doc.get("end")) or _time(doc.get("end_time")) or _time(doc.get("until"))
    if start and end:
        return (start, end) if end >= start else (end, start)
    length = parse_duration(doc.get("duration_s")) or parse_duration(doc.get("duration"))
    if length is not None:
        begin = start or at
        return begin, begin + length
    if end:
        return at, end
    return None


def event_spans(time: datetime, payload: str) -> list[tuple[datetime, datetime]]:
    """Periods a grid event's payload names; empty when it names none."""
    try:
        doc = json.loads(payload)
    except (TypeError, ValueError):
        return []
    if not isinstance(doc, dict):
        return []
    spans: list[tuple[datetime, datetime]] = []
    intervals = doc.get("intervals")
    if isinstance(intervals, list):
        base = _span(doc, time)
        for item in intervals:
            if isinstance(item, dict):
                found = _span(item, base[0] if base else time)
                if found:
                    spans.append(found)
    if not spans:
        found = _span(doc, time)
        if found:
            spans.append(found)
    return spans


@dataclass
class Overlay:
    """Events to draw on the site graph.

    Attributes:
        bands: ``(start, end, kind, label)`` of grid events (start == end: a line).
        markers: events drawn as markers: ``time, source, kind, payload``.
    """

    bands: list[tuple[datetime, datetime, str, str]]
    markers: pd.DataFrame


def overlay(events: pd.DataFrame) -> Overlay:
    """Split events into grid bands and markers (see the module docstring)."""
    if len(events) == 0:
        return Overlay([], events)
    kinds = events["kind"].astype(str)
    grid = events[kinds.map(is_grid_kind).to_numpy(dtype=bool)]
    bands: list[tuple[datetime, datetime, str, str]] = []
    for t, source, kind, payload in grid[["time", "source", "kind", "payload"]].itertuples(
        index=False
    ):
        at = pd.Timestamp(t).to_pydatetime()
        spans = event_spans(at, str(payload)) or [(at, at)]
        for s, e in spans:
            bands.append((s, e, str(kind), f"{kind} ({source})"))
            if len(bands) >= MAX_BANDS:
                break
        if len(bands) >= MAX_BANDS:
            break
    markers = events[kinds.map(is_marker_kind).to_numpy(dtype=bool)]
    return Overlay(bands, markers)


def overlay_events(rf: RunFolder, start: datetime | None, end: datetime | None,
                   known_kinds: list[str] | None = None) -> pd.DataFrame:
    """Events of the grid and marker kinds in ``[start, end]``.

    With ``known_kinds`` (the run's distinct kinds) only those kinds are read; grid
    events are read from a day before ``start`` so that a band that began before the
    visible range is still drawn.
    """
    wanted = None
    if known_kinds is not None:
        wanted = [k for k in known_kinds if is_grid_kind(k) or is_marker_kind(k)]
        if not wanted:
            none: pd.DataFrame = rf.events(limit=0)
            return none
    lead = start - timedelta(days=1) if start is not None else None
    frame = rf.events(kinds=wanted, start=lead, end=end)
    if start is not None and len(frame):
        kinds = frame["kind"].astype(str)
        keep = (frame["time"] >= pd.Timestamp(start)) | kinds.map(is_grid_kind)
        frame = frame[keep.to_numpy(dtype=bool)]
    return frame


# --------------------------------------------------------------------------- table


COLUMNS = ("time", "source", "kind", "payload")

_CLAUSE = re.compile(r"^\s*\{(?P<col>[^}]+)\}\s+(?P<op>\S+)\s*(?P<value>.*?)\s*$")
_OPS = {
    "=": "eq", "eq": "eq", "s=": "eq", "seq": "eq", "i=": "ieq", "ieq": "ieq",
    "!=": "ne", "ne": "ne", "s!=": "ne", "sne": "ne", "i!=": "ne", "ine": "ne",
    "contains": "contains", "scontains": "contains", "icontains": "icontains",
    ">": "gt", "gt": "gt", ">=": "ge", "ge": "ge", "<": "lt", "lt": "lt",
    "<=": "le", "le": "le", "datestartswith": "startswith",
}


@dataclass(frozen=True)
class Clause:
    """One condition of a table filter: ``{column} op value``."""

    column: str
    op: str
    value: str


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        return text[1:-1].replace("\\" + text[0], text[0])
    return text


def parse_filter(query: str | None) -> list[Clause]:
    """Parse DataTable's ``filter_query`` (clauses joined by ``&&``).

    Raises:
        ValueError: a clause that is not ``{column} operator value`` or names an unknown
            column or operator.
    """
    if not query or not query.strip():
        return []
    clauses = []
    for part in re.split(r"\s+&&\s+", query.strip()):
        m = _CLAUSE.match(part)
        if not m:
            raise ValueError(f"cannot read filter {part!r}")
        col, op = m.group("col").strip(), m.group("op").strip().lower()
        if col not in COLUMNS:
            raise ValueError(f"unknown column {col!r} in filter")
        if op not in _OPS:
            raise ValueError(f"unknown operator {op!r} in filter")
        clauses.append(Clause(col, _OPS[op], _unquote(m.group("value"))))
    return clauses


def _apply(frame: pd.DataFrame, c: Clause) -> pd.DataFrame:
    if c.column == "time":
        col = frame["time"]
        if c.op in ("startswith", "contains", "icontains"):
            # As shown in the table: "2019-09-10 14:05:00".
            stamp = col.dt.strftime("%Y-%m-%d %H:%M:%S")
            text_value = c.value.replace("T", " ")
            hit = (stamp.str.startswith(text_value) if c.op == "startswith"
                   else stamp.str.contains(text_value, regex=False)).to_numpy(dtype=bool)
            found: pd.DataFrame = frame[hit]
            return found
        t = _time(c.value) or _time(c.value + "T00:00")
        if t is None:
            raise ValueError(f"cannot read time {c.value!r}")
        ts = pd.Timestamp(t)
        mask = {"eq": col == ts, "ieq": col == ts, "ne": col != ts, "gt": col > ts,
                "ge": col >= ts, "lt": col < ts, "le": col <= ts}[c.op]
        return frame[mask.to_numpy(dtype=bool)]
    text = frame[c.column].astype(str)
    if c.op == "eq":
        mask = text == c.value
    elif c.op == "ieq":
        mask = text.str.lower() == c.value.lower()
    elif c.op == "ne":
        mask = text != c.value
    elif c.op == "contains":
        mask = text.str.contains(c.value, regex=False)
    elif c.op == "icontains":
        mask = text.str.contains(c.value, case=False, regex=False)
    elif c.op == "startswith":
        mask = text.str.startswith(c.value)
    else:
        ops = {"gt": text > c.value, "ge": text >= c.value, "lt": text < c.value,
               "le": text <= c.value}
        mask = ops[c.op]
    return frame[mask.to_numpy(dtype=bool)]


@dataclass
class Page:
    """One page of the filtered event log.

    Attributes:
        rows: the page's rows as table records (time as ISO text).
        total: rows matching the filter.
        page_count: pages at this page size (at least 1).
    """

    rows: list[dict[str, Any]]
    total: int
    page_count: int


def event_page(
    rf: RunFolder,
    query: str | None,
    page: int,
    page_size: int,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Page:
    """Page ``page`` (from 0) of the events matching ``query`` within ``[start, end]``.

    Equality on ``kind``/``source``, ``contains`` on ``payload`` and bounds on ``time``
    are pushed down to the Parquet reader; the rest is filtered in memory.

    Raises:
        ValueError: the filter cannot be read (see :func:`parse_filter`).
    """
    clauses = parse_filter(query)
    kinds = sources = None
    text = None
    rest = []
    for c in clauses:
        if c.column == "kind" and c.op == "eq" and kinds is None:
            kinds = [c.value]
        elif c.column == "source" and c.op == "eq" and sources is None:
            sources = [c.value]
        elif c.column == "payload" and c.op in ("contains", "icontains") and text is None:
            text = c.value  # read case-insensitively; a case-sensitive clause stays
            if c.op == "contains":
                rest.append(c)
        else:
            if c.column == "time" and c.op in ("ge", "gt"):
                t = _time(c.value)
                if t is not None and (start is None or t > start):
                    start = t
            if c.column == "time" and c.op in ("le", "lt"):
                t = _time(c.value)
                if t is not None and (end is None or t < end):
                    end = t
            rest.append(c)
    frame = rf.events(kinds=kinds, sources=sources, start=start, end=end, text=text)
    for c in rest:
        frame = _apply(frame, c)
    total = len(frame)
    size = max(1, int(page_size))
    pages = max(1, -(-total // size))
    page = min(max(0, int(page)), pages - 1)
    chunk = frame.iloc[page * size:(page + 1) * size]
    rows = [
        {"time": pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S"), "source": str(s),
         "kind": str(k), "payload": str(p)}
        for t, s, k, p in chunk[list(COLUMNS)].itertuples(index=False)
    ]
    return Page(rows, total, pages)
