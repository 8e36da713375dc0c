"""Shared fixtures of the ledger tests: each module runs on SQLite and on PostgreSQL.

PostgreSQL: a fresh database per test module, created from ``MIGRID_TEST_PG_URL`` and
dropped afterwards. Unreachable PostgreSQL skips those tests, unless ``CI`` is set: then
they fail. Tests sharing a module's database keep apart by using their own token code.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from controllers.ledger import Ledger, open_ledger

PG_URL = os.environ.get("MIGRID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the duration of the block; yields its URL."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        conn = admin.connect()
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable at {PG_URL} in CI: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc}")
    name = f"migrid_ledger_{uuid.uuid4().hex[:16]}"
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.close()
        admin.dispose()


@contextmanager
def backend_target(backend: str, tmp: Path) -> Iterator[str]:
    """A ledger target: a run folder (SQLite) or a fresh database URL (PostgreSQL)."""
    if backend == "sqlite":
        tmp.mkdir(parents=True, exist_ok=True)
        yield str(tmp)
    else:
        with pg_database() as url:
            yield url


@pytest.fixture(scope="module", params=BACKENDS)
def ledger_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    with backend_target(request.param, tmp_path_factory.mktemp("run")) as target:
        yield target


@pytest.fixture(scope="module")
def ledger(ledger_target: str) -> Iterator[Ledger]:
    db = open_ledger(ledger_target)
    try:
        yield Ledger(db)
    finally:
        db.close()


def new_code() -> str:
    """A fresh token code, so tests sharing a database do not see each other's accounts."""
    return "T" + uuid.uuid4().hex[:10].upper()


@pytest.fixture
def code() -> str:
    return new_code()
