"""From a held OpenADR event to the grid intervals the site controls act on.

Expands the event per the User Guide 7.3 (:func:`controllers.ven.intervals.expand_event`)
and attaches each payload's units from the event's payload descriptors, giving the
:class:`controllers.grid_signal.GridInterval` list that :func:`grid_signal` reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from controllers.grid_signal import GridInterval
from controllers.ven.intervals import expand_event


def payload_units(event: Any, payload_type: str) -> str | None:
    """Units of ``payload_type`` in the event's payload descriptors (None if absent)."""
    for d in getattr(event, "payloadDescriptors", None) or []:
        root = getattr(d, "root", d)
        if getattr(root, "payloadType", None) == payload_type:
            units = getattr(root, "units", None)
            units = getattr(units, "root", units)  # a generated RootModel
            return units if isinstance(units, str) else None
    return None


def event_grid_intervals(
    event: Any, now: datetime, *, seed: int = 0, horizon: timedelta = timedelta(days=7)
) -> list[GridInterval]:
    """The event's intervals as :class:`GridInterval` (one payload value each).

    Structured values (a POINT payload, ...) are not control inputs and are left out.

    Raises:
        controllers.ven.intervals.IntervalError: the event's timing is malformed.
    """
    out: list[GridInterval] = []
    for a in expand_event(event, now, seed=seed, horizon=now + horizon):
        value = a.value[0] if isinstance(a.value, tuple) and a.value else a.value
        if not (value is None or isinstance(value, float | int | str | bool)):
            continue
        out.append(GridInterval(
            event_id=a.event_id, payload_type=a.payload_type, value=value,
            start=a.start, end=a.end, units=payload_units(event, a.payload_type),
            priority=a.priority,
        ))
    return out
