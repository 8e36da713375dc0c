"""SQLAlchemy 2 models of the billing records, in the ledger's database.

The tables live next to the ledger's (one ``ledger.sqlite`` per run folder, or one
PostgreSQL database) and are created by the alembic revision
``controllers/ledger/migrations/versions/0002_billing.py``, which ``open_ledger`` runs.
They have their own declarative base (:class:`BillingBase`) so that the ledger package
does not depend on billing; ``tests/controllers/test_billing_store.py`` checks that the
migration and these models agree.

Column types:

- money (rounded to the currency's minor unit): :class:`~controllers.ledger.types.Amount`,
  the ledger's exact type (``NUMERIC(24, 6)`` on PostgreSQL, micro-unit INTEGER on
  SQLite);
- other exact decimals (energies, volumes, unrounded ``*_exact`` amounts, the fleet
  share, rates), which may carry any number of digits: :class:`DecimalText`, the
  Decimal's own string (exact on every dialect, never float);
- physics quantities that are floats in the controllers (SoC, capacity, audit variance):
  double precision (``FLOAT``/``REAL``), which round-trips a finite float exactly;
- times: :class:`~controllers.ledger.types.UtcDateTime` (aware UTC).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from controllers.ledger.types import Amount, UtcDateTime

#: Length of id columns (session, station, EVSE, token, run, tariff, rule ids).
ID_LEN = 200
#: Length of the exact-decimal string columns.
DECIMAL_TEXT_LEN = 120


class DecimalText(TypeDecorator[Decimal]):
    """Exact ``Decimal`` of any precision stored as its string (``str(d)``).

    Refuses floats, bools and non-finite values (``ValueError``); reads back
    ``Decimal(text)``, equal to and with the same digits as what was written.
    """

    impl = String(DECIMAL_TEXT_LEN)
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        """Decimal (or int) to its string."""
        if value is None:
            return None
        if isinstance(value, float | bool) or not isinstance(value, Decimal | int):
            raise ValueError(f"exact decimals are Decimal, never {type(value).__name__}: "
                             f"{value!r}")
        d = Decimal(value)
        if not d.is_finite():
            raise ValueError(f"decimal is not finite: {value!r}")
        return str(d)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Stored string back to the Decimal."""
        if value is None:
            return None
        try:
            return Decimal(str(value))
        except InvalidOperation as exc:  # pragma: no cover - only a hand-edited row
            raise ValueError(f"stored decimal is malformed: {value!r}") from exc


class BillingBase(DeclarativeBase):
    """Declarative base of the billing tables (schema from ledger migration 0002)."""


class SessionRow(BillingBase):
    """A charging session as run (``SessionRecord``); key ``session_id``."""

    __tablename__ = "billing_sessions"
    __table_args__ = (Index("ix_billing_sessions_id_token", "id_token"),)

    session_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(ID_LEN))
    evse_id: Mapped[str] = mapped_column(String(ID_LEN))
    id_token: Mapped[str] = mapped_column(String(ID_LEN))
    fleet_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    energy_kwh: Mapped[Decimal] = mapped_column(DecimalText())
    soc_start: Mapped[float | None] = mapped_column(Float())
    soc_end: Mapped[float | None] = mapped_column(Float())
    capacity_kwh: Mapped[float | None] = mapped_column(Float())
    at_home: Mapped[bool] = mapped_column(Boolean())
    run_id: Mapped[str | None] = mapped_column(String(ID_LEN))


class AuditRow(BillingBase):
    """Physics audit outcome of a session (``AuditResult``); ``reasons`` is a JSON list."""

    __tablename__ = "billing_audits"

    session_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    variance: Mapped[float | None] = mapped_column(Float())
    expected_kwh: Mapped[float | None] = mapped_column(Float())
    reasons: Mapped[str] = mapped_column(Text())
    audited_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CdrRow(BillingBase):
    """Charge detail record header (``Cdr``); its cost lines are :class:`CdrLineRow`."""

    __tablename__ = "billing_cdrs"
    __table_args__ = (Index("ix_billing_cdrs_id_token", "id_token"),)

    session_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(ID_LEN))
    evse_id: Mapped[str] = mapped_column(String(ID_LEN))
    id_token: Mapped[str] = mapped_column(String(ID_LEN))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())
    energy_kwh: Mapped[Decimal] = mapped_column(DecimalText())
    tariff_id: Mapped[str] = mapped_column(String(ID_LEN))
    currency: Mapped[str] = mapped_column(String(3))
    total_excl_vat: Mapped[Decimal] = mapped_column(Amount())
    total_incl_vat: Mapped[Decimal] = mapped_column(Amount())
    audit_status: Mapped[str] = mapped_column(String(16))
    at_home: Mapped[bool] = mapped_column(Boolean())


class CdrLineRow(BillingBase):
    """One cost line of a CDR (``CostLine``), in list order (``position``)."""

    __tablename__ = "billing_cdr_lines"

    session_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("billing_cdrs.session_id", ondelete="CASCADE"),
        primary_key=True)
    position: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(32))
    volume: Mapped[Decimal] = mapped_column(DecimalText())
    billed_volume: Mapped[Decimal] = mapped_column(DecimalText())
    excl_vat_exact: Mapped[Decimal] = mapped_column(DecimalText())
    incl_vat_exact: Mapped[Decimal] = mapped_column(DecimalText())
    excl_vat: Mapped[Decimal] = mapped_column(Amount())
    incl_vat: Mapped[Decimal] = mapped_column(Amount())


class InvoiceRow(BillingBase):
    """Invoice header of a session (``Invoice``); lines are :class:`InvoiceLineRow`."""

    __tablename__ = "billing_invoices"

    session_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    fleet_share: Mapped[Decimal] = mapped_column(DecimalText())
    total_excl_vat: Mapped[Decimal] = mapped_column(Amount())
    total_incl_vat: Mapped[Decimal] = mapped_column(Amount())


class InvoiceLineRow(BillingBase):
    """One invoice line (``InvoiceLine``), in list order (``position``)."""

    __tablename__ = "billing_invoice_lines"

    session_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("billing_invoices.session_id", ondelete="CASCADE"),
        primary_key=True)
    position: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=False)
    payer: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    excl_vat: Mapped[Decimal] = mapped_column(Amount())
    incl_vat: Mapped[Decimal] = mapped_column(Amount())


class SiteBillRow(BillingBase):
    """The site's utility bill of one run (``utility.Bill``), key ``run_id``."""

    __tablename__ = "billing_site_bills"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    tariff_id: Mapped[str] = mapped_column(String(ID_LEN))
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Amount())


class SiteBillMonthRow(BillingBase):
    """One month of a site bill (``MonthlyBill``), in order (``position``)."""

    __tablename__ = "billing_site_bill_months"

    run_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("billing_site_bills.run_id", ondelete="CASCADE"),
        primary_key=True)
    position: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=False)
    month: Mapped[str] = mapped_column(String(7))
    total: Mapped[Decimal] = mapped_column(Amount())
    energy_kwh: Mapped[Decimal] = mapped_column(DecimalText())
    peak_kw: Mapped[Decimal] = mapped_column(DecimalText())


class SiteBillLineRow(BillingBase):
    """One line item of a site bill month (``LineItem``)."""

    __tablename__ = "billing_site_bill_lines"

    run_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("billing_site_bills.run_id", ondelete="CASCADE"),
        primary_key=True)
    month_position: Mapped[int] = mapped_column(Integer(), primary_key=True,
                                                autoincrement=False)
    position: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=False)
    month: Mapped[str] = mapped_column(String(7))
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text())
    quantity: Mapped[Decimal] = mapped_column(DecimalText())
    unit: Mapped[str] = mapped_column(String(32))
    rate: Mapped[Decimal] = mapped_column(DecimalText())
    amount_exact: Mapped[Decimal] = mapped_column(DecimalText())
    amount: Mapped[Decimal] = mapped_column(Amount())


class TariffRow(BillingBase):
    """Current version of an OCPI 2.2.1 Tariff (JSON document), key ``tariff_id``."""

    __tablename__ = "billing_tariffs"

    tariff_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(Integer())
    currency: Mapped[str] = mapped_column(String(3))
    document: Mapped[str] = mapped_column(Text())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class TariffVersionRow(BillingBase):
    """Every version of every tariff put (history; CDRs may reference older ones)."""

    __tablename__ = "billing_tariff_versions"

    tariff_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RewardRuleRow(BillingBase):
    """Current version of a reward rule (JSON document of ``RewardRule``)."""

    __tablename__ = "billing_reward_rules"

    rule_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(Integer())
    document: Mapped[str] = mapped_column(Text())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
