"""OCPI 2.2.1 tariffs: the Tariff object (mod_tariffs) and a pricing engine in Decimal.

Source: OCPI 2.2.1, module "Tariffs" (``mod_tariffs.asciidoc`` of github.com/ocpi/ocpi):
Tariff, TariffElement, PriceComponent, TariffRestrictions, Price; the CDR module for the
ChargingPeriod shape. The rules implemented, the choices made where the text is ambiguous
and the rounding points are listed in ``controllers/billing/tariffs/README.md``.

Units: ENERGY volumes in kWh (``step_size`` in Wh), TIME and PARKING_TIME volumes in hours
(``step_size`` in seconds), power in kW, current in A (sum over phases), prices per unit
excl. VAT, VAT in percent. Money is ``Decimal`` in the tariff's ISO 4217 currency.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, localcontext
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controllers.billing.tariffs.money import EXACT, allocate, check_currency, round_money

_HHMM = r"^([0-1][0-9]|2[0-3]):[0-5][0-9]$"
_DATE = r"^([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
#: Quantum of the "exact" amounts of a SessionCost (money units): 1e-18.
PRECISION = Decimal("1e-18")
#: Resolution of a block's volume (Wh or s) before rounding up to step_size: 1e-9.
STEP_RESOLUTION = Decimal("1e-9")
NonNegDecimal = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class TariffDimensionType(StrEnum):
    """What a PriceComponent prices (OCPI 2.2.1 TariffDimensionType)."""

    ENERGY = "ENERGY"
    FLAT = "FLAT"
    PARKING_TIME = "PARKING_TIME"
    TIME = "TIME"


class DayOfWeek(StrEnum):
    """OCPI 2.2.1 DayOfWeek; ``list(DayOfWeek)[d.weekday()]`` is the day of date ``d``."""

    MONDAY = "MONDAY"
    TUESDAY = "TUESDAY"
    WEDNESDAY = "WEDNESDAY"
    THURSDAY = "THURSDAY"
    FRIDAY = "FRIDAY"
    SATURDAY = "SATURDAY"
    SUNDAY = "SUNDAY"


class ReservationRestrictionType(StrEnum):
    """OCPI 2.2.1 ReservationRestrictionType."""

    RESERVATION = "RESERVATION"
    RESERVATION_EXPIRES = "RESERVATION_EXPIRES"


class TariffType(StrEnum):
    """OCPI 2.2.1 TariffType."""

    AD_HOC_PAYMENT = "AD_HOC_PAYMENT"
    PROFILE_CHEAP = "PROFILE_CHEAP"
    PROFILE_FAST = "PROFILE_FAST"
    PROFILE_GREEN = "PROFILE_GREEN"
    REGULAR = "REGULAR"


class _Model(BaseModel):
    # Unknown fields (e.g. the pre-2.2 ``tax_included`` of some examples) are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")


class PriceComponent(_Model):
    """Price of one dimension: ``price`` per unit excl. VAT, ``vat`` in percent.

    ``vat`` omitted means "no VAT applicable" (incl. VAT = excl. VAT), which OCPI
    distinguishes from 0 %. ``step_size`` is in Wh (ENERGY) or seconds (TIME,
    PARKING_TIME); it is ignored for FLAT.
    """

    type: TariffDimensionType
    price: NonNegDecimal
    vat: Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    step_size: Annotated[int, Field(ge=1)]


class TariffRestrictions(_Model):
    """When a TariffElement is active (OCPI 2.2.1 TariffRestrictions).

    Times and dates are local to the Location's time zone. Every ``min_*`` bound is
    inclusive and every ``max_*`` bound exclusive (OCPI states it for durations; applied
    to all for consistency). ``start_time`` later than ``end_time`` wraps midnight.
    """

    start_time: Annotated[str, Field(pattern=_HHMM)] | None = None
    end_time: Annotated[str, Field(pattern=_HHMM)] | None = None
    start_date: Annotated[str, Field(pattern=_DATE)] | None = None
    end_date: Annotated[str, Field(pattern=_DATE)] | None = None
    min_kwh: NonNegDecimal | None = None
    max_kwh: NonNegDecimal | None = None
    min_current: NonNegDecimal | None = None
    max_current: NonNegDecimal | None = None
    min_power: NonNegDecimal | None = None
    max_power: NonNegDecimal | None = None
    min_duration: Annotated[int, Field(ge=0)] | None = None
    max_duration: Annotated[int, Field(ge=0)] | None = None
    day_of_week: list[DayOfWeek] = Field(default_factory=list)
    reservation: ReservationRestrictionType | None = None

    @field_validator("start_date", "end_date")
    @classmethod
    def _real_date(cls, v: str | None) -> str | None:
        if v is not None:
            dt.date.fromisoformat(v)  # raises ValueError for 2019-02-30
        return v


class TariffElement(_Model):
    """One element: price components and the restrictions under which they apply."""

    price_components: Annotated[list[PriceComponent], Field(min_length=1)]
    restrictions: TariffRestrictions | None = None


class Price(_Model):
    """An amount excl. VAT and, optionally, incl. VAT (OCPI 2.2.1 Price)."""

    excl_vat: NonNegDecimal
    incl_vat: NonNegDecimal | None = None


class DisplayText(_Model):
    """OCPI DisplayText: a text in a language (ISO 639-1)."""

    language: str
    text: str


class Tariff(_Model):
    """OCPI 2.2.1 Tariff object. Parse with :meth:`from_json` or ``model_validate``.

    Raises (on construction):
        pydantic.ValidationError: with the path of the bad field and the reason.
    """

    country_code: Annotated[str, Field(min_length=2, max_length=2)] | None = None
    party_id: Annotated[str, Field(min_length=3, max_length=3)] | None = None
    id: Annotated[str, Field(max_length=36)]
    currency: str
    type: TariffType | None = None
    tariff_alt_text: list[DisplayText] = Field(default_factory=list)
    tariff_alt_url: str | None = None
    min_price: Price | None = None
    max_price: Price | None = None
    elements: Annotated[list[TariffElement], Field(min_length=1)]
    start_date_time: dt.datetime | None = None
    end_date_time: dt.datetime | None = None
    energy_mix: dict[str, Any] | None = None
    last_updated: dt.datetime | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return check_currency(v)

    @classmethod
    def from_json(cls, text: str | bytes) -> Tariff:
        """Parse an OCPI Tariff JSON document; numbers become exact ``Decimal``."""
        return cls.model_validate_json(text)


class ChargingPeriod(_Model):
    """One charging period (OCPI CDR ChargingPeriod, flattened).

    ``start_date_time`` is timezone-aware; the period ends at the next period's start or at
    the session end. Volumes are spread uniformly over the period when the engine has to
    split it at a restriction boundary. ``power_kw``/``current_a`` are the period's
    charging power and current (sum over phases); when ``power_kw`` is missing it is taken
    as ``energy_kwh / time_h`` (0 when ``time_h`` is 0); when ``current_a`` is missing,
    current restrictions do not match.
    """

    start_date_time: dt.datetime
    energy_kwh: NonNegDecimal = Decimal(0)
    time_h: NonNegDecimal = Decimal(0)
    parking_time_h: NonNegDecimal = Decimal(0)
    power_kw: NonNegDecimal | None = None
    current_a: NonNegDecimal | None = None

    @field_validator("start_date_time")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("start_date_time must be timezone-aware (UTC)")
        return v


class ChargingSession(_Model):
    """A session to price: periods in order, its end, and the Location's IANA time zone."""

    start_date_time: dt.datetime
    end_date_time: dt.datetime
    time_zone: str
    charging_periods: Annotated[list[ChargingPeriod], Field(min_length=1)]

    @field_validator("start_date_time", "end_date_time")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("datetimes must be timezone-aware (UTC)")
        return v

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _ordered(self) -> ChargingSession:
        starts = [p.start_date_time for p in self.charging_periods]
        if starts[0] < self.start_date_time:
            raise ValueError("the first charging period starts before the session")
        if any(b <= a for a, b in pairwise(starts)):
            raise ValueError("charging periods must start at strictly increasing times")
        if self.end_date_time <= starts[-1]:
            raise ValueError("end_date_time must be after the start of the last period")
        return self


@dataclass(frozen=True)
class CostLine:
    """Cost of one dimension type over the session.

    ``volume`` is what was consumed, ``billed_volume`` what was billed after step_size
    rounding (kWh for ENERGY, hours for TIME/PARKING_TIME, 1 for a FLAT fee, 0 for the
    ``PRICE_LIMIT`` line that brings the total to min_price/max_price). ``*_exact`` are
    unrounded; ``excl_vat``/``incl_vat`` are rounded so that the lines sum to the total.
    """

    type: str
    volume: Decimal
    billed_volume: Decimal
    excl_vat_exact: Decimal
    incl_vat_exact: Decimal
    excl_vat: Decimal = Decimal(0)
    incl_vat: Decimal = Decimal(0)


@dataclass(frozen=True)
class SessionCost:
    """CDR-like result: lines per dimension type and the total cost, in ``currency``.

    ``total_excl_vat == sum(line.excl_vat)`` and ``total_incl_vat == sum(line.incl_vat)``
    exactly; the totals are the exact sums rounded once (half up) to the minor unit.
    """

    currency: str
    lines: tuple[CostLine, ...]
    total_excl_vat: Decimal
    total_incl_vat: Decimal
    total_excl_vat_exact: Decimal
    total_incl_vat_exact: Decimal

    def line(self, type_: str) -> CostLine | None:
        """The line of ``type_`` ("ENERGY", "TIME", ...), or None if nothing was billed."""
        return next((x for x in self.lines if x.type == type_), None)


@dataclass
class _Slice:
    start: dt.datetime
    energy: Decimal
    time_h: Decimal
    parking_h: Decimal
    power: Decimal | None
    current: Decimal | None
    e_before: Decimal  # kWh charged in the session before this slice


@dataclass
class _Block:
    component: PriceComponent | None = None
    volume: Decimal = Decimal(0)


@dataclass
class _Acc:
    volume: Decimal = Decimal(0)
    billed: Decimal = Decimal(0)
    excl: Decimal = Decimal(0)
    incl: Decimal = Decimal(0)
    block: _Block = field(default_factory=_Block)


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _matches(r: TariffRestrictions | None, s: _Slice, session_start: dt.datetime,
             tz: ZoneInfo) -> bool:
    """All restrictions of ``r`` hold at the start of slice ``s``."""
    if r is None:
        return True
    if r.reservation is not None:
        return False  # reservation elements never price a charging session
    local = s.start.astimezone(tz)
    t = local.hour * 60 + local.minute + Decimal(local.second * 10**6 + local.microsecond) \
        / Decimal(60 * 10**6)
    if r.start_time is not None and r.end_time is not None:
        a, b = _minutes(r.start_time), _minutes(r.end_time)
        if a < b and not a <= t < b:
            return False
        if a > b and not (t >= a or t < b):
            return False
    elif r.start_time is not None and t < _minutes(r.start_time):
        return False
    elif r.end_time is not None and t >= _minutes(r.end_time):
        return False
    day = local.date()
    if r.start_date is not None and day < dt.date.fromisoformat(r.start_date):
        return False
    if r.end_date is not None and day >= dt.date.fromisoformat(r.end_date):
        return False
    if r.day_of_week and list(DayOfWeek)[day.weekday()] not in r.day_of_week:
        return False
    if r.min_kwh is not None and s.e_before < r.min_kwh:
        return False
    if r.max_kwh is not None and s.e_before >= r.max_kwh:
        return False
    dur = Decimal((s.start - session_start) // dt.timedelta(microseconds=1)) / 10**6
    if r.min_duration is not None and dur < r.min_duration:
        return False
    if r.max_duration is not None and dur >= r.max_duration:
        return False
    power = s.power
    if power is None:
        power = EXACT.divide(s.energy, s.time_h) if s.time_h > 0 else Decimal(0)
    if r.min_power is not None and power < r.min_power:
        return False
    if r.max_power is not None and power >= r.max_power:
        return False
    if r.min_current is not None and (s.current is None or s.current < r.min_current):
        return False
    return not (r.max_current is not None
                and (s.current is None or s.current >= r.max_current))


def _boundaries(tariff: Tariff, session: ChargingSession, start: dt.datetime,
                end: dt.datetime, tz: ZoneInfo) -> list[dt.datetime]:
    """Instants strictly inside (start, end) where a time restriction may change value."""
    rs = [e.restrictions for e in tariff.elements if e.restrictions is not None]
    marks = {0} | {_minutes(x) for r in rs for x in (r.start_time, r.end_time) if x}
    out: set[dt.datetime] = set()
    d0 = start.astimezone(tz).date() - dt.timedelta(days=1)
    d1 = end.astimezone(tz).date() + dt.timedelta(days=1)
    day = d0
    while day <= d1:
        for m in marks:
            naive = dt.datetime.combine(day, dt.time(m // 60, m % 60))
            for fold in (0, 1):  # both instants of a local time repeated at DST's end
                out.add(naive.replace(tzinfo=tz, fold=fold).astimezone(dt.UTC))
        day += dt.timedelta(days=1)
    # UTC-offset changes (DST), found on the quarter-hour grid where they happen
    q = dt.timedelta(minutes=15)
    t = start - (start - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) % q
    while t < end:
        if t.astimezone(tz).utcoffset() != (t + q).astimezone(tz).utcoffset():
            out.add(t + q)
        t += q
    for r in rs:
        for secs in (r.min_duration, r.max_duration):
            if secs is not None:
                out.add(session.start_date_time + dt.timedelta(seconds=secs))
    return sorted(b for b in out if start < b < end)


def _slices(tariff: Tariff, session: ChargingSession, tz: ZoneInfo) -> list[_Slice]:
    """Split the periods at every restriction boundary, volumes spread uniformly."""
    kwh_marks = sorted({k for e in tariff.elements if e.restrictions is not None
                        for k in (e.restrictions.min_kwh, e.restrictions.max_kwh)
                        if k is not None})
    periods = session.charging_periods
    ends = [p.start_date_time for p in periods[1:]] + [session.end_date_time]
    out: list[_Slice] = []
    e_before = Decimal(0)
    for p, end in zip(periods, ends, strict=True):
        us = Decimal((end - p.start_date_time) // dt.timedelta(microseconds=1))
        # breakpoints as (fraction of the period, instant, energy into the period)
        cuts: dict[Decimal, tuple[dt.datetime, Decimal]] = {}
        for b in _boundaries(tariff, session, p.start_date_time, end, tz):
            f = EXACT.divide(Decimal((b - p.start_date_time) // dt.timedelta(microseconds=1)),
                             us)
            cuts[f] = (b, EXACT.multiply(p.energy_kwh, f))
        for k in kwh_marks:
            if e_before < k < e_before + p.energy_kwh:
                f = EXACT.divide(k - e_before, p.energy_kwh)
                at = p.start_date_time + dt.timedelta(microseconds=int(f * us))
                cuts[f] = (at, k - e_before)
        fracs = [Decimal(0), *sorted(cuts), Decimal(1)]
        starts = [p.start_date_time] + [cuts[f][0] for f in fracs[1:-1]]
        cum_e = [Decimal(0)] + [cuts[f][1] for f in fracs[1:-1]] + [p.energy_kwh]
        done_t = done_p = Decimal(0)
        for i in range(len(fracs) - 1):
            last = i == len(fracs) - 2
            share = fracs[i + 1] - fracs[i]
            th = p.time_h - done_t if last else EXACT.multiply(p.time_h, share)
            ph = p.parking_time_h - done_p if last else EXACT.multiply(p.parking_time_h, share)
            done_t += th
            done_p += ph
            out.append(_Slice(starts[i], cum_e[i + 1] - cum_e[i], th, ph, p.power_kw,
                              p.current_a, e_before + cum_e[i]))
        e_before += p.energy_kwh
    return out


def _step_quantum(type_: TariffDimensionType, step_size: int) -> Decimal:
    """Step size in the volume's unit: Wh -> kWh, s -> h (exact up to 60 digits)."""
    if type_ is TariffDimensionType.ENERGY:
        return Decimal(step_size) / 1000
    return EXACT.divide(Decimal(step_size), Decimal(3600))


def _close(acc: _Acc, type_: TariffDimensionType) -> None:
    """End a block: bill the rounding-up to step_size at the block's last component."""
    comp = acc.block.component
    if comp is not None and acc.block.volume > 0:
        unit = Decimal(1000) if type_ is TariffDimensionType.ENERGY else Decimal(3600)
        # Wh or s, resolved to 1e-9 so that 60-digit noise of split volumes cannot add a step
        small = EXACT.multiply(acc.block.volume, unit).quantize(STEP_RESOLUTION)
        steps = EXACT.divide(small, Decimal(comp.step_size)).to_integral_value(
            rounding=ROUND_CEILING)
        extra = EXACT.divide(steps * comp.step_size, unit) - acc.block.volume
        if extra != 0:
            cost = EXACT.multiply(extra, comp.price)
            acc.billed += extra
            acc.excl += cost
            acc.incl += _with_vat(cost, comp.vat)
    acc.block = _Block()


def _with_vat(amount: Decimal, vat: Decimal | None) -> Decimal:
    if vat is None:
        return amount
    return EXACT.multiply(amount, EXACT.add(Decimal(1), EXACT.divide(vat, Decimal(100))))


def _clamp(value: Decimal, lo: Decimal | None, hi: Decimal | None) -> Decimal:
    if hi is not None and value > hi:
        value = hi
    if lo is not None and value < lo:
        value = lo
    return value


def price_session(tariff: Tariff, session: ChargingSession) -> SessionCost:
    """Price ``session`` under ``tariff`` following OCPI 2.2.1 mod_tariffs.

    Per dimension type and per (split) period, the first TariffElement that has a
    component of that type and whose restrictions all match at the period's start is
    active; with none, the dimension is free in that period. FLAT is billed once, from
    the first period where a FLAT component is active. Step size: per dimension type the
    consecutive periods billed under some component form a block; a block ends when a
    period with volume finds no active component, or at the session end; the block's
    volume is rounded up to the ``step_size`` of its last component and the extra volume
    is billed at that component's price. VAT is applied per component, exactly. Then
    ``min_price``/``max_price`` clamp the exact totals (excl. and incl. VAT separately,
    each only where given), the totals are rounded half up to the minor unit once, and
    the lines are allocated so that they sum to the totals (largest remainder).

    Tariff ``start_date_time``/``end_date_time`` are not checked: choosing the tariff that
    applies is the caller's job. Elements with a ``reservation`` restriction never match.

    Raises:
        ValueError: for an unknown time zone (already rejected by ChargingSession).
    """
    with localcontext(EXACT):
        return _price(tariff, session)


def _price(tariff: Tariff, session: ChargingSession) -> SessionCost:
    tz = ZoneInfo(session.time_zone)
    slices = _slices(tariff, session, tz)
    dims = (TariffDimensionType.ENERGY, TariffDimensionType.TIME,
            TariffDimensionType.PARKING_TIME)
    accs = {d: _Acc() for d in dims}
    flat: PriceComponent | None = None
    for s in slices:
        active: dict[TariffDimensionType, PriceComponent] = {}
        for el in tariff.elements:
            if not _matches(el.restrictions, s, session.start_date_time, tz):
                continue
            for c in el.price_components:
                active.setdefault(c.type, c)
        if flat is None:
            flat = active.get(TariffDimensionType.FLAT)
        for d, vol in zip(dims, (s.energy, s.time_h, s.parking_h), strict=True):
            if vol == 0:
                continue
            acc = accs[d]
            acc.volume += vol
            comp = active.get(d)
            if comp is None:
                _close(acc, d)
                continue
            cost = EXACT.multiply(vol, comp.price)
            acc.billed += vol
            acc.excl += cost
            acc.incl += _with_vat(cost, comp.vat)
            acc.block.component = comp
            acc.block.volume += vol
    lines: list[CostLine] = []
    if flat is not None:
        lines.append(CostLine("FLAT", Decimal(1), Decimal(1), flat.price,
                              _with_vat(flat.price, flat.vat)))
    for d in dims:
        acc = accs[d]
        _close(acc, d)
        if acc.volume > 0:
            lines.append(CostLine(d.value, acc.volume, acc.billed, acc.excl, acc.incl))
    return _finish(tariff, lines)


def _finish(tariff: Tariff, lines: list[CostLine]) -> SessionCost:
    """Apply min/max price, round the totals once and allocate the lines.

    Line amounts are first quantized to :data:`PRECISION` (ROUND_HALF_EVEN): the 60-digit
    arithmetic of uniform splits and of seconds-to-hours conversions leaves noise around
    1e-58 that must not decide a half-cent.
    """
    lines = [CostLine(x.type, x.volume, x.billed_volume, x.excl_vat_exact.quantize(PRECISION),
                      x.incl_vat_exact.quantize(PRECISION)) for x in lines]
    excl = sum((x.excl_vat_exact for x in lines), Decimal(0))
    incl = sum((x.incl_vat_exact for x in lines), Decimal(0))
    lo, hi = tariff.min_price, tariff.max_price
    excl_c = _clamp(excl, lo.excl_vat if lo else None, hi.excl_vat if hi else None)
    incl_c = _clamp(incl, lo.incl_vat if lo else None, hi.incl_vat if hi else None)
    if (excl_c, incl_c) != (excl, incl):
        lines.append(CostLine("PRICE_LIMIT", Decimal(0), Decimal(0), excl_c - excl,
                              incl_c - incl))
    cur = tariff.currency
    tot_ex, tot_in = round_money(excl_c, cur), round_money(incl_c, cur)
    ex = allocate([x.excl_vat_exact for x in lines], tot_ex, cur)
    inc = allocate([x.incl_vat_exact for x in lines], tot_in, cur)
    done = tuple(
        CostLine(x.type, x.volume, x.billed_volume, x.excl_vat_exact, x.incl_vat_exact, a, b)
        for x, a, b in zip(lines, ex, inc, strict=True))
    return SessionCost(cur, done, tot_ex, tot_in, excl_c, incl_c)


def session_from_cdr_periods(start_date_time: dt.datetime, end_date_time: dt.datetime,
                             time_zone: str,
                             charging_periods: Iterable[dict[str, Any]]) -> ChargingSession:
    """Build a :class:`ChargingSession` from OCPI CDR ``charging_periods`` JSON objects.

    Reads the CdrDimension types ENERGY (kWh), TIME (h), PARKING_TIME (h), and for the
    restrictions MAX_POWER or POWER (kW) and MAX_CURRENT or CURRENT (A); other dimension
    types are ignored. Volumes are converted via ``str`` so JSON floats stay decimal.

    Raises:
        pydantic.ValidationError: for malformed periods or session.
    """
    periods: list[dict[str, Any]] = []
    for cp in charging_periods:
        dim = {d["type"]: Decimal(str(d["volume"])) for d in cp.get("dimensions", [])}
        periods.append({
            "start_date_time": cp["start_date_time"],
            "energy_kwh": dim.get("ENERGY", Decimal(0)),
            "time_h": dim.get("TIME", Decimal(0)),
            "parking_time_h": dim.get("PARKING_TIME", Decimal(0)),
            "power_kw": dim.get("MAX_POWER", dim.get("POWER")),
            "current_a": dim.get("MAX_CURRENT", dim.get("CURRENT")),
        })
    return ChargingSession.model_validate({
        "start_date_time": start_date_time, "end_date_time": end_date_time,
        "time_zone": time_zone, "charging_periods": periods})


__all__: Sequence[str] = (
    "ChargingPeriod", "ChargingSession", "CostLine", "DayOfWeek", "DisplayText", "Price",
    "PriceComponent", "ReservationRestrictionType", "SessionCost", "Tariff",
    "TariffDimensionType", "TariffElement", "TariffRestrictions", "TariffType",
    "price_session", "session_from_cdr_periods",
)
