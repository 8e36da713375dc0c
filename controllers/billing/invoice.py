"""CDR-like records, per-session invoices, split billing and home-charging reimbursement.

Issue 8, item 4. Money is ``decimal.Decimal`` in the tariff's ISO 4217 currency, never
float; a float anywhere an amount, price or energy is expected raises ``TypeError``.

- :class:`Cdr`: one charging session as billed: who, where, when (UTC), energy (kWh,
  quantised to Wh), the tariff and the cost lines of
  :func:`controllers.billing.tariffs.ocpi.price_session`, and the physics audit status.
- :func:`split`: the session's invoice split between the driver and the fleet account by a
  :data:`SplitRule` (fleet pays up to N kWh, a percent share, or up to an amount; the
  remainder goes to the driver).
- :func:`reimburse_home`: a session at the driver's home is reimbursed to the driver at
  the home tariff and charged to the fleet account.

Reconciliation (exact, to the minor unit): for every cost line, driver + fleet == the
CDR line; the fleet's total is the fleet's exact share rounded once (half up, the one rule
of :mod:`controllers.billing.tariffs.money`) and its lines are allocated with
:func:`~controllers.billing.tariffs.money.allocate`, so driver total + fleet total == CDR
total, excl. and incl. VAT separately.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from enum import StrEnum

from controllers.billing.audit import AuditStatus
from controllers.billing.tariffs.money import (
    EXACT,
    allocate,
    check_currency,
    minor_unit,
    round_money,
)
from controllers.billing.tariffs.ocpi import ChargingSession, CostLine, Tariff, price_session

#: Quantum of CDR energy (kWh): 1 Wh.
WH = Decimal("0.001")
_HUNDRED = Decimal(100)


def _dec(value: object, name: str, *, non_negative: bool = True) -> Decimal:
    """Return ``value`` as a finite Decimal (int accepted); reject float and bool.

    Raises:
        TypeError: for a float, bool or any non-Decimal, non-int value.
        ValueError: for NaN/infinity, or a negative value when ``non_negative``.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        hint = " (money and energy are Decimal, never float: use Decimal('…'))" \
            if isinstance(value, float) else ""
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}{hint}")
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"{name} must be finite, got {d}")
    if non_negative and d < 0:
        raise ValueError(f"{name} must not be negative, got {d}")
    return d


def _utc(t: dt.datetime, name: str) -> dt.datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {t.isoformat()}")
    return t.astimezone(dt.UTC)


@dataclass(frozen=True)
class Cdr:
    """Charge detail record of one session (CDR-like, after OCPI 2.2.1 module CDRs).

    Attributes:
        session_id: the session (transaction) id.
        station_id: charging station id.
        evse_id: EVSE id.
        id_token: the token that authorised the session (driver's card / app id).
        start, end: session start and end, UTC.
        energy_kwh: energy dispensed (kWh), Decimal quantised to 0.001 (1 Wh).
        tariff_id: id of the OCPI tariff that priced the session.
        currency: ISO 4217 code of every amount.
        lines: cost lines of ``price_session`` (rounded ``excl_vat``/``incl_vat`` sum to
            the totals exactly).
        total_excl_vat, total_incl_vat: session totals, rounded to the minor unit.
        audit_status: physics audit outcome (:class:`~controllers.billing.audit.AuditStatus`).
        at_home: True for a session at the driver's home charger.

    Raises (on construction):
        TypeError: for a float amount or energy.
        ValueError: negative energy, naive datetimes, end before start, malformed
            currency, or lines that do not sum to the totals.
    """

    session_id: str
    station_id: str
    evse_id: str
    id_token: str
    start: dt.datetime
    end: dt.datetime
    energy_kwh: Decimal
    tariff_id: str
    currency: str
    lines: tuple[CostLine, ...]
    total_excl_vat: Decimal
    total_incl_vat: Decimal
    audit_status: AuditStatus
    at_home: bool = False

    def __post_init__(self) -> None:
        check_currency(self.currency)
        object.__setattr__(self, "audit_status", AuditStatus(self.audit_status))
        energy = _dec(self.energy_kwh, "energy_kwh")
        object.__setattr__(self, "energy_kwh", energy.quantize(WH, rounding=ROUND_HALF_UP))
        start, end = _utc(self.start, "start"), _utc(self.end, "end")
        if end < start:
            raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "lines", tuple(self.lines))
        ex = _dec(self.total_excl_vat, "total_excl_vat", non_negative=False)
        inc = _dec(self.total_incl_vat, "total_incl_vat", non_negative=False)
        for x in self.lines:
            _dec(x.excl_vat, f"{x.type} excl_vat", non_negative=False)
            _dec(x.incl_vat, f"{x.type} incl_vat", non_negative=False)
        if sum((x.excl_vat for x in self.lines), Decimal(0)) != ex or \
                sum((x.incl_vat for x in self.lines), Decimal(0)) != inc:
            raise ValueError("CDR lines do not sum to the totals")
        q = minor_unit(self.currency)
        if ex != ex.quantize(q) or inc != inc.quantize(q):
            raise ValueError(f"CDR totals must be whole minor units of {self.currency}")

    @classmethod
    def build(cls, *, session_id: str, station_id: str, evse_id: str, id_token: str,
              session: ChargingSession, tariff: Tariff, audit_status: AuditStatus,
              at_home: bool = False) -> Cdr:
        """Price ``session`` under ``tariff`` and record it.

        Energy is the sum of the periods' ``energy_kwh`` quantised (half up) to 1 Wh;
        the cost is ``price_session(tariff, session)`` (unrounded volumes).

        Raises:
            ValueError: as for the constructor.
        """
        energy = sum((p.energy_kwh for p in session.charging_periods), Decimal(0))
        cost = price_session(tariff, session)
        return cls(session_id=session_id, station_id=station_id, evse_id=evse_id,
                   id_token=id_token, start=session.start_date_time,
                   end=session.end_date_time, energy_kwh=energy, tariff_id=tariff.id,
                   currency=cost.currency, lines=cost.lines,
                   total_excl_vat=cost.total_excl_vat, total_incl_vat=cost.total_incl_vat,
                   audit_status=audit_status, at_home=at_home)


class Payer(StrEnum):
    """Who pays an invoice line."""

    DRIVER = "driver"
    FLEET = "fleet"


@dataclass(frozen=True)
class FleetPaysUpToKwh:
    """The fleet pays the session pro rata for its first ``kwh`` (kWh, Decimal >= 0).

    Fleet share = min(kwh, E) / E of every line; a session with E within the allowance
    (including E = 0) is paid entirely by the fleet, time and parking lines included.
    """

    kwh: Decimal

    def __post_init__(self) -> None:
        _dec(self.kwh, "kwh")


@dataclass(frozen=True)
class FleetPaysShare:
    """The fleet pays ``percent`` (Decimal, 0..100) of every line."""

    percent: Decimal

    def __post_init__(self) -> None:
        p = _dec(self.percent, "percent")
        if p > _HUNDRED:
            raise ValueError(f"percent must be within 0..100, got {p}")


@dataclass(frozen=True)
class FleetPaysUpToAmount:
    """The fleet pays up to ``amount`` (Decimal >= 0, in ``currency``) of the total.

    The cap applies to the total incl. VAT; the fleet's share min(amount, total) / total
    is applied to every line (excl. VAT amounts follow the same share).
    """

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        _dec(self.amount, "amount")
        check_currency(self.currency)


#: A split-billing rule. The remainder of every line goes to the driver.
SplitRule = FleetPaysUpToKwh | FleetPaysShare | FleetPaysUpToAmount


@dataclass(frozen=True)
class InvoiceLine:
    """One line of an invoice: ``payer`` owes ``excl_vat`` / ``incl_vat`` for ``kind``.

    ``kind`` is the CDR line type (ENERGY, TIME, PARKING_TIME, FLAT, PRICE_LIMIT).
    """

    payer: Payer
    kind: str
    excl_vat: Decimal
    incl_vat: Decimal


@dataclass(frozen=True)
class Invoice:
    """Invoice of one session, split between the driver and the fleet account.

    ``sum(lines) == total`` per payer and overall, excl. and incl. VAT, exactly; the
    overall totals equal the CDR's.
    """

    session_id: str
    currency: str
    fleet_share: Decimal
    lines: tuple[InvoiceLine, ...]
    total_excl_vat: Decimal
    total_incl_vat: Decimal

    def total(self, payer: Payer, *, incl_vat: bool = True) -> Decimal:
        """What ``payer`` owes in ``currency`` (incl. VAT unless ``incl_vat=False``)."""
        return sum((x.incl_vat if incl_vat else x.excl_vat
                    for x in self.lines if x.payer is payer), Decimal(0))

    @property
    def driver_total(self) -> Decimal:
        """What the driver owes, incl. VAT."""
        return self.total(Payer.DRIVER)

    @property
    def fleet_total(self) -> Decimal:
        """What the fleet account owes, incl. VAT."""
        return self.total(Payer.FLEET)


def _fleet_share(cdr: Cdr, rule: SplitRule) -> Decimal:
    """Fraction 0..1 of every line paid by the fleet (exact, 60 digits)."""
    with localcontext(EXACT):
        if isinstance(rule, FleetPaysShare):
            return rule.percent / _HUNDRED
        if isinstance(rule, FleetPaysUpToKwh):
            e = cdr.energy_kwh
            return Decimal(1) if e <= rule.kwh else rule.kwh / e
        if rule.currency != cdr.currency:
            raise ValueError(f"currency mismatch: rule in {rule.currency}, "
                             f"CDR in {cdr.currency}")
        t = cdr.total_incl_vat
        return Decimal(1) if t <= rule.amount else rule.amount / t


def _split_amounts(amounts: Sequence[Decimal], share: Decimal,
                   currency: str) -> list[Decimal]:
    """Fleet part of each (already rounded) line: share x line, total rounded once."""
    with localcontext(EXACT):
        exact = [share * a for a in amounts]
        total = round_money(sum(exact, Decimal(0)), currency)
    return allocate(exact, total, currency)


def split(cdr: Cdr, rule: SplitRule) -> Invoice:
    """Split the CDR's cost between the fleet account and the driver under ``rule``.

    For every CDR line the fleet's exact part is ``share * line`` (on the rounded line);
    the fleet total is the sum rounded once half up, allocated to the lines by largest
    remainder; the driver's part is ``line - fleet part``. So driver + fleet == line for
    every line and == the CDR total, excl. and incl. VAT, to the minor unit. Lines where
    both parts are zero are left out; with share 0 or 1 the other payer has no lines.

    Raises:
        ValueError: when a :class:`FleetPaysUpToAmount` is in another currency.
    """
    share = _fleet_share(cdr, rule)
    cur = cdr.currency
    fleet_ex = _split_amounts([x.excl_vat for x in cdr.lines], share, cur)
    fleet_in = _split_amounts([x.incl_vat for x in cdr.lines], share, cur)
    out: list[InvoiceLine] = []
    for x, fe, fi in zip(cdr.lines, fleet_ex, fleet_in, strict=True):
        if fe or fi:
            out.append(InvoiceLine(Payer.FLEET, x.type, fe, fi))
        de, di = x.excl_vat - fe, x.incl_vat - fi
        if de or di:
            out.append(InvoiceLine(Payer.DRIVER, x.type, de, di))
    inv = Invoice(cdr.session_id, cur, share, tuple(out), cdr.total_excl_vat,
                  cdr.total_incl_vat)
    _check_reconciles(inv)
    return inv


def _check_reconciles(inv: Invoice) -> None:
    ex = inv.total(Payer.DRIVER, incl_vat=False) + inv.total(Payer.FLEET, incl_vat=False)
    inc = inv.driver_total + inv.fleet_total
    if (ex, inc) != (inv.total_excl_vat, inv.total_incl_vat):  # pragma: no cover
        raise AssertionError(f"invoice {inv.session_id} does not reconcile")


@dataclass(frozen=True)
class Reimbursement:
    """Home-charging reimbursement: the fleet account pays the driver ``amount``.

    Attributes:
        session_id: the home session.
        currency: ISO 4217 code.
        energy_kwh: energy reimbursed (kWh, the CDR's, to 1 Wh).
        price_per_kwh: the driver's home tariff (currency per kWh, all-in: energy, network
            and taxes as the driver pays them; no VAT is added or split out here).
        amount: ``round_money(price_per_kwh * energy_kwh)``, rounded once, half up.
        payer: always the fleet account; payee: always the driver.
    """

    session_id: str
    currency: str
    energy_kwh: Decimal
    price_per_kwh: Decimal
    amount: Decimal
    payer: Payer = Payer.FLEET
    payee: Payer = Payer.DRIVER


def reimburse_home(cdr: Cdr, home_price_per_kwh: Decimal, currency: str, *,
                   require_verified: bool = True) -> Reimbursement:
    """Reimburse a session at home to the driver at the home tariff, charged to the fleet.

    ``amount = round_money(home_price_per_kwh * cdr.energy_kwh, currency)``: one rounding.

    Fail safe: by default only a session whose physics audit is ``verified`` is
    reimbursed (a drifting home meter must not pay out); pass ``require_verified=False``
    to override.

    Raises:
        TypeError: when the price is a float (or not a Decimal/int).
        ValueError: session not at home, negative price, currency different from the
            CDR's, or audit status not verified when required.
    """
    price = _dec(home_price_per_kwh, "home_price_per_kwh")
    check_currency(currency)
    if currency != cdr.currency:
        raise ValueError(f"currency mismatch: home tariff in {currency}, CDR in {cdr.currency}")
    if not cdr.at_home:
        raise ValueError(f"session {cdr.session_id} is not a session at home")
    if require_verified and cdr.audit_status is not AuditStatus.VERIFIED:
        raise ValueError(f"session {cdr.session_id} audit is {cdr.audit_status.value}, "
                         "not verified: not reimbursed")
    with localcontext(EXACT):
        amount = round_money(price * cdr.energy_kwh, currency)
    return Reimbursement(cdr.session_id, currency, cdr.energy_kwh, price, amount)


__all__: Sequence[str] = (
    "WH", "Cdr", "FleetPaysShare", "FleetPaysUpToAmount", "FleetPaysUpToKwh", "Invoice",
    "InvoiceLine", "Payer", "Reimbursement", "SplitRule", "reimburse_home", "split",
)
