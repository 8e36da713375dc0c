"""Worker of the billing-store crash test: one billing pass, a line per session saved.

``python billing_crash_worker.py TARGET`` saves, for each session of a deterministic
stream, its session record, audit, CDR and invoice (each save one transaction) and prints
the session's index. The test SIGKILLs it mid-pass and re-runs it on the same database.
Kept light (no pandas, no test imports) so that it starts fast.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from controllers.billing.audit import AuditResult, AuditStatus
from controllers.billing.invoice import Cdr, FleetPaysShare, Invoice, split
from controllers.billing.store import BillingStore, SessionRecord
from controllers.billing.tariffs.ocpi import CostLine
from controllers.ledger import open_ledger

N_CRASH = 40
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def crash_records(i: int) -> tuple[SessionRecord, Cdr, Invoice]:
    """The deterministic records of session ``i`` of the crash test."""
    start = T0 + timedelta(minutes=15 * i)
    energy = Decimal(i + 1) / Decimal(8)
    rec = SessionRecord(f"c{i:03d}", "cs1", f"e{i % 3}", f"drv{i % 4}", "fleet", start,
                        start + timedelta(hours=1), energy, 0.2, 0.5, 60.0, run_id="crash")
    cents = Decimal(25 * (i + 1)) / 100
    cdr = Cdr(rec.session_id, "cs1", rec.evse_id, rec.id_token, rec.start, rec.end, energy,
              "t1", "EUR", (CostLine("ENERGY", energy, energy, cents, cents, cents, cents),),
              cents, cents, AuditStatus.VERIFIED)
    return rec, cdr, split(cdr, FleetPaysShare(Decimal(30)))


def crash_pass(target: str) -> None:
    """One billing pass over the crash stream; prints the index after each session."""
    db = open_ledger(target)
    store = BillingStore(db)
    for i in range(N_CRASH):
        rec, cdr, inv = crash_records(i)
        store.save_session(rec)
        store.save_audit(AuditResult(rec.session_id, AuditStatus.VERIFIED, 0.01, 1.0, ()),
                         at=rec.end)
        store.save_cdr(cdr)
        store.save_invoice(inv)
        print(i, flush=True)
    db.close()


if __name__ == "__main__":
    crash_pass(sys.argv[1])
