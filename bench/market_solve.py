"""Benchmark: solve time of the market LP per rolling-horizon step (issue 7 item 2).

A depot of ``--evses`` EVSEs (50) and one BESS (500 kWh, 250 kW, SoC 20..100 %,
efficiencies 0.95/0.95, degradation 0.03 EUR/kWh), at 15-minute intervals. Sessions are
drawn from a seeded generator (a delivery fleet: arrivals 15:00-20:00, departures
05:00-08:30 local, 20-70 kWh needed, 11 or 22 kW AC, one EV in ten V2G-capable, one
session in five in the day at 09:00-14:00; one vehicle in five single-phase at 7.4 kW on
its EVSE's phase, so the LP carries the per-phase rows; every session with the CC-CV
taper row of the twin's vehicle), one asset per session (the VPP envelope is per vehicle).
Base load 40..120 kW, PV up to 150 kWp, import limit 1 MW, export limit 200 kW,
demand charge 8 EUR/kW with a peak of 250 kW already set in the month. Day-ahead prices:
a synthetic hourly series with a morning and an evening peak, a solar dip with negative
hours on some days, seeded noise, from 8 days before the period on (history for the
forecast); import fee 120 EUR/MWh, export fee 5 EUR/MWh.

The rolling-horizon controller re-solves every hour over 24 h (96 intervals): the first
``--steps`` re-solves (24) have the full horizon; their solve time (build + HiGHS, wall
clock) gives median and max, with the model size (rows, columns, non-zeros). Also the
perfect-foresight solve over the whole period and the two costs. Target: < 1 s per solve.

    python bench/market_solve.py            # 50 EVSEs + BESS, 96 intervals, 24 re-solves
    python bench/market_solve.py --smoke    # 5 EVSEs, 3 re-solves (CI)
    python bench/market_solve.py --json out.json   # also the result as JSON
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controllers.market.lp import (
    BALANCED,
    AssetSpec,
    ChargeTaper,
    DepotProblem,
    EnergyTarget,
    flat,
)
from controllers.market.rolling import (
    DayAheadPrices,
    perfect_foresight,
    rolling_horizon,
    with_real_prices,
)

TZ = ZoneInfo("Europe/Berlin")
DT = timedelta(minutes=15)


def day_ahead_series(start: datetime, days: int, rng: np.random.Generator) -> DayAheadPrices:
    """Hourly synthetic day-ahead prices [EUR/MWh] for ``days`` days from ``start`` (UTC)."""
    hours = np.arange(24 * days)
    local_h = np.array([(start + timedelta(hours=int(h))).astimezone(TZ).hour for h in hours])
    shape = (
        80.0
        + 45.0 * np.exp(-((local_h - 8.0) ** 2) / 4.0)
        + 70.0 * np.exp(-((local_h - 19.0) ** 2) / 5.0)
        - 60.0 * np.exp(-((local_h - 13.0) ** 2) / 6.0)
    )
    sunny = rng.uniform(0.0, 1.6, size=days).repeat(24)
    price = shape - 40.0 * sunny * np.exp(-((local_h - 13.0) ** 2) / 4.0)
    price += rng.normal(0.0, 8.0, size=price.size)
    return DayAheadPrices(
        start=start,
        interval=timedelta(hours=1),
        price_per_mwh=np.round(price, 2),
        import_fee_per_mwh=120.0,
        export_fee_per_mwh=5.0,
    )


def cc_cv_taper(p_kw: float, cap_kwh: float, present: np.ndarray) -> ChargeTaper:
    """The CC-CV taper row of ``devices/vehicle.py`` (knee 0.8, floor 5 %, eta 0.92):
    the same row twin/market_problem.charge_taper builds for the twin's vehicles."""
    k = 0.95 / 0.2
    x = k * 0.92 * p_kw / (3600.0 * cap_kwh) * DT.total_seconds()
    p = p_kw * -math.expm1(-x) / x
    return ChargeTaper(p * (1.0 + k * 0.8), p * k / cap_kwh, present.astype(float))


def make_problem(evses: int, days: int, seed: int) -> tuple[DepotProblem, DayAheadPrices]:
    """The depot over ``days`` days from local midnight, with its price series."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 3, 2, tzinfo=TZ).astimezone(UTC)
    n = int(timedelta(days=days) / DT)
    prices = day_ahead_series(start - timedelta(days=8), days + 8, rng)
    local_h = np.array([(start + k * DT).astimezone(TZ).hour + (k % 4) / 4 for k in range(n)])

    def k_of(day: int, hour: float) -> int:
        return round((day * 24 + hour) * 4)

    assets: list[AssetSpec] = []
    for e in range(evses):
        p_rate = 22.0 if rng.random() < 0.5 else 11.0
        v2g = rng.random() < 0.1
        share = BALANCED
        if not v2g and rng.random() < 0.2:  # a single-phase vehicle, on the EVSE's phase
            p_rate, share = 7.4, ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))[e % 3]
        free = 0  # first interval at which the EVSE is free
        for day in range(-1, days):
            windows = [(rng.uniform(15, 20), rng.uniform(24 + 5, 24 + 8.5))]
            if rng.random() < 0.2:
                windows.insert(0, (rng.uniform(9, 11), rng.uniform(12, 14)))
            for arr_h, dep_h in windows:
                a, d = k_of(day, arr_h), k_of(day, dep_h)
                a = max(a, free)
                if d <= a or d <= 0 or a >= n:
                    continue
                free = d
                cap = float(rng.choice([60.0, 75.0, 90.0]))
                need = float(rng.uniform(20, 70))
                e0 = float(rng.uniform(0.1, 0.4)) * cap
                lo, hi = max(a, 0), min(d, n)
                p_max = np.zeros(n)
                p_min = np.zeros(n)
                p_max[lo:hi] = p_rate
                if v2g:
                    p_min[lo:hi] = -p_rate
                target = min(e0 + need, 0.95 * cap)
                # an EV in progress at the start has had part of its charge already
                if a < 0:
                    e0 = min(e0 + rng.uniform(0, 1) * need, target)
                assets.append(
                    AssetSpec(
                        asset_id=f"evse{e:03d}-s{day + 1}{'m' if arr_h < 12 else 'e'}",
                        p_min_kw=p_min,
                        p_max_kw=p_max,
                        e_min_kwh=flat(n + 1, 0.0),
                        e_max_kwh=flat(n + 1, cap),
                        e0_kwh=e0,
                        eta_charge=0.92,
                        eta_discharge=0.92,
                        degradation_cost_per_kwh=0.05 if v2g else 0.0,
                        targets=(EnergyTarget(d, target),) if d <= n else (),
                        phase_share=share,
                        taper=cc_cv_taper(p_rate, cap, p_max > 0),
                    )
                )
    assets.append(
        AssetSpec(
            asset_id="bess",
            p_min_kw=flat(n, -250.0),
            p_max_kw=flat(n, 250.0),
            e_min_kwh=flat(n + 1, 100.0),
            e_max_kwh=flat(n + 1, 500.0),
            e0_kwh=250.0,
            eta_charge=0.95,
            eta_discharge=0.95,
            degradation_cost_per_kwh=0.03,
        )
    )
    base = 40.0 + 80.0 * np.clip(np.sin((local_h - 6.0) / 14.0 * np.pi), 0.0, None)
    base += rng.normal(0.0, 5.0, size=n).clip(-20, 20)
    pv = 150.0 * np.clip(np.sin((local_h - 6.5) / 13.0 * np.pi), 0.0, None) ** 1.5
    problem = DepotProblem(
        start=start,
        interval=DT,
        assets=tuple(assets),
        price_import_per_mwh=flat(n, 0.0),
        price_export_per_mwh=flat(n, 0.0),
        base_load_kw=base.clip(0.0),
        pv_kw=pv,
        import_limit_kw=flat(n, 1000.0),
        export_limit_kw=flat(n, 200.0),
        demand_charge_per_kw=8.0,
        peak_so_far_kw=250.0,
    )
    return with_real_prices(problem, prices), prices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evses", type=int, default=50)
    ap.add_argument("--steps", type=int, default=24, help="full-horizon re-solves measured")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="5 EVSEs, 3 re-solves (CI)")
    ap.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = ap.parse_args()
    if args.smoke:
        args.evses, args.steps = 5, 3
    horizon = timedelta(hours=24)
    days = 1 + int(np.ceil(args.steps / 24))
    problem, prices = make_problem(args.evses, days, args.seed)
    print(
        f"market LP bench: {args.evses} EVSEs + 1 BESS, {len(problem.assets) - 1} sessions, "
        f"{problem.n} intervals of 15 min, horizon 96 intervals, python {platform.python_version()}"
    )
    t0 = time.perf_counter()
    rolled = rolling_horizon(
        problem, prices, step=timedelta(hours=1), horizon=horizon, perf_counter=time.perf_counter
    )
    wall = time.perf_counter() - t0
    full = [i for i, s in enumerate(rolled.sizes) if i < args.steps]
    times = [rolled.solve_times_s[i] for i in full]
    sizes = [rolled.sizes[i] for i in full]
    print(f"re-solves measured: {len(times)} (of {len(rolled.solve_times_s)}, {wall:.1f} s in all)")
    print(
        f"solve time per step [s]: median {statistics.median(times):.3f}  "
        f"max {max(times):.3f}  (target < 1 s)"
    )
    print(
        f"model size: rows {min(s.rows for s in sizes)}..{max(s.rows for s in sizes)}, "
        f"columns {min(s.cols for s in sizes)}..{max(s.cols for s in sizes)}, "
        f"non-zeros {min(s.nonzeros for s in sizes)}..{max(s.nonzeros for s in sizes)}"
    )
    t0 = time.perf_counter()
    pf = perfect_foresight(problem)
    pf_time = time.perf_counter() - t0
    print(
        f"perfect foresight over {problem.n} intervals: {pf_time:.3f} s, size {pf.size.rows} x "
        f"{pf.size.cols}, {pf.size.nonzeros} nz"
    )
    print(
        f"cost [EUR]: rolling {rolled.cost:.2f}  perfect foresight {pf.objective:.2f}  "
        f"(gap {rolled.cost - pf.objective:.2f}); unmet kWh rolling "
        f"{sum(rolled.schedule.unmet_kwh.values()):.1f}, PF {sum(pf.unmet_kwh.values()):.1f}"
    )
    if max(times) >= 1.0:
        print("WARNING: a re-solve took 1 s or more")
    if args.json:
        args.json.write_text(json.dumps({
            "evses": args.evses, "sessions": len(problem.assets) - 1, "intervals": problem.n,
            "resolves": len(times), "resolve_median_s": statistics.median(times),
            "resolve_max_s": max(times), "rolling_wall_s": wall,
            "rows": [min(s.rows for s in sizes), max(s.rows for s in sizes)],
            "cols": [min(s.cols for s in sizes), max(s.cols for s in sizes)],
            "pf_intervals": problem.n, "pf_s": pf_time,
            "cost_rolling": float(rolled.cost), "cost_pf": float(pf.objective),
        }, indent=2))


if __name__ == "__main__":
    main()
