"""`migrid dash` and `migrid run --dash` as a user runs them: real processes, real HTTP."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

MIGRID = [sys.executable, "-c", "from twin.cli import app; app()"]


def _url_from(proc: subprocess.Popen, prefix: str, timeout_s: float = 60) -> str:
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = re.search(prefix + r"\s*(http://[0-9.:]+/\S*)", "".join(lines))
        if m:
            return m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {prefix!r} line; output so far:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def test_migrid_dash_serves_runs_and_api(runs_root: Path) -> None:
    proc = subprocess.Popen([*MIGRID, "dash", "--root", str(runs_root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        url = _url_from(proc, "dashboard:")
        runs = httpx.get(url + "api/runs", timeout=10).json()
        assert {r["id"] for r in runs["runs"]} == {"morning_a", "morning_b"}
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "_dash-" in page.text
        assert httpx.get(url + "api/openapi.json", timeout=10).status_code == 200
    finally:
        _stop(proc)


def test_migrid_run_dash_serves_the_run_it_writes(tmp_path: Path) -> None:
    scenario = {
        "name": "dash_live",
        "site": {"grid_limit_kw": 30, "timezone": "America/Los_Angeles"},
        "stations": [{"count": 3, "kind": "ac_11kw"}],
        "run": {"start": "2019-09-10T15:00:00Z", "duration_h": 3, "step_s": 60},
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(scenario))
    out = tmp_path / "runs" / "dash_live"
    proc = subprocess.Popen([*MIGRID, "run", str(path), "--out", str(out), "--dash",
                             "--dash-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        live = _url_from(proc, "live view:")
        assert live.endswith("/live/dash_live")
        base = live.split("live/")[0]
        deadline = time.monotonic() + 90
        state = None
        while time.monotonic() < deadline:
            r = httpx.get(base + "api/runs/dash_live", timeout=10)
            if r.status_code == 200:
                state = r.json()["run"]["state"]
                if state == "finished":
                    break
            time.sleep(0.5)
        assert state == "finished"
        kpis = httpx.get(base + "api/runs/dash_live/kpis", timeout=10).json()
        assert kpis["kpis"]["limit_violations"]["value"] == 0
        assert httpx.get(live, timeout=10).status_code == 200
    finally:
        _stop(proc)
