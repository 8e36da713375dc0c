"""``migrid ven``: the site's VEN against any OpenADR 3.1 VTN, on the wall clock.

Runs :class:`controllers.ven.client.Ven` (OAuth2, registration, webhook / MQTT / polling)
and prints JSON lines: every VEN event (``ven.*``), a ``held`` line whenever the set of
held events changes (ids, names, programs, payload types), and a ``control`` line whenever
the control the site would apply changes (:func:`controllers.grid_signal.grid_signal`:
import limit, prices, SIMPLE level, emergency, EV share). This is the one place besides
the bench that reads the wall clock: it plays the runtime's part and passes ``now`` in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from controllers.grid_signal import GridInterval, GridResponse, GridSignal, grid_signal
from controllers.ven.client import Ven
from controllers.ven.config import VenConfig
from controllers.ven.grid_intervals import event_grid_intervals
from controllers.ven.intervals import IntervalError


def _line(out: TextIO, kind: str, now: datetime, payload: dict[str, Any]) -> None:
    out.write(json.dumps({"time": now.isoformat(), "kind": kind, **payload}, default=str))
    out.write("\n")
    out.flush()


def control_line(signal: GridSignal) -> dict[str, Any]:
    """The fields of a ``control`` line."""
    return {
        "import_limit_kw": signal.import_limit_kw,
        "price_per_mwh": signal.price_per_mwh,
        "export_price_per_mwh": signal.export_price_per_mwh,
        "simple_level": signal.simple_level,
        "emergency": signal.emergency,
        "ev_share": signal.ev_share,
        "ghg_g_per_kwh": signal.ghg_g_per_kwh,
        "events": list(signal.events),
        "reasons": list(signal.reasons),
    }


async def run_ven(
    config: VenConfig,
    *,
    out: TextIO,
    step_s: float = 5.0,
    response: GridResponse | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    stop: asyncio.Event | None = None,
) -> None:
    """Run the VEN until ``stop`` is set (or the task is cancelled), printing JSON lines.

    Args:
        config: VTN URL, client id and secret, notification preference, TLS.
        out: where the JSON lines go.
        step_s: wall-clock seconds between VEN steps (token refresh, polling, control).
        response: how the site answers SIMPLE levels and prices.
        clock: the wall clock (replaceable in tests).
        stop: set to end the run.
    """
    stop = stop or asyncio.Event()
    now = clock()

    def sink(kind: str, payload: dict[str, Any]) -> None:
        _line(out, kind, clock(), payload)

    ven = Ven(config, on_event=sink)
    held: tuple[str, ...] | None = None
    control: dict[str, Any] | None = None
    try:
        await ven.start(now)
        while True:
            now = clock()
            await ven.step(now)
            events = ven.events
            ids = tuple(sorted(events))
            intervals: list[GridInterval] = []
            for eid in ids:
                try:
                    intervals += event_grid_intervals(events[eid], now)
                except IntervalError as exc:
                    _line(out, "ven.event_rejected", now, {"event_id": eid, "error": str(exc)})
            if ids != held:
                held = ids
                _line(out, "held", now, {"events": [
                    {"id": eid, "name": events[eid].eventName,
                     "program_id": events[eid].programID.root,
                     "payload_types": sorted({i.payload_type for i in intervals
                                              if i.event_id == eid})}
                    for eid in ids
                ]})
            line = control_line(grid_signal(intervals, now, response))
            if line != control:
                control = line
                _line(out, "control", now, line)
            try:
                await asyncio.wait_for(stop.wait(), step_s)
                return
            except TimeoutError:
                pass
    finally:
        await ven.close()
