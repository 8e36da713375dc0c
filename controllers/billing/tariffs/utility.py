"""Utility tariffs in Decimal: TOU energy, demand charges, dynamic price pass-through.

The tariff follows the OpenEI Utility Rate Database (URDB) layout: ``energyratestructure``
(periods, each a list of tiers ``{rate, max, adj}``), ``energyweekdayschedule`` /
``energyweekendschedule`` (12 months x 24 hours of period indices, 0-based),
``flatdemandstructure`` + ``flatdemandmonths``, ``demandratestructure`` +
``demandweekdayschedule`` / ``demandweekendschedule``, ``demandwindow`` (minutes),
``fixedchargefirstmeter`` + ``fixedchargeunits`` (source: OpenEI URDB API documentation,
https://openei.org/services/doc/rest/util_rates). Dynamic pass-through adds a wholesale
price series (currency/MWh) plus an adder per kWh and a percentage markup.

Units: energy kWh, demand kW (mean over the demand window), rates currency/kWh and
currency/kW, wholesale prices currency/MWh. Money is ``Decimal``; the one rounding point is
the line item (see :func:`bill`); totals are sums of rounded lines.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controllers.billing.tariffs.money import EXACT, check_currency, round_money

Schedule = list[list[int]]
Kind = Literal["fixed", "energy", "dynamic_energy", "flat_demand", "tou_demand"]
_ZERO = Decimal(0)


class Tier(BaseModel):
    """One tier of a URDB period: ``rate`` + ``adj`` per unit up to ``max`` units a month.

    ``max`` is None for the last (open) tier. For energy the unit is kWh of the month's
    consumption, for demand kW of the month's peak.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    rate: Annotated[Decimal, Field(allow_inf_nan=False)]
    adj: Annotated[Decimal, Field(allow_inf_nan=False)] = _ZERO
    max: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None

    @property
    def price(self) -> Decimal:
        """Effective rate: ``rate + adj``."""
        return self.rate + self.adj


Period = Annotated[list[Tier], Field(min_length=1)]


class DynamicPricing(BaseModel):
    """Pass-through of a wholesale price: (price/1000 + adder_per_kwh) x (1 + markup/100)."""

    model_config = ConfigDict(frozen=True)

    adder_per_kwh: Annotated[Decimal, Field(allow_inf_nan=False)] = _ZERO
    markup_percent: Annotated[Decimal, Field(ge=-100, allow_inf_nan=False)] = _ZERO


class UtilityTariff(BaseModel):
    """A utility tariff; build from a URDB record with :meth:`from_urdb`.

    Raises (on construction):
        pydantic.ValidationError: schedules not 12 x 24, period index out of range, tiers
        not increasing or with an open tier before the last, unknown time zone, bad
        currency.
    """

    model_config = ConfigDict(frozen=True)

    name: str = ""
    currency: str = "USD"
    time_zone: str
    energy_rate_structure: list[Period] = Field(default_factory=list)
    energy_weekday_schedule: Schedule | None = None
    energy_weekend_schedule: Schedule | None = None
    fixed_charge: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] = _ZERO
    fixed_charge_units: Literal["$/month", "$/day"] = "$/month"
    flat_demand_structure: list[Period] = Field(default_factory=list)
    flat_demand_months: list[int] | None = None
    demand_rate_structure: list[Period] = Field(default_factory=list)
    demand_weekday_schedule: Schedule | None = None
    demand_weekend_schedule: Schedule | None = None
    demand_window_min: Annotated[int, Field(gt=0)] = 15
    dynamic: DynamicPricing | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return check_currency(v)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r}") from exc
        return v

    @field_validator("energy_rate_structure", "flat_demand_structure", "demand_rate_structure")
    @classmethod
    def _tiers(cls, periods: list[list[Tier]]) -> list[list[Tier]]:
        for p, tiers in enumerate(periods):
            for t, tier in enumerate(tiers[:-1]):
                if tier.max is None:
                    raise ValueError(f"period {p} tier {t}: only the last tier may be open")
                nxt = tiers[t + 1].max
                if nxt is not None and nxt <= tier.max:
                    raise ValueError(f"period {p} tier {t + 1}: max must increase")
        return periods

    @model_validator(mode="after")
    def _schedules(self) -> UtilityTariff:
        pairs = [("energy_weekday_schedule", self.energy_weekday_schedule,
                  self.energy_rate_structure),
                 ("energy_weekend_schedule", self.energy_weekend_schedule,
                  self.energy_rate_structure),
                 ("demand_weekday_schedule", self.demand_weekday_schedule,
                  self.demand_rate_structure),
                 ("demand_weekend_schedule", self.demand_weekend_schedule,
                  self.demand_rate_structure)]
        for name, sched, structure in pairs:
            if sched is None:
                if structure:
                    raise ValueError(f"{name} is required with its rate structure")
                continue
            if len(sched) != 12 or any(len(row) != 24 for row in sched):
                raise ValueError(f"{name} must be 12 months x 24 hours")
            bad = {i for row in sched for i in row if not 0 <= i < len(structure)}
            if bad:
                raise ValueError(f"{name}: period indices {sorted(bad)} out of range "
                                 f"(structure has {len(structure)} periods)")
        if self.flat_demand_structure:
            months = self.flat_demand_months
            if months is None or len(months) != 12:
                raise ValueError("flat_demand_months must list 12 period indices")
            bad = {i for i in months if not 0 <= i < len(self.flat_demand_structure)}
            if bad:
                raise ValueError(f"flat_demand_months: period indices {sorted(bad)} out of "
                                 "range")
        return self

    @classmethod
    def from_urdb(cls, doc: Mapping[str, Any], time_zone: str, currency: str = "USD",
                  dynamic: DynamicPricing | None = None) -> UtilityTariff:
        """Build from a URDB rate record (API v7/v8 field names).

        Numbers are converted with ``Decimal(str(x))`` so JSON floats keep their decimal
        digits. ``fixedmonthlycharge`` (older records) is used when
        ``fixedchargefirstmeter`` is absent. URDB carries no IANA zone: pass ``time_zone``.

        Raises:
            pydantic.ValidationError: for a malformed record.
        """
        def tiers(structure: Any) -> Any:
            if structure is None:
                return []
            return [[{k: (None if v is None else Decimal(str(v)))
                      for k, v in tier.items() if k in ("rate", "adj", "max")}
                     for tier in period] for period in structure]

        fixed = doc.get("fixedchargefirstmeter", doc.get("fixedmonthlycharge", 0))
        return cls.model_validate({
            "name": doc.get("name", ""),
            "currency": currency,
            "time_zone": time_zone,
            "energy_rate_structure": tiers(doc.get("energyratestructure")),
            "energy_weekday_schedule": doc.get("energyweekdayschedule"),
            "energy_weekend_schedule": doc.get("energyweekendschedule"),
            "fixed_charge": Decimal(str(fixed or 0)),
            "fixed_charge_units": doc.get("fixedchargeunits", "$/month"),
            "flat_demand_structure": tiers(doc.get("flatdemandstructure")),
            "flat_demand_months": doc.get("flatdemandmonths"),
            "demand_rate_structure": tiers(doc.get("demandratestructure")),
            "demand_weekday_schedule": doc.get("demandweekdayschedule"),
            "demand_weekend_schedule": doc.get("demandweekendschedule"),
            "demand_window_min": int(doc.get("demandwindow", 15) or 15),
            "dynamic": dynamic,
        })


@dataclass(frozen=True)
class LineItem:
    """One bill line: ``quantity`` (``unit``) x ``rate`` = ``amount_exact``.

    ``amount`` is ``amount_exact`` rounded half up to the minor unit: the only rounding.
    For tiered demand, ``rate`` is the tier's rate and ``quantity`` the kW in the tier.
    """

    month: str
    kind: Kind
    description: str
    quantity: Decimal
    unit: str
    rate: Decimal
    amount_exact: Decimal
    amount: Decimal


@dataclass(frozen=True)
class MonthlyBill:
    """Lines of one local calendar month ("YYYY-MM"); ``total == sum(line.amount)``."""

    month: str
    lines: tuple[LineItem, ...]
    total: Decimal
    energy_kwh: Decimal
    peak_kw: Decimal


@dataclass(frozen=True)
class Bill:
    """Bill of a metered series; ``total == sum(month.total)`` exactly."""

    currency: str
    months: tuple[MonthlyBill, ...]
    total: Decimal


def _dec(x: Any, what: str) -> Decimal:
    d = Decimal(str(x))
    if not d.is_finite():
        raise ValueError(f"{what} has a non-finite value {x!r}")
    return d


def _check_index(s: pd.Series, what: str) -> pd.DatetimeIndex:
    idx = s.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise ValueError(f"{what} needs a timezone-aware (UTC) DatetimeIndex")
    if str(idx.tz) != "UTC":
        raise ValueError(f"{what} index must be in UTC, got {idx.tz}")
    if not idx.is_monotonic_increasing or not idx.is_unique:
        raise ValueError(f"{what} index must be strictly increasing")
    return idx


def _tiers_split(before: Decimal, qty: Decimal, tiers: Sequence[Tier]
                 ) -> list[tuple[int, Decimal]]:
    """Split ``qty`` that comes after ``before`` units of the month into tier shares."""
    out: list[tuple[int, Decimal]] = []
    lo = _ZERO
    for i, t in enumerate(tiers):
        hi = t.max
        a = max(before, lo)
        b = before + qty if hi is None else min(before + qty, hi)
        if b > a:
            out.append((i, b - a))
        if hi is not None:
            lo = hi
    return out


def _period(sched_wd: Schedule, sched_we: Schedule, local: dt.datetime,
            weekend_days: frozenset[dt.date]) -> int:
    weekend = local.weekday() >= 5 or local.date() in weekend_days
    return (sched_we if weekend else sched_wd)[local.month - 1][local.hour]


def bill(tariff: UtilityTariff, meter: pd.Series, *, kind: Literal["kw", "kwh"],
         interval: dt.timedelta | None = None, prices_per_mwh: pd.Series | None = None,
         holidays: Sequence[dt.date] = ()) -> Bill:
    """Bill a metered series under ``tariff``, split by local calendar month.

    Args:
        tariff: the tariff.
        meter: mean kW per interval (``kind="kw"``) or kWh per interval (``kind="kwh"``),
            indexed by the UTC interval start, evenly spaced; site import positive.
        kind: ``"kw"`` or ``"kwh"``, the meaning of the values of ``meter``.
        interval: interval length; inferred from the index spacing when None.
        prices_per_mwh: wholesale price (currency/MWh, UTC index of interval starts, e.g.
            hourly or 15 min), required with ``tariff.dynamic``; each meter interval takes
            the price in force at its start.
        holidays: local dates billed with the weekend schedules.

    Rules: an interval belongs to the local month, weekday/weekend and hour of its start.
    Energy tiers count the month's kWh chronologically over all periods; negative kWh
    (export) is credited at the period's first-tier rate and does not move the tier count.
    Demand is the mean kW over clock-aligned windows of ``demand_window_min`` (or the
    interval when that is longer); flat demand bills the month's peak, TOU demand the peak
    within each period; demand tiers split the peak kW. Fixed "$/month" is billed once per
    month with data, "$/day" per local day with data (no proration).

    Rounding: amounts are exact ``Decimal`` (60 digits) until each line item, which is
    rounded once, half up, to the currency's minor unit; month totals and the bill total
    are sums of rounded lines, so they reconcile exactly.

    Raises:
        ValueError: bad index (naive, not UTC, unsorted, uneven), NaN values, missing
            prices for a dynamic tariff or prices not covering the meter intervals.
    """
    idx = _check_index(meter, "meter")
    if len(idx) == 0:
        return Bill(tariff.currency, (), _ZERO)
    if interval is None:
        if len(idx) < 2:
            raise ValueError("interval is required for a meter series of one value")
        steps = set(idx[1:] - idx[:-1])
        if len(steps) != 1:
            raise ValueError("meter index must be evenly spaced (or pass interval)")
        interval = pd.Timedelta(steps.pop()).to_pytimedelta()
    if interval <= dt.timedelta(0):
        raise ValueError("interval must be positive")
    if tariff.dynamic is not None and prices_per_mwh is None:
        raise ValueError("a dynamic tariff needs prices_per_mwh")
    with localcontext(EXACT):
        return _bill(tariff, meter, idx, kind, interval, prices_per_mwh, frozenset(holidays))


def _bill(tariff: UtilityTariff, meter: pd.Series, idx: pd.DatetimeIndex,
          kind: Literal["kw", "kwh"], interval: dt.timedelta, prices: pd.Series | None,
          holidays: frozenset[dt.date]) -> Bill:
    tz = ZoneInfo(tariff.time_zone)
    hours = Decimal(int(interval / dt.timedelta(microseconds=1))) / Decimal(3_600_000_000)
    values = [_dec(v, "meter") for v in meter.to_numpy()]
    kwh = values if kind == "kwh" else [v * hours for v in values]
    price_at: list[Decimal] = []
    if prices is not None and tariff.dynamic is not None:
        pidx = _check_index(prices, "prices_per_mwh")
        pos = pidx.searchsorted(idx, side="right") - 1
        if (pos < 0).any():
            raise ValueError("prices_per_mwh does not cover the start of the meter series")
        pv = prices.to_numpy()
        price_at = [_dec(pv[p], "prices_per_mwh") for p in pos]
    window = max(dt.timedelta(minutes=tariff.demand_window_min), interval)
    win_h = Decimal(int(window / dt.timedelta(microseconds=1))) / Decimal(3_600_000_000)

    month_of: list[str] = []
    locals_: list[dt.datetime] = []
    for ts in idx:
        local = ts.to_pydatetime().astimezone(tz)
        locals_.append(local)
        month_of.append(f"{local.year:04d}-{local.month:02d}")

    # demand windows: clock-aligned (UTC epoch multiples), mean kW of the intervals present
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    win: dict[dt.datetime, list[int]] = defaultdict(list)
    for i, ts in enumerate(idx):
        tsu = ts.to_pydatetime()
        win[tsu - (tsu - epoch) % window].append(i)
    demand: list[tuple[str, dt.datetime, Decimal]] = []  # (month, local start, kW)
    for start, members in sorted(win.items()):
        e = sum((kwh[i] for i in members), _ZERO)
        covered = hours * len(members)
        kw = e / min(covered, win_h) if covered > 0 else _ZERO
        local = start.astimezone(tz)
        demand.append((f"{local.year:04d}-{local.month:02d}", local, kw))

    months = sorted(set(month_of))
    out: list[MonthlyBill] = []
    cur = tariff.currency
    for m in months:
        items: list[tuple[Kind, str, Decimal, str, Decimal, Decimal]] = []
        ids = [i for i, mm in enumerate(month_of) if mm == m]
        if tariff.fixed_charge:
            if tariff.fixed_charge_units == "$/day":
                days = Decimal(len({locals_[i].date() for i in ids}))
                items.append(("fixed", "fixed charge", days, "day", tariff.fixed_charge,
                              days * tariff.fixed_charge))
            else:
                items.append(("fixed", "fixed charge", Decimal(1), "month",
                              tariff.fixed_charge, tariff.fixed_charge))
        e_month = sum((kwh[i] for i in ids), _ZERO)
        sched = (tariff.energy_weekday_schedule, tariff.energy_weekend_schedule)
        if tariff.energy_rate_structure and sched[0] is not None and sched[1] is not None:
            acc: dict[tuple[int, int], Decimal] = defaultdict(lambda: _ZERO)
            before = _ZERO
            for i in ids:
                p = _period(sched[0], sched[1], locals_[i], holidays)
                if kwh[i] < 0:  # export: credited at the first tier, tier count unchanged
                    acc[(p, 0)] += kwh[i]
                    continue
                for t, q in _tiers_split(before, kwh[i], tariff.energy_rate_structure[p]):
                    acc[(p, t)] += q
                before += kwh[i]
            for (p, t), q in sorted(acc.items()):
                rate = tariff.energy_rate_structure[p][t].price
                items.append(("energy", f"energy period {p} tier {t}", q, "kWh", rate,
                              q * rate))
        if tariff.dynamic is not None:
            dyn = tariff.dynamic
            factor = 1 + dyn.markup_percent / 100
            q = e_month
            amount = sum(((price_at[i] / 1000 + dyn.adder_per_kwh) * factor * kwh[i]
                          for i in ids), _ZERO)
            mean_rate = amount / q if q else _ZERO
            items.append(("dynamic_energy", "dynamic energy (wholesale + adder) x markup",
                          q, "kWh", mean_rate, amount))
        dem = [(local, kw) for mm, local, kw in demand if mm == m]
        peak = max((kw for _, kw in dem), default=_ZERO)
        if tariff.flat_demand_structure and tariff.flat_demand_months is not None:
            month_no = int(m[5:7])
            p = tariff.flat_demand_months[month_no - 1]
            for t, q in _tiers_split(_ZERO, max(peak, _ZERO), tariff.flat_demand_structure[p]):
                rate = tariff.flat_demand_structure[p][t].price
                items.append(("flat_demand", f"flat demand period {p} tier {t}", q, "kW",
                              rate, q * rate))
        dsched = (tariff.demand_weekday_schedule, tariff.demand_weekend_schedule)
        if tariff.demand_rate_structure and dsched[0] is not None and dsched[1] is not None:
            peaks: dict[int, Decimal] = {}
            for dlocal, kw in dem:
                dp = _period(dsched[0], dsched[1], dlocal, holidays)
                peaks[dp] = max(peaks.get(dp, _ZERO), kw)
            for p, pk in sorted(peaks.items()):
                for t, q in _tiers_split(_ZERO, max(pk, _ZERO), tariff.demand_rate_structure[p]):
                    rate = tariff.demand_rate_structure[p][t].price
                    items.append(("tou_demand", f"TOU demand period {p} tier {t}", q, "kW",
                                  rate, q * rate))
        lines = tuple(LineItem(m, k, d, q, u, r, a, round_money(a, cur))
                      for k, d, q, u, r, a in items)
        out.append(MonthlyBill(m, lines, sum((x.amount for x in lines), _ZERO), e_month, peak))
    return Bill(cur, tuple(out), sum((mb.total for mb in out), _ZERO))


def flat_schedule(period: int = 0) -> Schedule:
    """A 12 x 24 schedule with every hour in ``period``."""
    return [[period] * 24 for _ in range(12)]


__all__: Sequence[str] = ("Bill", "DynamicPricing", "LineItem", "MonthlyBill", "Tier",
                          "UtilityTariff", "bill", "flat_schedule")
