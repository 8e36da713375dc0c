"""Rolling-horizon control of the depot LP, with the day-ahead prices known at each step.

Every ``step`` (1 h by default) the controller re-solves :mod:`controllers.market.lp` from
the current state (stored energies, the billing period's peak so far) over ``horizon``
(24 h by default, cut at the end of the period), with the prices known at that time; it
applies the first ``step`` of the schedule and carries the state. A perfect-foresight
solve over the whole period (:func:`perfect_foresight`) is the bound to compare with:
the rolling schedule is feasible for the whole problem, so its cost evaluated on the real
prices is never below the perfect-foresight optimum (up to solver tolerance).

Price knowledge (documented in the README, implemented by :class:`DayAheadPrices`):

* The day-ahead auction for delivery day D (a calendar day in the market's time zone,
  ``Europe/Berlin`` by default) is published at ``publication`` (12:00 local by default)
  on D-1. A price interval starting at ``t`` is known at ``now`` iff ``local_date(t) <=
  local_date(now)`` when ``local_time(now) < publication``, or ``<= local_date(now) + 1``
  from ``publication`` on.
* Beyond the known prices, a forecast: ``"last_week"`` (default) takes the price at ``t -
  7 days`` if that is known and in the series, otherwise the ``"last_day"`` rule; the
  ``"last_day"`` rule takes ``t - m days`` for the smallest m >= 1 that is known and in
  the series (shifts of 24 h in UTC: across a DST change the "same hour" is one hour off
  in local time). With no history at all, the mean of the known prices.
* Import price = day-ahead + ``import_fee_per_mwh`` (grid fees, taxes: known); export price
  = day-ahead - ``export_fee_per_mwh``. The non-EV load and PV forecasts are taken as
  perfect here (the study is about prices); a controller in production passes its own.

Sources: J. M. Maciejowski, *Predictive Control with Constraints*, Prentice Hall 2002
(receding horizon); EPEX SPOT / SDAC day-ahead auction, results around 12:45 CET for the
next day (the 12:00 rule is the order-book gate closure, a conservative proxy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from controllers.market.lp import (
    DepotProblem,
    FloatArray,
    MarketError,
    ModelSize,
    Schedule,
    objective_value,
    solve,
    window,
)

Forecast = Literal["last_day", "last_week"]


@dataclass(frozen=True, eq=False)
class DayAheadPrices:
    """A day-ahead price series and the rule of when each price is known.

    ``start`` (UTC) and ``interval`` (1 h, or 15 min since SDAC's 15-minute MTU) of the
    series ``price_per_mwh`` [currency/MWh]; the series may begin before the controlled
    period (history for the forecast). ``tz`` and ``publication``: see the module
    docstring. Fees turn the day-ahead price into import and export prices.
    """

    start: datetime
    interval: timedelta
    price_per_mwh: FloatArray
    import_fee_per_mwh: float = 0.0
    export_fee_per_mwh: float = 0.0
    tz: str = "Europe/Berlin"
    publication: time = time(12, 0)
    _zone: ZoneInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            raise MarketError("DayAheadPrices.start: must be a UTC datetime")
        if self.interval <= timedelta(0):
            raise MarketError("DayAheadPrices.interval: must be positive")
        if self.import_fee_per_mwh < -self.export_fee_per_mwh:
            raise MarketError("import price would be below export price")
        object.__setattr__(self, "price_per_mwh", np.asarray(self.price_per_mwh, dtype=float))
        object.__setattr__(self, "_zone", ZoneInfo(self.tz))

    def index(self, t: datetime) -> int:
        """Index of the price interval containing ``t`` (may be out of the series)."""
        return int((t - self.start) // self.interval)

    def known_until(self, now: datetime) -> datetime:
        """End (UTC, exclusive) of the delivery days whose prices are known at ``now``."""
        local = now.astimezone(self._zone)
        last_day = local.date() + timedelta(days=1 if local.time() >= self.publication else 0)
        end_local = datetime.combine(last_day + timedelta(days=1), time(0), self._zone)
        return end_local.astimezone(now.tzinfo)

    def is_known(self, now: datetime, t: datetime) -> bool:
        """Whether the price of the interval starting at ``t`` is published at ``now``."""
        return t < self.known_until(now)

    def _value(self, t: datetime) -> float | None:
        i = self.index(t)
        if 0 <= i < self.price_per_mwh.size:
            return float(self.price_per_mwh[i])
        return None

    def on_grid(self, start: datetime, interval: timedelta, n: int) -> FloatArray:
        """Real day-ahead prices of ``n`` intervals from ``start``.

        Each interval takes the price of the price interval containing its start;
        MarketError outside the series.
        """
        out = np.empty(n)
        for k in range(n):
            v = self._value(start + k * interval)
            if v is None:
                raise MarketError(f"no day-ahead price for {start + k * interval}")
            out[k] = v
        return out

    def known_on_grid(
        self,
        now: datetime,
        start: datetime,
        interval: timedelta,
        n: int,
        forecast: Forecast = "last_week",
    ) -> FloatArray:
        """Prices of ``n`` intervals from ``start`` as known at ``now``.

        Published prices where known, the ``forecast`` rule elsewhere (module docstring).
        """
        until = self.known_until(now)
        known_mean = self._known_mean(until)
        out = np.empty(n)
        for k in range(n):
            t = start + k * interval
            v = self._value(t) if t < until else None
            if v is None:
                v = self._forecast(t, until, forecast, known_mean)
            out[k] = v
        return out

    def _known_mean(self, until: datetime) -> float:
        m = min(max(self.index(until), 0), self.price_per_mwh.size)
        return float(self.price_per_mwh[:m].mean()) if m > 0 else 0.0

    def _forecast(self, t: datetime, until: datetime, rule: Forecast, mean: float) -> float:
        if rule == "last_week":
            back = t - timedelta(days=7)
            v = self._value(back) if back < until else None
            if v is not None:
                return v
        back = t - timedelta(days=1)
        while back >= self.start:
            if back < until:
                v = self._value(back)
                if v is not None:
                    return v
            back -= timedelta(days=1)
        return mean

    def import_price(self, day_ahead: FloatArray) -> FloatArray:
        """Import price [currency/MWh] of day-ahead prices."""
        out: FloatArray = day_ahead + self.import_fee_per_mwh
        return out

    def export_price(self, day_ahead: FloatArray) -> FloatArray:
        """Export price [currency/MWh] of day-ahead prices."""
        out: FloatArray = day_ahead - self.export_fee_per_mwh
        return out


def with_real_prices(problem: DepotProblem, prices: DayAheadPrices) -> DepotProblem:
    """``problem`` with its import/export prices set from the real day-ahead prices."""
    da = prices.on_grid(problem.start, problem.interval, problem.n)
    return replace(
        problem,
        price_import_per_mwh=prices.import_price(da),
        price_export_per_mwh=prices.export_price(da),
    )


@dataclass(frozen=True, eq=False)
class RollingResult:
    """The applied schedule over the whole period and the figures of each re-solve.

    ``schedule``: stitched from the first ``step`` of each re-solve (``objective`` is the
    whole problem's objective evaluated on it with the real prices); ``cost``: the same
    [currency, float estimate]; ``solve_times_s``, ``sizes``: per re-solve; ``starts``:
    the time of each re-solve.
    """

    schedule: Schedule
    cost: float
    starts: tuple[datetime, ...]
    solve_times_s: tuple[float, ...]
    sizes: tuple[ModelSize, ...]


def perfect_foresight(problem: DepotProblem, prices: DayAheadPrices | None = None) -> Schedule:
    """One solve over the whole period with the real prices (all known in advance)."""
    return solve(problem if prices is None else with_real_prices(problem, prices))


def rolling_horizon(
    problem: DepotProblem,
    prices: DayAheadPrices,
    *,
    step: timedelta = timedelta(hours=1),
    horizon: timedelta = timedelta(hours=24),
    forecast: Forecast = "last_week",
    perf_counter: Callable[[], float] | None = None,
) -> RollingResult:
    """Run the rolling-horizon controller over ``problem``'s period.

    ``problem`` gives the assets, forecasts and limits over the whole period (its prices
    are replaced by the real ones of ``prices`` for evaluation). ``step`` and ``horizon``
    must be whole multiples of ``problem.interval``. At each step ``t``: prices as known at
    ``t`` (:meth:`DayAheadPrices.known_on_grid`), :func:`controllers.market.lp.window`
    from the current stored energies and the peak so far, solve, apply the first ``step``.
    ``perf_counter`` (injected, optional) times each re-solve. Raises
    :class:`~controllers.market.lp.InfeasibleError` if a re-solve is infeasible.
    """
    real = with_real_prices(problem, prices)
    n = real.n
    step_k = _multiple(step, real.interval, "step")
    horizon_k = _multiple(horizon, real.interval, "horizon")
    if horizon_k < step_k:
        raise MarketError("horizon shorter than step")
    n_assets = len(real.assets)
    charge = np.zeros((n_assets, n))
    discharge = np.zeros((n_assets, n))
    energy = np.zeros((n_assets, n + 1))
    energy[:, 0] = [a.e0_kwh for a in real.assets]
    imp, exp, curt = np.zeros(n), np.zeros(n), np.zeros(n)
    peak = real.peak_so_far_kw
    starts: list[datetime] = []  # time of each re-solve
    times: list[float] = []
    sizes: list[ModelSize] = []
    k0 = 0
    while k0 < n:
        k1 = min(k0 + horizon_k, n)
        now = real.interval_start(k0)
        da = prices.known_on_grid(now, now, real.interval, k1 - k0, forecast)
        sub = window(
            real,
            k0,
            k1,
            energy[:, k0],
            peak_so_far_kw=peak,
            price_import_per_mwh=prices.import_price(da),
            price_export_per_mwh=prices.export_price(da),
        )
        # assets without power in the window (EVs not yet arrived or gone) keep their energy
        # and are left out of the LP
        active = [
            i
            for i, a in enumerate(sub.assets)
            if np.any(a.p_min_kw != 0.0) or np.any(a.p_max_kw != 0.0)
        ]
        sched = solve(
            replace(sub, assets=tuple(sub.assets[i] for i in active)), perf_counter=perf_counter
        )
        m = min(step_k, k1 - k0)
        energy[:, k0 + 1 : k0 + m + 1] = energy[:, k0 : k0 + 1]
        charge[active, k0 : k0 + m] = sched.charge_kw[:, :m]
        discharge[active, k0 : k0 + m] = sched.discharge_kw[:, :m]
        energy[active, k0 + 1 : k0 + m + 1] = sched.energy_kwh[:, 1 : m + 1]
        imp[k0 : k0 + m] = sched.import_kw[:m]
        exp[k0 : k0 + m] = sched.export_kw[:m]
        curt[k0 : k0 + m] = sched.curtail_kw[:m]
        peak = max(peak, float(sched.import_kw[:m].max()))
        starts.append(now)
        times.append(sched.solve_time_s)
        sizes.append(sched.size)
        k0 += m
    stitched = Schedule(
        start=real.start,
        interval=real.interval,
        asset_ids=tuple(a.asset_id for a in real.assets),
        charge_kw=charge,
        discharge_kw=discharge,
        energy_kwh=energy,
        import_kw=imp,
        export_kw=exp,
        curtail_kw=curt,
        shortfall_kwh=tuple(
            tuple(max(t.energy_kwh - float(energy[a, t.index]), 0.0) for t in asset.targets)
            for a, asset in enumerate(real.assets)
        ),
        peak_kw=peak,
        objective=0.0,
        status="Rolling",
        solve_time_s=float(sum(times)),
    )
    cost = objective_value(real, stitched)
    stitched = replace(stitched, objective=cost)
    return RollingResult(stitched, cost, tuple(starts), tuple(times), tuple(sizes))


def _multiple(span: timedelta, interval: timedelta, name: str) -> int:
    k = span / interval
    if k < 1 or abs(k - round(k)) > 1e-9:
        raise MarketError(f"{name}: {span} is not a whole multiple of the interval {interval}")
    return round(k)
