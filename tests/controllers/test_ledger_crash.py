"""Crash safety: SIGKILL a process in the middle of minting and billing, restart, compare.

The worker (this module run as ``python -c``) processes a deterministic stream of events
(reward minting through the reward rules, token payments for charging, freezes and
releases by a fleet manager), committing one by one and printing the index of each
processed event. The test kills it with SIGKILL after a random number of commits plus a
random delay, restarts it on the SAME stream, and checks that every event appears exactly
once and that balances and refusals equal those of a clean run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from test_ledger_fixtures import *  # noqa: F403  (fixtures)
from test_ledger_fixtures import BACKENDS, T0, backend_target, new_code

from controllers.ledger import AccountRef, InsufficientFundsError, Ledger, open_ledger
from controllers.ledger.rewards import (
    Interval,
    RewardConfig,
    RewardRule,
    RuleKind,
    SessionActivity,
    Verification,
    process_session,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
N_EVENTS = 240
DRIVERS = ["d1", "d2", "d3", "d4"]


def config(code: str) -> RewardConfig:
    return RewardConfig(
        token=code,
        rules=(
            RewardRule(
                rule_id="defer", kind=RuleKind.DEFERRED_CHARGING, rate=Decimal(2), currency="EUR"
            ),
            RewardRule(rule_id="v2g", kind=RuleKind.V2G_EXPORT, rate=Decimal(5), currency="EUR"),
        ),
    )


def stream(ns: str, seed: int = 7) -> list[tuple[str, object]]:
    """The deterministic event stream; event ids are prefixed by ``ns``."""
    rng = random.Random(seed)
    out: list[tuple[str, object]] = []
    for i in range(N_EVENTS):
        driver = rng.choice(DRIVERS)
        r = rng.random()
        if r < 0.45:
            start = T0 + timedelta(hours=i)
            ivs = (
                Interval(
                    start=start,
                    end=start + timedelta(minutes=30),
                    import_kwh=Decimal(0),
                    price_per_kwh=Decimal("0.31"),
                    peak=True,
                ),
                Interval(
                    start=start + timedelta(minutes=30),
                    end=start + timedelta(hours=1),
                    import_kwh=Decimal(rng.randint(1, 40)),
                    export_kwh=Decimal(rng.randint(0, 5)),
                    price_per_kwh=Decimal("0.12"),
                ),
            )
            out.append(
                (
                    "session",
                    SessionActivity(
                        session_id=f"{ns}-S{i}",
                        driver_id=driver,
                        currency="EUR",
                        verification=Verification.VERIFIED
                        if rng.random() < 0.9
                        else Verification.FAILED,
                        ended_at=start + timedelta(hours=1),
                        intervals=ivs,
                    ),
                )
            )
        elif r < 0.85:
            out.append(("bill", (f"{ns}:bill:{i}", driver, Decimal(rng.randint(1, 3000)) / 100)))
        elif r < 0.95:
            out.append(("freeze", (f"{ns}:freeze:{i}", driver, Decimal(rng.randint(1, 500)) / 100)))
        else:
            out.append(
                ("release", (f"{ns}:release:{i}", driver, Decimal(rng.randint(1, 500)) / 100))
            )
    return out


def process(ledger: Ledger, code: str, ns: str, report=None) -> None:
    cfg = config(code)
    for i, (kind, ev) in enumerate(stream(ns)):
        at = T0 + timedelta(hours=i)
        try:
            if kind == "session":
                assert isinstance(ev, SessionActivity)
                process_session(ledger, cfg, ev)
            else:
                eid, driver, amount = ev  # type: ignore[misc]
                if kind == "bill":
                    ledger.transfer(
                        eid,
                        AccountRef.wallet(driver, code),
                        AccountRef.treasury(code),
                        amount,
                        at=at,
                        session_id=eid,
                        rule_id="charging-payment",
                    )
                elif kind == "freeze":
                    ledger.freeze(eid, driver, code, amount, at=at, actor="fleet-manager")
                else:
                    ledger.release(eid, driver, code, amount, at=at, actor="fleet-manager")
        except InsufficientFundsError:
            pass
        if report is not None:
            report(i)


def worker(target: str, code: str, ns: str) -> None:
    """Entry point of the subprocess: process the stream, print each index processed."""
    db = open_ledger(target)

    def report(i: int) -> None:
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()

    process(Ledger(db), code, ns, report)
    db.close()


def run_worker(target: str, code: str, ns: str) -> subprocess.Popen[str]:
    cmd = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        f"import test_ledger_crash as t; t.worker({target!r}, {code!r}, {ns!r})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", cmd],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def snapshot(ledger: Ledger, code: str, ns: str) -> tuple[dict, list[str], list[str]]:
    bal = {(k.kind, k.owner): v for k, v in ledger.balances(code).items() if v != 0}
    ids = [e.event_id.replace(ns, "NS") for e in ledger.entries(code=code)]
    refused = sorted(
        eid.replace(ns, "NS")
        for _, ev in stream(ns)
        if isinstance(ev, tuple)
        for eid in [ev[0]]
        if ledger.rejected(eid) is not None
    )
    return bal, sorted(ids), refused


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_run_no_lost_no_doubled_entry(backend: str, tmp_path: Path) -> None:
    rng = random.Random()
    with backend_target(backend, tmp_path / "run") as target:
        # the clean run, in-process, on its own token code and namespace
        clean_code, clean_ns = new_code(), "clean"
        db = open_ledger(target)
        ledger = Ledger(db)
        process(ledger, clean_code, clean_ns)
        clean = snapshot(ledger, clean_code, clean_ns)

        code, ns = new_code(), "crash"
        kills = 0
        for k in range(2):  # two crashes, the second further on, then a run to completion
            proc = run_worker(target, code, ns)
            assert proc.stdout is not None
            stop_after = rng.randint(20 + 90 * k, 80 + 90 * k)
            seen = 0
            for _line in proc.stdout:
                seen += 1
                if seen >= stop_after:
                    break
            time.sleep(rng.uniform(0, 0.02))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
            kills += proc.returncode == -signal.SIGKILL
        assert kills >= 1
        proc = run_worker(target, code, ns)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        assert out.split()[-1] == str(N_EVENTS - 1)

        bal, ids, refused = snapshot(ledger, code, ns)
        assert len(ids) == len(set(ids))  # no doubled entry
        assert ids == clean[1]  # no lost entry
        assert refused == clean[2]
        assert bal == clean[0]
        assert ledger.verify() == []
        db.close()
