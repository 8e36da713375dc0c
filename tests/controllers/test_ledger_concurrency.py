"""Two processes spending from the same wallet at once never overdraw it."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect
from test_ledger_fixtures import BACKENDS, T0, backend_target, new_code

from controllers.ledger import AccountRef, Ledger, open_ledger
from controllers.ledger.db import downgrade, make_engine, upgrade

ROOT = Path(__file__).resolve().parents[2]
SPENDER = """
import sys
from decimal import Decimal
from datetime import UTC, datetime
from controllers.ledger import AccountRef, InsufficientFundsError, Ledger, open_ledger
target, code, tag = sys.argv[1:4]
ledger = Ledger(open_ledger(target))
w, t = AccountRef.wallet("pat", code), AccountRef.treasury(code)
ok = 0
for i in range(40):
    try:
        ledger.transfer(f"{code}:{tag}:{i}", w, t, Decimal(3), at=datetime(2026, 3, 1, tzinfo=UTC))
        ok += 1
    except InsufficientFundsError:
        pass
print(ok)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_never_overdraw(backend: str, tmp_path: Path) -> None:
    with backend_target(backend, tmp_path / "run") as target:
        db = open_ledger(target)
        ledger = Ledger(db)
        code = new_code()
        w = AccountRef.wallet("pat", code)
        ledger.mint(f"{code}:fund", w, Decimal(100), at=T0, verified=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SPENDER, target, code, tag],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for tag in ("p1", "p2")
        ]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert sum(int(o.split()[-1]) for o in outs) == 33
        assert ledger.balance(w) == Decimal(1)
        assert ledger.balance(AccountRef.treasury(code)) == Decimal(99)
        assert ledger.verify() == []
        db.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_down_and_up(backend: str, tmp_path: Path) -> None:
    with backend_target(backend, tmp_path / "run") as target:
        open_ledger(target).close()
        engine = make_engine(target)
        try:
            downgrade(engine, "base")
            assert "ledger_accounts" not in inspect(engine).get_table_names()
            upgrade(engine)
            assert "ledger_postings" in inspect(engine).get_table_names()
        finally:
            engine.dispose()
