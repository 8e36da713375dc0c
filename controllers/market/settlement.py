"""Settlement of a schedule (or metered powers) against real prices, in Decimal.

Rounding points (the only ones; everything else is exact Decimal arithmetic):

1. Energy, like a bidirectional meter: the import and export *registers* (cumulative
   energy from the first interval) are accumulated exactly — power [kW] read as the
   shortest decimal of the float (``Decimal(repr(x))``), times the interval in seconds,
   over 3600 — and each register reading at an interval boundary is quantised to 1 Wh
   (0.001 kWh, ROUND_HALF_EVEN). An interval's energy is the difference of two quantised
   readings, so the lines add up to the quantised total and splitting an interval into
   parts at the same price changes no total (the readings at the original boundaries are
   the same).
2. None per line: a line amount is ``energy_kwh * price_per_mwh / 1000`` exactly (with
   prices in 0.01 per MWh and energies in Wh, at most 8 decimals).
3. The amount due is the exact net total rounded once to the currency's minor unit
   (ISO 4217 exponent, ROUND_HALF_EVEN); the difference is a separate
   ``rounding_adjustment`` so that ``sum(line amounts) + demand charge + adjustment ==
   amount_due`` exactly (:meth:`Settlement.reconcile`).

The demand charge is ``peak_kw * demand_charge_per_kw`` with the peak the highest mean
import power of an interval (register difference / duration) above ``peak_so_far_kw``,
quantised to 1 W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from numbers import Integral

from controllers.market.lp import MarketError, Schedule

#: ISO 4217 minor-unit exponents of the currencies this settles in
CURRENCY_EXPONENTS: dict[str, int] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "HUF": 2,
    "RON": 2,
    "BGN": 2,
    "AUD": 2,
    "CAD": 2,
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "KWD": 3,
    "BHD": 3,
}
WH = Decimal("0.001")  # kWh
W = Decimal("0.001")  # kW
_EXACT = Context(prec=100)


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of ``currency`` (``Decimal("0.01")`` for EUR).

    MarketError if not an ISO 4217 code listed in :data:`CURRENCY_EXPONENTS`.
    """
    exponent = CURRENCY_EXPONENTS.get(currency)
    if exponent is None:
        raise MarketError(f"currency {currency!r}: not a supported ISO 4217 code")
    return Decimal(1).scaleb(-exponent)


def _dec(value: float | Decimal | int, name: str) -> Decimal:
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, Integral):
        d = Decimal(int(value))
    else:  # a float (numpy's too): its shortest decimal
        d = Decimal(repr(float(value)))
    if not d.is_finite():
        raise MarketError(f"{name}: not finite")
    return d


@dataclass(frozen=True)
class SettlementLine:
    """One interval ``[start, end)`` (UTC) of a settlement.

    Energies [kWh, Wh steps], prices [per MWh], exact amounts [currency];
    ``net = import_cost - export_revenue``.
    """

    start: datetime
    end: datetime
    import_kwh: Decimal
    export_kwh: Decimal
    import_price_per_mwh: Decimal
    export_price_per_mwh: Decimal
    import_cost: Decimal
    export_revenue: Decimal
    net: Decimal


@dataclass(frozen=True)
class Settlement:
    """A settled period: lines, totals (exact), demand charge, the amount due (rounded).

    ``energy_cost`` = sum of line import costs, ``export_revenue`` = sum of line export
    revenues, ``net_exact = energy_cost - export_revenue + demand_charge`` and
    ``amount_due = net_exact + rounding_adjustment`` in minor units of ``currency``.
    """

    currency: str
    lines: tuple[SettlementLine, ...]
    import_kwh: Decimal
    export_kwh: Decimal
    energy_cost: Decimal
    export_revenue: Decimal
    peak_kw: Decimal
    demand_charge: Decimal
    net_exact: Decimal
    rounding_adjustment: Decimal
    amount_due: Decimal

    def reconcile(self) -> None:
        """Check that the line items add up to every total exactly; MarketError if not."""
        checks = {
            "import_kwh": sum((ln.import_kwh for ln in self.lines), Decimal(0)) == self.import_kwh,
            "export_kwh": sum((ln.export_kwh for ln in self.lines), Decimal(0)) == self.export_kwh,
            "energy_cost": sum((ln.import_cost for ln in self.lines), Decimal(0))
            == self.energy_cost,
            "export_revenue": sum((ln.export_revenue for ln in self.lines), Decimal(0))
            == self.export_revenue,
            "net": sum((ln.net for ln in self.lines), Decimal(0)) + self.demand_charge
            == self.net_exact,
            "amount_due": self.net_exact + self.rounding_adjustment == self.amount_due,
            "minor_unit": self.amount_due == self.amount_due.quantize(minor_unit(self.currency)),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise MarketError(f"settlement does not reconcile: {bad}")


def settle(
    start: datetime,
    interval: timedelta,
    import_kw: Sequence[float | Decimal],
    export_kw: Sequence[float | Decimal],
    import_price_per_mwh: Sequence[Decimal],
    export_price_per_mwh: Sequence[Decimal],
    *,
    currency: str = "EUR",
    demand_charge_per_kw: Decimal = Decimal(0),
    peak_so_far_kw: Decimal = Decimal(0),
) -> Settlement:
    """Settle mean powers per interval (kW, >= 0, shape (n,)) at the real prices.

    ``start`` is UTC; ``interval`` a whole number of seconds. Prices are per interval in
    ``currency``/MWh (map hourly prices onto a finer grid with :func:`prices_on_grid`).
    Raises MarketError on shapes, negative power, non-UTC time or unknown currency.
    """
    n = len(import_kw)
    if not (len(export_kw) == len(import_price_per_mwh) == len(export_price_per_mwh) == n):
        raise MarketError("settle: powers and prices must have the same length")
    if start.tzinfo is None or start.utcoffset() != timedelta(0):
        raise MarketError("settle: start must be a UTC datetime")
    seconds = interval.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise MarketError("settle: interval must be a positive whole number of seconds")
    unit = minor_unit(currency)
    lines: list[SettlementLine] = []
    with localcontext(_EXACT):
        sec = Decimal(int(seconds))
        reg_imp = reg_exp = Decimal(0)  # exact kW*s
        q_imp_prev = q_exp_prev = Decimal(0).quantize(WH)
        peak = _dec(peak_so_far_kw, "peak_so_far_kw")
        for k in range(n):
            p_imp = _dec(import_kw[k], f"import_kw[{k}]")
            p_exp = _dec(export_kw[k], f"export_kw[{k}]")
            if p_imp < 0 or p_exp < 0:
                raise MarketError(f"settle: negative power at {k}")
            reg_imp += p_imp * sec
            reg_exp += p_exp * sec
            q_imp = (reg_imp / 3600).quantize(WH, ROUND_HALF_EVEN)
            q_exp = (reg_exp / 3600).quantize(WH, ROUND_HALF_EVEN)
            e_imp, e_exp = q_imp - q_imp_prev, q_exp - q_exp_prev
            q_imp_prev, q_exp_prev = q_imp, q_exp
            pi = _dec(import_price_per_mwh[k], f"import_price_per_mwh[{k}]")
            pe = _dec(export_price_per_mwh[k], f"export_price_per_mwh[{k}]")
            cost = (e_imp * pi).scaleb(-3)
            revenue = (e_exp * pe).scaleb(-3)
            peak = max(peak, (e_imp * 3600 / sec).quantize(W, ROUND_HALF_EVEN))
            t0 = start + k * interval
            lines.append(
                SettlementLine(
                    t0, t0 + interval, e_imp, e_exp, pi, pe, cost, revenue, cost - revenue
                )
            )
        energy_cost = sum((ln.import_cost for ln in lines), Decimal(0))
        export_revenue = sum((ln.export_revenue for ln in lines), Decimal(0))
        demand = peak * _dec(demand_charge_per_kw, "demand_charge_per_kw")
        net = energy_cost - export_revenue + demand
        due = net.quantize(unit, ROUND_HALF_EVEN)
        result = Settlement(
            currency=currency,
            lines=tuple(lines),
            import_kwh=q_imp_prev,
            export_kwh=q_exp_prev,
            energy_cost=energy_cost,
            export_revenue=export_revenue,
            peak_kw=peak,
            demand_charge=demand,
            net_exact=net,
            rounding_adjustment=due - net,
            amount_due=due,
        )
    result.reconcile()
    return result


def settle_schedule(
    schedule: Schedule,
    import_price_per_mwh: Sequence[Decimal],
    export_price_per_mwh: Sequence[Decimal],
    *,
    currency: str = "EUR",
    demand_charge_per_kw: Decimal = Decimal(0),
    peak_so_far_kw: Decimal = Decimal(0),
) -> Settlement:
    """:func:`settle` of a :class:`~controllers.market.lp.Schedule`'s import and export."""
    return settle(
        schedule.start,
        schedule.interval,
        [float(x) for x in schedule.import_kw],
        [float(x) for x in schedule.export_kw],
        import_price_per_mwh,
        export_price_per_mwh,
        currency=currency,
        demand_charge_per_kw=demand_charge_per_kw,
        peak_so_far_kw=peak_so_far_kw,
    )


def prices_on_grid(
    price_start: datetime,
    price_interval: timedelta,
    prices_per_mwh: Sequence[Decimal],
    start: datetime,
    interval: timedelta,
    n: int,
) -> list[Decimal]:
    """Prices of ``n`` intervals from ``start``, from a coarser price series.

    Each interval takes the price of the price interval that contains it; MarketError if
    an interval straddles two price intervals or is outside the series.
    """
    out: list[Decimal] = []
    for k in range(n):
        t0 = start + k * interval
        i = (t0 - price_start) // price_interval
        j = (t0 + interval - price_start - timedelta(microseconds=1)) // price_interval
        if i != j or not 0 <= i < len(prices_per_mwh):
            raise MarketError(f"interval at {t0} straddles price intervals or has no price")
        out.append(prices_per_mwh[i])
    return out
