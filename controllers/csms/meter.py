"""Meter values (OCPP 1.6, 2.0.1 and 2.1) to one reading in SI units.

Both versions carry ``meterValue: [{timestamp, sampledValue: [...]}]``; a sampled value
has ``value`` (1.6: a string; 2.0.1: a number), optional ``measurand`` (default
``Energy.Active.Import.Register``), ``phase`` (``L1``, ``L2-N`` ...), ``location`` and a
unit (1.6: ``unit``; 2.0.1: ``unitOfMeasure {unit, multiplier}``, value x 10^multiplier).
The ocpp library hands them over with snake_case keys.

V2G (OCPP 2.1 stations): ``Energy.Active.Export.Register`` and ``Power.Active.Export``
are read as well; both are magnitudes (>= 0) in the OCPP measurands. Sign convention of
this package: positive = import (the EVSE charges), negative = export (it discharges).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_PHASE_INDEX = {"L1": 1, "L2": 2, "L3": 3, "L1-N": 1, "L2-N": 2, "L3-N": 3}
_SCALE = {"wh": 1.0, "kwh": 1000.0, "w": 1.0, "kw": 1000.0, "a": 1.0, "percent": 1.0}


@dataclass
class MeterReading:
    """The latest values found in a list of meter values.

    Attributes:
        timestamp: latest sample time (tz-aware UTC), None if none parsed.
        energy_wh: Energy.Active.Import.Register [Wh] (total, or sum of phases).
        power_w: Power.Active.Import [W] (total, or sum of phases).
        current_a: Current.Import per EVSE phase (1..3) [A]; a value without phase is
            stored under 0 and means "every phase".
        soc: state of charge (0..1).
        export_energy_wh: Energy.Active.Export.Register [Wh] (V2G), None if absent.
        export_power_w: Power.Active.Export [W] (>= 0), None if absent.
    """

    timestamp: datetime | None = None
    energy_wh: float | None = None
    power_w: float | None = None
    current_a: dict[int, float] = field(default_factory=dict)
    soc: float | None = None
    export_energy_wh: float | None = None
    export_power_w: float | None = None

    @property
    def net_power_w(self) -> float | None:
        """Signed power [W]: import - export (negative while discharging)."""
        if self.power_w is None and self.export_power_w is None:
            return None
        return (self.power_w or 0.0) - (self.export_power_w or 0.0)


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 text to a tz-aware UTC datetime; naive means UTC; None if unparsable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _number(sample: Mapping[str, Any]) -> float | None:
    raw = sample.get("value")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    unit_of_measure = sample.get("unit_of_measure")
    if isinstance(unit_of_measure, Mapping):
        unit = unit_of_measure.get("unit")
        multiplier = unit_of_measure.get("multiplier", 0)
        if isinstance(multiplier, int):
            value *= 10.0**multiplier
    else:
        unit = sample.get("unit")
    if isinstance(unit, str):
        value *= _SCALE.get(unit.lower(), 1.0)
    return value


def parse_meter_values(meter_values: Sequence[Mapping[str, Any]] | None) -> MeterReading:
    """Reduce meter values to the latest energy, power, per-phase current and SoC.

    Args:
        meter_values: ``meter_value`` of MeterValues/TransactionEvent/StopTransaction
            (1.6 ``transaction_data``), snake_case keys.

    Returns:
        A :class:`MeterReading`; fields stay None when absent. Unparsable samples are
        skipped, never raised (the schema has validated the structure already).
    """
    reading = MeterReading()
    energy_phases: dict[int, float] = {}
    power_phases: dict[int, float] = {}
    ordered = sorted(
        (mv for mv in meter_values or [] if isinstance(mv, Mapping)),
        key=lambda mv: parse_timestamp(mv.get("timestamp")) or datetime.min.replace(tzinfo=UTC),
    )
    for mv in ordered:
        ts = parse_timestamp(mv.get("timestamp"))
        if ts is not None and (reading.timestamp is None or ts > reading.timestamp):
            reading.timestamp = ts
        for sample in mv.get("sampled_value") or []:
            if not isinstance(sample, Mapping) or sample.get("location") == "Body":
                continue
            value = _number(sample)
            if value is None:
                continue
            measurand = sample.get("measurand") or "Energy.Active.Import.Register"
            phase_name = sample.get("phase")
            phase = _PHASE_INDEX.get(phase_name) if isinstance(phase_name, str) else None
            if phase_name is not None and phase is None:
                continue  # N, L1-L2 ...: not a phase current or power of the EVSE
            if measurand == "Energy.Active.Import.Register":
                if phase is None:
                    reading.energy_wh = value
                else:
                    energy_phases[phase] = value
            elif measurand == "Power.Active.Import":
                if phase is None:
                    reading.power_w = value
                else:
                    power_phases[phase] = value
            elif measurand == "Current.Import":
                reading.current_a[phase or 0] = value
            elif measurand == "Energy.Active.Export.Register" and phase is None:
                reading.export_energy_wh = value
            elif measurand == "Power.Active.Export" and phase is None:
                reading.export_power_w = value
            elif measurand == "SoC":
                reading.soc = min(max(value / 100.0, 0.0), 1.0)
    if reading.energy_wh is None and energy_phases:
        reading.energy_wh = sum(energy_phases.values())
    if reading.power_w is None and power_phases:
        reading.power_w = sum(power_phases.values())
    return reading
