"""What the reward rules see of a session in a run folder (issue 8, item 5).

:func:`session_intervals` turns one session's 15-min blocks (see
:func:`twin.billing_run.blocks`) into one :class:`controllers.ledger.rewards.Interval` per block,
carrying everything the four rule kinds measure:

* ``import_kwh``: the block's metered energy (the register the CSMS received);
* ``price_per_kwh`` and ``peak``: the utility tariff's first-tier energy rate in force at
  the block's start and whether its TOU period is a peak period (:class:`RateClock`);
* ``export_kwh``: V2G energy the EVSE exported in the block, from its ``power_kw`` trace
  (negative = export; each sample is the mean over the step ending at its time);
* ``dr_event``: a grid event was in force during the block (the site's ``grid_ev_share``
  below 1, ``grid_emergency`` on, or a ``grid_event_limit_kw`` recorded);
* ``baseline_kwh``: what the session would have drawn in the block had it charged as
  soon as possible (ASAP) at the highest power it was seen to draw, until it had the
  energy it got. The uncontrolled (ASAP) profile is the usual counterfactual of smart
  charging (e.g. ACN-Sim's "uncontrolled charging" baseline, Lee et al. 2021); taking
  the highest *observed* power rather than the vehicle's rating makes the baseline later
  than the true one for a throttled session, so the reductions it credits (kWh shifted,
  demand response) are never more than the truth: rewards err low, never high.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from controllers.billing.tariffs.utility import UtilityTariff
from controllers.ledger.rewards import Interval

__all__ = ["RateClock", "RunSignals", "asap_baseline_wh", "max_power_kw", "read_signals",
           "session_intervals"]

_WH = Decimal("0.001")


class RateClock:
    """First-tier energy rate [currency/kWh] and TOU peak flag of a utility tariff.

    ``peak_periods``: the tariff's period indices that count as peak; None: the periods
    with the highest first-tier rate.
    """

    def __init__(self, tariff: UtilityTariff, peak_periods: Sequence[int] | None) -> None:
        self.t = tariff
        self.tz = ZoneInfo(tariff.time_zone)
        rates = [p[0].price for p in tariff.energy_rate_structure]
        if peak_periods is None:
            top = max(rates, default=None)
            peak_periods = [i for i, r in enumerate(rates) if r == top] if top else []
        self.peak = frozenset(peak_periods)
        self.rates = rates

    def at(self, t: datetime) -> tuple[Decimal, bool]:
        """(rate, peak) in force at ``t`` (aware); (0, False) for a tariff without TOU."""
        wd, we = self.t.energy_weekday_schedule, self.t.energy_weekend_schedule
        if wd is None or we is None or not self.rates:
            return Decimal(0), False
        local = t.astimezone(self.tz)
        p = (we if local.weekday() >= 5 else wd)[local.month - 1][local.hour]
        return self.rates[p], p in self.peak


@dataclass(frozen=True)
class RunSignals:
    """A run's per-EVSE export and the times a grid event was in force, read once.

    ``export_kw``: per EVSE entity (``"CA001/1"``), exported power [kW, >= 0] indexed by
    the end of its step, with the step length [s] per sample; ``dr_steps``: (start, end)
    of every step with a grid event in force.
    """

    export_kw: dict[str, pd.DataFrame] = field(default_factory=dict)
    dr_steps: tuple[tuple[datetime, datetime], ...] = ()


def _with_step(s: pd.Series) -> pd.DataFrame:
    """``value`` and ``step_s`` (the gap to the previous sample; the first takes the median)."""
    idx = pd.DatetimeIndex(s.index)
    gaps = pd.Series(idx).diff().dt.total_seconds()
    median = float(gaps.median()) if len(gaps) > 1 else 60.0
    return pd.DataFrame({"value": s.to_numpy(dtype=float),
                         "step_s": gaps.fillna(median).to_numpy()}, index=idx)


def read_signals(run_dir: Path) -> RunSignals:
    """Export per EVSE and grid-event steps from ``traces.parquet`` (empty when absent)."""
    path = Path(run_dir) / "traces.parquet"
    if not path.exists():
        return RunSignals()
    t = pd.read_parquet(path, columns=["time", "entity", "quantity", "value"], filters=[
        ("quantity", "in", ["power_kw", "grid_ev_share", "grid_emergency",
                            "grid_event_limit_kw"])])
    export: dict[str, pd.DataFrame] = {}
    ev = t[(t["quantity"] == "power_kw") & (t["entity"] != "site")]
    for entity, g in ev.groupby("entity", sort=True):
        s = g.set_index("time")["value"].sort_index()
        if (s < 0).any():
            frame = _with_step(s)
            frame["value"] = (-frame["value"]).clip(lower=0.0)
            export[str(entity)] = frame
    site = t[t["entity"] == "site"]
    steps: list[tuple[datetime, datetime]] = []
    if len(site):
        wide = site.pivot_table(index="time", columns="quantity", values="value",
                                aggfunc="last").sort_index()
        on = pd.Series(False, index=wide.index)
        if "grid_ev_share" in wide:
            on |= wide["grid_ev_share"].fillna(1.0) < 1.0
        if "grid_emergency" in wide:
            on |= wide["grid_emergency"].fillna(0.0) > 0.0
        if "grid_event_limit_kw" in wide:
            on |= wide["grid_event_limit_kw"].notna()
        frame = _with_step(on.astype(float))
        active = frame[frame["value"] > 0]
        for end, step_s in zip(pd.DatetimeIndex(active.index), active["step_s"], strict=True):
            stamp = end.to_pydatetime()
            steps.append((stamp - timedelta(seconds=float(step_s)), stamp))
    return RunSignals(export, tuple(steps))


def max_power_kw(registers_wh: Sequence[tuple[datetime, int]]) -> float:
    """Highest mean power between two register samples [kW] (0 for fewer than two)."""
    best = 0.0
    for (t0, w0), (t1, w1) in pairwise(registers_wh):
        hours = (t1 - t0).total_seconds() / 3600.0
        if hours > 0:
            best = max(best, (w1 - w0) / 1000.0 / hours)
    return best


def asap_baseline_wh(blocks: Sequence[tuple[datetime, datetime, int]],
                     power_kw: float) -> list[int]:
    """Energy per block [Wh] of the same session charged ASAP at ``power_kw``.

    From the first block's start, ``power_kw`` until the session's energy (the sum of the
    blocks, negative steps already at 0) is reached; whole Wh, sums to that energy when
    ``power_kw`` could deliver it in the session's time, else front-loaded up to it.
    """
    remaining = sum(wh for _, _, wh in blocks)
    out: list[int] = []
    for t0, t1, _ in blocks:
        cap = int(power_kw * 1000.0 * (t1 - t0).total_seconds() / 3600.0)
        take = max(0, min(remaining, cap))
        out.append(take)
        remaining -= take
    if remaining > 0 and out:  # the observed power could not have delivered it sooner
        out[-1] += remaining
    return out


def _export_kwh(frame: pd.DataFrame | None, t0: datetime, t1: datetime) -> Decimal:
    if frame is None:
        return Decimal(0)
    w = frame[(frame.index > t0) & (frame.index <= t1)]
    kwh = float((w["value"] * w["step_s"]).sum()) / 3600.0
    return Decimal(round(kwh * 1000)) * _WH


def _in_event(steps: Sequence[tuple[datetime, datetime]], t0: datetime, t1: datetime) -> bool:
    return any(a < t1 and b > t0 for a, b in steps)


def session_intervals(
    blocks: Sequence[tuple[datetime, datetime, int]],
    registers_wh: Sequence[tuple[datetime, int]],
    evse: str,
    clock: RateClock,
    signals: RunSignals,
) -> tuple[Interval, ...]:
    """One :class:`Interval` per block of a session on EVSE ``evse`` (module docstring).

    ``blocks``: (start, end, Wh) of the session's 15-min blocks; ``registers_wh``: its
    register samples (time, Wh), for the highest power drawn.
    """
    baseline = asap_baseline_wh(blocks, max_power_kw(registers_wh))
    export = signals.export_kw.get(evse)
    out = []
    for (t0, t1, wh), base in zip(blocks, baseline, strict=True):
        price, peak = clock.at(t0)
        out.append(Interval(
            start=t0, end=t1, import_kwh=Decimal(wh) * _WH,
            export_kwh=_export_kwh(export, t0, t1), price_per_kwh=price, peak=peak,
            dr_event=_in_event(signals.dr_steps, t0, t1), baseline_kwh=Decimal(base) * _WH))
    return tuple(out)
