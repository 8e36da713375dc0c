"""Benchmark: the twin beside ACN-Sim (acnportal) on the same Caltech sessions, EDF, one limit.

Both simulate the same depot: 54 AC EVSEs (the Caltech garage), 22 kW each (32 A on
three phases at 230 V), one aggregate limit (150 kW, the garage's 150 kVA transformer),
no base load and no safety margin, a 60 s step, earliest deadline first. The sessions
are the twin's own session plan (``twin.run_inputs.resolve_inputs`` of the scenario:
real ACN-Data Caltech sessions from the cached ``acn_caltech`` data set, each mapped to
an EVSE, its energy need at the meter and its vehicle's on-board charger power), so
both get the same arrivals, departures, EVSEs and requests.

* The twin: ``twin.session_run.run_scenario`` of that scenario with ``dlm.strategy:
  edf``: lock-step runtime, 54 emulated stations speaking OCPP 2.0.1 over websockets to
  the CSMS, every message schema-validated, vehicles with a taper above 80 % SoC.
* ACN-Sim: ``acnsim.Simulator`` with ``SortedSchedulingAlgo(earliest_deadline_first)``
  (its documented EDF; re-run every period, ``max_recompute`` 1), a ``ChargingNetwork``
  of 54 continuous ``EVSE`` (0..32 A; ACN-Sim's EDF hands out pilots below 6 A, which a
  ``DeadbandEVSE`` rejects with InvalidRateError, so the twin's 6 A minimum is not
  mirrored) at 690 V (a balanced three-phase EVSE at 230 V as its single-phase
  equivalent: 32 A -> 22.08 kW) and a single constraint on the sum of all EVSE
  currents equal to the limit (150 kW / 690 V = 217.4 A); each EV an ideal ``Battery``
  (capacity and arrival charge from the twin's vehicle, ``max_power`` its on-board
  charger), ``requested_energy`` the twin's need, arrival rounded up and departure down
  to whole periods. The EV
  objects are built here from the cached sessions (ACN-Sim would otherwise fetch them
  from the ACN-Data API, which is not reachable offline).

ACN-Sim runs twice: its plain EDF, which offers every EV up to the EVSE's 32 A and counts
those pilots against the limit (an 11 kW vehicle draws 16 A of its 32 A, so the limit
binds on pilots long before it binds on power), and EDF with ``estimate_max_rate`` by
``SimpleRampdown`` (the pilot follows what the EV draws; the twin's DLM likewise caps a
vehicle at its measured current plus 2 A). acnportal 0.3.3 keys SimpleRampdown's bounds
by session id but looks them up by station id, so unpatched the estimate is never
applied; ``StationKeyedRampdown`` below re-keys them. ACN-Sim's ``Simulator.run`` asks
``EventQueue.get_last_timestamp()`` every period, a scan of the whole queue, so with all
sessions queued up front its cost per period grows with the length of the run (here, on
a shared 2-core machine: one week 6-14 s, four months 207-237 s, 17x the days).

KPIs, over the run window: energy delivered; energy requested, unmet and share met over
the sessions that departed in the window (the twin's ``energy_met_share`` definition:
delivered capped at the request); peak EV power and peak 15-minute demand. Wall time:
the twin's ``wall_time_s`` KPI (the lock-step run; input loading apart) and ACN-Sim's
``Simulator.run()`` (network and event construction apart, reported too).

    python bench/acnsim_compare.py --days 7                   # one week (smoke)
    python bench/acnsim_compare.py                            # Sep-Dec 2019 (122 days)
    python bench/acnsim_compare.py --days 7 --json out.json   # machine-readable result

acnportal 0.3.3 (PyPI, optional extra ``bench``) runs on Python 3.11 with numpy 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = "2019-09-01T07:00:00Z"  # Sunday 1 September 2019, 00:00 Pacific daylight time
DAYS = 122  # September to December 2019: four months of the cached Caltech sessions
EVSES = 54
LIMIT_KW = 150.0
STEP_S = 60
VOLTAGE_V = 230.0
PHASES = 3
MAX_A = 32.0
MIN_A = 6.0


def scenario_for(start: str, days: float, limit_kw: float, evses: int, step_s: int) -> dict:
    """The twin's scenario: ``scenarios/caltech_week.yaml`` with EDF, no base load, no margin."""
    return {
        "name": "acnsim_compare",
        "description": "ACN-Sim side-by-side: Caltech sessions, EDF, one aggregate limit",
        "site": {"name": "caltech-garage", "grid_limit_kw": limit_kw, "phases": PHASES,
                 "voltage_v": VOLTAGE_V, "safety_margin_kw": 0,
                 "timezone": "America/Los_Angeles",
                 "base_load": {"kind": "constant", "power_kw": 0}},
        "stations": [{"prefix": "CA", "count": evses, "kind": "ac_22kw",
                      "ocpp_version": "2.0.1"}],
        "sessions": {"dataset": "acn_caltech"},
        "vehicles": {"target_soc": 0.9},
        "controllers": {"dlm": {"strategy": "edf", "min_current_a": MIN_A}},
        "run": {"start": start, "duration_h": days * 24, "step_s": step_s, "seed": 1},
    }


def _peak_15min(power_kw: np.ndarray, step_s: int) -> float:
    n = max(1, round(900 / step_s))
    return max((float(power_kw[i:i + n].mean()) for i in range(0, len(power_kw), n)),
               default=0.0)


def run_acnsim(plan: Any, evse_ids: list[str], start: datetime, steps: int, step_s: int,
               limit_kw: float, rampdown: bool = False) -> dict[str, Any]:
    """ACN-Sim's EDF on the twin's session plan; KPIs over the first ``steps`` periods.

    ``rampdown``: EDF with ``estimate_max_rate`` by ``SimpleRampdown`` (the pilot of an EV
    drawing less than it is offered is lowered to what it draws, as the twin's DLM caps a
    vehicle at its measured current plus a headroom); without it, ACN-Sim's EDF offers each
    EV up to the EVSE's 32 A and counts that pilot against the limit.
    """
    from acnportal import acnsim
    from acnportal.acnsim import EventQueue, PluginEvent
    from acnportal.acnsim.models import EV, EVSE, Battery
    from acnportal.algorithms import (
        SimpleRampdown,
        SortedSchedulingAlgo,
        earliest_deadline_first,
    )

    t0 = time.perf_counter()
    voltage = VOLTAGE_V * PHASES  # balanced three-phase EVSE as its single-phase equivalent
    network = acnsim.ChargingNetwork()
    for sid in evse_ids:
        network.register_evse(EVSE(sid, max_rate=MAX_A), voltage, 0)
    network.add_constraint(acnsim.Current(evse_ids), limit_kw * 1000.0 / voltage, name="grid")
    queue = EventQueue()
    period_s = float(step_s)
    evs: list[Any] = []
    for s in plan.sessions:
        arrival = math.ceil((s.arrival - start).total_seconds() / period_s)
        departure = math.floor((s.departure - start).total_seconds() / period_s)
        if departure <= arrival:
            departure = arrival + 1
        cap = s.model.battery_capacity_kwh
        battery = Battery(cap, s.arrival_soc * cap, s.model.ac_max_power_kw)
        ev = EV(arrival, departure, s.needed_kwh, s.evse, s.session_id, battery)
        evs.append(ev)
        queue.add_event(PluginEvent(arrival, ev))
    class StationKeyedRampdown(SimpleRampdown):  # type: ignore[misc]
        """acnportal 0.3.3's ``apply_upper_bound_estimate`` looks the bounds up by station
        id while ``SimpleRampdown.get_maximum_rates`` keys them by session id, so the
        estimate is silently never applied; re-key them."""

        def get_maximum_rates(self, sessions: list[Any]) -> dict[str, float]:
            bounds = super().get_maximum_rates(sessions)
            return {s.station_id: bounds[s.session_id] for s in sessions
                    if s.session_id in bounds}

    algo = (SortedSchedulingAlgo(earliest_deadline_first, estimate_max_rate=True,
                                 max_rate_estimator=StationKeyedRampdown())
            if rampdown else SortedSchedulingAlgo(earliest_deadline_first))
    sim = acnsim.Simulator(network, algo, queue, start, period=period_s / 60.0, verbose=False)
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    sim.run()
    wall_s = time.perf_counter() - t1
    power = acnsim.analysis.aggregate_power(sim)[:steps]  # kW per period
    if len(power) < steps:
        power = np.concatenate([power, np.zeros(steps - len(power))])
    hours = period_s / 3600.0
    rates = sim.charging_rates  # A per EVSE and period
    per_period_kwh = rates * voltage / 1000.0 * hours
    index = {sid: i for i, sid in enumerate(sim.network.station_ids)}
    requested = delivered_done = 0.0
    done = 0
    for ev in evs:
        if ev.departure > steps:  # open at the end of the window: not counted, as the twin
            continue
        row = per_period_kwh[index[ev.station_id], ev.arrival:ev.departure]
        got = float(row.sum())
        requested += ev.requested_energy
        delivered_done += min(got, ev.requested_energy)
        done += 1
    return {
        "wall_s": wall_s,
        "build_s": build_s,
        "sessions": len(evs),
        "sessions_completed": done,
        "energy_delivered_kwh": float(power.sum() * hours),
        "energy_requested_kwh": requested,
        "energy_unmet_kwh": requested - delivered_done,
        "energy_met_share": delivered_done / requested if requested else 1.0,
        "peak_ev_power_kw": float(power.max(initial=0.0)),
        "peak_demand_15min_kw": _peak_15min(power, step_s),
        "limit_violations": int((power > limit_kw + 0.1).sum()),
    }


def run_twin(path: Path, tmp: Path) -> dict[str, Any]:
    from twin.session_run import run_scenario

    t0 = time.perf_counter()
    result = asyncio.run(run_scenario(path, out=tmp / "run"))
    total_s = time.perf_counter() - t0
    k, w = result.kpis["kpis"], result.kpis["wall"]
    return {
        "wall_s": w["wall_time_s"]["value"],
        "total_s": total_s,
        "speedup": w["speedup"]["value"],
        "ocpp_calls": w["ocpp_calls"]["value"],
        "sessions_completed": k["sessions_completed"]["value"],
        "sessions_refused": k["sessions_refused"]["value"],
        **{name: k[name]["value"] for name in (
            "energy_delivered_kwh", "energy_requested_kwh", "energy_unmet_kwh",
            "energy_met_share", "peak_ev_power_kw", "peak_demand_15min_kw",
            "limit_violations")},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def compare(start: str, days: float, limit_kw: float, evses: int, step_s: int,
            twin: bool = True) -> dict[str, Any]:
    from twin.run_inputs import resolve_inputs
    from twin.scenario import load_scenario

    with tempfile.TemporaryDirectory(prefix="acnsim-compare-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "acnsim_compare.yaml"
        path.write_text(yaml.safe_dump(scenario_for(start, days, limit_kw, evses, step_s)))
        scenario = load_scenario(path)
        inputs = resolve_inputs(scenario)
        evse_ids = [f"{sid}/{e}" for sid, ids in scenario.evse_layout() for e in ids]
        steps = round(days * 86400 / step_s)
        acn = run_acnsim(inputs.plan, evse_ids, scenario.run.start, steps, step_s, limit_kw)
        print(f"  ACN-Sim EDF: {acn['wall_s']:.1f} s", file=sys.stderr, flush=True)
        ramp = run_acnsim(inputs.plan, evse_ids, scenario.run.start, steps, step_s, limit_kw,
                          rampdown=True)
        print(f"  ACN-Sim EDF + rampdown: {ramp['wall_s']:.1f} s", file=sys.stderr, flush=True)
        ours = run_twin(path, tmp) if twin else None
    out: dict[str, Any] = {
        "start": start, "days": days, "evses": evses, "limit_kw": limit_kw, "step_s": step_s,
        "sessions_planned": len(inputs.plan.sessions),
        "sessions_refused_by_plan": len(inputs.plan.refused),
        "acnsim": acn, "acnsim_rampdown": ramp, "twin": ours,
    }
    if ours is not None:
        ratio = ours["wall_s"] / acn["wall_s"] if acn["wall_s"] else None
        out["wall_ratio_twin_over_acnsim"] = ratio
    return out


KPI_ROWS = (
    ("wall time s (simulation only)", "wall_s", "{:.1f}"),
    ("energy delivered kWh", "energy_delivered_kwh", "{:,.0f}"),
    ("energy requested kWh (departed sessions)", "energy_requested_kwh", "{:,.0f}"),
    ("energy unmet kWh", "energy_unmet_kwh", "{:,.0f}"),
    ("share of demand met %", "energy_met_share", "{:.1%}"),
    ("peak EV power kW", "peak_ev_power_kw", "{:.1f}"),
    ("peak 15-min demand kW", "peak_demand_15min_kw", "{:.1f}"),
    ("steps over the limit", "limit_violations", "{}"),
    ("sessions departed in the window", "sessions_completed", "{}"),
)


def table(r: dict[str, Any]) -> str:
    """The side-by-side as a Markdown table."""
    lines = ["| | MiGrid twin (OCPP, EDF) | ACN-Sim EDF | ACN-Sim EDF + SimpleRampdown |",
             "|---|---|---|---|"]
    for label, key, fmt in KPI_ROWS:
        cells = ["-" if r.get(side) is None else fmt.format(r[side][key]).replace("%", " %")
                 for side in ("twin", "acnsim", "acnsim_rampdown")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", default=START, help="run start, UTC (default %(default)s)")
    ap.add_argument("--days", type=float, default=DAYS, help="days simulated (default 122)")
    ap.add_argument("--limit-kw", type=float, default=LIMIT_KW)
    ap.add_argument("--evses", type=int, default=EVSES)
    ap.add_argument("--step-s", type=int, default=STEP_S)
    ap.add_argument("--no-twin", action="store_true", help="ACN-Sim only")
    ap.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = ap.parse_args()
    r = compare(args.start, args.days, args.limit_kw, args.evses, args.step_s,
                twin=not args.no_twin)
    print(f"Caltech sessions from {args.start}, {args.days:g} days, {args.evses} EVSEs x 22 kW, "
          f"limit {args.limit_kw:g} kW, step {args.step_s} s, EDF: "
          f"{r['sessions_planned']} sessions ({r['sessions_refused_by_plan']} refused, no "
          f"free EVSE)")
    print(table(r))
    if r["twin"] is not None:
        print(f"wall-time ratio twin / ACN-Sim: {r['wall_ratio_twin_over_acnsim']:.1f}x "
              f"(twin {r['twin']['speedup']:.0f}x real time, {r['twin']['ocpp_calls']} OCPP "
              f"calls; ACN-Sim set-up {r['acnsim']['build_s']:.1f} s apart)")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
