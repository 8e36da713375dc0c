"""Day-ahead bids: one price-quantity curve per market time unit, derived from the LP.

Method (parametric own-price response): the depot's delivery-day problem (a
:class:`~controllers.market.lp.DepotProblem` built from the flexibility envelope, with the
*forecast* prices of every hour) is solved once; then, for each market time unit (MTU,
1 h by default) ``h`` and each price step ``p`` of ``price_steps_per_mwh`` (ascending),
the day-ahead price of ``h`` alone is set to ``p`` (import price ``p + import_fee``,
export price ``p - export_fee``), the other hours keep their forecast, and the LP is
re-solved (HiGHS warm start from the previous basis: only cost coefficients change). The
quantity of the curve at ``p`` is the mean net site power over ``h``: ``sum(import -
export) * dt / duration(h)`` [MW], positive = buy (demand), negative = sell.

Monotonicity: for an LP ``min (c + p g)^T x`` over a fixed feasible set, ``g^T x*`` is
non-increasing in ``p`` (for ``p1 < p2`` with optima ``x1``, ``x2``: ``(c + p1 g)x1 <=
(c + p1 g)x2`` and ``(c + p2 g)x2 <= (c + p2 g)x1``; adding gives ``(p1 - p2)(g x1 - g x2)
<= 0``). Here ``g`` is the net energy of ``h``, so each curve is non-increasing in price
up to solver tolerance; a running minimum removes that noise. Quantities are then rounded
to ``quantity_tick_mw`` (ROUND_HALF_EVEN; rounding a monotone sequence keeps it
monotone) and prices to ``price_tick`` (0.01 EUR/MWh).

Limitation: each hour's curve assumes the other hours clear at their forecast (no block or
linked orders); the non-EV load and PV are in the quantity (the depot bids its whole net
position). Cost: ``len(steps)`` re-solves per MTU (24 x 13 by default), each warm.

Format (the usual hourly day-ahead order: EPEX SPOT / SDAC): per MTU a curve of (price
EUR/MWh, quantity MW) points at ascending prices within the harmonised limits (-500 and
+4000 EUR/MWh by default; set ``price_steps_per_mwh`` to the limits in force).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

from controllers.market.lp import DepotProblem, MarketError, build, highs_model, run

#: default price steps [EUR/MWh], ascending, from the harmonised minimum to the maximum
DEFAULT_PRICE_STEPS_PER_MWH: tuple[float, ...] = (
    -500.0,
    -100.0,
    -20.0,
    0.0,
    25.0,
    50.0,
    75.0,
    100.0,
    150.0,
    250.0,
    500.0,
    1000.0,
    4000.0,
)


@dataclass(frozen=True)
class BidPoint:
    """One point of a curve: price [currency/MWh] and quantity [MW, + = buy, - = sell]."""

    price_per_mwh: Decimal
    quantity_mw: Decimal


@dataclass(frozen=True)
class HourlyBid:
    """The curve of one MTU ``[delivery_start, delivery_end)`` (UTC).

    Points at ascending price with non-increasing quantity.
    """

    delivery_start: datetime
    delivery_end: datetime
    currency: str
    points: tuple[BidPoint, ...]

    def quantity_at(self, price_per_mwh: Decimal) -> Decimal:
        """Quantity bid at a clearing price (step reading of the curve).

        The quantity of the highest point at or below the price (the first point's below).
        """
        q = self.points[0].quantity_mw
        for pt in self.points:
            if pt.price_per_mwh <= price_per_mwh:
                q = pt.quantity_mw
        return q


def day_ahead_bids(
    problem: DepotProblem,
    *,
    import_fee_per_mwh: float,
    export_fee_per_mwh: float,
    price_steps_per_mwh: Sequence[float] = DEFAULT_PRICE_STEPS_PER_MWH,
    mtu: timedelta = timedelta(hours=1),
    quantity_tick_mw: Decimal = Decimal("0.1"),
    price_tick: Decimal = Decimal("0.01"),
) -> list[HourlyBid]:
    """Price-quantity curves for every MTU of ``problem`` (the delivery day).

    ``problem`` carries the forecast import/export prices of every interval; fees turn a
    day-ahead price into import and export prices. ``problem.start`` and its length must
    be whole multiples of ``mtu`` apart. Raises MarketError on bad steps or alignment,
    :class:`~controllers.market.lp.InfeasibleError` when the hard constraints admit no
    schedule.
    """
    steps = [float(p) for p in price_steps_per_mwh]
    if not steps or any(b <= a for a, b in itertools.pairwise(steps)):
        raise MarketError("price_steps_per_mwh: must be non-empty and strictly ascending")
    if import_fee_per_mwh < -export_fee_per_mwh:
        raise MarketError("fees would put the import price below the export price")
    per = mtu / problem.interval
    if abs(per - round(per)) > 1e-9 or round(per) < 1 or problem.n % round(per) != 0:
        raise MarketError(f"mtu {mtu} does not tile {problem.n} intervals of {problem.interval}")
    per_k = round(per)
    dt = problem.dt_h
    lp = build(problem)
    h = highs_model(lp)
    run(h)
    lay = lp.layout
    bids: list[HourlyBid] = []
    for m in range(problem.n // per_k):
        ks = np.arange(m * per_k, (m + 1) * per_k)
        imp_cols = (lay.imp + ks).astype(np.int32)
        exp_cols = (lay.exp + ks).astype(np.int32)
        both = np.concatenate([imp_cols, exp_cols])
        quantities: list[float] = []
        for p in steps:
            costs = np.concatenate(
                [
                    np.full(per_k, (p + import_fee_per_mwh) / 1000.0 * dt),
                    np.full(per_k, -(p - export_fee_per_mwh) / 1000.0 * dt),
                ]
            )
            h.changeColsCost(both.size, both, costs)
            x = run(h)
            net_kwh = float((x[imp_cols] - x[exp_cols]).sum()) * dt
            quantities.append(net_kwh / (per_k * dt) / 1000.0)
        h.changeColsCost(both.size, both, lp.cost[both])
        monotone = np.minimum.accumulate(np.array(quantities))
        points = tuple(
            BidPoint(_tick(p, price_tick), _tick(float(q), quantity_tick_mw))
            for p, q in zip(steps, monotone, strict=True)
        )
        start = problem.interval_start(m * per_k)
        bids.append(HourlyBid(start, start + mtu, problem.currency, points))
    return bids


def _tick(value: float, tick: Decimal) -> Decimal:
    """``value`` (shortest decimal) to a multiple of ``tick``, ROUND_HALF_EVEN, never -0."""
    d = (Decimal(repr(float(value))) / tick).quantize(Decimal(1), ROUND_HALF_EVEN) * tick
    return abs(d) if d.is_zero() else d


def bids_table(bids: Sequence[HourlyBid]) -> list[dict[str, str]]:
    """Rows of the usual hourly order format (strings, exact).

    ``delivery_start``, ``delivery_end`` (ISO 8601 UTC), ``price_eur_mwh`` (or the
    currency's), ``quantity_mw``.
    """
    rows: list[dict[str, str]] = []
    for bid in bids:
        for pt in bid.points:
            rows.append(
                {
                    "delivery_start": bid.delivery_start.isoformat(),
                    "delivery_end": bid.delivery_end.isoformat(),
                    f"price_{bid.currency.lower()}_mwh": str(pt.price_per_mwh),
                    "quantity_mw": str(pt.quantity_mw),
                }
            )
    return rows
