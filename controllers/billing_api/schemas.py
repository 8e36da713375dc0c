"""Response models of the billing API (pydantic), and conversions from the records.

Every exact number (money, energies, volumes, token amounts, the fleet share) is a JSON
*string* holding a plain decimal (``"12.34"``, ``"-0.500000"``; pattern
:data:`DECIMAL_PATTERN`, never exponent notation, never a JSON float). Money is shown in
its currency's minor unit when that is exact (it always is for rounded amounts).
Physics quantities that are floats in the controllers (SoC 0..1, capacity kWh, audit
variance ratio, expected kWh) stay JSON numbers. Times are ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from controllers.billing.audit import AuditStatus
from controllers.billing.invoice import Cdr, Invoice, Payer
from controllers.billing.store import AuditRecord, SessionRecord, SiteBill
from controllers.billing.tariffs.money import minor_unit
from controllers.billing.tariffs.ocpi import Tariff
from controllers.ledger.rewards import RewardRule

#: What every decimal string of the API matches.
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def _plain(d: Decimal) -> str:
    return format(d, "f")


#: An exact decimal, serialised as a plain decimal string.
Dec = Annotated[
    Decimal,
    PlainSerializer(_plain, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN,
                    "description": "exact decimal as a string"}),
]


def money(amount: Decimal, currency: str) -> Decimal:
    """``amount`` at the minor unit of ``currency`` when that is exact, else unchanged."""
    q = amount.quantize(minor_unit(currency))
    return q if q == amount else amount


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorOut(_Out):
    """An error: ``detail`` says why (401, 403, 404)."""

    detail: str


class SessionOut(_Out):
    """A charging session (energy in kWh, SoC fraction 0..1, capacity kWh)."""

    session_id: str
    station_id: str
    evse_id: str
    id_token: str
    fleet_id: str | None
    start: datetime
    end: datetime
    energy_kwh: Dec
    soc_start: float | None
    soc_end: float | None
    capacity_kwh: float | None
    at_home: bool
    run_id: str | None

    @classmethod
    def of(cls, r: SessionRecord) -> SessionOut:
        """From a stored :class:`SessionRecord`."""
        return cls(session_id=r.session_id, station_id=r.station_id, evse_id=r.evse_id,
                   id_token=r.id_token, fleet_id=r.fleet_id, start=r.start, end=r.end,
                   energy_kwh=r.energy_kwh, soc_start=r.soc_start, soc_end=r.soc_end,
                   capacity_kwh=r.capacity_kwh, at_home=r.at_home, run_id=r.run_id)


class AuditOut(_Out):
    """Physics audit of a session: status, variance ratio, expected grid-side kWh."""

    session_id: str
    status: AuditStatus
    variance: float | None
    expected_kwh: float | None
    reasons: list[str]
    audited_at: datetime

    @classmethod
    def of(cls, a: AuditRecord) -> AuditOut:
        """From a stored :class:`AuditRecord`."""
        r = a.result
        return cls(session_id=r.session_id, status=r.status, variance=r.variance,
                   expected_kwh=r.expected_kwh, reasons=list(r.reasons),
                   audited_at=a.audited_at)


class CostLineOut(_Out):
    """A CDR cost line (OCPI dimension type; volumes kWh or h; money in the currency)."""

    type: str
    volume: Dec
    billed_volume: Dec
    excl_vat_exact: Dec
    incl_vat_exact: Dec
    excl_vat: Dec
    incl_vat: Dec


class CdrOut(_Out):
    """A charge detail record (after OCPI 2.2.1 module CDRs)."""

    session_id: str
    station_id: str
    evse_id: str
    id_token: str
    start: datetime
    end: datetime
    energy_kwh: Dec
    tariff_id: str
    currency: str
    lines: list[CostLineOut]
    total_excl_vat: Dec
    total_incl_vat: Dec
    audit_status: AuditStatus
    at_home: bool

    @classmethod
    def of(cls, c: Cdr) -> CdrOut:
        """From a stored :class:`Cdr`."""
        cur = c.currency
        return cls(
            session_id=c.session_id, station_id=c.station_id, evse_id=c.evse_id,
            id_token=c.id_token, start=c.start, end=c.end, energy_kwh=c.energy_kwh,
            tariff_id=c.tariff_id, currency=cur,
            lines=[CostLineOut(type=x.type, volume=x.volume, billed_volume=x.billed_volume,
                               excl_vat_exact=x.excl_vat_exact,
                               incl_vat_exact=x.incl_vat_exact,
                               excl_vat=money(x.excl_vat, cur),
                               incl_vat=money(x.incl_vat, cur)) for x in c.lines],
            total_excl_vat=money(c.total_excl_vat, cur),
            total_incl_vat=money(c.total_incl_vat, cur), audit_status=c.audit_status,
            at_home=c.at_home)


class InvoiceLineOut(_Out):
    """An invoice line: who pays (driver or fleet) what, for which CDR line type."""

    payer: Payer
    kind: str
    excl_vat: Dec
    incl_vat: Dec


class InvoiceOut(_Out):
    """A session's invoice split between driver and fleet; totals incl. VAT per payer."""

    session_id: str
    currency: str
    fleet_share: Dec
    lines: list[InvoiceLineOut]
    total_excl_vat: Dec
    total_incl_vat: Dec
    driver_total: Dec
    fleet_total: Dec

    @classmethod
    def of(cls, i: Invoice) -> InvoiceOut:
        """From a stored :class:`Invoice`."""
        cur = i.currency
        return cls(
            session_id=i.session_id, currency=cur, fleet_share=i.fleet_share,
            lines=[InvoiceLineOut(payer=x.payer, kind=x.kind,
                                  excl_vat=money(x.excl_vat, cur),
                                  incl_vat=money(x.incl_vat, cur)) for x in i.lines],
            total_excl_vat=money(i.total_excl_vat, cur),
            total_incl_vat=money(i.total_incl_vat, cur),
            driver_total=money(i.driver_total, cur), fleet_total=money(i.fleet_total, cur))


class TokenBalanceOut(_Out):
    """A driver's balances of one token (or currency) code: spendable and frozen."""

    code: str
    wallet: Dec
    escrow: Dec


class WalletOut(_Out):
    """A driver's wallet: balances per token code (empty when the driver has none)."""

    driver: str
    balances: list[TokenBalanceOut]


class PostingOut(_Out):
    """A posting: ``amount > 0`` credits the account, ``< 0`` debits it.

    For a driver caller, another driver's account owner reads ``"(other)"``.
    """

    account_kind: str
    owner: str
    code: str
    amount: Dec


class EntryOut(_Out):
    """A journal entry of the token ledger."""

    txn_id: int
    event_id: str
    kind: str
    session_id: str | None
    rule_id: str | None
    actor: str | None
    memo: str
    created_at: datetime
    postings: list[PostingOut]


class EntriesPage(_Out):
    """A page of entries in posting order; pass ``next_after`` as ``after`` for more."""

    entries: list[EntryOut]
    next_after: int | None = Field(
        description="txn_id to pass as `after` for the next page; null on the last page")


class LineItemOut(_Out):
    """A utility bill line: quantity (unit) x rate = amount_exact, rounded to amount."""

    month: str
    kind: str
    description: str
    quantity: Dec
    unit: str
    rate: Dec
    amount_exact: Dec
    amount: Dec


class MonthOut(_Out):
    """One local calendar month of a site bill."""

    month: str
    total: Dec
    energy_kwh: Dec
    peak_kw: Dec
    lines: list[LineItemOut]


class SiteBillOut(_Out):
    """The site's utility bill of a run (``total == sum(month.total)``)."""

    run_id: str
    tariff_id: str
    currency: str
    total: Dec
    months: list[MonthOut]

    @classmethod
    def of(cls, b: SiteBill) -> SiteBillOut:
        """From a stored :class:`SiteBill`."""
        cur = b.bill.currency
        return cls(
            run_id=b.run_id, tariff_id=b.tariff_id, currency=cur,
            total=money(b.bill.total, cur),
            months=[MonthOut(month=m.month, total=money(m.total, cur),
                             energy_kwh=m.energy_kwh, peak_kw=m.peak_kw,
                             lines=[LineItemOut(month=x.month, kind=x.kind,
                                                description=x.description,
                                                quantity=x.quantity, unit=x.unit,
                                                rate=x.rate, amount_exact=x.amount_exact,
                                                amount=money(x.amount, cur))
                                    for x in m.lines])
                    for m in b.bill.months])


class TariffOut(_Out):
    """A stored OCPI 2.2.1 Tariff (numbers as decimal strings), its version and time."""

    version: int
    updated_at: datetime
    tariff: Tariff


class RewardRuleOut(_Out):
    """A stored reward rule (rate as a decimal string), its version and time."""

    version: int
    updated_at: datetime
    rule: RewardRule
