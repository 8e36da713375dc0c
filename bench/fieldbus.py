"""Benchmark: Modbus and OPC UA exchanges per control step and their cost in the lock-step twin.

The same depot twice: 24 h at a 60 s control step, OCPP 2.0.1 over websockets on loopback,
every station an AC 22 kW EVSE, the CSMS with DLM under a limit that binds, real Caltech
ACN-Data sessions stacked as in ``bench/twin_speed.py``. Variant A has no site devices (a
constant base load of 0, as twin_speed). Variant B adds ``site_devices``, all emulated: the
site meter, a building on the BDEW G25 profile (annual energy sized to the depot), PV
rated at 0.4 x the grid limit, a BESS doing peak shaving and the transformer. Its site
energy controller reads meter (203), PV (701) and BESS (802, 701) over Modbus TCP and the
transformer over OPC UA every step, and writes the BESS set-point (704) when it moved.

Protocol transactions are counted on the wire side of the client libraries, not as
controller calls: inside variant B's process only, the benchmark wraps pymodbus'
``AsyncModbusTcpClient.read_holding_registers`` (FC3) and ``write_registers`` (FC16) and
asyncua's client session services ``read``/``read_attributes`` (Read) and
``write``/``write_attributes`` (Write), counts them and sums ``time.perf_counter`` around
each awaited request (loopback round trip plus the emulator's handling in the same event
loop). Requests made while connecting (SunSpec discovery, OPC UA namespace lookup) are
counted apart as set-up, and so are the ServerState probes of asyncua's connection
watchdog, which run once a second of wall time, not per step. Each variant runs in its
own process so that peak RSS is its own.

Prints one table (wall time, speed-up over real time, OCPP calls, Modbus reads and writes
and OPC UA reads and writes per control step, fieldbus time per step and its share of the
wall time, peak RSS), the change in speed-up the site devices cost, and the KPIs of
variant B that show the devices worked.

    python bench/fieldbus.py                           # 50 stations, 24 h
    python bench/fieldbus.py --stations 10 --hours 2   # CI smoke size
    python bench/fieldbus.py --json out.json           # also the rows as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import twin_speed  # the sibling benchmark (bench/ is on sys.path when run as a script)
import yaml

VARIANTS = {"A": "no site devices", "B": "site devices"}


def scenario_for(stations: int, hours: float, site_devices: bool) -> dict:
    # variant A is bench/twin_speed.py's scenario (the issue-2 speed figures)
    scenario: dict[str, Any] = twin_speed.scenario_for(stations, hours)
    grid_kw = scenario["site"]["grid_limit_kw"]
    scenario["name"] = f"bench_fieldbus_{stations}_{'site' if site_devices else 'plain'}"
    if site_devices:
        scenario["site_devices"] = {
            "meter": {},
            # mean building load 10 % of the grid limit (G25 peaks at about twice the mean)
            "building": {"profile": "G25", "annual_kwh": round(grid_kw * 0.10 * 8760),
                         "utc_offset_h": -8},
            "pv": {"rated_kw": round(grid_kw * 0.4, 1), "dc_ac_ratio": 1.2, "tilt_deg": 10,
                   "azimuth_deg": 180, "utc_offset_h": -8},
            "bess": {"capacity_kwh": round(grid_kw * 0.5), "max_charge_kw": round(grid_kw * 0.25),
                     "max_discharge_kw": round(grid_kw * 0.25), "soc_min": 0.1,
                     "soc_max": 0.95, "initial_soc": 0.6},
            "transformer": {"rated_power_kva": round(grid_kw * 1.25), "rated_voltage_v": 400,
                            "site_import_limit_kw": grid_kw, "ambient_c": 25},
            "control": {"measurement_timeout_s": 150, "peak_shave_kw": round(grid_kw * 0.75),
                        "charge_margin_kw": 10},
        }
    return scenario


# ------------------------------------------------------------------ instrumentation
_PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("fieldbus_phase", default="step")
COUNTS: Counter[str] = Counter()
SECONDS: Counter[str] = Counter()


async def _timed(key: str, awaitable: Any) -> Any:
    key = f"{_PHASE.get()}.{key}"
    t0 = time.perf_counter()
    try:
        return await awaitable
    finally:
        SECONDS[key] += time.perf_counter() - t0
        COUNTS[key] += 1


def _wrap_sync_returning_awaitable(cls: type, name: str, key: str) -> None:
    """``cls.name`` returns an awaitable (pymodbus' ``execute``): time its completion."""
    orig = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _timed(key, orig(self, *args, **kwargs))

    setattr(cls, name, wrapper)


def _wrap_async(cls: type, name: str, key: str) -> None:
    orig = getattr(cls, name)

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await _timed(key, orig(self, *args, **kwargs))

    setattr(cls, name, wrapper)


def _wrap_phase(cls: type, name: str, phase: str) -> None:
    """Requests made inside ``cls.name`` count under ``phase`` (connect, discovery)."""
    orig = getattr(cls, name)

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _PHASE.set(phase)
        try:
            return await orig(self, *args, **kwargs)
        finally:
            _PHASE.reset(token)

    setattr(cls, name, wrapper)


def _wrap_section(cls: type, name: str, key: str) -> None:
    """Count calls of ``cls.name`` and the wall time inside them."""
    orig = getattr(cls, name)

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await orig(self, *args, **kwargs)
        finally:
            SECONDS[key] += time.perf_counter() - t0
            COUNTS[key] += 1

    setattr(cls, name, wrapper)


def _wrap_sync_section(cls: type, name: str, key: str) -> None:
    orig = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return orig(self, *args, **kwargs)
        finally:
            SECONDS[key] += time.perf_counter() - t0
            COUNTS[key] += 1

    setattr(cls, name, wrapper)


def instrument_runtime() -> None:
    """Time the runtime's quiesce passes (both variants, for the comparison)."""
    from twin.runtime import LockStepRuntime

    _wrap_section(LockStepRuntime, "quiesce", "quiesce")


def instrument() -> None:
    """Patch the client libraries in this process only (nothing on disk changes)."""
    from asyncua.client.client import Client
    from asyncua.client.ua_session import UaSession
    from pymodbus.client import AsyncModbusTcpClient

    from controllers.site_io.opcua_client import OpcUaClient
    from controllers.site_io.sunspec_client import SunSpecClient
    from twin.site_runtime import SiteSide

    _wrap_sync_returning_awaitable(AsyncModbusTcpClient, "read_holding_registers", "mb_read")
    _wrap_sync_returning_awaitable(AsyncModbusTcpClient, "write_registers", "mb_write")
    # the session's attribute services are the leaves: each sends one request
    _wrap_async(UaSession, "read", "ua_read")
    _wrap_async(UaSession, "read_attributes", "ua_read")
    _wrap_async(UaSession, "write", "ua_write")
    _wrap_async(UaSession, "write_attributes", "ua_write")
    _wrap_phase(SunSpecClient, "_ensure_connected", "setup")
    _wrap_phase(OpcUaClient, "_ensure_connected", "setup")
    # asyncua's connection watchdog probes ServerState on the wall clock (not per step)
    _wrap_phase(Client, "_wait_for_health_signal", "watchdog")
    _wrap_section(SiteSide, "control", "site_control")
    _wrap_section(SiteSide, "advance", "site_advance")
    _wrap_section(SiteSide, "start", "site_start")
    _wrap_sync_section(SiteSide, "__init__", "site_init")


def run_one(stations: int, hours: float, variant: str) -> dict:
    from twin.session_run import run_scenario

    site = variant == "B"
    instrument_runtime()
    if site:
        instrument()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(scenario_for(stations, hours, site)))
        result = asyncio.run(run_scenario(path, out=Path(tmp) / "run"))
    wall = result.kpis["wall"]
    kpis = result.kpis["kpis"]
    out: dict[str, Any] = {
        "variant": variant,
        "stations": stations,
        "hours": hours,
        "wall_s": wall["wall_time_s"]["value"],
        "speedup": wall["speedup"]["value"],
        "ocpp_calls": wall["ocpp_calls"]["value"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sessions": kpis["sessions_completed"]["value"],
        "limit_violations": kpis["limit_violations"]["value"],
        "counts": dict(COUNTS),
        "seconds": dict(SECONDS),
    }
    if site:
        out["fieldbus_exchanges"] = wall["fieldbus_exchanges"]["value"]
        out["site_kpis"] = {
            name: kpis[name]["value"]
            for name in ("pv_energy_kwh", "pv_curtailed_kwh", "bess_charged_kwh",
                         "bess_discharged_kwh", "bess_min_soc", "bess_max_soc",
                         "transformer_peak_loading_pct", "transformer_max_hot_spot_c",
                         "fail_safe_steps")
            if name in kpis
        }
    return out


def _median_run(runs: list[dict]) -> dict:
    """The run of median wall time, with ``wall_s``/``speedup`` the medians over all runs."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["wall_s"] = statistics.median(r["wall_s"] for r in runs)
    row["speedup"] = row["hours"] * 3600.0 / row["wall_s"]
    row["walls"] = [r["wall_s"] for r in runs]
    return row


def per_step(r: dict) -> dict[str, Any]:
    """Requests per controller step, fieldbus ms per step and share of wall time (None
    without site devices)."""
    c, s = r["counts"], r["seconds"]
    steps = c.get("site_control")
    keys = ("mb_read", "mb_write", "ua_read", "ua_write")
    if not steps:
        return {**dict.fromkeys(keys), "fieldbus_ms_per_step": None, "fieldbus_share_pct": None}
    bus_s = sum(v for k, v in s.items() if k.startswith("step."))
    return {**{k: c.get(f"step.{k}", 0) / steps for k in keys},
            "fieldbus_ms_per_step": bus_s / steps * 1000, "fieldbus_share_pct":
            bus_s / r["wall_s"] * 100}


def _fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (median wall)")
    parser.add_argument("--one", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.stations, args.hours, args.one)))
        return
    rows: dict[str, dict] = {}
    for variant in VARIANTS:
        runs = []
        for i in range(max(1, args.repeat)):
            out = subprocess.run(
                [sys.executable, __file__, "--one", variant, "--stations", str(args.stations),
                 "--hours", str(args.hours)],
                check=False, capture_output=True, text=True,
            )
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                raise SystemExit(f"variant {variant} run {i + 1} failed ({out.returncode})")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  {variant} ({VARIANTS[variant]}) run {i + 1}: "
                  f"{runs[-1]['wall_s']:.1f} s", file=sys.stderr)
        rows[variant] = _median_run(runs)

    header = ("| variant | stations | simulated | wall s | speed-up | OCPP calls "
              "| Modbus reads/step | Modbus writes/step | OPC UA reads/step "
              "| OPC UA writes/step | fieldbus ms/step | fieldbus share % | peak RSS MB |")
    print(header)
    print("|---" * 13 + "|")
    for variant, r in rows.items():
        per = r["per_step"] = per_step(r)
        ms_step = share = "-"
        if per["fieldbus_ms_per_step"] is not None:
            ms_step = f"{per['fieldbus_ms_per_step']:.2f}"
            share = f"{per['fieldbus_share_pct']:.1f}"
        print(f"| {variant} {VARIANTS[variant]} | {r['stations']} | {r['hours']:g} h "
              f"| {r['wall_s']:.1f} | {r['speedup']:.0f}x | {r['ocpp_calls']} "
              f"| {_fmt_rate(per['mb_read'])} | {_fmt_rate(per['mb_write'])} "
              f"| {_fmt_rate(per['ua_read'])} | {_fmt_rate(per['ua_write'])} "
              f"| {ms_step} | {share} | {r['peak_rss_mb']:.0f} |")
    a, b = rows["A"], rows["B"]
    change = (b["speedup"] / a["speedup"] - 1.0) * 100.0
    print(f"speed-up change with site devices: {a['speedup']:.0f}x -> {b['speedup']:.0f}x "
          f"({change:+.1f} %)")

    c, s = b["counts"], b["seconds"]
    steps = c.get("site_control", 0)
    print(f"variant B: {steps} controller steps, {b['fieldbus_exchanges']} controller "
          f"exchanges; set-up (connect, discovery): {c.get('setup.mb_read', 0)} Modbus reads, "
          f"{c.get('setup.ua_read', 0)} OPC UA reads; asyncua watchdog (1/s wall clock): "
          f"{c.get('watchdog.ua_read', 0)} OPC UA reads; totals in steps: "
          f"{c.get('step.mb_read', 0)} FC3, {c.get('step.mb_write', 0)} FC16, "
          f"{c.get('step.ua_read', 0)} OPC UA Read, {c.get('step.ua_write', 0)} OPC UA Write")
    if steps:
        parts = ", ".join(
            f"{label} {s.get(f'step.{k}', 0) / max(1, c.get(f'step.{k}', 0)) * 1000:.2f} ms"
            for label, k in (("FC3", "mb_read"), ("FC16", "mb_write"), ("OPC UA Read", "ua_read"))
            if c.get(f"step.{k}")
        )
        print(f"variant B: mean time per request: {parts}; per step: site control "
              f"{s['site_control'] / steps * 1000:.2f} ms (fieldbus included), device "
              f"physics {s.get('site_advance', 0) / max(1, c.get('site_advance', 0)) * 1000:.2f}"
              f" ms; wall time B - A per step "
              f"{(b['wall_s'] - a['wall_s']) / steps * 1000:.2f} ms")
    print(f"quiesce: A {a['seconds'].get('quiesce', 0):.2f} s in {a['counts'].get('quiesce', 0)} "
          f"passes, B {s.get('quiesce', 0):.2f} s in {c.get('quiesce', 0)}; B set-up: device "
          f"models {s.get('site_init', 0):.2f} s, emulators start {s.get('site_start', 0):.2f} s")
    print("variant B KPIs: " + ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in b["site_kpis"].items()))
    for r in (a, b):
        if r["limit_violations"]:
            print(f"variant {r['variant']}: {r['limit_violations']} limit violations")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "speedup_change_pct": change}, indent=2))


if __name__ == "__main__":
    main()
