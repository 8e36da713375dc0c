"""Fail-safe allocation of site capacity to EVSEs (pure function).

The algorithm, in per-phase current [A] (a DC set-point [W] is converted with the
voltage and the number of site phases it loads):

1. Capacity. ``limit = min(grid limit, external limit)``; the non-EV load is its
   measurement when fresh (not older than ``telemetry_timeout_s`` and not reported lost),
   otherwise the worst case (``non_ev_load_worst_case_kw``, never less than the last
   measurement; without one, the whole limit). ``available = limit - non-EV load -
   safety margin``, spread over the site phases (non-EV load assumed balanced): every
   phase gets ``available / (phases * voltage)``.
2. Worst-case EVSEs (telemetry older than ``telemetry_timeout_s``, or not controllable)
   come first: each is assumed to draw its maximum, which is reserved on its phases, and
   its set-point is never raised (``min(previous, max, what fits)``, 0 below its minimum).
   A lost measurement removes headroom, never adds it. An EVSE that draws more than its
   set-point (``reserve_measured``: it ignores or overshoots its profile) is handled the
   same way, except that what is reserved is its measured current (at least its
   set-point; at least its maximum too when it is also stale or not controllable).
3. Order of the others: priority (higher first), then the strategy's key (``llf``: least
   laxity, ``laxity = time to departure - remaining energy / max power``; ``edf``:
   earliest departure; ``equal``: laxity for admission), unknown departure last, then the
   EVSE key.
4. Minimums: in that order, every EVSE gets its minimum if it fits on all its phases,
   otherwise 0 (pause; IEC 61851-1 allows no AC current below 6 A, never trickle).
5. Fill: ``llf``/``edf`` greedily in order up to each EVSE's cap; ``equal`` by
   water-filling (max-min fair progressive filling on a common level). The cap is the
   EVSE's maximum, or, for a vehicle drawing clearly less than its set-point (taper,
   full battery), its measured current + ``taper_headroom_a``. Skipped when the non-EV
   measurement is not fresh (stale, missing or lost): fail safe, every admitted EVSE is
   held at its minimum (reason ``fail_safe_min``), so a lost site meter never reads as
   zero load.
6. Quantisation down to 0.1 A (AC; the OCPP schemas allow one decimal) or 1 W (DC), and
   hysteresis: an increase smaller than ``hysteresis_a`` is not made (the previous value
   is kept, which only lowers the load); any decrease is made.

Invariants (property-tested): per phase, the set-points fit in the capacity left after
the non-EV load and the worst-case reservations; every set-point is 0 or within
[minimum, maximum]; nothing is allocated when ``available <= 0``; with a non-EV
measurement that is not fresh, every set-point of an EVSE that is not worst case is 0 or
exactly its minimum.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from controllers.dlm.config import DlmConfig, SiteConfig
from controllers.dlm.model import (
    Allocation,
    DlmResult,
    EvseInput,
    EvseKey,
    SiteMeasurement,
)

EPS = 1e-9
"""Tolerance of capacity comparisons [A]."""

AC_QUANTUM_A = 0.1
DC_QUANTUM_W = 1.0
_MIN_TAPER_THRESHOLD_A = 0.5


@dataclass
class _Prepared:
    """An EVSE in per-phase current, with its bounds and order key."""

    evse: EvseInput
    factor: float  # native set-point units per A per phase (1 for AC, W/A for DC)
    quantum: float  # native quantum
    lo_n: float  # quantised minimum, native units
    hi_n: float  # quantised maximum, native units
    feasible: bool
    lo_a: float
    hi_a: float
    cap_a: float
    tapered: bool
    worst: bool
    reserve_a: float  # what a worst-case EVSE reserves per phase [A]
    order_key: tuple[float, float, EvseKey]


def _floor_q(value: float, quantum: float) -> float:
    return round(math.floor(value / quantum + EPS) * quantum, 6)


def _ceil_q(value: float, quantum: float) -> float:
    return round(math.ceil(value / quantum - EPS) * quantum, 6)


def _age_s(now: datetime, then: datetime | None) -> float:
    return math.inf if then is None else (now - then).total_seconds()


def _measured_per_phase_a(evse: EvseInput, voltage_v: float) -> float | None:
    """Highest measured current of the EVSE's phases [A], if known."""
    if evse.kind == "AC" and evse.measured_current_a:
        return max(evse.measured_current_a)
    if evse.measured_power_w is not None:
        return max(evse.measured_power_w, 0.0) / (len(evse.phases) * voltage_v)
    return None


def _prepare(evse: EvseInput, site: SiteConfig, config: DlmConfig, now: datetime) -> _Prepared:
    n_phases = len(evse.phases)
    if evse.kind == "AC":
        factor, quantum = 1.0, AC_QUANTUM_A
        lo_raw, hi_raw = evse.min_current_a, evse.max_current_a
    else:
        factor, quantum = n_phases * site.voltage_v, DC_QUANTUM_W
        lo_raw, hi_raw = evse.min_power_w, evse.max_power_w
    lo_n = max(_ceil_q(max(lo_raw, 0.0), quantum), quantum)
    hi_n = _floor_q(max(hi_raw, 0.0), quantum)
    feasible = lo_n <= hi_n
    lo_a, hi_a = lo_n / factor, hi_n / factor

    blind = not evse.controllable or _age_s(now, evse.measured_at) > config.telemetry_timeout_s
    worst = blind or evse.reserve_measured
    cap_a, tapered = hi_a, False
    measured_a = _measured_per_phase_a(evse, site.voltage_v)
    reserve_a = hi_a
    if evse.reserve_measured:
        drawn_a = max(measured_a or 0.0, evse.previous_setpoint / factor)
        reserve_a = max(hi_a, drawn_a) if blind else drawn_a
    follows_setpoint = evse.setpoint_since is None or (
        evse.measured_at is not None and evse.measured_at >= evse.setpoint_since
    )
    if not worst and evse.previous_setpoint > 0 and measured_a is not None and follows_setpoint:
        threshold = max(config.taper_headroom_a / 2, _MIN_TAPER_THRESHOLD_A)
        if measured_a < evse.previous_setpoint / factor - threshold:
            cap_a = min(hi_a, max(lo_a, measured_a + config.taper_headroom_a))
            tapered = cap_a < hi_a

    max_power_w = hi_n if evse.kind == "DC" else hi_n * n_phases * site.voltage_v
    if evse.departure is None:
        laxity = departure_s = math.inf
    else:
        departure_s = (evse.departure - now).total_seconds()
        remaining_kwh = 0.0
        if evse.requested_energy_kwh is not None:
            remaining_kwh = max(evse.requested_energy_kwh - evse.energy_delivered_kwh, 0.0)
        if remaining_kwh <= 0:
            laxity = departure_s
        elif max_power_w <= 0:
            laxity = -math.inf
        else:
            laxity = departure_s - remaining_kwh * 3.6e6 / max_power_w
    metric = departure_s if config.strategy == "edf" else laxity
    return _Prepared(
        evse=evse,
        factor=factor,
        quantum=quantum,
        lo_n=lo_n,
        hi_n=hi_n,
        feasible=feasible,
        lo_a=lo_a,
        hi_a=hi_a,
        cap_a=cap_a,
        tapered=tapered,
        worst=worst,
        reserve_a=reserve_a,
        order_key=(-float(evse.priority), metric, evse.key),
    )


def _fit(remaining: list[float], phases: Iterable[int]) -> float:
    return min(remaining[p - 1] for p in phases)


def _take(remaining: list[float], phases: Iterable[int], amount: float) -> None:
    for p in phases:
        remaining[p - 1] -= amount


def _water_fill(
    items: Sequence[_Prepared], x: dict[EvseKey, float], remaining: list[float]
) -> None:
    """Max-min fair progressive filling from the current allocations up to the caps.

    Raises the lowest allocations together; an EVSE stops at its cap or when one of its
    phases is full. Mutates ``x`` and ``remaining``.
    """

    def can_grow(p: _Prepared) -> bool:
        return x[p.evse.key] < p.cap_a - EPS and _fit(remaining, p.evse.phases) > EPS

    active = [p for p in items if can_grow(p)]
    for _ in range(4 * len(items) + 8):
        if not active:
            return
        level = min(x[p.evse.key] for p in active)
        rising = [p for p in active if x[p.evse.key] <= level + EPS]
        step = min(p.cap_a - x[p.evse.key] for p in rising)
        waiting = [x[p.evse.key] for p in active if x[p.evse.key] > level + EPS]
        if waiting:
            step = min(step, min(waiting) - level)
        for phase in range(1, len(remaining) + 1):
            n = sum(1 for p in rising if phase in p.evse.phases)
            if n:
                step = min(step, remaining[phase - 1] / n)
        step = max(step, 0.0)
        for p in rising:
            x[p.evse.key] += step
            _take(remaining, p.evse.phases, step)
        active = [p for p in active if can_grow(p)]


def _to_native(x_a: float, p: _Prepared) -> float:
    """Per-phase current [A] to a quantised set-point in native units (0 below minimum)."""
    if x_a <= EPS:
        return 0.0
    native = min(_floor_q(x_a * p.factor, p.quantum), p.hi_n)
    if native < p.lo_n:
        return p.lo_n if x_a * p.factor >= p.lo_n - 1e-6 else 0.0
    return native


def allocate(
    site: SiteConfig,
    measurement: SiteMeasurement,
    evses: Sequence[EvseInput],
    config: DlmConfig,
    now: datetime,
) -> DlmResult:
    """Allocate the site's headroom to the EVSEs (see the module docstring).

    Args:
        site: grid connection (limit [kW], phases, voltage [V], margin [kW]).
        measurement: non-EV load [kW] with its timestamp (and whether it is lost),
            external limit [kW]. When it is not fresh, EVSEs get at most their minimum.
        evses: the EVSEs with an active transaction; keys must be unique.
        config: strategy, minimum current [A], hysteresis [A], telemetry timeout [s],
            taper headroom [A].
        now: current time, tz-aware UTC (injected; never read from a clock).

    Returns:
        One :class:`Allocation` per EVSE (0 = pause; AC in A per phase, DC in W) and the
        capacity figures.

    Raises:
        ValueError: naive ``now``, duplicate keys, or EVSE phases outside the site's.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    keys = [e.key for e in evses]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate EVSE keys")
    for e in evses:
        if not e.phases or any(p < 1 or p > site.phases for p in e.phases):
            raise ValueError(f"EVSE {e.key}: phases {e.phases} not within 1..{site.phases}")
        if len(set(e.phases)) != len(e.phases):
            raise ValueError(f"EVSE {e.key}: repeated phase in {e.phases}")

    limit_kw = site.grid_limit_kw
    if measurement.external_limit_kw is not None:
        limit_kw = min(limit_kw, measurement.external_limit_kw)
    non_ev_fresh = (
        measurement.non_ev_load_kw is not None
        and not measurement.lost
        and _age_s(now, measurement.measured_at) <= config.telemetry_timeout_s
    )
    if non_ev_fresh and measurement.non_ev_load_kw is not None:
        non_ev_kw = measurement.non_ev_load_kw
    else:
        worst = (
            site.non_ev_load_worst_case_kw
            if site.non_ev_load_worst_case_kw is not None
            else limit_kw
        )
        last = measurement.non_ev_load_kw
        non_ev_kw = worst if last is None else max(worst, last)
    available_kw = limit_kw - non_ev_kw - site.safety_margin_kw
    capacity_a = max(available_kw, 0.0) * 1000.0 / (site.phases * site.voltage_v)
    remaining = [capacity_a] * site.phases

    prepared = sorted((_prepare(e, site, config, now) for e in evses), key=lambda p: p.order_key)
    x: dict[EvseKey, float] = {}
    reasons: dict[EvseKey, str] = {}

    # Worst case first: reserve the maximum, never raise the set-point.
    for p in (q for q in prepared if q.worst):
        key = p.evse.key
        fit = _fit(remaining, p.evse.phases)
        s = min(p.evse.previous_setpoint / p.factor, p.hi_a, fit) if p.feasible else 0.0
        x[key] = s if s >= p.lo_a - EPS else 0.0
        reasons[key] = "profile_violation" if p.evse.reserve_measured else "worst_case"
        _take(remaining, p.evse.phases, p.reserve_a)

    fresh = [p for p in prepared if not p.worst]
    admitted: list[_Prepared] = []
    for p in fresh:
        key = p.evse.key
        x[key] = 0.0
        if not p.feasible:
            reasons[key] = "min_above_max"
        elif available_kw <= 0:
            reasons[key] = "no_headroom"
        elif p.lo_a <= _fit(remaining, p.evse.phases) + EPS and p.lo_a <= p.cap_a + EPS:
            x[key] = p.lo_a
            _take(remaining, p.evse.phases, p.lo_a)
            admitted.append(p)
        else:
            reasons[key] = "below_min"

    # Fail safe: without a fresh non-EV measurement, no fill (every EVSE at its minimum);
    # the same when the grid asks to shed EVs to their minimum (hold_minimum).
    fill = non_ev_fresh and not measurement.hold_minimum
    if fill and config.strategy == "equal":
        _water_fill(admitted, x, remaining)
    elif fill:
        for p in admitted:
            add = max(min(p.cap_a - x[p.evse.key], _fit(remaining, p.evse.phases)), 0.0)
            x[p.evse.key] += add
            _take(remaining, p.evse.phases, add)
    for p in admitted:
        key = p.evse.key
        if not non_ev_fresh:
            reasons[key] = "fail_safe_min"
        elif measurement.hold_minimum:
            reasons[key] = "shed_min"
        elif x[key] >= p.cap_a - 1e-6:
            reasons[key] = "taper" if p.tapered else "max"
        else:
            reasons[key] = "allocated"

    allocations: dict[EvseKey, Allocation] = {}
    reserved = [0.0] * site.phases
    for p in sorted(prepared, key=lambda q: q.evse.key):
        key = p.evse.key
        native = _to_native(x[key], p)
        previous = p.evse.previous_setpoint
        if (
            not p.worst
            and previous > 0
            and p.lo_n <= previous < native
            and native - previous < config.hysteresis_a * p.factor - EPS
        ):
            native = previous
            reasons[key] = "hysteresis_hold"
        current_a = native / p.factor
        reserved_a = p.reserve_a if p.worst else current_a
        for phase in p.evse.phases:
            reserved[phase - 1] += reserved_a
        allocations[key] = Allocation(
            key=key,
            setpoint=native,
            unit="A" if p.evse.kind == "AC" else "W",
            current_a=current_a,
            reserved_a=reserved_a,
            worst_case=p.worst,
            reason=reasons[key],
        )

    return DlmResult(
        limit_kw=limit_kw,
        non_ev_load_kw=non_ev_kw,
        non_ev_stale=not non_ev_fresh,
        available_kw=available_kw,
        phase_capacity_a=tuple([capacity_a] * site.phases),
        phase_reserved_a=tuple(reserved),
        allocations=allocations,
        order=tuple(p.evse.key for p in prepared),
    )
