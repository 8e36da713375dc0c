"""Billing tables next to the ledger's (models: ``controllers/billing/store_models.py``).

Sessions, audits, CDRs, invoices, site bills, tariffs and reward rules.

Exact decimals other than rounded money are stored as their string (``VARCHAR(120)``,
the ``DecimalText`` type of the models); money uses the ledger's ``Amount``.

Revision ID: 0002_billing
Revises: 0001_initial
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controllers.ledger.types import Amount, UtcDateTime

revision = "0002_billing"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None

_ID = 200


def _id(name: str, *args: sa.ForeignKey, primary_key: bool = False,
        nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(_ID), *args, primary_key=primary_key,
                     nullable=nullable)


def _dec(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(120), nullable=False)


def upgrade() -> None:
    """Create the billing tables."""
    op.create_table(
        "billing_sessions",
        _id("session_id", primary_key=True),
        _id("station_id", nullable=False),
        _id("evse_id", nullable=False),
        _id("id_token", nullable=False),
        _id("fleet_id", nullable=True),
        sa.Column("start_at", UtcDateTime(), nullable=False),
        sa.Column("end_at", UtcDateTime(), nullable=False),
        _dec("energy_kwh"),
        sa.Column("soc_start", sa.Float(), nullable=True),
        sa.Column("soc_end", sa.Float(), nullable=True),
        sa.Column("capacity_kwh", sa.Float(), nullable=True),
        sa.Column("at_home", sa.Boolean(), nullable=False),
        _id("run_id", nullable=True),
    )
    op.create_index("ix_billing_sessions_id_token", "billing_sessions", ["id_token"])
    op.create_table(
        "billing_audits",
        _id("session_id", primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("variance", sa.Float(), nullable=True),
        sa.Column("expected_kwh", sa.Float(), nullable=True),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("audited_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "billing_cdrs",
        _id("session_id", primary_key=True),
        _id("station_id", nullable=False),
        _id("evse_id", nullable=False),
        _id("id_token", nullable=False),
        sa.Column("start_at", UtcDateTime(), nullable=False),
        sa.Column("end_at", UtcDateTime(), nullable=False),
        _dec("energy_kwh"),
        _id("tariff_id", nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_excl_vat", Amount(), nullable=False),
        sa.Column("total_incl_vat", Amount(), nullable=False),
        sa.Column("audit_status", sa.String(16), nullable=False),
        sa.Column("at_home", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_billing_cdrs_id_token", "billing_cdrs", ["id_token"])
    op.create_table(
        "billing_cdr_lines",
        _id("session_id", sa.ForeignKey("billing_cdrs.session_id", ondelete="CASCADE"),
            primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("type", sa.String(32), nullable=False),
        _dec("volume"),
        _dec("billed_volume"),
        _dec("excl_vat_exact"),
        _dec("incl_vat_exact"),
        sa.Column("excl_vat", Amount(), nullable=False),
        sa.Column("incl_vat", Amount(), nullable=False),
    )
    op.create_table(
        "billing_invoices",
        _id("session_id", primary_key=True),
        sa.Column("currency", sa.String(3), nullable=False),
        _dec("fleet_share"),
        sa.Column("total_excl_vat", Amount(), nullable=False),
        sa.Column("total_incl_vat", Amount(), nullable=False),
    )
    op.create_table(
        "billing_invoice_lines",
        _id("session_id", sa.ForeignKey("billing_invoices.session_id", ondelete="CASCADE"),
            primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("payer", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("excl_vat", Amount(), nullable=False),
        sa.Column("incl_vat", Amount(), nullable=False),
    )
    op.create_table(
        "billing_site_bills",
        _id("run_id", primary_key=True),
        _id("tariff_id", nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", Amount(), nullable=False),
    )
    op.create_table(
        "billing_site_bill_months",
        _id("run_id", sa.ForeignKey("billing_site_bills.run_id", ondelete="CASCADE"),
            primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("total", Amount(), nullable=False),
        _dec("energy_kwh"),
        _dec("peak_kw"),
    )
    op.create_table(
        "billing_site_bill_lines",
        _id("run_id", sa.ForeignKey("billing_site_bills.run_id", ondelete="CASCADE"),
            primary_key=True),
        sa.Column("month_position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _dec("quantity"),
        sa.Column("unit", sa.String(32), nullable=False),
        _dec("rate"),
        _dec("amount_exact"),
        sa.Column("amount", Amount(), nullable=False),
    )
    op.create_table(
        "billing_tariffs",
        _id("tariff_id", primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "billing_tariff_versions",
        _id("tariff_id", primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "billing_reward_rules",
        _id("rule_id", primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    """Drop the billing tables."""
    for table in ("billing_reward_rules", "billing_tariff_versions", "billing_tariffs",
                  "billing_site_bill_lines", "billing_site_bill_months",
                  "billing_site_bills", "billing_invoice_lines", "billing_invoices",
                  "billing_cdr_lines", "billing_cdrs", "billing_audits"):
        op.drop_table(table)
    op.drop_index("ix_billing_sessions_id_token", table_name="billing_sessions")
    op.drop_table("billing_sessions")
