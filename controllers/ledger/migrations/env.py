"""Alembic environment of the ledger: runs on the connection handed over by ``open_ledger``.

No autogenerate at runtime; ``target_metadata`` is only there for developers running
``alembic revision --autogenerate`` by hand.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from controllers.ledger.models import Base

config = context.config
VERSION_TABLE = "ledger_alembic_version"


def run_migrations_online() -> None:
    """Upgrade on ``config.attributes['connection']`` (or a fresh engine on the URL)."""
    connection = config.attributes.get("connection")
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("ledger migrations need a connection or sqlalchemy.url")
        engine = create_engine(url)
        with engine.begin() as conn:
            _run(conn)
        engine.dispose()
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("the ledger migrations run online only")
run_migrations_online()
