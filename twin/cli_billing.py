"""``migrid billing-api``: serve the billing API of a run folder or database (uvicorn).

The app is :func:`controllers.billing_api.create_app`; this command gives it the wall
clock (the time recorded with tariff and reward-rule writes) and serves it until Ctrl-C.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def billing_api_command(
    db: Annotated[str, typer.Option(
        "--db", help="Run folder (its ledger.sqlite), SQLite file or postgresql:// URL.")],
    tokens: Annotated[Path, typer.Option(
        "--tokens", help="Tokens YAML file: sha256 of each bearer token -> role, subject.")],
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8090,
) -> None:
    """Serve the billing API (sessions, CDRs, invoices, wallets, ledger, tariffs).

    OpenAPI docs at /docs, the schema at /openapi.json. Requests carry
    ``Authorization: Bearer <token>``; roles operator and driver (see
    controllers/billing/README.md). The database is migrated on start.
    """
    import uvicorn

    from controllers.billing_api import TokenFileError, create_app

    try:
        app = create_app(db, tokens, clock=_wall_clock)
    except TokenFileError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(f"billing API: http://{host}:{port}/docs   (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="info")
