"""Battery energy storage system: SoC integration with efficiencies, limits and bounds.

Sign convention (the SunSpec 701 one): AC power is positive when the BESS discharges
(injects into the site), negative when it charges. Exact integration of a constant AC
set-point over an interval: the battery follows it until SoC reaches ``soc_max`` (charging)
or ``soc_min`` (discharging), then idles. Stored energy changes by ``eta_charge x AC energy``
when charging and by ``AC energy / eta_discharge`` when discharging.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Battery", "BessSpec", "BessStep"]


@dataclass(frozen=True, slots=True)
class BessSpec:
    """Ratings of a BESS.

    Attributes:
        capacity_kwh: usable energy at SoC 1.
        max_charge_kw: AC charge limit.
        max_discharge_kw: AC discharge limit.
        eta_charge: AC to stored.
        eta_discharge: stored to AC.
        soc_min: lower SoC bound (0..1).
        soc_max: upper SoC bound (0..1).
    """

    capacity_kwh: float = 200.0
    max_charge_kw: float = 100.0
    max_discharge_kw: float = 100.0
    eta_charge: float = 0.95
    eta_discharge: float = 0.95
    soc_min: float = 0.1
    soc_max: float = 0.9

    def __post_init__(self) -> None:
        if not 0 <= self.soc_min < self.soc_max <= 1:
            raise ValueError("need 0 <= soc_min < soc_max <= 1")
        if not (0 < self.eta_charge <= 1 and 0 < self.eta_discharge <= 1):
            raise ValueError("efficiencies must be in (0, 1]")
        if self.capacity_kwh <= 0 or self.max_charge_kw < 0 or self.max_discharge_kw < 0:
            raise ValueError("capacity must be positive, limits non-negative")


@dataclass(frozen=True, slots=True)
class BessStep:
    """What one interval did: AC energy (positive discharged) and mean AC power."""

    ac_energy_kwh: float
    mean_power_kw: float
    stored_delta_kwh: float


class Battery:
    """The state of a BESS and its set-point.

    Args:
        spec: ratings.
        soc: initial SoC, clipped into ``[soc_min, soc_max]``.
        start: time of the initial state (tz-aware UTC).
    """

    def __init__(self, spec: BessSpec, soc: float, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be tz-aware")
        self.spec = spec
        self.soc = min(max(soc, spec.soc_min), spec.soc_max)
        self.last = start
        self.setpoint_kw = 0.0
        self.power_kw = 0.0
        self.charged_ac_kwh = 0.0
        self.discharged_ac_kwh = 0.0

    def set_power_kw(self, kw: float) -> float:
        """Set the AC set-point (positive discharge), clamped to the limits; returns it."""
        s = self.spec
        self.setpoint_kw = min(max(kw, -s.max_charge_kw), s.max_discharge_kw)
        return self.setpoint_kw

    @property
    def stored_kwh(self) -> float:
        """Energy stored (SoC x capacity)."""
        return self.soc * self.spec.capacity_kwh

    def advance(self, now: datetime) -> BessStep:
        """Follow the set-point over ``[last, now]`` within the SoC bounds."""
        dt_h = (now - self.last).total_seconds() / 3600.0
        if dt_h < 0:
            raise ValueError(f"time went backwards: {now} < {self.last}")
        self.last = now
        s = self.spec
        p = self.setpoint_kw
        cap = s.capacity_kwh
        if p < 0:  # charging
            room = max(0.0, (s.soc_max - self.soc) * cap)
            ac = min(-p * dt_h, room / s.eta_charge)
            stored = ac * s.eta_charge
            self.soc = min(s.soc_max, self.soc + stored / cap)
            self.charged_ac_kwh += ac
            step = BessStep(-ac, -ac / dt_h if dt_h else 0.0, stored)
        elif p > 0:  # discharging
            avail = max(0.0, (self.soc - s.soc_min) * cap)
            ac = min(p * dt_h, avail * s.eta_discharge)
            stored = ac / s.eta_discharge
            self.soc = max(s.soc_min, self.soc - stored / cap)
            self.discharged_ac_kwh += ac
            step = BessStep(ac, ac / dt_h if dt_h else 0.0, -stored)
        else:
            step = BessStep(0.0, 0.0, 0.0)
        self.power_kw = step.mean_power_kw
        return step
