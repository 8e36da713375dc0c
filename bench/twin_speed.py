"""Benchmark: speed of the lock-step twin by station count.

24 h at a 60 s control step, OCPP 2.0.1 over websockets on loopback, every station an
AC 22 kW EVSE, the CSMS with DLM under a limit that binds. Sessions are real Caltech
ACN-Data sessions; for larger depots the sessions of several consecutive days are
stacked onto the run day (``sessions.stack_days``) so that utilisation stays realistic.
Each size runs in its own process so that peak RSS is its own.

Prints one table: wall time, speed-up over real time, OCPP calls and calls per second,
active EVSE-steps, peak RSS.

    python bench/twin_speed.py                       # 10, 50, 200 stations, 24 h
    python bench/twin_speed.py --stations 10 --hours 2   # CI smoke size
    python bench/twin_speed.py --json out.json        # also the rows as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def scenario_for(stations: int, hours: float) -> dict:
    return {
        "name": f"bench_{stations}",
        "site": {
            "grid_limit_kw": round(stations * 22 * 0.4, 1),
            "safety_margin_kw": 2,
            "timezone": "America/Los_Angeles",
            "base_load": {"kind": "constant", "power_kw": 0},
        },
        "stations": [{"prefix": "CS", "count": stations, "kind": "ac_22kw",
                      "ocpp_version": "2.0.1"}],
        "sessions": {"dataset": "acn_caltech", "stack_days": max(1, stations // 4)},
        "prices": {"dataset": "nl_day_ahead", "align": "local_clock"},
        "run": {"start": "2019-09-10T07:00:00Z", "duration_h": hours, "step_s": 60, "seed": 1},
    }


def run_one(stations: int, hours: float) -> dict:
    import pandas as pd

    from twin.session_run import run_scenario

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(scenario_for(stations, hours)))
        result = asyncio.run(run_scenario(path, out=Path(tmp) / "run"))
        traces = pd.read_parquet(Path(tmp) / "run" / "traces.parquet",
                                 filters=[("quantity", "==", "power_kw")])
        active = int((traces["value"] > 0).sum())
    wall = result.kpis["wall"]
    calls = wall["ocpp_calls"]["value"]
    seconds = wall["wall_time_s"]["value"]
    return {
        "stations": stations,
        "hours": hours,
        "wall_s": seconds,
        "speedup": wall["speedup"]["value"],
        "ocpp_calls": calls,
        "calls_per_s": calls / seconds if seconds else 0.0,
        "rtt_p50_ms": wall["ocpp_rtt_p50_ms"]["value"],
        "rtt_p99_ms": wall["ocpp_rtt_p99_ms"]["value"],
        "active_evse_steps": active,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sessions": result.kpis["kpis"]["sessions_completed"]["value"],
        "limit_violations": result.kpis["kpis"]["limit_violations"]["value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.hours)))
        return
    rows = []
    for n in args.stations:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--hours", str(args.hours)],
            check=True, capture_output=True, text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {n} stations done: {r['speedup']:.0f}x real time", file=sys.stderr)
    header = ("| stations | simulated | wall s | speed-up | OCPP calls | calls/s | RTT p50 ms "
              "| RTT p99 ms | active EVSE-steps | sessions | violations | peak RSS MB |")
    print(header)
    print("|---" * 12 + "|")
    for r in rows:
        print(f"| {r['stations']} | {r['hours']:g} h | {r['wall_s']:.1f} | {r['speedup']:.0f}x "
              f"| {r['ocpp_calls']} | {r['calls_per_s']:.0f} | {r['rtt_p50_ms']:.2f} "
              f"| {r['rtt_p99_ms']:.2f} | {r['active_evse_steps']} | {r['sessions']} "
              f"| {r['limit_violations']} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
