"""Flexibility envelopes of plugged EVs and a BESS over a time grid (pure, no I/O, no clock).

Model (one asset, one grid of ``n`` intervals of ``dt_h`` hours starting at ``t0``):

* ``p[k]`` [kW] is the **average grid-side power** of the asset over interval ``k``
  (``[t0 + k dt, t0 + (k+1) dt)``), measured at the meter of its EVSE / inverter,
  **positive = import (charging), negative = export (discharging)** -- the site convention
  of DESIGN.md.
* ``E[k] = sum(p[j] * dt_h for j < k)`` [kWh] is the **cumulative grid-side energy** since
  ``t0`` (``E[0] = 0``), so ``E`` has ``n + 1`` points, ``E[k]`` at time ``t0 + k dt``.
* The envelope is the polytope ``p_min_kw <= p <= p_max_kw`` and
  ``e_min_kwh <= E <= e_max_kwh``; every envelope built here is *tightened*: from any
  ``E[k]`` inside ``[e_min_kwh[k], e_max_kwh[k]]`` some ``p[k]`` inside the power bounds
  reaches ``[e_min_kwh[k+1], e_max_kwh[k+1]]`` (so a controller that keeps each step
  inside the bounds can never be trapped), and every bound is reachable from ``E[0] = 0``.

Battery side: the energy stored changes by ``eta_charge * p * dt`` when charging and by
``p * dt / eta_discharge`` when discharging. The grid-side bounds are the images of the
battery-side limits:

* upper limits (capacity, ``soc_max``) through ``eta_charge``: since the stored energy is
  never more than ``eta_charge * E`` whatever the schedule, ``E <= e_max_kwh`` guarantees
  the battery limit for *every* schedule;
* the energy a vehicle needs at departure through ``eta_charge`` (exact for vehicles that
  do not discharge, the usual case);
* lower limits (the BESS's ``soc_min``, the driver's V2G floor) through ``eta_discharge``:
  exact for any schedule that does not charge before it discharges within the horizon.
  A schedule that cycles (charges, then discharges) loses ``1/eta_discharge -
  eta_charge`` per kWh charged: the stored energy can end below the floor by at most
  ``(1/eta_discharge - eta_charge) * C[k]`` where ``C[k]`` is the grid energy charged into
  the asset before ``k`` (see :func:`battery_energy_kwh`); likewise a V2G vehicle can
  leave short of its need by at most ``(1/eta_discharge - eta_charge) * D`` where ``D``
  is the grid energy it discharged. With ``eta = 1`` or no cycling the guarantee is
  exact. Envelopes are recomputed from the measured SoC at every control
  step (receding horizon), which returns that loss to the model.

Partially plugged intervals: a vehicle plugged for a fraction ``f`` of interval ``k`` gets
``f`` times its power limits as interval-average bounds; the energy of that interval is
delivered while it is plugged. Outside the plugged window the power bounds are zero and
the energy bounds are flat (0 before arrival, frozen at their departure value after).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BessFlex",
    "Envelope",
    "EvFlex",
    "FloatArray",
    "battery_energy_kwh",
    "bess_envelope",
    "ev_envelope",
    "feasible",
    "tighten",
    "violations",
]

FloatArray = NDArray[np.float64]
AssetKind = Literal["ev", "bess", "aggregate"]

_TOL_KWH = 1e-6


def _require_utc(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")


@dataclass(frozen=True)
class EvFlex:
    """What the VPP knows of one plugged (or expected) electric vehicle.

    Attributes:
        evse_id: id of the EVSE the vehicle is on (any string, e.g. ``"CA-01/1"``).
        departure: when the vehicle leaves (tz-aware UTC): the driver's input or the
            session's estimate.
        energy_needed_kwh: energy still to be **stored in the battery** before departure
            [kWh] (battery side; the grid delivers ``energy_needed_kwh / eta_charge``).
            With meter-side data (e.g. ACN-Data requested energy) leave ``eta_charge = 1``.
        max_charge_kw: charge limit at the meter [kW]: min of the EVSE rating, the cable
            and the vehicle's on-board charger limit. ``>= 0``.
        max_discharge_kw: discharge limit at the meter [kW] (magnitude, ``>= 0``); 0
            unless the EVSE and the vehicle do V2G.
        arrival: plug-in time (tz-aware UTC); ``None`` or at/before ``t0`` = plugged now.
            A later arrival describes an expected vehicle (forecast).
        eta_charge: grid-to-battery efficiency (0, 1].
        eta_discharge: battery-to-grid efficiency (0, 1].
        battery_capacity_kwh: usable capacity [kWh]; ``None`` = unknown: the vehicle then
            takes no more than ``energy_needed_kwh`` and does not discharge.
        soc: state of charge now (0..1); needed with ``battery_capacity_kwh`` for V2G and
            for headroom above ``energy_needed_kwh``; ``None`` = unknown (same as above).
        soc_max: highest SoC the vehicle is charged to (0..1), default 1.
        v2g_soc_min: lowest SoC the driver allows V2G to take the battery to (0..1). The
            departure target always wins: the envelope never lets the battery fall below
            what it needs to still reach ``energy_needed_kwh`` by departure.

    Raises:
        ValueError: naive times, departure not after arrival, negative or non-finite
            energy / power, efficiency outside (0, 1], SoC outside [0, 1], capacity <= 0.
    """

    evse_id: str
    departure: datetime
    energy_needed_kwh: float
    max_charge_kw: float
    max_discharge_kw: float = 0.0
    arrival: datetime | None = None
    eta_charge: float = 1.0
    eta_discharge: float = 1.0
    battery_capacity_kwh: float | None = None
    soc: float | None = None
    soc_max: float = 1.0
    v2g_soc_min: float = 0.0

    def __post_init__(self) -> None:
        _require_utc(self.departure, "departure")
        if self.arrival is not None:
            _require_utc(self.arrival, "arrival")
            if self.departure <= self.arrival:
                raise ValueError(f"{self.evse_id}: departure {self.departure.isoformat()} "
                                 f"is not after arrival {self.arrival.isoformat()}")
        _check_nonneg(energy_needed_kwh=self.energy_needed_kwh,
                      max_charge_kw=self.max_charge_kw,
                      max_discharge_kw=self.max_discharge_kw)
        _check_eta(self.eta_charge, self.eta_discharge)
        if self.battery_capacity_kwh is not None and not self.battery_capacity_kwh > 0:
            raise ValueError(f"battery_capacity_kwh must be > 0, got {self.battery_capacity_kwh}")
        for name, value in (("soc", self.soc), ("soc_max", self.soc_max),
                            ("v2g_soc_min", self.v2g_soc_min)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def knows_battery(self) -> bool:
        """Capacity and SoC are both known."""
        return self.battery_capacity_kwh is not None and self.soc is not None


@dataclass(frozen=True)
class BessFlex:
    """A stationary battery (BESS) seen by the VPP.

    Attributes:
        asset_id: id of the BESS.
        capacity_kwh: usable capacity [kWh], ``> 0``.
        soc: state of charge now (0..1).
        max_charge_kw: charge limit at the inverter's AC terminals [kW], ``>= 0``.
        max_discharge_kw: discharge limit at the AC terminals [kW] (magnitude), ``>= 0``.
        soc_min: lowest SoC allowed (0..1), default 0.2 (the site's reserve).
        soc_max: highest SoC allowed (0..1), default 1.
        eta_charge: AC-to-battery efficiency (0, 1].
        eta_discharge: battery-to-AC efficiency (0, 1].

    Raises:
        ValueError: capacity <= 0, negative power, efficiency outside (0, 1], not
            ``0 <= soc_min <= soc_max <= 1``, SoC outside [0, 1].
    """

    asset_id: str
    capacity_kwh: float
    soc: float
    max_charge_kw: float
    max_discharge_kw: float
    soc_min: float = 0.2
    soc_max: float = 1.0
    eta_charge: float = 1.0
    eta_discharge: float = 1.0

    def __post_init__(self) -> None:
        if not self.capacity_kwh > 0:
            raise ValueError(f"capacity_kwh must be > 0, got {self.capacity_kwh}")
        _check_nonneg(max_charge_kw=self.max_charge_kw, max_discharge_kw=self.max_discharge_kw)
        _check_eta(self.eta_charge, self.eta_discharge)
        if not 0.0 <= self.soc_min <= self.soc_max <= 1.0:
            raise ValueError(f"need 0 <= soc_min <= soc_max <= 1, got {self.soc_min}, "
                             f"{self.soc_max}")
        if not 0.0 <= self.soc <= 1.0:
            raise ValueError(f"soc must be in [0, 1], got {self.soc}")


def _check_nonneg(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")


def _check_eta(eta_charge: float, eta_discharge: float) -> None:
    for name, value in (("eta_charge", eta_charge), ("eta_discharge", eta_discharge)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")


@dataclass(frozen=True)
class Envelope:
    """Power and cumulative-energy bounds of one asset (or of an aggregate) on a grid.

    Shapes: ``n`` intervals; ``p_min_kw``, ``p_max_kw``: ``(n,)``; ``e_min_kwh``,
    ``e_max_kwh``: ``(n + 1,)``, index ``k`` at time ``t0 + k * dt_h``, ``[0] == 0``.
    All ``float64`` numpy arrays, copied on construction and read-only. Units kW / kWh,
    grid side, positive = import (see the module docstring).

    Attributes:
        asset_id: EVSE id (EV), BESS id, or the aggregate's name.
        kind: ``"ev"``, ``"bess"`` or ``"aggregate"``.
        t0: start of the grid (tz-aware UTC).
        dt_h: interval length [h].
        p_min_kw: lower power bound per interval [kW] (negative = may export).
        p_max_kw: upper power bound per interval [kW].
        e_min_kwh: lower bound on cumulative grid energy since ``t0`` [kWh].
        e_max_kwh: upper bound on cumulative grid energy since ``t0`` [kWh].
        shortfall_kwh: grid-side energy a vehicle asked for but cannot get before
            departure even at full power (the envelope then asks for what is reachable);
            0 for a BESS.
        eta_charge: efficiency used to map battery limits (1 for an aggregate).
        eta_discharge: efficiency used to map battery limits (1 for an aggregate).

    Raises:
        ValueError: naive ``t0``, ``dt_h <= 0``, shapes other than ``(n,)`` / ``(n + 1,)``.
    """

    asset_id: str
    kind: AssetKind
    t0: datetime
    dt_h: float
    p_min_kw: FloatArray
    p_max_kw: FloatArray
    e_min_kwh: FloatArray
    e_max_kwh: FloatArray
    shortfall_kwh: float = 0.0
    eta_charge: float = 1.0
    eta_discharge: float = 1.0

    def __post_init__(self) -> None:
        _require_utc(self.t0, "t0")
        if not self.dt_h > 0:
            raise ValueError(f"dt_h must be > 0, got {self.dt_h}")
        for name in ("p_min_kw", "p_max_kw", "e_min_kwh", "e_max_kwh"):
            # own copy, so freezing it never touches the caller's array
            object.__setattr__(self, name, np.array(getattr(self, name), dtype=np.float64))
        n = self.p_min_kw.shape[0]
        if (self.p_min_kw.shape != (n,) or self.p_max_kw.shape != (n,)
                or self.e_min_kwh.shape != (n + 1,) or self.e_max_kwh.shape != (n + 1,)):
            raise ValueError(
                f"{self.asset_id}: shapes must be p (n,), e (n+1,); got "
                f"{self.p_min_kw.shape}, {self.p_max_kw.shape}, {self.e_min_kwh.shape}, "
                f"{self.e_max_kwh.shape}")
        for array in (self.p_min_kw, self.p_max_kw, self.e_min_kwh, self.e_max_kwh):
            array.setflags(write=False)

    @property
    def n(self) -> int:
        """Number of intervals."""
        return int(self.p_min_kw.shape[0])

    @property
    def times(self) -> list[datetime]:
        """The ``n + 1`` grid points ``t0 + k * dt_h`` (tz-aware UTC)."""
        return [self.t0 + timedelta(hours=k * self.dt_h) for k in range(self.n + 1)]


def _frac_plugged(t0: datetime, dt_h: float, n: int, start: datetime,
                  end: datetime) -> FloatArray:
    """Fraction of each interval inside ``[start, end)``, shape ``(n,)``."""
    s = (start - t0).total_seconds() / 3600.0
    e = (end - t0).total_seconds() / 3600.0
    k = np.arange(n, dtype=np.float64) * dt_h
    overlap = np.clip(np.minimum(k + dt_h, e) - np.maximum(k, s), 0.0, dt_h)
    return np.asarray(overlap / dt_h, dtype=np.float64)


def tighten(p_min_kw: ArrayLike, p_max_kw: ArrayLike, e_min_kwh: ArrayLike,
            e_max_kwh: ArrayLike, dt_h: float
            ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Tighten power and cumulative bounds so they are reachable and cannot trap a schedule.

    Forward pass (reachability from ``E[0] = 0``): ``e_max[k+1] <= e_max[k] + p_max[k] dt``,
    ``e_min[k+1] >= e_min[k] + p_min[k] dt``. Backward pass (no trap):
    ``e_min[k] >= e_min[k+1] - p_max[k] dt``, ``e_max[k] <= e_max[k+1] - p_min[k] dt``.
    After both passes ``[e_min[k], e_max[k]]`` is the exact projection of the polytope on
    ``E[k]``. Last, the power bounds are cut to what the energy bounds let an interval
    carry: ``p_max[k] <= (e_max[k+1] - e_min[k]) / dt``, ``p_min[k] >= (e_min[k+1] -
    e_max[k]) / dt`` (the exact projection on ``p[k]``).

    Args:
        p_min_kw: lower power bounds, shape ``(n,)`` [kW].
        p_max_kw: upper power bounds, shape ``(n,)`` [kW], ``>= p_min_kw``.
        e_min_kwh: lower cumulative bounds, shape ``(n + 1,)`` [kWh].
        e_max_kwh: upper cumulative bounds, shape ``(n + 1,)`` [kWh].
        dt_h: interval length [h].

    Returns:
        ``(p_min_kw, p_max_kw, e_min_kwh, e_max_kwh)``, new arrays, ``e[0] == 0``.

    Raises:
        ValueError: the polytope is empty (the bounds contradict each other); the message
            names the first grid point where they cross.
    """
    pmin = np.asarray(p_min_kw, dtype=np.float64)
    pmax = np.asarray(p_max_kw, dtype=np.float64)
    lo = np.array(e_min_kwh, dtype=np.float64)
    hi = np.array(e_max_kwh, dtype=np.float64)
    n = pmin.shape[0]
    if np.any(pmin > pmax + 1e-9):
        k = int(np.argmax(pmin > pmax + 1e-9))
        raise ValueError(f"p_min > p_max at interval {k}: {pmin[k]} > {pmax[k]} kW")
    lo[0] = max(lo[0], 0.0)
    hi[0] = min(hi[0], 0.0)
    for k in range(n):
        hi[k + 1] = min(hi[k + 1], hi[k] + pmax[k] * dt_h)
        lo[k + 1] = max(lo[k + 1], lo[k] + pmin[k] * dt_h)
    for k in range(n - 1, -1, -1):
        lo[k] = max(lo[k], lo[k + 1] - pmax[k] * dt_h)
        hi[k] = min(hi[k], hi[k + 1] - pmin[k] * dt_h)
    bad = lo > hi + _TOL_KWH
    if np.any(bad):
        k = int(np.argmax(bad))
        raise ValueError(f"empty envelope: e_min {lo[k]:.6g} > e_max {hi[k]:.6g} kWh at "
                         f"grid point {k}")
    # round-off: never let lo exceed hi by the tolerance
    lo = np.minimum(lo, hi)
    lo[0] = hi[0] = 0.0
    # power consistent with energy: the most / least interval k can carry
    pmax_t = np.minimum(pmax, (hi[1:] - lo[:-1]) / dt_h)
    pmin_t = np.maximum(pmin, (lo[1:] - hi[:-1]) / dt_h)
    pmin_t = np.minimum(pmin_t, pmax_t)
    return pmin_t, pmax_t, lo, hi


def ev_envelope(ev: EvFlex, t0: datetime, dt_h: float, n: int) -> Envelope:
    """Envelope of one vehicle over ``n`` intervals of ``dt_h`` hours from ``t0``.

    Rules (grid side, ``P = max_charge_kw``, ``Q = max_discharge_kw``, ``f[k]`` = plugged
    fraction of interval ``k``; battery energies relative to now):

    * power: ``p_max[k] = P f[k]``; ``p_min[k] = -Q f[k]`` if V2G is possible (battery
      known), else 0;
    * needed at departure (grid side): ``need = energy_needed_kwh / eta_charge``, capped
      at what full power delivers before departure (the cap is ``shortfall_kwh``) and at
      the battery headroom;
    * ``e_min`` is the *as-late-as-possible* trajectory: the least cumulative energy from
      which ``need`` is still reachable at full power by departure (beyond the horizon
      the vehicle is assumed to keep power ``P`` until it leaves), and never below the V2G
      floor ``eta_discharge * (v2g_soc_min * capacity - stored now)`` (0 without V2G);
    * ``e_max`` is the *as-soon-as-possible* trajectory, capped by the headroom
      ``(soc_max * capacity - stored now) / eta_charge`` (or by ``need`` when the battery
      is unknown);
    * then :func:`tighten`.

    Args:
        ev: the vehicle.
        t0: start of the grid (tz-aware UTC), "now".
        dt_h: interval length [h], ``> 0``.
        n: number of intervals, ``>= 1``.

    Returns:
        The vehicle's :class:`Envelope` (``kind="ev"``, ``asset_id=ev.evse_id``).

    Raises:
        ValueError: naive ``t0``, ``dt_h <= 0`` or ``n < 1``.
    """
    _require_utc(t0, "t0")
    if not dt_h > 0 or n < 1:
        raise ValueError(f"need dt_h > 0 and n >= 1, got dt_h={dt_h}, n={n}")
    start = t0 if ev.arrival is None or ev.arrival < t0 else ev.arrival
    frac = _frac_plugged(t0, dt_h, n, start, ev.departure)
    p_max = ev.max_charge_kw * frac
    v2g = ev.max_discharge_kw > 0 and ev.knows_battery
    p_min = -ev.max_discharge_kw * frac if v2g else np.zeros(n)

    # hours of plugged time left after each grid point (beyond the horizon too)
    hours_left = np.empty(n + 1)
    t_end_h = (ev.departure - t0).total_seconds() / 3600.0
    start_h = max(0.0, (start - t0).total_seconds() / 3600.0)
    for k in range(n + 1):
        tk = k * dt_h
        hours_left[k] = max(0.0, t_end_h - max(tk, start_h))
    reachable_kwh = ev.max_charge_kw * hours_left[0]

    if ev.knows_battery:
        assert ev.battery_capacity_kwh is not None and ev.soc is not None
        stored = ev.soc * ev.battery_capacity_kwh
        headroom = max(0.0, (ev.soc_max * ev.battery_capacity_kwh - stored)) / ev.eta_charge
        floor = min(0.0, ev.v2g_soc_min * ev.battery_capacity_kwh - stored) * ev.eta_discharge
    else:
        headroom = ev.energy_needed_kwh / ev.eta_charge
        floor = 0.0
    if not v2g:
        floor = 0.0
    asked = min(ev.energy_needed_kwh / ev.eta_charge, headroom)
    need = min(asked, reachable_kwh)
    shortfall = ev.energy_needed_kwh / ev.eta_charge - need

    e_min = np.maximum(need - ev.max_charge_kw * hours_left, floor)
    e_max = np.full(n + 1, headroom)
    # frozen after departure / flat before arrival are produced by tighten (p bounds zero)
    p_min_t, p_max_t, e_min_t, e_max_t = tighten(p_min, p_max, e_min, e_max, dt_h)
    return Envelope(asset_id=ev.evse_id, kind="ev", t0=t0, dt_h=dt_h,
                    p_min_kw=p_min_t, p_max_kw=p_max_t, e_min_kwh=e_min_t,
                    e_max_kwh=e_max_t, shortfall_kwh=float(shortfall),
                    eta_charge=ev.eta_charge, eta_discharge=ev.eta_discharge)


def bess_envelope(bess: BessFlex, t0: datetime, dt_h: float, n: int) -> Envelope:
    """Envelope of a BESS over ``n`` intervals of ``dt_h`` hours from ``t0``.

    Rules (grid = AC side; stored energy now ``S = soc * capacity``):
    ``p_max = max_charge_kw``, ``p_min = -max_discharge_kw`` in every interval;
    ``e_max = (soc_max * capacity - S) / eta_charge`` and
    ``e_min = eta_discharge * (soc_min * capacity - S)`` at every grid point, each clipped
    at 0 when the SoC is already outside ``[soc_min, soc_max]`` (the battery is then held
    where it is in that direction, never pushed further out); then :func:`tighten`.

    Raises:
        ValueError: naive ``t0``, ``dt_h <= 0`` or ``n < 1``.
    """
    _require_utc(t0, "t0")
    if not dt_h > 0 or n < 1:
        raise ValueError(f"need dt_h > 0 and n >= 1, got dt_h={dt_h}, n={n}")
    stored = bess.soc * bess.capacity_kwh
    hi = max(0.0, bess.soc_max * bess.capacity_kwh - stored) / bess.eta_charge
    lo = min(0.0, bess.soc_min * bess.capacity_kwh - stored) * bess.eta_discharge
    p_min = np.full(n, -bess.max_discharge_kw)
    p_max = np.full(n, bess.max_charge_kw)
    p_min, p_max, e_min, e_max = tighten(p_min, p_max, np.full(n + 1, lo),
                                         np.full(n + 1, hi), dt_h)
    return Envelope(asset_id=bess.asset_id, kind="bess", t0=t0, dt_h=dt_h, p_min_kw=p_min,
                    p_max_kw=p_max, e_min_kwh=e_min, e_max_kwh=e_max,
                    eta_charge=bess.eta_charge, eta_discharge=bess.eta_discharge)


def violations(envelope: Envelope, schedule_kw: ArrayLike,
               tol_kw: float = 1e-6) -> list[str]:
    """List how a schedule leaves an envelope (empty list = inside).

    Args:
        envelope: the bounds.
        schedule_kw: interval-average grid power, shape ``(n,)`` [kW], positive = import.
        tol_kw: tolerance on power [kW]; the energy tolerance is ``tol_kw * dt_h * n``.

    Returns:
        Human-readable messages, one per violated bound type with its first interval.

    Raises:
        ValueError: wrong shape.
    """
    p = np.asarray(schedule_kw, dtype=np.float64)
    if p.shape != (envelope.n,):
        raise ValueError(f"schedule shape {p.shape} != ({envelope.n},)")
    tol_e = tol_kw * envelope.dt_h * max(envelope.n, 1)
    e = np.concatenate(([0.0], np.cumsum(p) * envelope.dt_h))
    out = []
    checks = (
        ("p < p_min", p < envelope.p_min_kw - tol_kw),
        ("p > p_max", p > envelope.p_max_kw + tol_kw),
        ("E < e_min", e < envelope.e_min_kwh - tol_e),
        ("E > e_max", e > envelope.e_max_kwh + tol_e),
    )
    for label, bad in checks:
        if np.any(bad):
            k = int(np.argmax(bad))
            out.append(f"{envelope.asset_id}: {label} at index {k}")
    return out


def feasible(envelope: Envelope, schedule_kw: ArrayLike, tol_kw: float = 1e-6) -> bool:
    """True when the schedule (shape ``(n,)``, kW) is inside the envelope.

    See :func:`violations` for the arguments, the tolerances and the errors.
    """
    return not violations(envelope, schedule_kw, tol_kw)


def battery_energy_kwh(schedule_kw: ArrayLike, dt_h: float, eta_charge: float = 1.0,
                       eta_discharge: float = 1.0) -> FloatArray:
    """Change of stored energy along a grid-side schedule, with the losses of each direction.

    ``B[k+1] = B[k] + dt_h * (eta_charge * p[k] if p[k] >= 0 else p[k] / eta_discharge)``,
    ``B[0] = 0``.

    Args:
        schedule_kw: grid-side power, shape ``(n,)`` [kW], positive = charging.
        dt_h: interval length [h].
        eta_charge: grid-to-battery efficiency (0, 1].
        eta_discharge: battery-to-grid efficiency (0, 1].

    Returns:
        Stored-energy change since ``t0``, shape ``(n + 1,)`` [kWh].
    """
    p = np.asarray(schedule_kw, dtype=np.float64)
    stored = np.where(p >= 0, eta_charge * p, p / eta_discharge) * dt_h
    return np.concatenate(([0.0], np.cumsum(stored)))
