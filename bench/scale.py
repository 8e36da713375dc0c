"""Benchmark: thousands of emulated OCPP 2.0.1 stations against ONE CSMS, wall clock.

Issue 9, item 4. Three kinds of OS process, all started by this script:

* the **CSMS process** (``--role csms``): ``migrid bench``'s runtime (:func:`hil.session.run_bench`)
  with our CSMS and DLM, nothing else: a bench file with the N stations as *physical*
  chargers (the CSMS expects them, the runtime does not start them), no site devices,
  the site limit binding (half of what the charging EVSEs could draw), the DLM's
  ``equal`` strategy, control step ``--step-s``, run folder written as usual (events,
  traces; ``--record`` adds every OCPP frame). The building load is a series: a sine of
  period ``--building-period-s`` swinging by ``--building-swing`` of the EVs' share of
  the limit, plus seeded noise, so the EVs' headroom moves at every step and the DLM
  lowers (always sent) or raises (sent once past its 1 A hysteresis) the set-point of
  every charging EVSE at most steps. Its own probes: frames in/out, SetChargingProfile
  count, the wall time of each control step and of each TxProfile written, event-loop
  lag (a task asleep for 100 ms and how late it wakes), garbage-collector pauses, CSMS
  state sizes; one JSON line every ``--sample-s``. By default the CSMS's bounded lists
  get smaller bounds (20k RTT samples, 500 ended transactions instead of 100k / 10k) so
  that they are full within the run and the RSS slope shows any *other* growth
  (``--production-caps`` keeps the real ones). ``--gc-freeze``: ``gc.freeze()`` once the
  CSMS is started (the start-up heap is then never scanned again);
* **worker processes** (``--role worker``, ``--processes`` of them, nice 10: they stand
  in for chargers with CPUs of their own): each runs hundreds of
  :class:`devices.charging_station.ChargingStation` (OCPP 2.0.1, one 22 kW AC EVSE) on
  one asyncio loop, advanced every second of wall time, connecting over real websockets
  on loopback like physical chargers;
* this **orchestrator**, which samples both with psutil every ``--sample-s`` and writes
  ``timeseries.csv`` and ``summary.json`` into ``--out``.

Traffic (per station): connect, BootNotification, StatusNotification; TxDefaultProfile
from the CSMS; Heartbeat every 300 s (the CSMS's interval); vehicles plugging in and
out as a **seeded alternating Poisson process** per EVSE (exponential plugged times,
mean ``--mean-session-s``, and exponential idle times, mean ``--mean-idle-s``; an EVSE is
occupied at the start with probability session / (session + idle), its plug-in spread
over the first 10 s): plug-in = StatusNotification Occupied, Authorize,
TransactionEvent Started; plug-out = TransactionEvent Ended, StatusNotification
Available; sampled meter values every ``--meter-interval-s`` per charging EVSE (OCPP
2.0.1 TransactionEvent Updated / MeterValuePeriodic, the emulator's way); the DLM's
SetChargingProfile TxProfiles. Sessions are compressed in time (a depot's are hours
long) so that the 10 minutes see thousands of arrivals and departures.

Measured: CSMS RSS growth per connected station, worker RSS per emulated station, CPU %
of the CSMS and of the workers, CALL -> CALLRESULT round trip as the stations see it
(and the CSMS's own SetChargingProfile round trips), set-point delivery latency (a
TxProfile installed at a station minus the start of the latest control step before it),
frames per second at the CSMS, the time to connect all stations, and over time CSMS
RSS, open fds and event-loop lag with the slope of RSS over the last 8 minutes (or the
last 80 % of a shorter run).

Exit status 1 when a station fails to connect, a process dies, or latency samples are
missing.

    python bench/scale.py                                   # 2000 stations, 10 min
    python bench/scale.py --stations 200 --minutes 2        # development size
    python bench/scale.py --stations 20 --minutes 0.5       # CI smoke (< 60 s)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import math
import os
import resource
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
sys.path.insert(0, str(ROOT))

#: EVSE rating and vehicle on-board charger [kW]
EVSE_KW = 22.0
#: niceness of the worker processes (chargers have CPUs of their own)
WORKER_NICE = 10
#: initial plug-ins are spread over this many seconds after "go"
RAMP_S = 10.0


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _station_id(i: int) -> str:
    return f"SC{i:05d}"


def _occupancy(args: argparse.Namespace) -> float:
    return args.mean_session_s / (args.mean_session_s + args.mean_idle_s)


def _limit_kw(args: argparse.Namespace) -> float:
    """Site limit: half of what the expected charging EVSEs could draw, plus the building."""
    return args.base_kw + 0.5 * args.stations * _occupancy(args) * EVSE_KW + EVSE_KW


def _grid_limit_kw(args: argparse.Namespace) -> float:
    """The site limit: EV headroom ``_limit_kw - base_kw`` at the building's peak."""
    return round(_limit_kw(args) + args.building_swing * (_limit_kw(args) - args.base_kw), 1)


def _out(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# ====================================================================== CSMS process


def _building_csv(args: argparse.Namespace, path: Path) -> None:
    """The building load as a series at the control step: ``base_kw`` plus a sine of
    ``--building-swing`` x the EVs' share of the limit (period ``--building-period-s``)
    plus seeded noise, so that the EVs' headroom moves at every step."""
    ev_kw = _limit_kw(args) - args.base_kw
    amp = args.building_swing * ev_kw
    rng = np.random.default_rng([args.seed, 7])
    t0 = time.time() - 120.0
    n = int((args.minutes * 60 + 3600) / args.step_s)
    t = np.arange(n) * args.step_s
    kw = args.base_kw + amp * (1 + np.sin(2 * np.pi * t / args.building_period_s)) / 2
    kw += rng.normal(0.0, 0.01 * max(amp, 1.0), n)
    times = [datetime.fromtimestamp(t0 + x, UTC).isoformat() for x in t]
    lines = ["time,power_kw", *(f"{a},{max(b, 0.0):.2f}" for a, b in zip(times, kw, strict=True))]
    path.write_text("\n".join(lines) + "\n")


def _bench_file(args: argparse.Namespace) -> dict[str, Any]:
    building = Path(args.out) / "building.csv"
    return {
        "name": "bench-scale",
        "site": {"grid_limit_kw": _grid_limit_kw(args),
                 "base_load": {"kind": "series", "file": str(building)}},
        "controllers": {"dlm": {"strategy": args.dlm_strategy}},
        "csms": {"host": "127.0.0.1", "port": 0},
        "stations": [{"id": _station_id(i), "kind": "ac_22kw",
                      "meter_interval_s": args.meter_interval_s}
                     for i in range(args.stations)],
        "shadow": {"enabled": False},
        "run": {"step_s": args.step_s, "record": args.record},
    }


def _tracemalloc_diff(snapshot: Any, path: Path) -> None:
    """Python allocations grown since ``snapshot`` (largest first), into ``path``."""
    if snapshot is None:
        path.write_text("no snapshot (run longer than 90 s with --tracemalloc)\n")
        return
    import tracemalloc

    now = tracemalloc.take_snapshot()
    diff = [d for d in now.compare_to(snapshot, "traceback") if d.size_diff > 0]
    total = sum(d.size_diff for d in diff)
    lines = [f"traced {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MB; grown since the "
             f"first snapshot: {total / 2**20:.2f} MB in {len(diff)} places"]
    for d in diff[:20]:
        lines += [f"{d.size_diff / 1024:+.1f} KB {d.count_diff:+d} blocks",
                  *d.traceback.format()]
    path.write_text("\n".join(lines) + "\n")


class _CsmsProbe:
    """Counters patched into the CSMS process (the process under test)."""

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.scp_out = 0
        self.steps: list[tuple[float, float]] = []  # (wall start, duration s)
        self.lags: list[float] = []
        self.step_start = 0.0  # wall time of the latest control step's start
        self.tx_profiles: list[tuple[str, float, float]] = []  # (station, sent, step start)
        self.gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._gc_t = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_t = time.perf_counter()
        else:
            self.gc_pauses.append((int(info["generation"]), time.perf_counter() - self._gc_t))

    def install(self, rt: Any) -> None:
        from controllers.csms.station import StationLink

        probe = self
        route, send = StationLink.route_message, StationLink._send

        async def route_message(link: Any, raw: Any) -> None:
            probe.frames_in += 1
            await route(link, raw)

        async def _send(link: Any, message: str) -> None:
            probe.frames_out += 1
            if message.startswith("[2,") and '"SetChargingProfile"' in message[:60]:
                probe.scp_out += 1
                if '"TxProfile"' in message:
                    probe.tx_profiles.append((link.id, time.time(), probe.step_start))
            await send(link, message)

        StationLink.route_message = route_message  # type: ignore[method-assign]
        StationLink._send = _send  # type: ignore[method-assign]
        original = rt._step

        async def step(*a: Any, **kw: Any) -> None:
            t, p = time.time(), time.perf_counter()
            probe.step_start = t
            await original(*a, **kw)
            probe.steps.append((t, time.perf_counter() - p))

        rt._step = step

    async def lag_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.1)
            self.lags.append(loop.time() - t - 0.1)


async def _csms_main(args: argparse.Namespace) -> None:
    import yaml

    from hil.runtime import BenchRuntime
    from hil.session import run_bench

    out = Path(args.out)
    _building_csv(args, out / "building.csv")
    path = out / "bench.yaml"
    path.write_text(yaml.safe_dump(_bench_file(args)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:  # "snapshot"; end of input: the orchestrator is gone
        while line := await reader.readline():
            if line.strip() == b"snapshot":
                _tracemalloc_diff(snapshot, out / "tracemalloc.txt")
                _out({"kind": "snapshot_done"})
        stop.set()

    watch = asyncio.create_task(commands())
    probe = _CsmsProbe()
    ready: asyncio.Future[BenchRuntime] = loop.create_future()
    bench = asyncio.create_task(run_bench(path, out=out / "csms-run", stop=stop,
                                          on_ready=ready.set_result))
    rt = await asyncio.wait_for(ready, 60)
    probe.install(rt)
    if args.small_caps:  # the bounded CSMS lists reach their steady state within minutes
        import controllers.csms.server as csms_server

        csms_server.RTT_SAMPLES_KEPT = 20_000
        assert rt.csms is not None
        rt.csms.registry._ended_kept = 500
    if args.gc_freeze:  # the start-up heap (imports, schemas) leaves the collector's scans
        gc.collect()
        gc.freeze()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    lagger = asyncio.create_task(probe.lag_loop())
    _out({"kind": "ready", "url": rt.local_url, "pid": os.getpid()})
    sent_steps = 0
    snapshot: Any = None
    t_ready = time.monotonic()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(4)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.sample_s)
            csms = rt.csms
            if csms is None:
                continue
            if args.tracemalloc and snapshot is None and time.monotonic() - t_ready > 90:
                snapshot = tracemalloc.take_snapshot()
            lags, probe.lags = probe.lags, []
            steps = probe.steps[sent_steps:]
            sent_steps = len(probe.steps)
            sends, probe.tx_profiles = probe.tx_profiles, []
            pauses, probe.gc_pauses = probe.gc_pauses, []
            gen2 = [d for g, d in pauses if g == 2]
            reg = csms.registry
            _out({
                "kind": "stats", "wall": time.time(),
                "frames_in": probe.frames_in, "frames_out": probe.frames_out,
                "scp_out": probe.scp_out,
                "lag_max_ms": round(max(lags) * 1e3, 2) if lags else None,
                "lag_mean_ms": round(statistics.fmean(lags) * 1e3, 2) if lags else None,
                "gc_ms": round(sum(d for _, d in pauses) * 1e3, 1),
                "gc2_n": len(gen2), "gc2_max_ms": round(max(gen2) * 1e3, 1) if gen2 else None,
                "connected": len(csms._links),
                "booted": sum(1 for s in reg.stations.values() if s.booted_at is not None),
                "active_tx": len(reg._open), "registry_tx": len(reg.transactions),
                "csms_rtt_samples": len(csms.rtt_samples_s), "tasks": len(csms._tasks),
                "steps": [[round(t, 4), round(d * 1e3, 2)] for t, d in steps],
                "tx_profiles": [[sid, round(t, 4), round(st, 4)] for sid, t, st in sends],
            })
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(out / "csms.prof"))
        lagger.cancel()
        watch.cancel()
        stop.set()
        await bench
        csms = rt.csms
        rtt = np.asarray(csms.rtt_samples_s if csms is not None else [], dtype=float) * 1e3
        _out({"kind": "done", "csms_rtt_ms": _percentiles(rtt),
              "steps": [[round(t, 4), round(d * 1e3, 2)] for t, d in probe.steps[sent_steps:]],
              "tx_profiles": [[sid, round(t, 4), round(st, 4)]
                              for sid, t, st in probe.tx_profiles]})


# ==================================================================== worker process


class _Worker:
    """Hundreds of emulated stations on one event loop, and their vehicles."""

    def __init__(self, args: argparse.Namespace, url: str) -> None:
        from devices.charging_station import ChargingStation, EvseSpec, StationSpec

        self.args = args
        self.ids = list(range(args.first, args.first + args.count))
        self.counts: dict[str, int] = {}
        self.installs: list[tuple[str, float]] = []
        self.stations: dict[int, Any] = {}
        self.rngs = {i: np.random.default_rng([args.seed, i]) for i in self.ids}
        self.connected: set[int] = set()
        self.busy: set[int] = set()
        self.plugged: dict[int, bool] = {}
        self.next_at: dict[int, float] = {}
        self.rtt_read: dict[int, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.sessions = 0
        for i in self.ids:
            sid = _station_id(i)
            spec = StationSpec(sid, "2.0.1", (EvseSpec(1, "AC", EVSE_KW, phases=3),),
                               meter_interval_s=args.meter_interval_s)
            self.stations[i] = ChargingStation(spec, url, on_event=self._sink,
                                               perf_counter=time.perf_counter, seed=i)

    def _sink(self, t: datetime, source: str, kind: str, payload: dict[str, Any]) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "profile.installed" and payload.get("purpose") == "TxProfile":
            self.installs.append((source, time.time()))

    async def connect(self) -> tuple[float, float, list[float]]:
        sem = asyncio.Semaphore(self.args.connect_concurrency)
        took: list[float] = []

        async def one(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                try:
                    await self.stations[i].connect(datetime.now(UTC))
                except Exception:  # retried by advance() with back-off
                    self.counts["connect_failed"] = self.counts.get("connect_failed", 0) + 1
                    return
                took.append(time.perf_counter() - t)
                self.connected.add(i)

        t0 = time.time()
        await asyncio.gather(*(one(i) for i in self.ids))
        return t0, time.time(), took

    def start_traffic(self) -> None:
        occ = _occupancy(self.args)
        for i in self.ids:
            rng = self.rngs[i]
            self.plugged[i] = False
            self.next_at[i] = (float(rng.uniform(0, RAMP_S)) if rng.random() < occ
                               else float(rng.exponential(self.args.mean_idle_s)))

    async def _toggle(self, i: int, rel: float) -> None:
        from devices.vehicle import VehicleSpec, VehicleState

        cs, rng = self.stations[i], self.rngs[i]
        try:
            if self.plugged[i]:
                await cs.plug_out(1, datetime.now(UTC))
                self.plugged[i] = False
                self.next_at[i] = rel + float(rng.exponential(self.args.mean_idle_s))
            else:
                spec = VehicleSpec(model="scale", battery_capacity_kwh=float(rng.uniform(50, 100)),
                                   ac_max_power_kw=EVSE_KW, ac_phases=3, dc_max_power_kw=50.0)
                state = VehicleState(soc=float(rng.uniform(0.05, 0.4)), target_soc=1.0)
                await cs.plug_in(1, spec, state, f"TAG{i:05d}", datetime.now(UTC))
                self.plugged[i] = True
                self.sessions += 1
                self.next_at[i] = rel + float(rng.exponential(self.args.mean_session_s))
        except Exception as err:  # counted, the next draw retries
            key = f"plug_failed:{type(err).__name__}"
            self.counts[key] = self.counts.get(key, 0) + 1
            self.next_at[i] = rel + 5.0
        finally:
            self.busy.discard(i)

    async def tick(self, rel: float | None) -> None:
        now = datetime.now(UTC)
        for i in self.ids:
            if rel is not None and i not in self.busy and rel >= self.next_at[i]:
                self.busy.add(i)
                task = asyncio.create_task(self._toggle(i, rel))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            if i in self.connected:
                await self.stations[i].advance(now)

    def new_rtts(self) -> list[float]:
        out: list[float] = []
        for i in self.ids:
            samples = self.stations[i].rtt_samples_s
            k = self.rtt_read.get(i, 0)
            out.extend(samples[k:])
            self.rtt_read[i] = len(samples)
            if len(samples) > 10_000:  # the emulator keeps them all: bound it here
                del samples[:]
                self.rtt_read[i] = 0
        return out

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        sem = asyncio.Semaphore(100)

        async def one(cs: Any) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await cs.close()

        await asyncio.gather(*(one(cs) for cs in self.stations.values()))


async def _worker_main(args: argparse.Namespace) -> None:
    import psutil

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    w = _Worker(args, args.url)
    rss_built = proc.memory_info().rss
    ticker_stop = asyncio.Event()
    go_at: list[float] = []

    async def ticker() -> None:
        k = 0
        t0 = time.monotonic()
        while not ticker_stop.is_set():
            rel = time.monotonic() - go_at[0] if go_at else None
            await w.tick(rel)
            k += 1
            delay = t0 + k * 1.0 - time.monotonic()
            if delay < 0:  # overran: resynchronise, do not burst
                k = int((time.monotonic() - t0) // 1.0)
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ticker_stop.wait(), delay)

    tick_task = asyncio.create_task(ticker())
    t_start, t_end, took = await w.connect()
    gc.collect()
    _out({"kind": "connected", "n": len(w.connected), "of": len(w.ids), "t_start": t_start,
          "t_end": t_end, "took_p50_ms": round(float(np.median(took)) * 1e3, 1) if took else None,
          "took_max_ms": round(max(took) * 1e3, 1) if took else None,
          "rss_base": rss0, "rss_built": rss_built, "rss_connected": proc.memory_info().rss,
          "counts": w.counts})

    async def stats(final: bool = False) -> None:
        inst, w.installs = w.installs, []
        _out({"kind": "done" if final else "stats", "wall": time.time(),
              "rtt_ms": [round(x * 1e3, 3) for x in w.new_rtts()], "installs": inst,
              "sessions": w.sessions, "connected": sum(1 for cs in w.stations.values()
                                                       if cs.online),
              "counts": w.counts})

    stats_task: asyncio.Task[None] | None = None

    async def stats_loop() -> None:
        while True:
            await asyncio.sleep(args.sample_s)
            await stats()

    while True:
        line = (await reader.readline()).decode().strip()
        if line.startswith("go"):
            go_at.append(time.monotonic())
            w.start_traffic()
            stats_task = asyncio.create_task(stats_loop())
        elif line in ("stop", ""):
            break
    if stats_task is not None:
        stats_task.cancel()
    ticker_stop.set()
    await tick_task
    await stats(final=True)
    await w.close()


# ======================================================================= orchestrator


def _percentiles(values: Any) -> dict[str, float | int | None]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": int(a.size), "p50": round(float(p50), 2), "p95": round(float(p95), 2),
            "p99": round(float(p99), 2), "max": round(float(a.max()), 2),
            "mean": round(float(a.mean()), 2)}


def _slope(t_s: list[float], y: list[float]) -> dict[str, Any]:
    """Least-squares slope of ``y`` per minute, its 95 % interval and a flatness verdict.

    Flat within noise: the rise the slope predicts over the window is less than twice
    the residual standard deviation of the samples, or less than 1 MB (unit of ``y``).
    """
    n = len(t_s)
    if n < 4:
        return {"samples": n, "slope_per_min": None, "flat": None}
    t = np.asarray(t_s) / 60.0
    v = np.asarray(y, dtype=float)
    b, a = np.polyfit(t, v, 1)
    res = v - (a + b * t)
    sxx = float(((t - t.mean()) ** 2).sum())
    se = math.sqrt(float((res**2).sum()) / (n - 2) / sxx) if sxx > 0 else float("inf")
    span = float(t[-1] - t[0])
    rise = abs(b) * span
    noise = float(res.std())
    return {"samples": n, "window_min": round(span, 2), "slope_per_min": round(float(b), 4),
            "ci95_per_min": [round(float(b - 1.96 * se), 4), round(float(b + 1.96 * se), 4)],
            "predicted_rise": round(rise, 3), "residual_sd": round(noise, 3),
            "flat": bool(rise < max(2 * noise, 1.0))}


class _Child:
    """A child process and the JSON lines it prints."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.backlog: list[dict[str, Any]] = []  # lines skipped by expect()
        self.eof = False
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put_nowait(json.loads(raw))
        self.eof = True
        self.lines.put_nowait({"kind": "eof"})

    async def expect(self, kind: str, wait_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + wait_s
        while True:
            if self.eof and self.lines.empty():
                raise RuntimeError(f"{self.name} exited (code {self.proc.returncode}) "
                                   f"before '{kind}'")
            doc = await asyncio.wait_for(self.lines.get(), max(0.01, deadline - time.monotonic()))
            if doc.get("kind") == kind:
                return doc
            self.backlog.append(doc)
            if doc.get("kind") == "eof":
                raise RuntimeError(f"{self.name} exited (code {self.proc.returncode}) "
                                   f"before '{kind}'")

    def drain(self) -> list[dict[str, Any]]:
        out, self.backlog = self.backlog, []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return out

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write((line + "\n").encode())
            await self.proc.stdin.drain()


def _common(args: argparse.Namespace) -> list[str]:
    return ["--stations", str(args.stations), "--step-s", str(args.step_s),
            "--meter-interval-s", str(args.meter_interval_s),
            "--mean-session-s", str(args.mean_session_s),
            "--mean-idle-s", str(args.mean_idle_s), "--sample-s", str(args.sample_s),
            "--seed", str(args.seed), "--base-kw", str(args.base_kw),
            "--building-swing", str(args.building_swing),
            "--building-period-s", str(args.building_period_s), "--minutes", str(args.minutes),
            "--dlm-strategy", args.dlm_strategy, "--out", str(args.out),
            "--connect-concurrency", str(args.connect_concurrency),
            *(["--record"] if args.record else []), *(["--profile"] if args.profile else []),
            *(["--gc-freeze"] if args.gc_freeze else []),
            *(["--tracemalloc"] if args.tracemalloc else []),
            *([] if args.small_caps else ["--production-caps"])]


async def _spawn(name: str, argv: list[str], nice: int = 0,
                 stderr: Any = None) -> _Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=stderr, cwd=ROOT, limit=2**26,
        preexec_fn=(lambda: os.nice(nice)) if nice else None)
    return _Child(name, proc)


async def _orchestrate(args: argparse.Namespace, logs: list[Any]
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import psutil

    n, p = args.stations, args.processes
    failures: list[str] = []
    csms = await _spawn("csms", ["--role", "csms", *_common(args)], stderr=logs[0])
    ready = await csms.expect("ready", 120)
    cproc = psutil.Process(csms.proc.pid)
    await asyncio.sleep(1.0)
    csms_rss_base = cproc.memory_info().rss
    sizes = [n // p + (1 if k < n % p else 0) for k in range(p)]
    workers: list[_Child] = []
    first = 0
    per_worker = max(1, args.connect_concurrency // p)
    for k, size in enumerate(sizes):
        argv = ["--role", "worker", *_common(args), "--url", ready["url"],
                "--first", str(first), "--count", str(size)]
        argv[argv.index("--connect-concurrency") + 1] = str(per_worker)
        workers.append(await _spawn(f"worker{k}", argv, nice=WORKER_NICE, stderr=logs[k + 1]))
        first += size
    wprocs = [psutil.Process(w.proc.pid) for w in workers]
    connected = [await w.expect("connected", 120 + 0.2 * n) for w in workers]
    n_connected = sum(c["n"] for c in connected)
    connect_s = max(c["t_end"] for c in connected) - min(c["t_start"] for c in connected)
    await asyncio.sleep(1.0 + n / 1000)  # boots answered, TxDefaultProfiles installed
    csms_rss_conn = cproc.memory_info().rss
    wrss_conn = sum(wp.memory_info().rss for wp in wprocs)
    wrss_base = sum(c["rss_base"] for c in connected)
    if n_connected < n:
        failures.append(f"only {n_connected} of {n} stations connected")

    for proc in [cproc, *wprocs]:
        proc.cpu_percent(None)
    cpu_t0 = cproc.cpu_times()
    wcpu_t0 = [wp.cpu_times() for wp in wprocs]
    psutil.cpu_percent(None)
    base_csms: dict[str, Any] = {"frames_in": 0, "frames_out": 0, "scp_out": 0,
                                 "wall": time.time()}
    for doc in csms.drain():
        if doc.get("kind") == "stats":
            base_csms = doc
    for w in workers:
        w.drain()
        await w.send("go")
    t_go = time.time()
    duration = args.minutes * 60.0
    rows: list[dict[str, Any]] = []
    rtt_all: list[float] = []
    installs: list[tuple[str, float]] = []
    steps: list[tuple[float, float]] = []
    sends: list[tuple[str, float, float]] = []
    last_csms: dict[str, Any] = base_csms
    prev = (t_go, base_csms["frames_in"] + base_csms["frames_out"], base_csms["scp_out"])
    worker_done: list[dict[str, Any]] = []

    def take_workers(docs: list[dict[str, Any]]) -> tuple[list[float], int]:
        window: list[float] = []
        sessions = 0
        for doc in docs:
            if doc.get("kind") in ("stats", "done"):
                window += doc["rtt_ms"]
                installs.extend((a, b) for a, b in doc["installs"])
                sessions = doc["sessions"]
            if doc.get("kind") == "done":
                worker_done.append(doc)
        rtt_all.extend(window)
        return window, sessions

    sessions_by_worker = [0] * p
    while time.time() - t_go < duration:
        await asyncio.sleep(min(args.sample_s, max(0.0, t_go + duration - time.time())))
        t = time.time()
        if csms.proc.returncode is not None:
            failures.append("the CSMS process died")
            break
        for doc in csms.drain():
            if doc.get("kind") == "stats":
                steps.extend((s[0], s[1]) for s in doc["steps"])
                sends.extend((a, b, c) for a, b, c in doc["tx_profiles"])
                last_csms = doc
        window: list[float] = []
        for k, w in enumerate(workers):
            wwin, sess = take_workers(w.drain())
            window += wwin
            sessions_by_worker[k] = sess or sessions_by_worker[k]
        try:
            mem = cproc.memory_info().rss
            fds = cproc.num_fds()
            ccpu = cproc.cpu_percent(None)
            wrss = sum(wp.memory_info().rss for wp in wprocs)
            wcpu = sum(wp.cpu_percent(None) for wp in wprocs)
        except psutil.Error:
            failures.append("a process died")
            break
        fin, fout = last_csms.get("frames_in", 0), last_csms.get("frames_out", 0)
        scp = last_csms.get("scp_out", 0)
        dt = max(t - prev[0], 1e-9)
        recent_steps = [d for s, d in steps if s > prev[0] - args.sample_s]
        wq = _percentiles(window)
        rows.append({
            "t_s": round(t - t_go, 2), "csms_rss_mb": round(mem / 2**20, 2),
            "csms_cpu_pct": round(ccpu, 1), "csms_fds": fds,
            "loop_lag_max_ms": last_csms.get("lag_max_ms"),
            "loop_lag_mean_ms": last_csms.get("lag_mean_ms"),
            "gc_ms": last_csms.get("gc_ms"), "gc2_max_ms": last_csms.get("gc2_max_ms"),
            "frames_per_s": round((fin + fout - prev[1]) / dt, 1),
            "set_charging_profile_per_s": round((scp - prev[2]) / dt, 1),
            "step_ms_max": max(recent_steps) if recent_steps else None,
            "connected": last_csms.get("connected"), "active_tx": last_csms.get("active_tx"),
            "registry_tx": last_csms.get("registry_tx"),
            "csms_rtt_samples": last_csms.get("csms_rtt_samples"),
            "csms_tasks": last_csms.get("tasks"),
            "workers_rss_mb": round(wrss / 2**20, 2), "workers_cpu_pct": round(wcpu, 1),
            "station_calls_per_s": round(len(window) / dt, 1),
            "station_rtt_p50_ms": wq["p50"], "station_rtt_p99_ms": wq["p99"],
            "system_cpu_pct": psutil.cpu_percent(None),
        })
        prev = (t, fin + fout, scp)
        if args.verbose:
            print(json.dumps(rows[-1]), file=sys.stderr)
    t_end = time.time()
    try:
        cpu_t1 = cproc.cpu_times()
        wcpu_t1 = [wp.cpu_times() for wp in wprocs]
    except psutil.Error:
        cpu_t1, wcpu_t1 = cpu_t0, wcpu_t0
    if args.tracemalloc and csms.proc.returncode is None:
        await csms.send("snapshot")
        with contextlib.suppress(RuntimeError, TimeoutError):
            await csms.expect("snapshot_done", 600)
    for w in workers:
        await w.send("stop")
    for w in workers:
        try:
            doc = await w.expect("done", 120)
            take_workers([*w.drain(), doc, *w.drain()])
        except (RuntimeError, TimeoutError) as err:
            failures.append(f"{w.name}: {err}")
        await asyncio.wait_for(w.proc.wait(), 120)
    if csms.proc.returncode is None:
        csms.proc.send_signal(signal.SIGTERM)
    csms_done: dict[str, Any] = {}
    try:
        for doc in csms.drain():
            if doc.get("kind") == "stats":
                steps.extend((s[0], s[1]) for s in doc["steps"])
                sends.extend((a, b, c) for a, b, c in doc["tx_profiles"])
                last_csms = doc
        csms_done = await csms.expect("done", 120)
        for doc in csms.drain():
            if doc.get("kind") == "stats":
                steps.extend((s[0], s[1]) for s in doc["steps"])
                sends.extend((a, b, c) for a, b, c in doc["tx_profiles"])
                last_csms = doc
        steps.extend((s[0], s[1]) for s in csms_done["steps"])
        sends.extend((a, b, c) for a, b, c in csms_done["tx_profiles"])
    except (RuntimeError, TimeoutError) as err:
        failures.append(f"csms: {err}")
    await asyncio.wait_for(csms.proc.wait(), 120)

    delivery, queued, wire = _delivery(sends, installs, t_go)
    wall = t_end - t_go
    frames = (last_csms["frames_in"] + last_csms["frames_out"]
              - base_csms["frames_in"] - base_csms["frames_out"])
    frames_window = last_csms["wall"] - base_csms["wall"]
    cpu_s = (cpu_t1.user + cpu_t1.system) - (cpu_t0.user + cpu_t0.system)
    wcpu_s = sum((b.user + b.system) - (a.user + a.system)
                 for a, b in zip(wcpu_t0, wcpu_t1, strict=True))
    fps = frames / frames_window if frames_window > 0 else 0.0
    cpu_ms_per_frame = cpu_s * 1e3 / (fps * wall) if fps > 0 else None
    tail = min(480.0, 0.8 * wall)
    last = [r for r in rows if r["t_s"] >= wall - tail]
    slope = _slope([r["t_s"] for r in last], [r["csms_rss_mb"] for r in last])
    fd_slope = _slope([r["t_s"] for r in last], [r["csms_fds"] for r in last])
    lags = [r["loop_lag_max_ms"] for r in rows if r["loop_lag_max_ms"] is not None]
    steps_ms = [d for s, d in steps if s >= t_go]
    per_station_frames = fps / n if n else 0.0
    max_fps_core = 1e3 / cpu_ms_per_frame if cpu_ms_per_frame else None
    summary: dict[str, Any] = {
        "stations": n, "processes": p, "minutes": args.minutes, "step_s": args.step_s,
        "meter_interval_s": args.meter_interval_s, "mean_session_s": args.mean_session_s,
        "mean_idle_s": args.mean_idle_s, "dlm_strategy": args.dlm_strategy,
        "record": args.record, "gc_freeze": args.gc_freeze, "small_caps": args.small_caps,
        "seed": args.seed,
        "site_limit_kw": _grid_limit_kw(args),
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "connected": n_connected, "connect_all_s": round(connect_s, 2),
        "connect_per_station_ms": {
            "p50_of_worker_p50": (statistics.median(c["took_p50_ms"] for c in connected
                                                    if c["took_p50_ms"] is not None)
                                  if any(c["took_p50_ms"] for c in connected) else None),
            "max": max((c["took_max_ms"] or 0) for c in connected)},
        "csms_rss_mb": {"before": round(csms_rss_base / 2**20, 1),
                        "connected": round(csms_rss_conn / 2**20, 1),
                        "end": rows[-1]["csms_rss_mb"] if rows else None},
        "csms_kb_per_station": round((csms_rss_conn - csms_rss_base) / 1024 / n, 1),
        "worker_kb_per_station": round((wrss_conn - wrss_base) / 1024 / n, 1),
        "csms_cpu_pct_mean": round(100 * cpu_s / wall, 1) if wall > 0 else None,
        "workers_cpu_pct_mean": round(100 * wcpu_s / wall, 1) if wall > 0 else None,
        "system_cpu_pct_mean": round(statistics.fmean(r["system_cpu_pct"] for r in rows), 1)
        if rows else None,
        "frames_per_s": round(fps, 1), "frames_per_s_per_station": round(per_station_frames, 4),
        "set_charging_profile_per_s": round(
            (last_csms["scp_out"] - base_csms["scp_out"]) / frames_window, 1)
        if frames_window > 0 else None,
        "csms_cpu_ms_per_frame": round(cpu_ms_per_frame, 4) if cpu_ms_per_frame else None,
        "csms_max_frames_per_s_per_core": round(max_fps_core) if max_fps_core else None,
        "stations_per_core_at_this_rate": (round(max_fps_core / per_station_frames)
                                           if max_fps_core and per_station_frames else None),
        "station_rtt_ms": _percentiles(rtt_all),
        "csms_setchargingprofile_rtt_ms": csms_done.get("csms_rtt_ms"),
        "setpoint_delivery_ms": _percentiles(delivery),
        "setpoint_step_to_send_ms": _percentiles(queued),
        "setpoint_send_to_install_ms": _percentiles(wire),
        "control_step_ms": _percentiles(steps_ms),
        "sessions_started": sum(d.get("sessions", 0) for d in worker_done),
        "registry_transactions_end": last_csms.get("registry_tx"),
        "active_tx_end": last_csms.get("active_tx"),
        "csms_rtt_list_len_end": last_csms.get("csms_rtt_samples"),
        "loop_lag_ms": {"max": max(lags) if lags else None,
                        "p50_of_window_max": statistics.median(lags) if lags else None},
        "rss_slope_mb_per_min": slope, "fds_slope_per_min": fd_slope,
        "worker_events": _merge_counts(worker_done),
        "failures": failures,
    }
    if not rtt_all:
        failures.append("no station round-trip samples")
    if not delivery and summary["sessions_started"]:
        failures.append("no set-point delivery samples")
    return summary, rows


def _write(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    with open(out / "timeseries.csv", "w", newline="") as f:
        if rows:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def _delivery(sends: list[tuple[str, float, float]], installs: list[tuple[str, float]],
              t_go: float) -> tuple[list[float], list[float], list[float]]:
    """Set-point delivery [ms]: each TxProfile installed at a station after "go" is
    matched with the latest TxProfile the CSMS sent that station before it; returns
    (install - start of the step that sent it, send - step start, install - send)."""
    by_station: dict[str, list[tuple[float, float]]] = {}
    for sid, sent, step in sends:
        by_station.setdefault(sid, []).append((sent, step))
    delivery: list[float] = []
    queued: list[float] = []
    wire: list[float] = []
    index = {sid: (np.asarray([a for a, _ in sorted(v)]), np.asarray([b for _, b in sorted(v)]))
             for sid, v in by_station.items()}
    for sid, t in installs:
        if t < t_go or sid not in index:
            continue
        sent, step = index[sid]
        k = int(np.searchsorted(sent, t, side="right")) - 1
        if k < 0 or step[k] <= 0:
            continue
        delivery.append((t - step[k]) * 1e3)
        queued.append((sent[k] - step[k]) * 1e3)
        wire.append((t - sent[k]) * 1e3)
    return delivery, queued, wire


def _merge_counts(docs: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in docs:
        for k, v in d.get("counts", {}).items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def _report(s: dict[str, Any]) -> None:
    def q(d: dict[str, Any] | None) -> str:
        if not d or not d.get("n"):
            return "no samples"
        return (f"p50 {d['p50']} / p95 {d['p95']} / p99 {d['p99']} / max {d['max']} ms "
                f"(n={d['n']})")

    sl = s["rss_slope_mb_per_min"]
    print(f"scale bench: {s['stations']} stations in {s['processes']} worker processes, "
          f"{s['minutes']} min, step {s['step_s']} s, meter values every "
          f"{s['meter_interval_s']} s, sessions ~Exp({s['mean_session_s']} s) / idle "
          f"~Exp({s['mean_idle_s']} s), record={s['record']}")
    print(f"  connected {s['connected']}/{s['stations']} in {s['connect_all_s']} s; "
          f"sessions started {s['sessions_started']}")
    print(f"  memory: CSMS {s['csms_rss_mb']['before']} -> {s['csms_rss_mb']['connected']} MB "
          f"connected -> {s['csms_rss_mb']['end']} MB at end; "
          f"{s['csms_kb_per_station']} KB per connected station (CSMS), "
          f"{s['worker_kb_per_station']} KB per emulated station (workers)")
    print(f"  CPU: CSMS {s['csms_cpu_pct_mean']} % of a core, workers "
          f"{s['workers_cpu_pct_mean']} %, machine {s['system_cpu_pct_mean']} %")
    print(f"  traffic: {s['frames_per_s']} frames/s at the CSMS "
          f"({s['set_charging_profile_per_s']} SetChargingProfile/s); "
          f"{s['csms_cpu_ms_per_frame']} ms CSMS CPU per frame -> ~"
          f"{s['csms_max_frames_per_s_per_core']} frames/s per core, "
          f"~{s['stations_per_core_at_this_rate']} stations per core at this rate")
    print(f"  station CALL->CALLRESULT: {q(s['station_rtt_ms'])}")
    print(f"  CSMS SetChargingProfile round trip: {q(s['csms_setchargingprofile_rtt_ms'])}")
    print(f"  set-point delivery (step start -> TxProfile installed): "
          f"{q(s['setpoint_delivery_ms'])}")
    print(f"    of which step start -> frame written by the CSMS: "
          f"{q(s['setpoint_step_to_send_ms'])}")
    print(f"    and frame written -> installed at the station: "
          f"{q(s['setpoint_send_to_install_ms'])}")
    print(f"  control step: {q(s['control_step_ms'])}; event-loop lag max "
          f"{s['loop_lag_ms']['max']} ms")
    if sl.get("slope_per_min") is not None:
        print(f"  CSMS RSS slope over the last {sl['window_min']} min: "
              f"{sl['slope_per_min']} MB/min (95 % {sl['ci95_per_min']}), "
              f"{'flat within noise' if sl['flat'] else 'GROWING'}; fds slope "
              f"{s['fds_slope_per_min'].get('slope_per_min')} /min")
    print(f"  CSMS state at end: {s['registry_transactions_end']} transactions in the "
          f"registry ({s['active_tx_end']} open), {s['csms_rtt_list_len_end']} RTT samples")
    if s["failures"]:
        print(f"  FAILED: {'; '.join(s['failures'])}")


def main() -> None:
    """Command line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--processes", type=int, default=None,
                    help="worker processes (default: one per 500 stations, 1..8)")
    ap.add_argument("--step-s", type=float, default=5.0, help="DLM control step [s]")
    ap.add_argument("--meter-interval-s", type=int, default=60)
    ap.add_argument("--mean-session-s", type=float, default=300.0)
    ap.add_argument("--mean-idle-s", type=float, default=150.0)
    ap.add_argument("--base-kw", type=float, default=100.0, help="building load, low [kW]")
    ap.add_argument("--building-swing", type=float, default=0.2,
                    help="building load swing as a share of the EVs' part of the limit")
    ap.add_argument("--building-period-s", type=float, default=120.0)
    ap.add_argument("--dlm-strategy", default="equal", choices=["equal", "llf", "edf"])
    ap.add_argument("--record", action="store_true",
                    help="record every OCPP frame into the run folder (run.record)")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--connect-concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default runs/scale-<UTC>)")
    ap.add_argument("--verbose", action="store_true", help="print every sample row")
    ap.add_argument("--production-caps", dest="small_caps", action="store_false",
                    help="keep the CSMS's own bounds (100k RTT samples, 10k ended "
                         "transactions) instead of 20k / 500, which fill within the run")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() in the CSMS process once started (see the report)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="CSMS allocations grown from 90 s after start to the end, into "
                         "<out>/tracemalloc.txt")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the CSMS process into <out>/csms.prof")
    ap.add_argument("--role", choices=["main", "csms", "worker"], default="main",
                    help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    _raise_nofile()
    if args.role == "csms":
        asyncio.run(_csms_main(args))
        return
    if args.role == "worker":
        asyncio.run(_worker_main(args))
        return
    if args.processes is None:
        args.processes = min(8, max(1, math.ceil(args.stations / 500)))
    args.processes = max(1, min(args.processes, args.stations))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out = str(Path(args.out).resolve()) if args.out else str(ROOT / "runs" / f"scale-{stamp}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["csms", *(f"worker{k}" for k in range(args.processes))]
    logs = [open(out / f"{name}.stderr", "wb") for name in names]
    try:
        summary, rows = asyncio.run(_orchestrate(args, logs))
    except Exception as err:  # the children stop when their stdin closes with us
        print(f"scale bench FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        for f in logs:
            f.close()
    _write(out, summary, rows)
    ok = not summary["failures"]
    _report(summary)
    print(f"  wrote {args.out}/summary.json and timeseries.csv")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
