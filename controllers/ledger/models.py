"""SQLAlchemy 2 models of the token ledger (schema created by the alembic migrations).

Sign convention: a posting's ``amount`` is signed. ``amount > 0`` *credits* the account
(its balance goes up), ``amount < 0`` *debits* it (its balance goes down). An account's
balance is the sum of its postings, and the postings of one journal transaction sum to
zero, so the sum of all balances of one token code is always zero: the ``mint_source``
account holds minus the tokens in circulation and is the only account allowed below zero.

``accounts.balance`` is a materialised balance, updated in the same database transaction
as the postings (it is what ``SELECT ... FOR UPDATE`` locks); :meth:`Ledger.verify`
checks it against the postings.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from controllers.ledger.types import Amount, UtcDateTime

ACCOUNT_KINDS = ("treasury", "escrow", "wallet", "mint_source")
TXN_KINDS = ("mint", "transfer", "freeze", "release", "clawback", "burn")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base of the ledger tables."""


class Account(Base):
    """One account: (kind, owner, code) is unique; ``code`` is the token or currency code."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("kind", "owner", "code", name="uq_ledger_accounts_kind_owner_code"),
        CheckConstraint(_in("kind", ACCOUNT_KINDS), name="ck_ledger_accounts_kind"),
        CheckConstraint(
            "kind = 'mint_source' OR balance >= 0", name="ck_ledger_accounts_nonnegative"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(16))
    balance: Mapped[Decimal] = mapped_column(Amount(), default=Decimal(0))


class JournalTxn(Base):
    """A journal transaction; ``event_id`` is the idempotency key (unique)."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_ledger_transactions_event_id"),
        CheckConstraint(_in("kind", TXN_KINDS), name="ck_ledger_transactions_kind"),
        Index("ix_ledger_transactions_session", "session_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    session_id: Mapped[str | None] = mapped_column(String(200))
    rule_id: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    memo: Mapped[str] = mapped_column(Text, default="")

    postings: Mapped[list[PostingRow]] = relationship(
        back_populates="txn", order_by="PostingRow.id", lazy="selectin"
    )


class PostingRow(Base):
    """One leg of a journal transaction: signed amount on one account (non-zero)."""

    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="ck_ledger_postings_nonzero"),
        Index("ix_ledger_postings_account", "account_id"),
        Index("ix_ledger_postings_txn", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("ledger_transactions.id", ondelete="RESTRICT")
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id", ondelete="RESTRICT"))
    amount: Mapped[Decimal] = mapped_column(Amount())

    txn: Mapped[JournalTxn] = relationship(back_populates="postings")
    account: Mapped[Account] = relationship(lazy="joined")


class Rejection(Base):
    """An event refused for insufficient funds, remembered so a replay refuses it again.

    Without it, replaying a stream after a crash would re-evaluate an earlier refused event
    against later balances and could accept it: the replay would diverge from the first run.
    """

    __tablename__ = "ledger_rejections"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
