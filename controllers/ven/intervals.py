"""Expansion of OpenADR 3 event intervals into absolute, time-stamped intervals.

Pure functions, no I/O, no wall clock: the caller passes ``now``. The rules are those of
the OpenADR 3.1.0 User Guide, section 7.3 "Event and Interval Timing" and section 7.4
"Variable duration intervals" (``/work/shared/openadr3/docs/User_Guide.md``); each rule
below names the paragraph it implements.

Interpretations where the guide is silent or ambiguous (each is documented where applied):

- absent ``duration`` at both interval and event level: the interval is indefinite
  (``end is None``), like "P9999Y". An explicit "PT0S" is a zero-length interval, which is
  never active (intervals are half-open, ``[start, end)``).
- ``randomizeStart``: the guide (7.3 "intervalPeriod.randomizeStart") says to shift start
  "positive or negative, within the bounds of the absolute value of randomizeStart" with
  uniform probability; that is the default (``randomize_mode="symmetric"``, offset in
  ``(-r, r)``). ``randomize_mode="delay"`` draws in ``[0, r)`` instead, for programs that
  forbid starting early.
- ``event.duration`` (7.3 "event.duration") other than absent/"PT0S" clips the set of
  intervals when shorter than their span and repeats it when longer; an indefinite
  repetition ("P9999Y") is expanded up to ``horizon`` (default ``now`` plus one span).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from controllers.ven.oadr3_models import Event

__all__ = [
    "ActiveInterval",
    "IntervalError",
    "PayloadValue",
    "active_at",
    "expand_event",
    "next_change",
    "parse_duration",
]

#: One entry of a ``valuesMap.values`` array (a POINT is kept as its ``{"x", "y"}`` map).
PayloadValue = float | int | str | bool | Mapping[str, Any] | None

#: Payload types whose values array is one value made of several items, not a packed
#: series: User Guide 7.3 "multi-value payloads" names POINT ("naturally contain multiple
#: values, e.g. x, y"). Their values are kept together on one interval as a tuple.
NATURALLY_MULTI_VALUED: frozenset[str] = frozenset({"POINT"})

_INDEFINITE_YEARS = 9999  # "P9999Y" represents infinity (User Guide 7.3 duration)
_DAYS_PER_YEAR = 365
_DAYS_PER_MONTH = 30
_US = timedelta(microseconds=1)

_DURATION_RE = re.compile(
    r"^(?P<sign>-?)P(?=\d|T\d)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?"
    r"(?:(?P<days>\d+)(?P<dw>[DW]))?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


_SECONDS_ONLY_RE = re.compile(r"^-?P\d+(?:\.\d+)?S$")


class IntervalError(ValueError):
    """An event's timing is malformed or cannot be expanded."""


@dataclass(frozen=True)
class ActiveInterval:
    """One payload of one (sub-)interval of an event, on absolute UTC time.

    ``start`` and ``end`` are UTC-aware; ``end is None`` means indefinite. The interval
    is half-open, ``[start, end)``. ``priority``: lower number is higher priority, zero
    the highest (User Guide 7.1). ``randomized_offset_s`` is the randomizeStart shift
    already applied to ``start``, in seconds. ``value`` is one entry of the payload's
    values array, or a tuple of all entries for a naturally multi-valued type (POINT).
    ``sub_index`` numbers the sub-intervals of a multi-valued payload (0 otherwise); all
    sub-intervals keep the interval's ``interval_id`` (User Guide 7.5 "interval id").
    """

    event_id: str
    program_id: str
    event_name: str | None
    priority: int | None
    interval_id: int
    start: datetime
    end: datetime | None
    payload_type: str
    value: PayloadValue | tuple[PayloadValue, ...]
    randomized_offset_s: float
    sub_index: int = 0

    def contains(self, t: datetime) -> bool:
        """Whether ``t`` (UTC-aware) lies in ``[start, end)``."""
        return self.start <= t and (self.end is None or t < self.end)


def parse_duration(text: str) -> timedelta | None:
    """Parse an ISO 8601 duration as used by OpenADR 3 into a ``timedelta``.

    Supports ``[-]PnYnMnDTnHnMnS`` (each part optional, fractional seconds allowed) and
    ``PnW``, the forms of the OpenAPI ``duration`` pattern. A year counts 365 days and a
    month 30 days (calendar-free; the guide, 7.3 "intervalPeriod.duration", advises against
    months). "P0S" (seconds without ``T``, as the guide writes the randomizeStart default in 7.3)
    is accepted. Returns ``None`` for "P9999Y" (and any duration of 9999 years or more), which
    represents infinity (User Guide 7.3 "intervalPeriod.duration").

    Raises:
        IntervalError: ``text`` is not a string or not an ISO 8601 duration.
    """
    if not isinstance(text, str):
        raise IntervalError(f"duration must be an ISO 8601 string, got {text!r}")
    text = text.strip()
    if _SECONDS_ONLY_RE.match(text):  # "P0S", the randomizeStart default the guide writes
        text = text.replace("P", "PT", 1)
    m = _DURATION_RE.match(text)
    if m is None:
        raise IntervalError(f"malformed ISO 8601 duration {text!r}")
    years = int(m["years"] or 0)
    if years >= _INDEFINITE_YEARS:
        return None
    days = int(m["days"] or 0) * (7 if m["dw"] == "W" else 1)
    total = timedelta(
        days=years * _DAYS_PER_YEAR + int(m["months"] or 0) * _DAYS_PER_MONTH + days,
        hours=int(m["hours"] or 0),
        minutes=int(m["minutes"] or 0),
        seconds=float(m["seconds"] or 0),
    )
    return -total if m["sign"] else total


def _parse_time(value: Any, where: str) -> datetime:
    """Parse a date-time (or date) into a UTC-aware datetime; a zone is required."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise IntervalError(f"{where}: malformed date-time {value!r}") from exc
        if len(text) == len("0001-01-01"):  # date only: midnight UTC
            parsed = parsed.replace(tzinfo=UTC)
    else:
        raise IntervalError(f"{where}: date-time must be a string, got {value!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        if (parsed.year, parsed.month, parsed.day) == (1, 1, 1):
            parsed = parsed.replace(tzinfo=UTC)  # '0001-01-01T00:00:00' (User Guide 7.3)
        else:
            raise IntervalError(f"{where}: date-time {value!r} has no time zone")
    return parsed.astimezone(UTC)


def _is_beginning_of_time(t: datetime) -> bool:
    """'0001-01-01' / '0001-01-01T00:00:00' (User Guide 7.3 "intervalPeriod.start")."""
    return t == datetime(1, 1, 1, tzinfo=UTC)


def _check_aware(t: datetime, name: str) -> None:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise IntervalError(f"{name} must be a timezone-aware datetime, got {t!r}")


def _as_mapping(event: Event | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(event, Event):
        # exclude_unset: a duration the VTN did not send is not the model's "PT0S" default
        dumped: dict[str, Any] = event.model_dump(mode="json", exclude_unset=True)
        return dumped
    if isinstance(event, Mapping):
        return event
    raise IntervalError(f"event must be an Event or a mapping, got {type(event).__name__}")


def _period(obj: Any, where: str) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise IntervalError(f"{where}: intervalPeriod must be an object, got {obj!r}")
    return obj


def _draw_offset(rng: random.Random, bound: timedelta, mode: str) -> timedelta:
    """Uniform offset: symmetric in (-|bound|, |bound|), delay in [0, |bound|)."""
    bound_us = abs(bound) // _US
    if bound_us == 0:
        return timedelta(0)
    if mode == "delay":
        return rng.randrange(bound_us) * _US
    return rng.randrange(-bound_us + 1, bound_us) * _US


def _randomize_bound(value: Any, where: str) -> timedelta:
    if value is None:
        return timedelta(0)
    bound = parse_duration(value)
    if bound is None:
        raise IntervalError(f"{where}: randomizeStart cannot be indefinite ({value!r})")
    return bound


def _split(
    start: datetime, end: datetime | None, payload: Mapping[str, Any], where: str
) -> list[tuple[int, datetime, datetime | None, PayloadValue | tuple[PayloadValue, ...]]]:
    """Split one payload over its interval (User Guide 7.3 "multi-valued payloads").

    "the duration of an intervalPeriod must be divided by the number of entries in the
    payload values field to derive the duration of each 'sub-interval'"; this applies to
    every type except the naturally multi-valued ones (7.3 "multi-value payloads": POINT).
    Boundaries are rounded to the microsecond so the sub-intervals tile the interval
    exactly (lengths differ by at most 1 µs when D is not a multiple of N µs).
    """
    ptype = payload.get("type")
    values = payload.get("values")
    if not isinstance(ptype, str) or not ptype:
        raise IntervalError(f"{where}: payload without a type: {payload!r}")
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise IntervalError(f"{where}: payload values must be an array, got {values!r}")
    if ptype in NATURALLY_MULTI_VALUED:
        return [(0, start, end, tuple(values))]
    if len(values) <= 1:
        return [(0, start, end, values[0] if values else None)]
    if end is None:
        raise IntervalError(
            f"{where}: {len(values)} {ptype} values in an indefinite interval cannot be "
            "divided into sub-intervals (User Guide 7.3 multi-valued payloads)"
        )
    total_us = (end - start) // _US
    n = len(values)
    return [
        (k, start + (total_us * k // n) * _US, start + (total_us * (k + 1) // n) * _US, v)
        for k, v in enumerate(values)
    ]


def expand_event(
    event: Event | Mapping[str, Any],
    now: datetime,
    *,
    seed: int = 0,
    randomize_mode: Literal["symmetric", "delay"] = "symmetric",
    horizon: datetime | None = None,
) -> list[ActiveInterval]:
    """Expand an event into absolute intervals, one per payload and sub-interval.

    ``event`` is a validated ``Event`` or a camelCase mapping (e.g. from
    ``controllers.ven.tolerant.normalise``). ``now`` (UTC-aware) resolves 'do it now'
    starts. Rules (OpenADR 3.1.0 User Guide):

    - 7.3 "intervalPeriod": ``event.intervalPeriod`` is the default for every interval;
      an interval's own start/duration/randomizeStart take precedence (7.3, 7.4).
    - 7.3 "intervalPeriod.start": an interval without its own absolute start (or with
      '0001-01-01') starts where the previous one ended; the first starts at the event's
      start. '0001-01-01' at event level, or on the first interval without an event
      start, or no start anywhere, means 'do it now': ``now``.
    - 7.4: without ``event.intervalPeriod`` every interval must carry one.
    - 7.3 "intervalPeriod.duration": "P9999Y" is infinity (``end is None``); an absent
      duration is also taken as indefinite (the guide is silent; see module notes).
    - 7.3 "multi-valued payloads" / "multi-value payloads": N values in an interval of
      duration D give N sub-intervals of D/N, one value each, except POINT.
    - 7.3 "intervalPeriod.randomizeStart": the first interval's start is shifted by a
      uniform offset drawn from ``random.Random(f"{seed}:{event_id}")``; following and
      absolute-start intervals are shifted by the same amount unless they carry their own
      randomizeStart, which draws a new offset. ``randomize_mode``: "symmetric" (the
      guide: within ``(-r, r)``) or "delay" (``[0, r)``).
    - 7.3 "event.duration": clips or repeats the intervals; indefinite repetition is
      expanded up to ``horizon`` (UTC-aware; default ``now`` plus one span of intervals).

    Returns intervals in event order (interval, payload, sub-interval).

    Raises:
        IntervalError: malformed timing (bad duration or date-time, naive date-time,
            missing intervalPeriod per 7.4, negative duration, an interval following an
            indefinite one, multiple values in an indefinite interval).
    """
    _check_aware(now, "now")
    if horizon is not None:
        _check_aware(horizon, "horizon")
    if randomize_mode not in ("symmetric", "delay"):
        raise IntervalError(f"randomize_mode must be 'symmetric' or 'delay': {randomize_mode!r}")
    ev = _as_mapping(event)
    now = now.astimezone(UTC)
    event_id = str(ev.get("id") or "")
    program_id = str(ev.get("programID") or "")
    name = ev.get("eventName")
    priority = ev.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise IntervalError(f"event {event_id!r}: priority must be an integer, got {priority!r}")
    has_event_period = ev.get("intervalPeriod") is not None
    ev_period = _period(ev.get("intervalPeriod"), f"event {event_id!r}")
    raw_intervals = ev.get("intervals") or []
    if not isinstance(raw_intervals, Sequence) or isinstance(raw_intervals, str | bytes):
        raise IntervalError(f"event {event_id!r}: intervals must be an array")

    ev_start: datetime | None = None
    if ev_period.get("start") is not None:
        ev_start = _parse_time(ev_period["start"], f"event {event_id!r} intervalPeriod.start")
        if _is_beginning_of_time(ev_start):
            ev_start = now  # 'do it now' event (7.3)

    rng = random.Random(f"{seed}:{event_id}")
    offset = timedelta(0)
    prev_end: datetime | None = None  # nominal (unrandomized) end of the previous interval
    out: list[ActiveInterval] = []
    for i, raw in enumerate(raw_intervals):
        where = f"event {event_id!r} interval #{i}"
        if not isinstance(raw, Mapping):
            raise IntervalError(f"{where}: interval must be an object, got {raw!r}")
        if raw.get("intervalPeriod") is None and not has_event_period:
            raise IntervalError(
                f"{where}: no intervalPeriod in the interval nor the event (User Guide 7.4)"
            )
        own = _period(raw.get("intervalPeriod"), where)
        interval_id = raw.get("id")
        if isinstance(interval_id, bool) or not isinstance(interval_id, int):
            raise IntervalError(f"{where}: interval id must be an integer, got {interval_id!r}")

        own_start = (
            _parse_time(own["start"], f"{where} intervalPeriod.start")
            if own.get("start") is not None
            else None
        )
        if own_start is not None and _is_beginning_of_time(own_start):
            own_start = None  # '0001-01-01' on an interval: follow the convention below
        if i == 0:
            nominal_start = own_start or ev_start or now
        elif own_start is not None:
            nominal_start = own_start
        else:
            if prev_end is None:
                raise IntervalError(
                    f"{where}: follows an indefinite interval and has no absolute start"
                )
            nominal_start = prev_end

        raw_duration = own.get("duration", ev_period.get("duration"))
        duration = parse_duration(raw_duration) if raw_duration is not None else None
        if duration is not None and duration < timedelta(0):
            raise IntervalError(f"{where}: negative duration {raw_duration!r}")
        nominal_end = None if duration is None else nominal_start + duration

        if i == 0:
            bound = _randomize_bound(
                own.get("randomizeStart", ev_period.get("randomizeStart")), where
            )
            offset = _draw_offset(rng, bound, randomize_mode)
        elif own.get("randomizeStart") is not None:
            offset = _draw_offset(
                rng, _randomize_bound(own["randomizeStart"], where), randomize_mode
            )
        prev_end = nominal_end

        start = nominal_start + offset
        end = None if nominal_end is None else nominal_end + offset
        payloads = raw.get("payloads") or []
        if not isinstance(payloads, Sequence) or isinstance(payloads, str | bytes):
            raise IntervalError(f"{where}: payloads must be an array")
        for payload in payloads:
            if not isinstance(payload, Mapping):
                raise IntervalError(f"{where}: payload must be an object, got {payload!r}")
            for k, s, e, value in _split(start, end, payload, where):
                out.append(
                    ActiveInterval(
                        event_id=event_id,
                        program_id=program_id,
                        event_name=name if isinstance(name, str) else None,
                        priority=priority,
                        interval_id=interval_id,
                        start=s,
                        end=e,
                        payload_type=str(payload["type"]),
                        value=value,
                        randomized_offset_s=offset.total_seconds(),
                        sub_index=k,
                    )
                )
    return _apply_event_duration(out, ev.get("duration"), now, horizon, event_id)


def _apply_event_duration(
    intervals: list[ActiveInterval],
    raw: Any,
    now: datetime,
    horizon: datetime | None,
    event_id: str,
) -> list[ActiveInterval]:
    """Clip or repeat the intervals per ``event.duration`` (User Guide 7.3 "event.duration").

    Absent or "PT0S" (the schema default) has no effect. The span of the intervals runs
    from the earliest start to the latest end; the pattern repeats with that period.
    """
    if raw is None or not intervals:
        return intervals
    duration = parse_duration(raw)
    if duration is not None and duration <= timedelta(0):
        return intervals
    first = min(iv.start for iv in intervals)
    ends = [iv.end for iv in intervals]
    span_end = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
    event_end = None if duration is None else first + duration
    if span_end is None or (event_end is not None and event_end <= span_end):
        return _clip(intervals, event_end)
    # repeat the pattern (span_end < event_end, or event_end indefinite)
    period = span_end - first
    if period <= timedelta(0):
        return intervals
    limit = event_end
    stop = horizon if horizon is not None else max(now, first) + period
    if limit is None or stop < limit:
        limit = stop
    out: list[ActiveInterval] = []
    k = 0
    while k == 0 or first + k * period < limit:
        shift = k * period
        out.extend(
            replace(iv, start=iv.start + shift, end=None if iv.end is None else iv.end + shift)
            for iv in intervals
        )
        k += 1
        if k > 1_000_000:
            raise IntervalError(f"event {event_id!r}: too many repetitions before horizon")
    return _clip(out, event_end)


def _clip(intervals: list[ActiveInterval], event_end: datetime | None) -> list[ActiveInterval]:
    if event_end is None:
        return intervals
    return [
        replace(iv, end=event_end if iv.end is None or iv.end > event_end else iv.end)
        for iv in intervals
        if iv.start < event_end
    ]


def active_at(intervals: Iterable[ActiveInterval], t: datetime) -> list[ActiveInterval]:
    """The intervals in force at ``t`` (UTC-aware): ``start <= t < end``, in input order.

    Raises:
        IntervalError: ``t`` is naive.
    """
    _check_aware(t, "t")
    return [iv for iv in intervals if iv.contains(t)]


def next_change(intervals: Iterable[ActiveInterval], t: datetime) -> datetime | None:
    """The first start or end strictly after ``t`` (UTC-aware), or None if none follows.

    Raises:
        IntervalError: ``t`` is naive.
    """
    _check_aware(t, "t")
    later = [b for iv in intervals for b in (iv.start, iv.end) if b is not None and b > t]
    return min(later) if later else None
