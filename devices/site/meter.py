"""Site (grid-connection) meter: per-phase power in, energy registers and readings out.

Pure physics: the runtime sets the measured power per phase (positive when importing from
the grid); :meth:`SiteMeter.advance` integrates import and export energy over the interval
with the power in force since the previous call. No clock: time is injected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["MeterReading", "SiteMeter"]


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One reading of a three-phase meter (unity power factor).

    Attributes:
        power_w: per phase L1..L3, positive importing.
        current_a: per phase, magnitude.
        voltage_v: phase-to-neutral per phase.
        frequency_hz: grid frequency.
        import_wh: energy register, imported.
        export_wh: energy register, exported.
    """

    power_w: tuple[float, float, float]
    current_a: tuple[float, float, float]
    voltage_v: tuple[float, float, float]
    frequency_hz: float
    import_wh: float
    export_wh: float

    @property
    def total_power_w(self) -> float:
        """Sum of the three phases, positive importing."""
        return sum(self.power_w)


class SiteMeter:
    """A three-phase energy meter.

    Args:
        start: time of the first reading (tz-aware UTC).
        voltage_v: nominal phase-to-neutral voltage.
        frequency_hz: nominal frequency.
    """

    def __init__(self, start: datetime, *, voltage_v: float = 230.0, frequency_hz: float = 50.0):
        if start.tzinfo is None:
            raise ValueError("start must be tz-aware")
        self.last = start
        self.voltage_v = voltage_v
        self.frequency_hz = frequency_hz
        self.power_w: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.import_wh = 0.0
        self.export_wh = 0.0

    def set_power_w(self, l1: float, l2: float, l3: float) -> None:
        """The measured power per phase from now on (positive importing)."""
        self.power_w = (float(l1), float(l2), float(l3))

    def advance(self, now: datetime) -> MeterReading:
        """Integrate energy over ``[last, now]`` with the power in force; return the reading."""
        dt_h = (now - self.last).total_seconds() / 3600.0
        if dt_h < 0:
            raise ValueError(f"time went backwards: {now} < {self.last}")
        for p in self.power_w:
            if p >= 0:
                self.import_wh += p * dt_h
            else:
                self.export_wh -= p * dt_h
        self.last = now
        return self.reading()

    def reading(self) -> MeterReading:
        """The current reading, without advancing."""
        v = self.voltage_v
        p1, p2, p3 = self.power_w
        return MeterReading(
            power_w=self.power_w,
            current_a=(abs(p1) / v, abs(p2) / v, abs(p3) / v),
            voltage_v=(v, v, v),
            frequency_hz=self.frequency_hz,
            import_wh=self.import_wh,
            export_wh=self.export_wh,
        )
