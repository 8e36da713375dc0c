"""bench/report.py: the Markdown assembly (no benchmark is run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def _twin(stations: list[int]) -> dict:
    return {"rows": [{"stations": n, "hours": 24.0, "wall_s": 5.0 * n / 10, "speedup":
                      17280.0 * 10 / n, "ocpp_calls": 1000 * n, "calls_per_s": 2000.0,
                      "rtt_p50_ms": 3.1, "rtt_p99_ms": 6.8, "peak_rss_mb": 215.0 + n}
                     for n in stations]}


def _market() -> dict:
    return {"evses": 5, "sessions": 12, "intervals": 192, "resolves": 3,
            "resolve_median_s": 0.05, "resolve_max_s": 0.06, "rolling_wall_s": 1.0,
            "rows": [1000, 1352], "cols": [3000, 3765], "pf_intervals": 192, "pf_s": 0.14,
            "cost_rolling": 10.0, "cost_pf": 9.0}


def _table_rows(text: str) -> list[list[str]]:
    start = text.index("| benchmark | figure | value | status |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_every_row_present_and_a_failed_benchmark_shows_failed(report: ModuleType) -> None:
    benches = report.benches()
    results = []
    for b in benches:
        if b.name == "twin_speed":
            results.append(report.Result(b.name, ["python", "bench/twin_speed.py"], True, 12.0,
                                         data=_twin(report.TWIN_STATIONS["smoke"]),
                                         stdout="| stations | ... |"))
        elif b.name == "market_solve":
            results.append(report.Result(b.name, ["python", "bench/market_solve.py"], True, 4.0,
                                         data=_market()))
        else:
            results.append(report.Result(b.name, ["python", f"bench/{b.script}"], False, 1.0,
                                         error="exit 1: ConnectionRefusedError: port 1502"))
    facts = {"CPU": "Test CPU", "cores": "2", "git commit": "abc"}
    text = report.render("smoke", facts, results, benches)

    assert "- **CPU**: Test CPU" in text
    assert "Result: 2 of 6 benchmarks passed; FAILED: fieldbus, dash_load, bench_latency, " \
           "acnsim_compare" in text
    rows = _table_rows(text)
    expected = [(b.name, label) for b in benches for label in b.labels("smoke")]
    assert [(r[0], r[1]) for r in rows] == expected  # every row, in order
    for name, _, value, status in rows:
        if name in ("twin_speed", "market_solve"):
            assert status.startswith("ok"), (name, status)
            assert value not in ("-", "n/a")
        else:
            assert status == "FAILED: exit 1: ConnectionRefusedError: port 1502"
            assert value == "-"
    speed = {r[1]: r[2] for r in rows if r[0] == "twin_speed"}
    assert speed["speed-up over real time, 10 stations"] == "17,280x (24 h in 5.0 s)"
    # peak RSS 225 MB at 10, 235 MB at 20 stations: 1 MB per station over a 215 MB base
    assert speed["memory per emulated station"].startswith("1.00 MB over a 215 MB base")
    assert "<code>python bench/dash_load.py</code> (FAILED, 1 s)" in text


def test_unreadable_result_is_failed_not_crashed(report: ModuleType) -> None:
    bench = next(b for b in report.benches() if b.name == "market_solve")
    bad = report.Result("market_solve", ["python", "bench/market_solve.py"], True, 1.0,
                        data={"unexpected": 1})
    rows = _table_rows(report.render("smoke", {}, [bad], [bench]))
    assert len(rows) == len(bench.labels("smoke"))
    assert all(r[3].startswith("FAILED: result unreadable (KeyError") for r in rows)


def test_last_lines_keeps_the_end_of_the_error(report: ModuleType) -> None:
    err = "Traceback (most recent call last):\n  File x\n\nValueError: bad | thing\n"
    assert report.last_lines(err, n=2) == "File x / ValueError: bad | thing"
    assert report.last_lines("") == "(no error output)"
