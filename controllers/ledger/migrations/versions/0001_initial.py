"""Initial ledger schema: accounts, journal transactions, postings, rejections.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controllers.ledger.types import Amount, UtcDateTime

revision = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ACCOUNT_KINDS = "kind IN ('treasury', 'escrow', 'wallet', 'mint_source')"
_TXN_KINDS = "kind IN ('mint', 'transfer', 'freeze', 'release', 'clawback', 'burn')"


def upgrade() -> None:
    """Create the ledger tables."""
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("balance", Amount(), nullable=False),
        sa.UniqueConstraint("kind", "owner", "code", name="uq_ledger_accounts_kind_owner_code"),
        sa.CheckConstraint(_ACCOUNT_KINDS, name="ck_ledger_accounts_kind"),
        sa.CheckConstraint(
            "kind = 'mint_source' OR balance >= 0", name="ck_ledger_accounts_nonnegative"
        ),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(200), nullable=True),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_ledger_transactions_event_id"),
        sa.CheckConstraint(_TXN_KINDS, name="ck_ledger_transactions_kind"),
    )
    op.create_index("ix_ledger_transactions_session", "ledger_transactions", ["session_id"])
    op.create_table(
        "ledger_postings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "transaction_id",
            sa.Integer(),
            sa.ForeignKey("ledger_transactions.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column(
            "account_id",
            sa.Integer(),
            sa.ForeignKey("ledger_accounts.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("amount", Amount(), nullable=False),
        sa.CheckConstraint("amount <> 0", name="ck_ledger_postings_nonzero"),
    )
    op.create_index("ix_ledger_postings_account", "ledger_postings", ["account_id"])
    op.create_index("ix_ledger_postings_txn", "ledger_postings", ["transaction_id"])
    op.create_table(
        "ledger_rejections",
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the ledger tables."""
    op.drop_table("ledger_rejections")
    op.drop_index("ix_ledger_postings_txn", table_name="ledger_postings")
    op.drop_index("ix_ledger_postings_account", table_name="ledger_postings")
    op.drop_table("ledger_postings")
    op.drop_index("ix_ledger_transactions_session", table_name="ledger_transactions")
    op.drop_table("ledger_transactions")
    op.drop_table("ledger_accounts")
