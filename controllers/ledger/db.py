"""Open a ledger database: SQLite file in the run folder by default, PostgreSQL by URL.

:func:`open_ledger` runs ``alembic upgrade head`` on open (no autogenerate), under a lock so
that processes opening the same database at once migrate it once:

- SQLite: ``BEGIN IMMEDIATE`` (every transaction takes the write lock at its start), WAL
  journal, ``synchronous=FULL``, foreign keys on, a busy timeout;
- PostgreSQL (psycopg 3): ``READ COMMITTED`` with row locks taken by the ledger
  (``SELECT ... FOR UPDATE``), and a transaction-scoped advisory lock around migrations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_FILENAME = "ledger.sqlite"
MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK_KEY = 0x4D694C6564676572  # "MiLedger"
SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class LedgerDb:
    """An open ledger database: the engine and a session factory bound to it."""

    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def close(self) -> None:
        """Dispose of the engine's connections."""
        self.engine.dispose()


def resolve_url(target: str | Path) -> str:
    """Return the SQLAlchemy URL for a run folder, an SQLite file path or a database URL.

    A directory means ``<dir>/ledger.sqlite``; ``postgresql://`` and ``postgres://`` URLs use
    the psycopg 3 driver.
    """
    if isinstance(target, str) and "://" in target:
        url = make_url(target)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)
    path = Path(target)
    if path.is_dir():
        path = path / DEFAULT_FILENAME
    return f"sqlite:///{path.resolve()}"


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30.0})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # driver-level autocommit: SQLAlchemy's "begin" event below issues BEGIN itself
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> Engine:
    return create_engine(url, isolation_level="READ COMMITTED", pool_pre_ping=True)


def make_engine(target: str | Path) -> Engine:
    """Create the engine for ``target`` (see :func:`resolve_url`) without migrating."""
    url = resolve_url(target)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    if url.startswith("postgresql"):
        return _postgres_engine(url)
    raise ValueError(f"unsupported ledger database {make_url(url).drivername!r}")


def _migrate(engine: Engine, revision: str, *, down: bool) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the alembic migrations up to ``revision`` in one transaction, under a lock."""
    _migrate(engine, revision, down=False)


def downgrade(engine: Engine, revision: str) -> None:
    """Run the alembic migrations down to ``revision`` (``"base"``: drop everything)."""
    _migrate(engine, revision, down=True)


def open_ledger(target: str | Path) -> LedgerDb:
    """Open (creating and migrating as needed) the ledger at ``target``.

    ``target`` is a run folder (``ledger.sqlite`` inside it), an SQLite file path, or a
    database URL (``postgresql+psycopg://user@host:5432/db``).
    """
    engine = make_engine(target)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return LedgerDb(engine, sessionmaker(engine, expire_on_commit=False))
