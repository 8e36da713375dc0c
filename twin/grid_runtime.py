"""The grid side of a lock-step run: the utility's emulated VTN and the site's VEN.

:class:`GridSide` starts the emulated OpenADR 3.1 VTN (``devices/vtn``) on a loopback
port with the scenario's programs and events (plus the PRICE program built from a price
data set) and the VEN (``controllers/ven``), which authenticates with OAuth2 client
credentials, registers and reads programs and events over HTTP. Per step:

1. the VTN publishes the events whose ``publish_at`` has come (simulated time);
2. the VEN polls (in the lock-step twin the VEN polls every step: a webhook or MQTT
   delivery is tested over the real broker elsewhere, and polling keeps the run
   deterministic whatever the wall-clock timing of a push);
3. the events it holds are expanded to intervals (User Guide 7.3,
   :mod:`controllers.ven.intervals`) and turned into the :class:`GridSignal` in force
   (:mod:`controllers.grid_signal`), which the site controls apply.

Every event the VEN receives and every change of the signal is a run-folder event.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from controllers.exchange import ExchangeHook
from controllers.grid_signal import GridInterval, GridResponse, GridSignal, grid_signal
from controllers.ven.client import Ven
from controllers.ven.config import VenConfig
from controllers.ven.grid_intervals import event_grid_intervals
from controllers.ven.intervals import IntervalError, expand_event
from controllers.ven.reports import IntervalReading
from devices.vtn.config import ClientConfig, VtnConfig
from devices.vtn.replay import GridEventFile
from devices.vtn.server import VtnServer
from twin.inputs.prices import load_ercot_dam_spp, load_nl_day_ahead
from twin.scenario_grid import Grid, PriceProgram

EventSink = Callable[[datetime, str, str, dict[str, Any]], None]

VEN_CLIENT_ID = "depot-ven"
SITE_RESOURCE = "site"


def price_events(p: PriceProgram) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The PRICE program and its daily events from a price data set.

    One event per local operating day in ``[from, to)``: hourly intervals back to back
    from local midnight (23 or 25 on DST days), payload descriptor PRICE in the data set's
    currency per MWh, published at ``publish_local`` on the day before.
    """
    if p.dataset == "ercot_dam_spp":
        assert p.settlement_point is not None
        frame = load_ercot_dam_spp(p.settlement_point, p.from_, p.to)
        currency = "USD"
    else:
        frame = load_nl_day_ahead(p.from_, p.to)
        currency = "EUR"
    tz = ZoneInfo(p.timezone)
    hh, mm = (int(x) for x in p.publish_local.split(":"))
    times = pd.to_datetime(frame["time"], utc=True)
    local_day = times.dt.tz_convert(p.timezone).dt.date
    program = {
        "id": p.program,
        "programName": p.program,
        "payloadDescriptors": [
            {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE",
             "units": "MWH", "currency": currency},
        ],
    }
    events: list[dict[str, Any]] = []
    for day, rows in frame.groupby(local_day, sort=True):
        eve = datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz) - timedelta(days=1)
        publish = pd.Timestamp(eve).tz_convert("UTC")
        first = pd.Timestamp(rows["time"].iloc[0]).tz_convert("UTC")
        events.append({
            "publish_at": publish.isoformat(),
            "id": f"{p.program}-{day.isoformat()}",
            "programID": p.program,
            "eventName": f"{p.program} {day.isoformat()}",
            "payloadDescriptors": program["payloadDescriptors"],
            "intervalPeriod": {"start": first.isoformat(), "duration": "PT1H"},
            "intervals": [
                {"id": n, "payloads": [{"type": "PRICE", "values": [round(float(v), 2)]}]}
                for n, v in enumerate(rows["price_per_mwh"])
            ],
        })
    return program, events


def grid_event_file(grid: Grid) -> GridEventFile:
    """The VTN's grid-event file for a scenario's grid section (validated)."""
    programs = [dict(p) for p in grid.programs]
    events = [dict(e) for e in grid.events]
    if grid.price_program is not None:
        program, daily = price_events(grid.price_program)
        programs.append(program)
        events.extend(daily)
    return GridEventFile.model_validate({"programs": programs, "events": events})


class GridSide:
    """The VTN and the VEN of one lock-step run (module docstring).

    Args:
        grid: the scenario's grid section.
        start: run start (UTC).
        step_s: control step [s] (the VEN's polling interval).
        seed: run seed (``randomizeStart`` draws).
        on_event: run-folder event sink.
        on_exchange: the VEN's exchange hook (every OpenADR request and notification,
            :mod:`controllers.exchange`; None: not recorded).
        perf_counter: clock for the exchanges' ``duration_ms``.
    """

    def __init__(
        self, grid: Grid, start: datetime, step_s: float, seed: int, on_event: EventSink,
        *, on_exchange: ExchangeHook | None = None,
        perf_counter: Callable[[], float] | None = None,
    ) -> None:
        self.grid = grid
        self._on_exchange = on_exchange
        self._perf_counter = perf_counter
        self.on_event = on_event
        self.seed = seed
        self.step_s = step_s
        self._now = start
        secret = secrets.token_urlsafe(16)
        self.vtn = VtnServer(
            VtnConfig(clients=[ClientConfig(id=VEN_CLIENT_ID, secret=secret, role="VEN")]),
            start,
        )
        self.vtn.load_grid_events(grid_event_file(grid))
        self._secret = secret
        self.ven: Ven | None = None
        self.response = GridResponse(
            simple_shares=dict(grid.response.simple_shares),
            price_ceiling_per_mwh=grid.response.price_ceiling_per_mwh,
        )
        self._expanded: dict[str, tuple[str, list[GridInterval]]] = {}
        self.signal = GridSignal()
        self._times: list[datetime] = []
        self._import_kw: list[float] = []
        self._soc: list[float | None] = []
        self._reported: set[tuple[str, int]] = set()

    def record(self, t: datetime, import_kw: float, bess_soc: float | None) -> None:
        """The site's mean import over the step ending at ``t`` (for reports)."""
        self._times.append(t)
        self._import_kw.append(import_kw)
        self._soc.append(bess_soc)

    def _reading(self, start: datetime, end: datetime) -> IntervalReading | None:
        """Usage [kWh], demand [kW] and SoC over ``[start, end)`` from the recorded steps."""
        dt_h = self.step_s / 3600.0
        rows = [(p, c) for t, p, c in zip(self._times, self._import_kw, self._soc, strict=True)
                if start < t <= end]
        if not rows:
            return None
        usage = sum(max(p, 0.0) for p, _ in rows) * dt_h
        socs = [c for _, c in rows if c is not None]
        return IntervalReading(usage_kwh=usage, demand_kw=usage / (len(rows) * dt_h),
                               soc=socs[-1] if socs else None)

    async def _reports(self, now: datetime) -> None:
        """Report every ended interval of the events that ask for reports."""
        assert self.ven is not None
        for event_id, event in sorted(self.ven.events.items()):
            if not event.reportDescriptors:
                continue
            try:
                spans: dict[int, tuple[datetime, datetime | None]] = {}
                for a in expand_event(event, now, seed=self.seed):
                    lo, hi = spans.get(a.interval_id, (a.start, a.end))
                    end = None if hi is None or a.end is None else max(hi, a.end)
                    spans[a.interval_id] = (min(lo, a.start), end)
            except IntervalError:
                continue
            for iid, (start, end) in sorted(spans.items()):
                if end is None or end > now or (event_id, iid) in self._reported:
                    continue
                self._reported.add((event_id, iid))
                reading = self._reading(start, end)
                if reading is not None:
                    await self.ven.report(event_id, {SITE_RESOURCE: {iid: reading}}, now)

    def _ven_event(self, kind: str, payload: dict[str, Any]) -> None:
        self.on_event(self._now, "ven", kind, payload)

    @property
    def endpoints(self) -> list[Any]:
        """For the runtime's quiesce."""
        return [self.vtn] + ([self.ven] if self.ven is not None else [])

    async def start(self, now: datetime) -> None:
        """Start the VTN on loopback, then the VEN (token, registration, first read)."""
        self._now = now
        await self.vtn.start()
        await self.vtn.advance(now)
        self.ven = Ven(
            VenConfig(
                vtn_url=self.vtn.base_url,
                client_id=VEN_CLIENT_ID,
                client_secret=self._secret,
                ven_name=self.grid.ven_name,
                notification="poll",
                # every step: 0.9 x step so that a wall-clock step arriving a little
                # early (the bench) does not skip a poll; lock-step steps are exact
                poll_interval_s=0.9 * self.step_s,
                resources=[{"name": SITE_RESOURCE}],
            ),
            on_event=self._ven_event,
            on_exchange=self._on_exchange,
            perf_counter=self._perf_counter,
        )
        await self.ven.start(now)

    async def close(self) -> None:
        """Stop the VEN and the VTN."""
        if self.ven is not None:
            await self.ven.close()
        await self.vtn.stop()

    async def publish(self, now: datetime) -> None:
        """The VTN publishes what is due at ``now``."""
        self._now = now
        self.vtn.set_now(now)
        await self.vtn.advance(now)

    async def step(self, now: datetime) -> GridSignal:
        """The VEN's step and the signal in force at ``now``."""
        assert self.ven is not None
        self._now = now
        await self.ven.step(now)
        await self._reports(now)
        intervals: list[GridInterval] = []
        for event_id, event in sorted(self.ven.events.items()):
            version = str(event.modificationDateTime)
            cached = self._expanded.get(event_id)
            if cached is None or cached[0] != version:
                cached = (version, self._expand(event, now))
                self._expanded[event_id] = cached
                self.on_event(now, "grid", "grid.event_expanded", {
                    "event": event_id, "intervals": len(cached[1]),
                })
            intervals.extend(cached[1])
        for gone in set(self._expanded) - set(self.ven.events):
            del self._expanded[gone]
        signal = grid_signal(intervals, now, self.response)
        if (signal.import_limit_kw, signal.emergency, signal.ev_share, signal.simple_level,
                signal.events) != (self.signal.import_limit_kw, self.signal.emergency,
                                   self.signal.ev_share, self.signal.simple_level,
                                   self.signal.events):
            self.on_event(now, "grid", "grid.signal", {
                "import_limit_kw": signal.import_limit_kw, "emergency": signal.emergency,
                "ev_share": signal.ev_share, "simple_level": signal.simple_level,
                "price_per_mwh": signal.price_per_mwh, "events": list(signal.events),
                "reasons": list(signal.reasons),
            })
        self.signal = signal
        return signal

    def _expand(self, event: Any, now: datetime) -> list[GridInterval]:
        try:
            return event_grid_intervals(event, now, seed=self.seed)
        except IntervalError as exc:
            self.on_event(now, "grid", "grid.event_rejected", {
                "event": str(getattr(event, "id", "")), "error": str(exc),
            })
            return []
