"""Run the benchmarks of bench/ at one size and write one Markdown report.

Each benchmark runs as its own subprocess (``python bench/<script>.py ... --json FILE``)
and its figures are read from that JSON; a benchmark that fails (non-zero exit, time-out,
no JSON) shows in the table as FAILED with the end of its error output, the report is
still written, and this script exits 1. The header records the machine (CPU model,
cores, RAM, load average at the start), Python, the git commit and the date. Each
benchmark's own printed output follows the table.

Sizes:

* ``smoke`` -- CI, the whole report in about 3 minutes: the smallest sizes of ``.ci/run``
  (twin speed 10 and 20 stations over 24 h, fieldbus 10 stations over 2 h, bench latency
  5 stations x 3 changes, market ``--smoke``), the dashboard server side only
  (``--no-browser``), ACN-Sim side-by-side on one week;
* ``small`` -- a few minutes more: 10 and 50 stations, 50 stations fieldbus over 6 h,
  20 bench stations, 20 EVSEs for the market, the dashboard in Chromium, four weeks of
  ACN-Sim side-by-side;
* ``full`` -- the README's figures: 10, 50, 200 stations over 24 h, fieldbus 50 stations
  over 24 h, 100 bench stations x 10 changes, market 50 EVSEs x 24 re-solves, the
  dashboard in Chromium, four months (Sep-Dec 2019) of ACN-Sim side-by-side.

    python bench/report.py --size smoke --out bench-smoke.md
    python bench/report.py --size full --out bench-full.md
    python bench/report.py --size smoke --only twin_speed market_solve   # a subset
    python bench/report.py --size full --acnsim-days 28     # a shorter ACN-Sim slice
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

Row = tuple[str, str]  # (figure, value)


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


# ------------------------------------------------------------------ benchmarks


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its arguments per size, the figures it reports (fixed per
    size, so that a failed run still lists every row) and how to read them from its JSON."""

    name: str
    script: str
    what: str
    args: dict[str, list[str]]
    labels: Callable[[str], list[str]]
    extract: Callable[[dict[str, Any], str], dict[str, str]]
    timeout_s: dict[str, float] = field(default_factory=dict)


TWIN_STATIONS = {"smoke": [10, 20], "small": [10, 50], "full": [10, 50, 200]}
TWIN_HOURS = {"smoke": 24, "small": 24, "full": 24}


def _twin_labels(size: str) -> list[str]:
    out = []
    for n in TWIN_STATIONS[size]:
        out += [f"speed-up over real time, {n} stations",
                f"OCPP calls per second, {n} stations"]
    return [*out, "memory per emulated station"]


def memory_per_station(rows: list[dict[str, Any]]) -> str:
    """Slope of peak RSS over station count (least squares), with the base it implies."""
    pts = sorted((r["stations"], r["peak_rss_mb"]) for r in rows)
    if len(pts) < 2 or pts[0][0] == pts[-1][0]:
        n, mb = pts[0]
        return f"{mb / n:.1f} MB (peak RSS {mb:.0f} MB / {n}, base included)"
    mean_n = sum(p[0] for p in pts) / len(pts)
    mean_m = sum(p[1] for p in pts) / len(pts)
    slope = (sum((n - mean_n) * (m - mean_m) for n, m in pts)
             / sum((n - mean_n) ** 2 for n, _ in pts))
    base = mean_m - slope * mean_n
    spread = ", ".join(f"{m:.0f} MB at {n}" for n, m in pts)
    return f"{slope:.2f} MB over a {base:.0f} MB base (peak RSS {spread})"


def _twin_extract(data: dict[str, Any], size: str) -> dict[str, str]:
    out = {}
    for r in data["rows"]:
        n = r["stations"]
        out[f"speed-up over real time, {n} stations"] = (
            f"{r['speedup']:,.0f}x ({r['hours']:g} h in {r['wall_s']:.1f} s)")
        out[f"OCPP calls per second, {n} stations"] = (
            f"{r['calls_per_s']:,.0f} ({r['ocpp_calls']:,} calls; RTT p50 "
            f"{r['rtt_p50_ms']:.1f} / p99 {r['rtt_p99_ms']:.1f} ms)")
    out["memory per emulated station"] = memory_per_station(data["rows"])
    return out


FIELDBUS_LABELS = ["Modbus + OPC UA cost per control step",
                   "Modbus / OPC UA requests per control step",
                   "speed-up without -> with site devices"]


def _fieldbus_extract(data: dict[str, Any], size: str) -> dict[str, str]:
    a, b = data["rows"]["A"], data["rows"]["B"]
    per = b["per_step"]
    return {
        FIELDBUS_LABELS[0]: (f"{_num(per['fieldbus_ms_per_step'])} ms/step, "
                             f"{_num(per['fieldbus_share_pct'], '{:.1f}')} % of wall time "
                             f"({b['stations']} stations, {b['hours']:g} h)"),
        FIELDBUS_LABELS[1]: (f"FC3 {_num(per['mb_read'])}, FC16 {_num(per['mb_write'])}, "
                             f"OPC UA Read {_num(per['ua_read'])}, "
                             f"Write {_num(per['ua_write'])}"),
        FIELDBUS_LABELS[2]: (f"{a['speedup']:,.0f}x -> {b['speedup']:,.0f}x "
                             f"({data['speedup_change_pct']:+.1f} %)"),
    }


DASH_LABELS = ["dashboard run view, server side (full week)",
               "dashboard run view, server side (one-day zoom)",
               "dashboard page load in Chromium (cold / warm / one-day zoom)"]


def _dash_extract(data: dict[str, Any], size: str) -> dict[str, str]:
    out = {}
    for label, rng in zip(DASH_LABELS[:2], ("full week", "one-day zoom"), strict=True):
        rows = [r for r in data["server"] if r["range"] == rng]
        cold = [r["total"] for r in rows if r["run"] == "cold"]
        warm = [r["total"] for r in rows if r["run"] != "cold"]
        out[label] = (f"{cold[0]:.2f} s cold, {min(warm):.2f}-{max(warm):.2f} s warm "
                      f"({data['trace_rows']:,} trace rows)" if cold and warm else "n/a")
    b = data.get("browser")
    out[DASH_LABELS[2]] = (
        " / ".join(f"{r['page load to all graphs drawn']:.2f} s" for r in b) if b
        else "not measured (--no-browser)")
    return out


MARKET_LABELS = ["market LP re-solve (rolling horizon, 96 intervals)",
                 "market LP perfect foresight"]


def _market_extract(data: dict[str, Any], size: str) -> dict[str, str]:
    return {
        MARKET_LABELS[0]: (f"median {data['resolve_median_s']:.3f} s, max "
                           f"{data['resolve_max_s']:.3f} s over {data['resolves']} re-solves "
                           f"({data['evses']} EVSEs + BESS; {data['rows'][1]:,} rows x "
                           f"{data['cols'][1]:,} columns)"),
        MARKET_LABELS[1]: f"{data['pf_s']:.3f} s over {data['pf_intervals']} intervals",
    }


LATENCY_LABELS = ["bench latency, meter change -> TxProfile installed (p50 / p95 / p99)"]


def _latency_extract(data: dict[str, Any], size: str) -> dict[str, str]:
    return {LATENCY_LABELS[0]: (
        f"{data['p50_ms']} / {data['p95_ms']} / {data['p99_ms']} ms (max {data['max_ms']}; "
        f"{data['samples']} samples, {data['stations']} station processes)")}


ACN_DAYS = {"smoke": 7, "small": 28, "full": 122}
ACN_LABELS = ["ACN-Sim side-by-side: wall time, twin / ACN-Sim EDF",
              "ACN-Sim side-by-side: share of demand met, twin / ACN-Sim EDF / + rampdown",
              "ACN-Sim side-by-side: peak EV power, twin / ACN-Sim EDF / + rampdown"]


def _acn_extract(data: dict[str, Any], size: str) -> dict[str, str]:
    t, a, r = data["twin"], data["acnsim"], data["acnsim_rampdown"]
    return {
        ACN_LABELS[0]: (f"{t['wall_s']:.1f} s / {a['wall_s']:.1f} s = "
                        f"{data['wall_ratio_twin_over_acnsim']:.1f}x ({data['days']:g} days, "
                        f"{data['sessions_planned']} sessions)"),
        ACN_LABELS[1]: (f"{t['energy_met_share']:.1%} / {a['energy_met_share']:.1%} / "
                        f"{r['energy_met_share']:.1%}"),
        ACN_LABELS[2]: (f"{t['peak_ev_power_kw']:.1f} / {a['peak_ev_power_kw']:.1f} / "
                        f"{r['peak_ev_power_kw']:.1f} kW (limit {data['limit_kw']:g} kW)"),
    }


def benches() -> list[Bench]:
    """The benchmarks of the report, in table order."""
    twin_args = {s: ["--stations", *map(str, TWIN_STATIONS[s]), "--hours", str(TWIN_HOURS[s])]
                 for s in TWIN_STATIONS}
    return [
        Bench("twin_speed", "twin_speed.py", "lock-step twin speed by station count",
              twin_args, _twin_labels, _twin_extract),
        Bench("fieldbus", "fieldbus.py", "Modbus and OPC UA cost in the twin",
              {"smoke": ["--stations", "10", "--hours", "2"],
               "small": ["--stations", "50", "--hours", "6"], "full": []},
              lambda s: FIELDBUS_LABELS, _fieldbus_extract),
        Bench("dash_load", "dash_load.py", "dashboard load time",
              {"smoke": ["--no-browser", "--repeats", "1"], "small": ["--repeats", "1"],
               "full": []},
              lambda s: DASH_LABELS, _dash_extract),
        Bench("market_solve", "market_solve.py", "market optimiser solve time",
              {"smoke": ["--smoke"], "small": ["--evses", "20", "--steps", "8"], "full": []},
              lambda s: MARKET_LABELS, _market_extract),
        Bench("bench_latency", "bench_latency.py", "bench latency on the wall clock",
              {"smoke": ["--stations", "5", "--changes", "3"],
               "small": ["--stations", "20", "--changes", "5"], "full": []},
              lambda s: LATENCY_LABELS, _latency_extract),
        Bench("acnsim_compare", "acnsim_compare.py", "side-by-side with ACN-Sim (EDF)",
              {s: ["--days", str(d)] for s, d in ACN_DAYS.items()},
              lambda s: ACN_LABELS, _acn_extract,
              timeout_s={"full": 4 * 3600.0}),
    ]


# ------------------------------------------------------------------ running


@dataclass
class Result:
    """What one benchmark subprocess gave."""

    name: str
    command: list[str]
    ok: bool
    seconds: float
    data: dict[str, Any] | None = None
    error: str = ""
    stdout: str = ""


DEFAULT_TIMEOUT_S = {"smoke": 600.0, "small": 1800.0, "full": 7200.0}


def run_bench(bench: Bench, size: str, python: str = sys.executable) -> Result:
    """Run one benchmark script as a subprocess and read its JSON."""
    with tempfile.TemporaryDirectory(prefix=f"report-{bench.name}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [python, str(BENCH / bench.script), *bench.args[size], "--json", str(out)]
        shown = ["python", f"bench/{bench.script}", *bench.args[size]]
        timeout = bench.timeout_s.get(size, DEFAULT_TIMEOUT_S[size])
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
            return Result(bench.name, shown, False, time.perf_counter() - t0,
                          error=f"timed out after {timeout:.0f} s", stdout=stdout)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return Result(bench.name, shown, False, seconds, stdout=proc.stdout,
                          error=f"exit {proc.returncode}: {last_lines(proc.stderr)}")
        try:
            data = json.loads(out.read_text())
        except (OSError, ValueError) as err:
            return Result(bench.name, shown, False, seconds, stdout=proc.stdout,
                          error=f"no JSON result ({err})")
        return Result(bench.name, shown, True, seconds, data=data, stdout=proc.stdout)


def last_lines(text: str, n: int = 3, width: int = 300) -> str:
    """The last non-blank lines of an error output, joined on one line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    out = " / ".join(lines[-n:]) or "(no error output)"
    return out if len(out) <= width else "..." + out[-width:]


# ------------------------------------------------------------------ machine facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_facts() -> dict[str, str]:
    """CPU, cores, RAM, load, Python, git commit, date (read-only git commands)."""
    ram = _ram_gib()
    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": f"{ram:.1f} GiB" if ram is not None else "unknown",
        "load average at start (1/5/15 min)": (
            " / ".join(f"{x:.2f}" for x in load) if load else "unknown"),
        "Python": f"{platform.python_version()} ({platform.python_implementation()}, "
                  f"{platform.system()} {platform.release()})",
        "git commit": commit + (" (with uncommitted changes)" if dirty not in ("", "unknown")
                                else ""),
    }


# ------------------------------------------------------------------ Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(size: str, facts: dict[str, str], results: list[Result],
           bench_list: list[Bench] | None = None) -> str:
    """The report: header with the machine facts, one table with a row per figure of
    every benchmark (FAILED rows with the error for a benchmark that failed), the ACN-Sim
    KPIs side by side when that benchmark ran, and each benchmark's printed output."""
    bench_list = bench_list if bench_list is not None else benches()
    by_name = {r.name: r for r in results}
    failed = [r.name for r in results if not r.ok]
    lines = [f"# MiGrid Twin benchmark report ({size})", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items()]
    lines += ["", f"Result: {len(results) - len(failed)} of {len(results)} benchmarks passed"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""), ""]
    lines += ["| benchmark | figure | value | status |", "|---|---|---|---|"]
    for bench in bench_list:
        r = by_name.get(bench.name)
        if r is None:
            continue
        labels = bench.labels(size)
        values: dict[str, str] = {}
        status = f"ok ({r.seconds:.0f} s)"
        if r.ok:
            try:
                values = bench.extract(r.data or {}, size)
            except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as err:
                status = f"FAILED: result unreadable ({type(err).__name__}: {err})"
        else:
            status = f"FAILED: {r.error}"
        for label in labels:
            value = values.get(label, "n/a" if r.ok and not status.startswith("FAILED")
                                else "-")
            lines.append(f"| {bench.name} | {_cell(label)} | {_cell(value)} "
                         f"| {_cell(status)} |")
    acn = by_name.get("acnsim_compare")
    if acn is not None and acn.ok and acn.data:
        lines += ["", "## Side by side with ACN-Sim", ""]
        try:
            sys.path.insert(0, str(BENCH))
            import acnsim_compare

            d = acn.data
            lines += [f"Caltech ACN-Data sessions from {d['start']}, {d['days']:g} days, "
                      f"{d['evses']} EVSEs x 22 kW, one aggregate limit of {d['limit_kw']:g} kW, "
                      f"step {d['step_s']} s, earliest deadline first: "
                      f"{d['sessions_planned']} sessions. Wall-time ratio twin / ACN-Sim EDF: "
                      f"{d['wall_ratio_twin_over_acnsim']:.1f}x.", "",
                      acnsim_compare.table(d)]
        except (ImportError, KeyError, TypeError) as err:
            lines.append(f"(side-by-side table unavailable: {err})")
    lines += ["", "## Commands and printed output", ""]
    for r in results:
        lines += [f"<details><summary><code>{' '.join(r.command)}</code> "
                  f"({'ok' if r.ok else 'FAILED'}, {r.seconds:.0f} s)</summary>", "",
                  "```", r.stdout.rstrip() or "(no output)", "```",
                  "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("smoke", "small", "full"), default="smoke")
    ap.add_argument("--out", type=Path, help="Markdown file to write (also printed)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    ap.add_argument("--acnsim-days", type=float, metavar="DAYS",
                    help="days of the ACN-Sim side-by-side (default: smoke 7, small 28, "
                         "full 122)")
    args = ap.parse_args()
    if args.acnsim_days is not None:
        ACN_DAYS[args.size] = args.acnsim_days
    bench_list = benches()
    if args.only:
        unknown = set(args.only) - {b.name for b in bench_list}
        if unknown:
            ap.error(f"unknown benchmark(s) {sorted(unknown)}; known: "
                     f"{', '.join(b.name for b in bench_list)}")
        bench_list = [b for b in bench_list if b.name in args.only]
    facts = machine_facts()
    results = []
    t0 = time.perf_counter()
    for bench in bench_list:
        print(f"== {bench.name} ({args.size}) ...", file=sys.stderr, flush=True)
        r = run_bench(bench, args.size)
        if r.ok:
            try:
                bench.extract(r.data or {}, args.size)
            except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as err:
                r.ok, r.error = False, f"result unreadable ({type(err).__name__}: {err})"
        results.append(r)
        print(f"   {'ok' if r.ok else 'FAILED: ' + r.error} in {r.seconds:.0f} s",
              file=sys.stderr, flush=True)
    facts["report wall time"] = f"{time.perf_counter() - t0:.0f} s"
    text = render(args.size, facts, results, bench_list)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
