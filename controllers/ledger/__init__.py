"""Token ledger: double-entry journal, reward rules and wallet export (see README.md)."""

from controllers.ledger.db import LedgerDb, open_ledger
from controllers.ledger.ledger import (
    AccountKind,
    AccountRef,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidPostingError,
    JournalEntry,
    Ledger,
    LedgerError,
    Posting,
    TxnKind,
    UnverifiedSessionError,
    Verification,
)
from controllers.ledger.types import AMOUNT_SCALE, to_amount

__all__ = [
    "AMOUNT_SCALE",
    "AccountKind",
    "AccountRef",
    "IdempotencyConflictError",
    "InsufficientFundsError",
    "InvalidPostingError",
    "JournalEntry",
    "Ledger",
    "LedgerDb",
    "LedgerError",
    "Posting",
    "TxnKind",
    "UnverifiedSessionError",
    "Verification",
    "open_ledger",
    "to_amount",
]
