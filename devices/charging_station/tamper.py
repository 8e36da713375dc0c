"""Dishonest or faulty telemetry of one transaction: what the station *reports* over OCPP.

A pure model (no I/O, no clock). The physics (energy really dispensed, the vehicle's real
state of charge) is untouched; only the values sent to the CSMS are falsified, as a
tampered or drifting meter, or a vehicle that lies about its battery, would send them.
The twin attaches a :class:`TelemetryTamper` to a session when it plugs the vehicle in
(:meth:`devices.charging_station.station.ChargingStation.plug_in`); the billing audit
(``controllers.billing.audit``) must then catch it from the reported telemetry alone.

- ``meter_drift`` (factor > 0, 1 = honest): the reported energy register advances by
  ``factor`` x the energy metered during the transaction (1.3: the meter reads 30 %
  high). The offset persists after the transaction (the register stays monotonic).
- ``soc_spoof`` (factor > 0, 1 = honest): the vehicle exaggerates its SoC rise since the
  transaction start: reported SoC = ``soc_start + factor * (soc - soc_start)``, capped
  to 0..1 (a vehicle claiming a fuller battery than it has).
- ``rollback_kwh`` (>= 0, 0 = honest): at the transaction's ``rollback_at_sample``-th
  periodic meter sample the reported register is lowered once by ``rollback_kwh`` (a
  meter reset or rolled back mid-session); it stays lowered afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TelemetryTamper"]


@dataclass(frozen=True, slots=True)
class TelemetryTamper:
    """How one transaction's reported telemetry is falsified (see the module docstring).

    Raises:
        ValueError: a factor not finite and > 0, a negative rollback, or
            ``rollback_at_sample`` < 1.
    """

    meter_drift: float = 1.0
    soc_spoof: float = 1.0
    rollback_kwh: float = 0.0
    rollback_at_sample: int = 2

    def __post_init__(self) -> None:
        for name in ("meter_drift", "soc_spoof"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite factor > 0, got {v!r}")
        if not (math.isfinite(self.rollback_kwh) and self.rollback_kwh >= 0):
            raise ValueError(f"rollback_kwh must be >= 0, got {self.rollback_kwh!r}")
        if self.rollback_at_sample < 1:
            raise ValueError("rollback_at_sample must be >= 1")

    def reported_soc(self, soc: float, soc_start: float | None) -> float:
        """The SoC (0..1) the vehicle reports when its real SoC is ``soc``."""
        if self.soc_spoof == 1.0 or soc_start is None:
            return soc
        return min(1.0, max(0.0, soc_start + self.soc_spoof * (soc - soc_start)))
