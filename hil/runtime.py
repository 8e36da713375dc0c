"""The bench runtime: the twin's controllers on the wall clock, against real devices.

Structure of the wall-clock loop (DESIGN.md, "Time is injected"): the CSMS listens on the
bench's ``csms.host:csms.port`` (physical chargers connect to ``ws://<host>:<port>/<id>``
whenever they like); emulated site devices run in-process on loopback, emulated stations
in-process or as separate ``python -m hil.station`` processes. Then, every ``run.step_s``
seconds of wall time (a fixed-rate schedule from the start, no drift; a step that
overruns is followed at once by the next):

1. ``now = datetime.now(UTC)``; ``csms.set_now(now)``;
2. in-process emulated stations: the plug schedule's due plug-ins/outs, then
   ``station.advance(now)`` (their telemetry goes out without being awaited);
3. the emulated site devices advance to ``now`` (EV load from the CSMS's meter values);
4. the grid VEN (if configured) polls its VTN and gives the grid signal;
5. the site energy controller reads the meter, PV, BESS, transformer (emulated or
   physical, over Modbus TCP / OPC UA), decides and hands the CSMS the non-EV load and
   limit (without site devices: the site's base load);
6. ``await csms.step(now)``: the DLM allocates and sends TxProfiles (not awaited);
7. one trace row set at ``now`` (the field's view: site import as the meter read it,
   EVSE power, energy and SoC from the CSMS's meter values, set-points, limits), the
   step's events committed, the writers flushed about once a second (live readers).

There is no quiesce barrier: physical devices evolve on their own, so requests may be in
flight across step boundaries. Stopping (``stop`` event: SIGINT, ``--duration-s``)
closes the stations (they disconnect), the site clients and emulators, the VEN, the CSMS,
then the writers; the caller writes ``kpis.json`` and ``status.json`` finished.

The shadow twin (:mod:`hil.shadow`, ``shadow.enabled``) steps right after the field at
the same ``now`` and adds residual rows; ``on_step`` sees every step's ``now`` and rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from controllers.csms import Csms, CsmsConfig, DlmConfig, EvseConfig, SiteConfig
from controllers.csms.config import SecurityConfig
from controllers.csms.security import hash_password
from controllers.grid_signal import GridSignal, ev_limit_kw
from devices.charging_station import ChargingStation
from hil.bench_file import Bench
from hil.csms_rows import csms_rows
from hil.recording import exchange_hook, perf_counter
from hil.run_kpis import wall_clock_kpis
from hil.shadow import ShadowTwin
from hil.site import BenchSite
from hil.station import PlugSchedule, plug_in, station_faults, station_spec
from twin import ocpp_validation
from twin.grid_runtime import GridSide
from twin.recorder import EventWriter, TraceWriter
from twin.scenario import Run, Scenario, StationGroup
from twin.site_runtime import worst_case_non_ev_kw

__all__ = ["BenchOutput", "BenchRuntime", "BenchStatus", "bench_csms_config", "bench_security",
           "shadow_scenario"]

Row = tuple[str, str, float, str]


def shadow_scenario(bench: Bench, start: datetime) -> Scenario:
    """The bench as a lock-step scenario starting at ``start`` (one day long).

    Used for the site control's parameters and worst-case load (its stations are a
    placeholder group: only the site, controllers and site devices are read).
    """
    return Scenario(
        name=bench.name, description=bench.description, site=bench.site,
        stations=[StationGroup(prefix="BENCH")], controllers=bench.controllers,
        site_devices=bench.site_devices, grid=None,
        run=Run(start=start, duration_h=24, step_s=max(1, round(bench.run.step_s)),
                seed=bench.run.seed),
    )


def bench_csms_config(bench: Bench, start: datetime) -> CsmsConfig:
    """The CSMS's configuration: site, DLM and the bench's stations with their EVSEs."""
    site = bench.site
    return CsmsConfig(
        site=SiteConfig(
            grid_limit_kw=site.grid_limit_kw, phases=site.phases, voltage_v=site.voltage_v,
            safety_margin_kw=site.safety_margin_kw,
            non_ev_load_worst_case_kw=worst_case_non_ev_kw(shadow_scenario(bench, start)),
        ),
        dlm=DlmConfig(**bench.controllers.dlm.model_dump()),
        known_stations=[s.id for s in bench.stations],
        evses={
            s.id: [EvseConfig(evse_id=e, kind=s.current_kind, max_power_kw=s.max_power_kw,
                              phases=3, phase_rotation=s.phase_rotation,
                              bidirectional=s.bidirectional)
                   for e in range(1, s.evses + 1)]
            for s in bench.stations
        },
        response_timeout_s=bench.run.ocpp_response_timeout_s,
        record_frames=bench.run.record_frames,
        security=bench_security(bench),
    )


def bench_security(bench: Bench) -> SecurityConfig:
    """The CSMS's security settings of a bench.

    The bench's ``csms.security``, plus the scrypt hash of every emulated station's
    password that ``csms.security.passwords`` does not already hold.
    """
    sec = bench.csms.security
    hashes = dict(sec.passwords)
    for sid in bench.emulated_stations.stations:
        password = bench.station(sid).password
        if password is not None and sid not in hashes:
            hashes[sid] = hash_password(password)
    return sec.model_copy(update={"passwords": hashes})


@dataclass
class BenchStatus:
    """What the live status line shows after each step."""

    step: int
    now: datetime
    elapsed_s: float
    connected: list[str]
    transactions: int
    import_kw: float
    ev_kw: float
    available_kw: float


@dataclass
class BenchOutput:
    """A finished bench run: its folder, KPI document and step count."""

    run_dir: Path
    kpis: dict[str, Any]
    steps: int


@dataclass
class _Series:
    import_kw: list[float] = field(default_factory=list)
    ev_kw: list[float] = field(default_factory=list)


class BenchRuntime:
    """Runs a bench on the wall clock and writes its run folder live (module docstring).

    Args:
        bench: the validated bench file.
        run_dir: the run folder (created by the caller).
        on_status: called after every step.
        on_step: hook called after every step with ``(now, rows)``.
    """

    def __init__(
        self,
        bench: Bench,
        run_dir: Path,
        on_status: Callable[[BenchStatus], None] | None = None,
        on_step: Callable[[datetime, list[Row]], None] | None = None,
    ) -> None:
        self.bench = bench
        self.run_dir = run_dir
        self.on_status = on_status
        self.on_step = on_step
        self.events = EventWriter(run_dir / "events.parquet")
        self.traces = TraceWriter(run_dir / "traces.parquet")
        self.csms: Csms | None = None
        self.port: int | None = None
        self.site: BenchSite | None = None
        self.started = asyncio.Event()
        self._stations: dict[str, ChargingStation] = {}
        self._processes: list[asyncio.subprocess.Process] = []
        self._schedule = PlugSchedule(
            bench.emulated_stations.vehicles if bench.emulated_stations.mode == "in_process"
            else [])
        self._series = _Series()
        self.shadow: ShadowTwin | None = None
        self._io_lock = asyncio.Lock()
        self._react_kw: float | None = None
        self._react_ref_non_ev_kw: float | None = None
        self.shadow_summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def local_url(self) -> str:
        """The CSMS's base URL for stations on this machine."""
        host = self.bench.csms.host
        if self.bench.csms.security.profile >= 2:
            host = "localhost" if host in ("0.0.0.0", "::", "") else host
        else:
            host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"{self.bench.csms.scheme}://{host}:{self.port}"

    def station_urls(self) -> dict[str, str]:
        """Station id -> the URL it connects to (``ws[s]://<host>:<port>/<id>``)."""
        host = self.bench.csms.host
        scheme = self.bench.csms.scheme
        return {s.id: f"{scheme}://{host}:{self.port}/{s.id}" for s in self.bench.stations}

    def _sink(self, t: datetime, source: str, kind: str, payload: dict[str, Any]) -> None:
        self.events.sink(t, source, kind, payload)

    # ------------------------------------------------------------------ life cycle
    async def _start(self, now: datetime) -> GridSide | None:
        b = self.bench
        self.csms = Csms(bench_csms_config(b, now), on_event=self._sink,
                         perf_counter=time.perf_counter)
        self.csms.set_now(now)
        self.port = await self.csms.start(b.csms.host, b.csms.port)
        self._sink(now, "bench", "bench.started", {
            "csms": f"{b.csms.scheme}://{b.csms.host}:{self.port}",
            "security_profile": b.csms.security.profile,
            "physical_stations": b.physical_stations,
            "emulated_stations": b.emulated_stations.stations,
        })
        if b.site_devices is not None:
            self.site = BenchSite(shadow_scenario(b, now), now, self._sink, record=b.run.record)
            await self.site.start(now)
            self._sink(now, "bench", "bench.site_devices", self.site.bindings())
        grid = None
        if b.grid is not None:
            grid = GridSide(b.grid, now, b.run.step_s, b.run.seed, self._sink,
                            on_exchange=exchange_hook(self._sink, "ven") if b.run.record
                            else None, perf_counter=perf_counter)
            await grid.start(now)
        emulated = b.emulated_stations
        for sid in emulated.stations:
            station = b.station(sid)
            if emulated.mode == "process":
                plugs = [p.model_dump(mode="json") for p in emulated.vehicles
                         if p.station_id == sid]
                self._processes.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "hil.station", "--url", self.local_url,
                    "--station", station.model_dump_json(), "--plugs", json.dumps(plugs),
                    *(["--ca-file", emulated.tls_ca_file] if emulated.tls_ca_file else []),
                    "--voltage-v", str(b.site.voltage_v), "--bench-start", now.isoformat(),
                    "--step-s", str(min(1.0, b.run.step_s)),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                ))
                continue
            cs = ChargingStation(
                station_spec(station, b.site.voltage_v, emulated.tls_ca_file,
                             report_soc=b.billing is not None), self.local_url,
                faults=station_faults(station, now),
                on_event=self._sink,
                perf_counter=time.perf_counter, record_frames=b.run.record_frames,
                response_timeout_s=b.run.ocpp_response_timeout_s,
            )
            self._stations[sid] = cs
        results = await asyncio.gather(
            *(cs.connect(now) for cs in self._stations.values()), return_exceptions=True)
        for sid, res in zip(self._stations, results, strict=True):
            if isinstance(res, BaseException):  # retried with back-off by advance()
                self._sink(now, "bench", "bench.station_connect_failed",
                           {"station": sid, "error": repr(res)})
        if b.shadow.enabled:
            self.shadow = ShadowTwin(b, self.run_dir, bench_csms_config(b, now), self._sink)
            await self.shadow.start(now)
            self._sink(now, "bench", "bench.shadow", {"run": self.shadow.run_dir.name})
        return grid

    async def _close(self, grid: GridSide | None) -> None:
        if self.shadow is not None:
            try:
                self.shadow_summary = await self.shadow.close()
            except Exception as err:  # the field run is closed whatever the shadow does
                self._sink(datetime.now(UTC), "bench", "bench.shadow_failed",
                           {"error": repr(err)})
        for cs in self._stations.values():
            with contextlib.suppress(Exception):
                await cs.close()
        for proc in self._processes:
            if proc.returncode is None:
                proc.terminate()
        for proc in self._processes:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self.site is not None:
            await self.site.close()
        if grid is not None:
            await grid.close()
        if self.csms is not None:
            await self.csms.stop()
            self._sink(datetime.now(UTC), "bench", "bench.stopped", {})
        self.events.close()
        self.traces.close()

    # ------------------------------------------------------------------ main loop
    async def run(self, stop: asyncio.Event, duration_s: float | None = None) -> BenchOutput:
        """Run until ``stop`` is set or ``duration_s`` (default ``run.duration_s``) passes."""
        ocpp_validation.install()
        b = self.bench
        duration_s = duration_s if duration_s is not None else b.run.duration_s
        wall_start = time.perf_counter()
        t0 = time.monotonic()
        start = datetime.now(UTC)
        grid: GridSide | None = None
        k = 0  # scheduled steps (fixed rate from t0)
        steps = 0  # every step, reactions to a meter change included
        wake = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        try:
            grid = await self._start(start)
            # The imports leave a heap of ~300 MB that every full collection would scan,
            # freezing the CSMS loop for 0.3-1 s at 2,000 stations (bench/scale.py):
            # move what exists now to the collector's permanent generation (gc.freeze,
            # CPython 3.7+), so only objects made during the bench are scanned.
            gc.collect()
            gc.freeze()
            self.started.set()
            if b.run.react.meter_poll_s is not None and self.site is not None:
                watcher = asyncio.create_task(self._watch_meter(wake, stop))
            last = start
            while not stop.is_set():
                wait_s = t0 + (k + 1) * b.run.step_s - time.monotonic()
                if duration_s is not None:
                    wait_s = min(wait_s, t0 + duration_s - time.monotonic())
                reaction = await _wait_either(stop, wake, wait_s)
                if stop.is_set():
                    break
                if not reaction:
                    k += 1
                wake.clear()
                now = datetime.now(UTC)
                steps += 1
                if reaction:
                    self._sink(now, "bench", "bench.react", {"import_kw": self._react_kw})
                async with self._io_lock:
                    await self._step(steps, now, (now - last).total_seconds(), now - start,
                                     grid)
                    measured = self.site.measured_import_kw if self.site is not None else None
                    self._react_ref_non_ev_kw = (
                        None if measured is None or self.csms is None
                        else measured - self.csms.ev_power_kw())
                last = now
                if duration_s is not None and time.monotonic() - t0 >= duration_s:
                    break
        finally:
            self.started.set()
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await self._close(grid)
        return BenchOutput(self.run_dir, self._kpis(time.perf_counter() - wall_start), steps)

    async def _watch_meter(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        """The fast path (``run.react``): poll the meter's power alone between steps.

        Wakes the loop for a control step at once when the non-EV load (meter import
        minus the EV power the CSMS measures) moved by ``threshold_kw`` since the last
        step. EV power the CSMS already knows of does not wake it (the DLM would decide
        the same), nor does an import above the limit while the EVs are still ramping
        down to set-points already sent: waking for it would repeat the same decision
        every poll; an EVSE drawing above its set-point is the CSMS's profile check's.
        """
        react = self.bench.run.react
        assert react.meter_poll_s is not None and self.site is not None
        assert self.csms is not None
        while not stop.is_set():
            await asyncio.sleep(react.meter_poll_s)
            if wake.is_set():
                continue
            async with self._io_lock:
                kw = await self.site.read_import_kw(datetime.now(UTC))
                ref = self._react_ref_non_ev_kw
            if kw is None or ref is None:
                continue
            non_ev = kw - self.csms.ev_power_kw()
            if abs(non_ev - ref) >= react.threshold_kw:
                self._react_kw = kw
                wake.set()

    async def _step(self, k: int, now: datetime, dt_s: float, elapsed: Any,
                    grid: GridSide | None) -> None:
        b = self.bench
        csms = self.csms
        assert csms is not None
        csms.set_now(now)
        for action, plug in self._schedule.due(elapsed.total_seconds()):
            cs = self._stations[plug.station_id]
            try:
                if action == "in":
                    await plug_in(cs, plug, now)
                else:
                    await cs.plug_out(plug.evse_id, now)
            except (RuntimeError, TimeoutError, ConnectionError) as err:
                self._sink(now, "bench", "bench.plug_failed",
                           {"evse": plug.evse, "action": action, "error": repr(err)})
        for cs in self._stations.values():
            await cs.advance(now)
        ev_kw = csms.ev_power_kw()
        base_kw = b.site.base_load.power_kw_at(now)
        rows: list[Row] = []
        truth = None
        if self.site is not None:
            truth = await self.site.advance(now, (ev_kw / 3.0,) * 3, base_kw)
        signal: GridSignal | None = None
        if grid is not None:
            await grid.publish(now)
            signal = await grid.step(now)
            rows += _grid_rows(signal)
        csms.set_hold_minimum(signal is not None and signal.ev_share <= 0.0)
        decision = None
        if self.site is not None:
            decision = await self.site.control(now, dt_s, csms, signal)
        else:
            csms.set_non_ev_load(base_kw, now)
            if signal is not None:
                csms.set_external_limit(ev_limit_kw(
                    signal, b.site.grid_limit_kw, base_kw, csms.ev_minimum_kw()))
        await csms.step(now)
        await asyncio.sleep(0)  # let the profile sends go out before the rows are built
        measured = self.site.measured_import_kw if self.site is not None else None
        import_kw = measured if measured is not None else base_kw + ev_kw
        if grid is not None:
            grid.record(now, import_kw, truth.bess_soc if truth is not None else None)
        if self.site is not None and truth is not None:
            rows += self.site.rows(truth, decision)
        rows += self._field_rows(ev_kw, base_kw, import_kw)
        if self.shadow is not None:
            rows += await self.shadow.step(now, elapsed.total_seconds(), csms, rows)
        self._series.import_kw.append(import_kw)
        self._series.ev_kw.append(ev_kw)
        self.traces.add_many(now, rows)
        self.events.commit_step()
        self.traces.maybe_flush()
        self.events.maybe_flush()
        if self.on_step is not None:
            self.on_step(now, rows)
        if self.on_status is not None:
            reg = csms.registry
            self.on_status(BenchStatus(
                step=k, now=now, elapsed_s=elapsed.total_seconds(),
                connected=sorted(s.station_id for s in reg.stations.values() if s.connected),
                transactions=len(reg.active_transactions()), import_kw=import_kw, ev_kw=ev_kw,
                available_kw=csms.available_power_kw(),
            ))

    def _field_rows(self, ev_kw: float, base_kw: float, import_kw: float) -> list[Row]:
        """The CSMS's view of every EVSE and the site, as trace rows."""
        assert self.csms is not None
        return [*csms_rows(self.csms, self.bench.stations, self.bench.site.grid_limit_kw,
                           import_kw, ev_kw), ("site", "base_load_kw", base_kw, "kW")]

    def _kpis(self, wall_s: float) -> dict[str, Any]:
        b = self.bench
        csms_rtt = self.csms.rtt_samples_s if self.csms is not None else []
        rtt = [x for cs in self._stations.values() for x in cs.rtt_samples_s] + csms_rtt
        doc = wall_clock_kpis(b.run.step_s, np.asarray(self._series.import_kw),
                              np.asarray(self._series.ev_kw), b.site.grid_limit_kw, rtt, wall_s)
        if self.site is not None:
            doc["wall"]["fieldbus_exchanges"] = {"value": self.site.exchanges, "unit": "1"}
        if self.shadow_summary is not None:
            doc["shadow"] = self.shadow_summary
        return doc


async def _wait_either(stop: asyncio.Event, wake: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``stop`` or ``wake`` is set or ``timeout_s`` passes; True if woken."""
    if wake.is_set():
        return True
    if timeout_s <= 0:
        return False
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return wake.is_set() and not stop.is_set()


def _grid_rows(signal: GridSignal) -> list[Row]:
    rows: list[Row] = [("site", "grid_emergency", float(signal.emergency), "1"),
                       ("site", "grid_ev_share", signal.ev_share, "1")]
    if signal.import_limit_kw is not None:
        rows.append(("site", "grid_event_limit_kw", signal.import_limit_kw, "kW"))
    return rows
