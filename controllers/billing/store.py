"""Persistent billing records in the ledger's database (issue 8, item 1).

:class:`BillingStore` writes and reads, in the database opened by
:func:`controllers.ledger.open_ledger` (a run folder's ``ledger.sqlite`` or a PostgreSQL
URL), the records of a billing pass:

- :class:`SessionRecord` (a charging session as run, the driver is ``id_token``);
- :class:`~controllers.billing.audit.AuditResult` (physics audit), with the time audited;
- :class:`~controllers.billing.invoice.Cdr` and its cost lines;
- :class:`~controllers.billing.invoice.Invoice` and its lines;
- the site's utility :class:`~controllers.billing.tariffs.utility.Bill` of a run;
- OCPI 2.2.1 :class:`~controllers.billing.tariffs.ocpi.Tariff` documents (versioned) and
  :class:`~controllers.ledger.rewards.RewardRule` documents (versioned).

Crash safety and idempotency. Every ``save_*`` / ``put_*`` is one database transaction
(SQLite ``BEGIN IMMEDIATE``, WAL, ``synchronous=FULL``; PostgreSQL ``READ COMMITTED``):
a record and its lines commit together or not at all. Records are keyed by
``session_id`` (``run_id`` for site bills): saving a record equal to the stored one is a
no-op, saving a different one under the same key raises :class:`BillingConflictError`
and writes nothing. So re-running a billing pass after a crash (SIGKILL) never doubles
anything. A concurrent first insert of the same key that loses the race on the primary
key is retried once and then compares like any replay. Tariffs and reward rules are
upserted instead: an equal document is a no-op, a different one becomes the next
version (history of tariff versions kept).

Equality is value equality of the controllers' own dataclasses / pydantic models:
Decimals compare by value (money comes back with the ledger's scale, 6 decimals, other
decimals with their own digits), datetimes as instants (read back in UTC).

Storage types are described in :mod:`controllers.billing.store_models`. Time is
injected: ``at`` arguments are aware UTC datetimes; nothing here reads the clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar, cast

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controllers.billing.audit import AuditResult, AuditStatus
from controllers.billing.invoice import Cdr, Invoice, InvoiceLine, Payer
from controllers.billing.store_models import (
    DECIMAL_TEXT_LEN,
    ID_LEN,
    AuditRow,
    CdrLineRow,
    CdrRow,
    InvoiceLineRow,
    InvoiceRow,
    RewardRuleRow,
    SessionRow,
    SiteBillLineRow,
    SiteBillMonthRow,
    SiteBillRow,
    TariffRow,
    TariffVersionRow,
)
from controllers.billing.tariffs.ocpi import CostLine, Tariff
from controllers.ledger.db import LedgerDb
from controllers.ledger.rewards import RewardRule
from controllers.ledger.types import to_amount

if TYPE_CHECKING:  # utility.py imports pandas: loaded only where a site bill is read
    from controllers.billing.tariffs.utility import Bill

T = TypeVar("T")


class BillingConflictError(Exception):
    """A record was saved under a key already holding a different record.

    Attributes:
        kind: ``session``, ``audit``, ``cdr``, ``invoice`` or ``site_bill``.
        key: the session id (run id for a site bill).
    """

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} is already stored with different content")
        self.kind = kind
        self.key = key


def _aware_utc(t: datetime, name: str) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware (UTC) datetime, got {t!r}")
    return t.astimezone(UTC)


def _exact(value: object, name: str) -> Decimal:
    """``value`` as a finite Decimal (int accepted); floats and bools are refused."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}")
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"{name} must be finite, got {d}")
    return _text_fits(d, name)


def _text_fits(d: Decimal, name: str) -> Decimal:
    """Check that ``d`` fits the 120-character exact-decimal column."""
    if len(str(d)) > DECIMAL_TEXT_LEN:
        raise ValueError(f"{name} has more than {DECIMAL_TEXT_LEN} characters: {d}")
    return d


def _ids(**values: str | None) -> None:
    """Check id fields: a str of at most 200 characters without NUL (or None)."""
    for name, v in values.items():
        if v is None:
            continue
        if not isinstance(v, str):
            raise TypeError(f"{name} must be a str, got {type(v).__name__}")
        if len(v) > ID_LEN or "\x00" in v:
            raise ValueError(f"{name} must have at most {ID_LEN} characters and no NUL: "
                             f"{v[:40]!r}...")


def _money(value: Decimal, name: str) -> Decimal:
    """Check that ``value`` fits the ledger's ``Amount`` (at most 6 decimals, in range)."""
    try:
        return to_amount(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def _float(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise TypeError(f"{name} must be a float or None, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite or None, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SessionRecord:
    """One charging session as run, the input of the audit, the CDR and the invoice.

    Attributes:
        session_id: the session (OCPP transaction) id; the store's key.
        station_id: charging station id; evse_id: EVSE id.
        id_token: the token that authorised the session: the driver.
        fleet_id: the fleet account the driver belongs to, None for a private driver.
        start, end: session start and end, aware datetimes (normalised to UTC).
        energy_kwh: energy dispensed per the meter (kWh), exact Decimal (int accepted;
            may be negative: a meter that went backwards is recorded as reported).
        soc_start, soc_end: vehicle SoC (fraction 0..1) at start/end, None if unknown.
        capacity_kwh: usable battery capacity (kWh), None if unknown.
        at_home: True for a session at the driver's home charger.
        run_id: the run (run folder name) that produced the session, if any.

    Raises (on construction):
        TypeError: energy not a Decimal/int (a float), or a SoC/capacity not a number.
        ValueError: naive datetime, ``end < start``, a non-finite number.
    """

    session_id: str
    station_id: str
    evse_id: str
    id_token: str
    fleet_id: str | None
    start: datetime
    end: datetime
    energy_kwh: Decimal
    soc_start: float | None
    soc_end: float | None
    capacity_kwh: float | None
    at_home: bool = False
    run_id: str | None = None

    def __post_init__(self) -> None:
        start, end = _aware_utc(self.start, "start"), _aware_utc(self.end, "end")
        if end < start:
            raise ValueError(f"session {self.session_id}: end {end.isoformat()} is before "
                             f"start {start.isoformat()}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "energy_kwh", _exact(self.energy_kwh, "energy_kwh"))
        for name in ("soc_start", "soc_end", "capacity_kwh"):
            object.__setattr__(self, name, _float(getattr(self, name), name))
        object.__setattr__(self, "at_home", bool(self.at_home))


@dataclass(frozen=True)
class AuditRecord:
    """A stored audit: the :class:`AuditResult` and when it was saved (``audited_at``, UTC)."""

    result: AuditResult
    audited_at: datetime


@dataclass(frozen=True)
class SiteBill:
    """A stored site bill: the run, the utility tariff id and the :class:`Bill`."""

    run_id: str
    tariff_id: str
    bill: Bill


@dataclass(frozen=True)
class TariffRecord:
    """A stored OCPI tariff: the document as put, its version (1, 2, …) and when put."""

    tariff: Tariff
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class RewardRuleRecord:
    """A stored reward rule: the rule, its version (1, 2, …) and when put."""

    rule: RewardRule
    version: int
    updated_at: datetime


# -- row <-> record ------------------------------------------------------------------


def _session_row(r: SessionRecord) -> SessionRow:
    return SessionRow(
        session_id=r.session_id, station_id=r.station_id, evse_id=r.evse_id,
        id_token=r.id_token, fleet_id=r.fleet_id, start_at=r.start, end_at=r.end,
        energy_kwh=r.energy_kwh, soc_start=r.soc_start, soc_end=r.soc_end,
        capacity_kwh=r.capacity_kwh, at_home=r.at_home, run_id=r.run_id)


def _session(row: SessionRow) -> SessionRecord:
    return SessionRecord(
        session_id=row.session_id, station_id=row.station_id, evse_id=row.evse_id,
        id_token=row.id_token, fleet_id=row.fleet_id, start=row.start_at, end=row.end_at,
        energy_kwh=row.energy_kwh, soc_start=row.soc_start, soc_end=row.soc_end,
        capacity_kwh=row.capacity_kwh, at_home=row.at_home, run_id=row.run_id)


def _audit(row: AuditRow) -> AuditResult:
    reasons = json.loads(row.reasons)
    return AuditResult(row.session_id, AuditStatus(row.status), row.variance,
                       row.expected_kwh, tuple(str(x) for x in reasons))


def _load_cdr(s: Session, head: CdrRow) -> Cdr:
    rows = s.scalars(select(CdrLineRow).where(CdrLineRow.session_id == head.session_id)
                     .order_by(CdrLineRow.position))
    lines = tuple(CostLine(type=x.type, volume=x.volume, billed_volume=x.billed_volume,
                           excl_vat_exact=x.excl_vat_exact,
                           incl_vat_exact=x.incl_vat_exact, excl_vat=x.excl_vat,
                           incl_vat=x.incl_vat) for x in rows)
    return Cdr(session_id=head.session_id, station_id=head.station_id,
               evse_id=head.evse_id, id_token=head.id_token, start=head.start_at,
               end=head.end_at, energy_kwh=head.energy_kwh, tariff_id=head.tariff_id,
               currency=head.currency, lines=lines, total_excl_vat=head.total_excl_vat,
               total_incl_vat=head.total_incl_vat,
               audit_status=AuditStatus(head.audit_status), at_home=head.at_home)


def _load_invoice(s: Session, head: InvoiceRow) -> Invoice:
    rows = s.scalars(select(InvoiceLineRow)
                     .where(InvoiceLineRow.session_id == head.session_id)
                     .order_by(InvoiceLineRow.position))
    lines = tuple(InvoiceLine(Payer(x.payer), x.kind, x.excl_vat, x.incl_vat) for x in rows)
    return Invoice(head.session_id, head.currency, head.fleet_share, lines,
                   head.total_excl_vat, head.total_incl_vat)


def _load_site_bill(s: Session, head: SiteBillRow) -> SiteBill:
    from controllers.billing.tariffs.utility import Bill, Kind, LineItem, MonthlyBill

    months = s.scalars(select(SiteBillMonthRow).where(SiteBillMonthRow.run_id == head.run_id)
                       .order_by(SiteBillMonthRow.position)).all()
    items = s.scalars(select(SiteBillLineRow).where(SiteBillLineRow.run_id == head.run_id)
                      .order_by(SiteBillLineRow.month_position, SiteBillLineRow.position))
    per_month: dict[int, list[LineItem]] = {m.position: [] for m in months}
    for x in items:
        per_month.setdefault(x.month_position, []).append(LineItem(
            month=x.month, kind=cast(Kind, x.kind), description=x.description,
            quantity=x.quantity, unit=x.unit, rate=x.rate, amount_exact=x.amount_exact,
            amount=x.amount))
    bill = Bill(head.currency, tuple(
        MonthlyBill(m.month, tuple(per_month[m.position]), m.total, m.energy_kwh, m.peak_kw)
        for m in months), head.total)
    return SiteBill(head.run_id, head.tariff_id, bill)


class BillingStore:
    """Billing records in an open ledger database (thread-safe: one session per call).

    Args:
        db: the database from :func:`controllers.ledger.open_ledger` (migrated to
            revision ``0002_billing`` or later, which ``open_ledger`` does).

    Every ``save_*`` raises :class:`BillingConflictError` when its key holds a different
    record, ``TypeError`` for a float where a Decimal is expected and ``ValueError`` for a
    naive datetime, a non-finite number, money with more than 6 decimals (or beyond
    ±1e12), an exact decimal longer than 120 characters, or an id longer than 200
    characters or holding NUL; nothing is written then.
    """

    def __init__(self, db: LedgerDb) -> None:
        self.db = db

    # -- writing -----------------------------------------------------------------------

    def _write(self, fn: Callable[[Session], None]) -> None:
        """Run ``fn`` in one transaction; retry once after losing a primary-key race."""
        for attempt in range(2):
            try:
                with self.db.sessions() as s, s.begin():
                    fn(s)
                return
            except IntegrityError:
                if attempt:
                    raise

    def _once(self, kind: str, key: str, new: T, load: Callable[[Session], T | None],
              insert: Callable[[Session], None]) -> None:
        def tx(s: Session) -> None:
            old = load(s)
            if old is None:
                insert(s)
            elif old != new:
                raise BillingConflictError(kind, key)
        self._write(tx)

    def save_session(self, rec: SessionRecord) -> None:
        """Store a session (key ``session_id``); an equal stored session makes it a no-op.

        Raises:
            BillingConflictError: the id holds a different session.
        """
        if not isinstance(rec, SessionRecord):
            raise TypeError(f"expected a SessionRecord, got {type(rec).__name__}")
        _ids(session_id=rec.session_id, station_id=rec.station_id, evse_id=rec.evse_id,
             id_token=rec.id_token, fleet_id=rec.fleet_id, run_id=rec.run_id)

        def load(s: Session) -> SessionRecord | None:
            row = s.get(SessionRow, rec.session_id)
            return None if row is None else _session(row)

        self._once("session", rec.session_id, rec, load, lambda s: s.add(_session_row(rec)))

    def save_audit(self, result: AuditResult, *, at: datetime) -> None:
        """Store an audit outcome (key ``session_id``), audited at ``at`` (aware UTC).

        An equal stored result is a no-op whatever ``at`` (the first time is kept).

        Raises:
            BillingConflictError: the session holds a different audit result.
            ValueError: naive ``at``, non-finite variance or expected energy.
        """
        at = _aware_utc(at, "at")
        _ids(session_id=result.session_id)
        variance = _float(result.variance, "variance")
        expected = _float(result.expected_kwh, "expected_kwh")
        status = AuditStatus(result.status)
        new = AuditResult(result.session_id, status, variance, expected,
                          tuple(str(x) for x in result.reasons))

        def load(s: Session) -> AuditResult | None:
            row = s.get(AuditRow, result.session_id)
            return None if row is None else _audit(row)

        def insert(s: Session) -> None:
            s.add(AuditRow(session_id=result.session_id, status=status.value,
                           variance=variance, expected_kwh=expected,
                           reasons=json.dumps(list(new.reasons)), audited_at=at))

        self._once("audit", result.session_id, new, load, insert)

    def save_cdr(self, cdr: Cdr) -> None:
        """Store a CDR and its cost lines (key ``session_id``), in one transaction.

        Raises:
            BillingConflictError: the session holds a different CDR.
        """
        _ids(session_id=cdr.session_id, station_id=cdr.station_id, evse_id=cdr.evse_id,
             id_token=cdr.id_token, tariff_id=cdr.tariff_id)
        _text_fits(cdr.energy_kwh, "energy_kwh")
        _money(cdr.total_excl_vat, "total_excl_vat")
        _money(cdr.total_incl_vat, "total_incl_vat")
        for x in cdr.lines:
            _money(x.excl_vat, f"{x.type} excl_vat")
            _money(x.incl_vat, f"{x.type} incl_vat")
            for name in ("volume", "billed_volume", "excl_vat_exact", "incl_vat_exact"):
                _exact(getattr(x, name), f"{x.type} {name}")

        def load(s: Session) -> Cdr | None:
            head = s.get(CdrRow, cdr.session_id)
            return None if head is None else _load_cdr(s, head)

        def insert(s: Session) -> None:
            s.add(CdrRow(session_id=cdr.session_id, station_id=cdr.station_id,
                         evse_id=cdr.evse_id, id_token=cdr.id_token, start_at=cdr.start,
                         end_at=cdr.end, energy_kwh=cdr.energy_kwh, tariff_id=cdr.tariff_id,
                         currency=cdr.currency, total_excl_vat=cdr.total_excl_vat,
                         total_incl_vat=cdr.total_incl_vat,
                         audit_status=AuditStatus(cdr.audit_status).value,
                         at_home=cdr.at_home))
            s.flush()
            s.add_all(CdrLineRow(session_id=cdr.session_id, position=i, type=x.type,
                                 volume=x.volume, billed_volume=x.billed_volume,
                                 excl_vat_exact=x.excl_vat_exact,
                                 incl_vat_exact=x.incl_vat_exact, excl_vat=x.excl_vat,
                                 incl_vat=x.incl_vat) for i, x in enumerate(cdr.lines))

        self._once("cdr", cdr.session_id, cdr, load, insert)

    def save_invoice(self, invoice: Invoice) -> None:
        """Store an invoice and its lines (key ``session_id``), in one transaction.

        Raises:
            BillingConflictError: the session holds a different invoice.
        """
        _ids(session_id=invoice.session_id)
        _exact(invoice.fleet_share, "fleet_share")
        _money(invoice.total_excl_vat, "total_excl_vat")
        _money(invoice.total_incl_vat, "total_incl_vat")
        for x in invoice.lines:
            _money(x.excl_vat, f"{x.kind} excl_vat")
            _money(x.incl_vat, f"{x.kind} incl_vat")
            Payer(x.payer)

        def load(s: Session) -> Invoice | None:
            head = s.get(InvoiceRow, invoice.session_id)
            return None if head is None else _load_invoice(s, head)

        def insert(s: Session) -> None:
            s.add(InvoiceRow(session_id=invoice.session_id, currency=invoice.currency,
                             fleet_share=invoice.fleet_share,
                             total_excl_vat=invoice.total_excl_vat,
                             total_incl_vat=invoice.total_incl_vat))
            s.flush()
            s.add_all(InvoiceLineRow(session_id=invoice.session_id, position=i,
                                     payer=Payer(x.payer).value, kind=x.kind,
                                     excl_vat=x.excl_vat, incl_vat=x.incl_vat)
                      for i, x in enumerate(invoice.lines))

        self._once("invoice", invoice.session_id, invoice, load, insert)

    def save_site_bill(self, run_id: str, bill: Bill, *, tariff_id: str) -> None:
        """Store the site's utility bill of run ``run_id`` under tariff ``tariff_id``.

        Raises:
            BillingConflictError: the run holds a different bill (or another tariff id).
        """
        _ids(run_id=run_id, tariff_id=tariff_id)
        _money(bill.total, "total")
        for m in bill.months:
            _money(m.total, f"{m.month} total")
            _exact(m.energy_kwh, f"{m.month} energy_kwh")
            _exact(m.peak_kw, f"{m.month} peak_kw")
            for x in m.lines:
                _money(x.amount, f"{m.month} {x.kind} amount")
                for name in ("quantity", "rate", "amount_exact"):
                    _exact(getattr(x, name), f"{m.month} {x.kind} {name}")
        new = SiteBill(run_id, tariff_id, bill)

        def load(s: Session) -> SiteBill | None:
            head = s.get(SiteBillRow, run_id)
            return None if head is None else _load_site_bill(s, head)

        def insert(s: Session) -> None:
            s.add(SiteBillRow(run_id=run_id, tariff_id=tariff_id, currency=bill.currency,
                              total=bill.total))
            s.flush()
            for i, m in enumerate(bill.months):
                s.add(SiteBillMonthRow(run_id=run_id, position=i, month=m.month,
                                       total=m.total, energy_kwh=m.energy_kwh,
                                       peak_kw=m.peak_kw))
                s.add_all(SiteBillLineRow(
                    run_id=run_id, month_position=i, position=j, month=x.month,
                    kind=x.kind, description=x.description, quantity=x.quantity,
                    unit=x.unit, rate=x.rate, amount_exact=x.amount_exact, amount=x.amount)
                    for j, x in enumerate(m.lines))

        self._once("site_bill", run_id, new, load, insert)

    def put_tariff(self, tariff: Tariff, *, at: datetime) -> TariffRecord:
        """Insert or update an OCPI 2.2.1 tariff by ``tariff.id``, put at ``at`` (UTC).

        An equal stored tariff is a no-op (version and time kept); a different one
        becomes version + 1 (the previous versions stay in ``billing_tariff_versions``).
        The document is stored as JSON (Decimals as strings, exact). Returns the stored
        record.

        Raises:
            TypeError: ``tariff`` is not a :class:`Tariff`.
            ValueError: naive ``at``.
        """
        if not isinstance(tariff, Tariff):
            raise TypeError(f"expected an OCPI Tariff, got {type(tariff).__name__}")
        at = _aware_utc(at, "at")
        _ids(tariff_id=tariff.id)
        doc = tariff.model_dump_json()
        out: list[TariffRecord] = []

        def tx(s: Session) -> None:
            out.clear()
            row = s.get(TariffRow, tariff.id, with_for_update=True)
            if row is not None and Tariff.model_validate_json(row.document) == tariff:
                out.append(TariffRecord(tariff, row.version, row.updated_at))
                return
            version = 1 if row is None else row.version + 1
            if row is None:
                s.add(TariffRow(tariff_id=tariff.id, version=version,
                                currency=tariff.currency, document=doc, updated_at=at))
            else:
                row.version, row.currency, row.document, row.updated_at = \
                    version, tariff.currency, doc, at
            s.add(TariffVersionRow(tariff_id=tariff.id, version=version, document=doc,
                                   updated_at=at))
            out.append(TariffRecord(tariff, version, at))

        self._write(tx)
        return out[0]

    def put_reward_rule(self, rule: RewardRule, *, at: datetime) -> RewardRuleRecord:
        """Insert or update a reward rule by ``rule.rule_id``, put at ``at`` (UTC).

        An equal stored rule is a no-op; a different one becomes version + 1.

        Raises:
            TypeError: ``rule`` is not a :class:`RewardRule`.
            ValueError: naive ``at``.
        """
        if not isinstance(rule, RewardRule):
            raise TypeError(f"expected a RewardRule, got {type(rule).__name__}")
        at = _aware_utc(at, "at")
        _ids(rule_id=rule.rule_id)
        doc = rule.model_dump_json()
        out: list[RewardRuleRecord] = []

        def tx(s: Session) -> None:
            out.clear()
            row = s.get(RewardRuleRow, rule.rule_id, with_for_update=True)
            if row is not None and RewardRule.model_validate_json(row.document) == rule:
                out.append(RewardRuleRecord(rule, row.version, row.updated_at))
                return
            version = 1 if row is None else row.version + 1
            if row is None:
                s.add(RewardRuleRow(rule_id=rule.rule_id, version=version, document=doc,
                                    updated_at=at))
            else:
                row.version, row.document, row.updated_at = version, doc, at
            out.append(RewardRuleRecord(rule, version, at))

        self._write(tx)
        return out[0]

    # -- reading -----------------------------------------------------------------------

    def _read(self, fn: Callable[[Session], T]) -> T:
        with self.db.sessions() as s, s.begin():
            return fn(s)

    def sessions(self, *, id_token: str | None = None,
                 run_id: str | None = None) -> list[SessionRecord]:
        """Sessions (of driver ``id_token`` / run ``run_id`` if given), by start then id."""
        q = select(SessionRow).order_by(SessionRow.start_at, SessionRow.session_id)
        if id_token is not None:
            q = q.where(SessionRow.id_token == id_token)
        if run_id is not None:
            q = q.where(SessionRow.run_id == run_id)
        return self._read(lambda s: [_session(r) for r in s.scalars(q)])

    def session(self, session_id: str) -> SessionRecord | None:
        """The session ``session_id``, or None."""
        def get(s: Session) -> SessionRecord | None:
            row = s.get(SessionRow, session_id)
            return None if row is None else _session(row)
        return self._read(get)

    def audit(self, session_id: str) -> AuditResult | None:
        """The audit result of ``session_id``, or None."""
        rec = self.audit_record(session_id)
        return None if rec is None else rec.result

    def audit_record(self, session_id: str) -> AuditRecord | None:
        """The audit result of ``session_id`` with the time it was saved, or None."""
        def get(s: Session) -> AuditRecord | None:
            row = s.get(AuditRow, session_id)
            return None if row is None else AuditRecord(_audit(row), row.audited_at)
        return self._read(get)

    def audits(self, *, status: AuditStatus | None = None) -> list[AuditResult]:
        """All audit results (of ``status`` if given), by session id."""
        q = select(AuditRow).order_by(AuditRow.session_id)
        if status is not None:
            q = q.where(AuditRow.status == AuditStatus(status).value)
        return self._read(lambda s: [_audit(r) for r in s.scalars(q)])

    def cdr(self, session_id: str) -> Cdr | None:
        """The CDR of ``session_id`` with its lines, or None."""
        def get(s: Session) -> Cdr | None:
            head = s.get(CdrRow, session_id)
            return None if head is None else _load_cdr(s, head)
        return self._read(get)

    def cdrs(self, *, id_token: str | None = None) -> list[Cdr]:
        """All CDRs (of driver ``id_token`` if given), by start then session id."""
        q = select(CdrRow).order_by(CdrRow.start_at, CdrRow.session_id)
        if id_token is not None:
            q = q.where(CdrRow.id_token == id_token)
        return self._read(lambda s: [_load_cdr(s, h) for h in s.scalars(q).all()])

    def invoice(self, session_id: str) -> Invoice | None:
        """The invoice of ``session_id`` with its lines, or None."""
        def get(s: Session) -> Invoice | None:
            head = s.get(InvoiceRow, session_id)
            return None if head is None else _load_invoice(s, head)
        return self._read(get)

    def invoices(self, *, id_token: str | None = None) -> list[Invoice]:
        """All invoices, by session id; with ``id_token``, those of the driver's sessions.

        An invoice belongs to driver ``id_token`` when its session id is a stored
        session or CDR of that token (invoices themselves carry no token).
        """
        q = select(InvoiceRow).order_by(InvoiceRow.session_id)
        if id_token is not None:
            q = q.where(or_(
                InvoiceRow.session_id.in_(
                    select(SessionRow.session_id).where(SessionRow.id_token == id_token)),
                InvoiceRow.session_id.in_(
                    select(CdrRow.session_id).where(CdrRow.id_token == id_token))))
        return self._read(lambda s: [_load_invoice(s, h) for h in s.scalars(q).all()])

    def owner_of(self, session_id: str) -> str | None:
        """The ``id_token`` (driver) of a stored session or CDR ``session_id``, or None."""
        def get(s: Session) -> str | None:
            row = s.get(SessionRow, session_id)
            if row is not None:
                return row.id_token
            cdr = s.get(CdrRow, session_id)
            return None if cdr is None else cdr.id_token
        return self._read(get)

    def site_bill(self, run_id: str) -> SiteBill | None:
        """The site bill of run ``run_id`` (with months and lines), or None."""
        def get(s: Session) -> SiteBill | None:
            head = s.get(SiteBillRow, run_id)
            return None if head is None else _load_site_bill(s, head)
        return self._read(get)

    def site_bill_runs(self) -> list[str]:
        """Run ids that have a site bill, sorted."""
        return self._read(lambda s: list(s.scalars(
            select(SiteBillRow.run_id).order_by(SiteBillRow.run_id))))

    def tariffs(self) -> list[Tariff]:
        """Current version of every stored OCPI tariff, by id."""
        return [r.tariff for r in self.tariff_records()]

    def tariff_records(self) -> list[TariffRecord]:
        """Current version of every stored OCPI tariff with version and time, by id."""
        q = select(TariffRow).order_by(TariffRow.tariff_id)
        return self._read(lambda s: [
            TariffRecord(Tariff.model_validate_json(r.document), r.version, r.updated_at)
            for r in s.scalars(q)])

    def tariff(self, tariff_id: str, *, version: int | None = None) -> Tariff | None:
        """The tariff ``tariff_id`` (current, or version ``version``), or None."""
        rec = self.tariff_record(tariff_id, version=version)
        return None if rec is None else rec.tariff

    def tariff_record(self, tariff_id: str, *,
                      version: int | None = None) -> TariffRecord | None:
        """The tariff ``tariff_id`` with version and time (current or ``version``)."""
        def get(s: Session) -> TariffRecord | None:
            if version is None:
                row = s.get(TariffRow, tariff_id)
                if row is None:
                    return None
                return TariffRecord(Tariff.model_validate_json(row.document), row.version,
                                    row.updated_at)
            old = s.get(TariffVersionRow, (tariff_id, version))
            if old is None:
                return None
            return TariffRecord(Tariff.model_validate_json(old.document), old.version,
                                old.updated_at)
        return self._read(get)

    def reward_rules(self) -> list[RewardRule]:
        """Every stored reward rule (current version), by rule id."""
        return [r.rule for r in self.reward_rule_records()]

    def reward_rule_records(self) -> list[RewardRuleRecord]:
        """Every stored reward rule with version and time, by rule id."""
        q = select(RewardRuleRow).order_by(RewardRuleRow.rule_id)
        return self._read(lambda s: [
            RewardRuleRecord(RewardRule.model_validate_json(r.document), r.version,
                             r.updated_at) for r in s.scalars(q)])

    def reward_rule(self, rule_id: str) -> RewardRuleRecord | None:
        """The reward rule ``rule_id`` with version and time, or None."""
        def get(s: Session) -> RewardRuleRecord | None:
            row = s.get(RewardRuleRow, rule_id)
            return None if row is None else RewardRuleRecord(
                RewardRule.model_validate_json(row.document), row.version, row.updated_at)
        return self._read(get)


__all__: Sequence[str] = (
    "AuditRecord", "BillingConflictError", "BillingStore", "RewardRuleRecord",
    "SessionRecord", "SiteBill", "TariffRecord",
)
