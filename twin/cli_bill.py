"""``migrid bill RUN_DIR [--scenario-billing FILE]``: bill a finished run folder.

Audits, prices, splits, reimburses and rewards every charging session of the run and
computes the site's utility bill (:func:`twin.billing_run.bill_run`), storing the records
in the run's ``ledger.sqlite`` and writing ``billing.json`` and the billing KPIs of
``kpis.json``. Works on twin and bench run folders alike (same format). The billing
section is the ``billing:`` of the run's ``scenario.yaml`` unless ``--scenario-billing``
names a YAML file holding one (a bench run, or billing a run under other tariffs into
another database with ``--ledger``). Idempotent: running it again, also after it was
killed mid-way, changes nothing that was stored and adds what is missing.

Exit codes: 0 billed; 2 not a run folder, no or a bad billing section; 1 the database
already holds different records for these sessions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from controllers.billing.store import BillingConflictError
from twin.billing_run import BillingRunError, bill_run, load_billing

console = Console()


def bill_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A finished run folder.")],
    scenario_billing: Annotated[
        Path | None,
        typer.Option("--scenario-billing", metavar="FILE",
                     help="YAML with a billing: section (default: the run's scenario.yaml)."),
    ] = None,
    ledger: Annotated[
        str | None,
        typer.Option("--ledger", metavar="TARGET",
                     help="SQLite file or PostgreSQL URL (default: RUN_DIR/ledger.sqlite)."),
    ] = None,
) -> None:
    """Audit, price, split and reward every session of a run; bill the site's import."""
    t0 = time.perf_counter()
    try:
        config = load_billing(run_dir, scenario_billing)
        rb = bill_run(run_dir, config, ledger=ledger)
    except (BillingRunError, OSError) as err:
        console.print(f"[red]{escape(str(err))}[/red]")
        raise typer.Exit(2) from None
    except BillingConflictError as err:
        console.print(f"[red]ledger holds other records: {escape(str(err))}[/red]")
        raise typer.Exit(1) from None
    s = rb.summary
    a, t, cur = s["audit"], s["totals"], s["currency"]
    table = Table(title=f"billing of {escape(rb.run_id)}")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for name, value, unit in [
        ("sessions", s["sessions"], "1"),
        ("verified", a["verified"], "1"),
        ("flagged", a["flagged"], "1"),
        ("unverifiable", a["unverifiable"], "1"),
        ("charged (CDR total incl. VAT)", t["cdr_incl_vat"], cur),
        ("  paid by drivers", t["driver"], cur),
        ("  paid by the fleet", t["fleet"], cur),
        ("  of which disputed (flagged)", t["disputed_flagged"], cur),
        ("home charging reimbursed", t["home_reimbursed_to_drivers"], cur),
        ("tokens minted", s["tokens"]["minted"], s["tokens"]["code"] or "-"),
        ("site utility bill", s["site_bill"]["total"], cur),
    ]:
        table.add_row(name, str(value), unit)
    console.print(table)
    for reason, n in a["flagged_reasons"].items():
        console.print(f"flagged: {escape(reason)} x {n}")
    for reason, n in a["unverifiable_reasons"].items():
        console.print(f"unverifiable: {escape(reason)} x {n}")
    console.print(f"billed in {time.perf_counter() - t0:.1f} s: {escape(str(run_dir))}"
                  "/billing.json")
