"""Electric-vehicle battery model: what a vehicle accepts from a charging station.

Battery model (a standard two-stage CC-CV approximation)
--------------------------------------------------------
The power a vehicle accepts at the meter, as a function of its state of charge ``soc``::

    P_lim(soc) = P_max                                   for soc <= knee
    P_lim(soc) = P_max * (1 - k * (soc - knee))          for soc >  knee,
    k = (1 - f) / (1 - knee)

so the accepted power is constant (the constant-current stage) up to ``taper_knee_soc`` and
then falls linearly to ``f = TAPER_FLOOR_FRACTION`` (5 %) of ``P_max`` at ``soc = 1`` (the
constant-voltage stage). This is the piecewise-linear battery of ACN-Sim
(``acnportal.acnsim.models.battery.Linear2StageBattery``; Z. J. Lee et al., "ACN-Sim: An
Open-Source Simulator for Data-Driven Electric Vehicle Charging Research", IEEE Trans. Smart
Grid 12(6), 2021), with a non-zero floor so that a full charge ends in finite time.

The vehicle draws ``min(offered, P_lim(soc))`` and the battery gains
``metered * charge_efficiency``. With a constant offer over a step the state equation is
piecewise linear in ``soc`` and is integrated *exactly* (constant-power stage: linear in
time; taper stage: ``g = 1 - k (soc - knee)`` decays as ``exp(-k r t)``), so the result does
not depend on the step length: one 60 s step and sixty 1 s steps agree to rounding.

Pure functions and frozen dataclasses only; no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "DEFAULT_PHASE_VOLTAGE_V",
    "TAPER_FLOOR_FRACTION",
    "ChargeKind",
    "VehicleSpec",
    "VehicleState",
    "ac_current_a",
    "ac_power_kw",
    "charge",
    "discharge",
    "phases_used",
]

ChargeKind = Literal["AC", "DC"]

#: Accepted power at soc 1.0 as a fraction of the maximum (end of the CV stage).
TAPER_FLOOR_FRACTION = 0.05
#: Steps shorter than this (s) carry no energy (guards sub-nanosecond float noise).
MIN_STEP_S = 1e-9
#: Phase-to-neutral voltage of a European low-voltage supply.
DEFAULT_PHASE_VOLTAGE_V = 230.0


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """Static description of an electric vehicle as seen by a charging station.

    Attributes:
        model: free text, e.g. ``"Renault Zoe R135"``.
        battery_capacity_kwh: usable battery energy, kWh (> 0).
        ac_max_power_kw: on-board charger limit at the meter for AC charging, kW (>= 0).
        ac_phases: number of phases the on-board charger uses, 1 or 3.
        dc_max_power_kw: limit for DC charging at the meter, kW (>= 0).
        charge_efficiency: grid-to-battery efficiency in (0, 1]; battery energy gained =
            metered energy x efficiency.
        taper_knee_soc: soc in [0, 1) at which the constant-voltage taper starts.
        v2g: whether the vehicle supports bidirectional power transfer (V2G, ISO 15118-20
            BPT); only then can :func:`discharge` take energy out of it.
        ac_max_discharge_kw / dc_max_discharge_kw: discharge limits at the meter for AC / DC,
            kW (>= 0; ignored unless ``v2g``).
        discharge_efficiency: battery-to-grid efficiency in (0, 1]; battery energy lost =
            exported energy / efficiency.

    Raises:
        ValueError: on any value outside the ranges above.
    """

    model: str
    battery_capacity_kwh: float
    ac_max_power_kw: float
    ac_phases: int
    dc_max_power_kw: float
    charge_efficiency: float = 0.92
    taper_knee_soc: float = 0.8
    v2g: bool = False
    ac_max_discharge_kw: float = 0.0
    dc_max_discharge_kw: float = 0.0
    discharge_efficiency: float = 0.92

    def __post_init__(self) -> None:
        if not self.battery_capacity_kwh > 0:
            raise ValueError(f"battery_capacity_kwh must be > 0, got {self.battery_capacity_kwh}")
        if self.ac_max_power_kw < 0 or self.dc_max_power_kw < 0:
            raise ValueError("ac_max_power_kw and dc_max_power_kw must be >= 0")
        if self.ac_phases not in (1, 3):
            raise ValueError(f"ac_phases must be 1 or 3, got {self.ac_phases}")
        if not 0 < self.charge_efficiency <= 1:
            raise ValueError(f"charge_efficiency must be in (0, 1], got {self.charge_efficiency}")
        if not 0 <= self.taper_knee_soc < 1:
            raise ValueError(f"taper_knee_soc must be in [0, 1), got {self.taper_knee_soc}")
        if self.ac_max_discharge_kw < 0 or self.dc_max_discharge_kw < 0:
            raise ValueError("ac_max_discharge_kw and dc_max_discharge_kw must be >= 0")
        if not 0 < self.discharge_efficiency <= 1:
            raise ValueError(
                f"discharge_efficiency must be in (0, 1], got {self.discharge_efficiency}"
            )

    def max_discharge_kw(self, kind: ChargeKind) -> float:
        """Maximum discharge power at the meter for ``kind``, kW (0 unless ``v2g``)."""
        if not self.v2g:
            return 0.0
        return self.ac_max_discharge_kw if kind == "AC" else self.dc_max_discharge_kw

    def max_power_kw(self, kind: ChargeKind) -> float:
        """Maximum accepted power at the meter for ``kind`` ("AC" or "DC"), kW."""
        return self.ac_max_power_kw if kind == "AC" else self.dc_max_power_kw

    def power_limit_kw(self, soc: float, kind: ChargeKind) -> float:
        """Accepted power at the meter at state of charge ``soc`` (CC-CV taper), kW.

        Args:
            soc: state of charge, 0..1 (values above 1 are treated as 1).
            kind: "AC" or "DC".
        """
        p_max = self.max_power_kw(kind)
        knee = self.taper_knee_soc
        if soc <= knee:
            return p_max
        k = (1.0 - TAPER_FLOOR_FRACTION) / (1.0 - knee)
        return p_max * (1.0 - k * (min(soc, 1.0) - knee))


@dataclass(frozen=True, slots=True)
class VehicleState:
    """Dynamic state of a vehicle during a charging session.

    Attributes:
        soc: state of charge, 0..1.
        target_soc: the driver's need, 0..1; charging stops when ``soc`` reaches it.
        energy_into_battery_kwh: battery energy gained by charging since the state was
            created, kWh.
        min_soc: the V2G floor of the session, 0..1: :func:`discharge` never takes the soc
            below it (the driver's reserve; a profile cannot lower it).
        energy_out_of_battery_kwh: battery energy lost by discharging since the state was
            created, kWh (>= 0).

    Raises:
        ValueError: if ``soc``, ``target_soc`` or ``min_soc`` is outside [0, 1].
    """

    soc: float
    target_soc: float = 1.0
    energy_into_battery_kwh: float = 0.0
    min_soc: float = 0.2
    energy_out_of_battery_kwh: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.soc <= 1.0:
            raise ValueError(f"soc must be in [0, 1], got {self.soc}")
        if not 0.0 <= self.target_soc <= 1.0:
            raise ValueError(f"target_soc must be in [0, 1], got {self.target_soc}")
        if not 0.0 <= self.min_soc <= 1.0:
            raise ValueError(f"min_soc must be in [0, 1], got {self.min_soc}")


def charge(
    spec: VehicleSpec,
    state: VehicleState,
    offered_power_kw: float,
    dt_s: float,
    kind: ChargeKind,
) -> tuple[VehicleState, float]:
    """Charge a vehicle for ``dt_s`` seconds with a constant offer; exact integration.

    The vehicle draws ``min(offered_power_kw, spec.power_limit_kw(soc, kind))`` at every
    instant and stops when ``soc`` reaches ``min(target_soc, 1)``.

    Args:
        spec: the vehicle.
        state: its state at the start of the step.
        offered_power_kw: power the station offers at the meter, kW; values <= 0 give no
            energy (discharge is not modelled).
        dt_s: step length, seconds (below ``MIN_STEP_S`` gives no energy).
        kind: "AC" or "DC" (selects the vehicle's maximum power).

    Returns:
        ``(new_state, energy_at_meter_kwh)`` with
        ``new_state.energy_into_battery_kwh - state.energy_into_battery_kwh ==
        energy_at_meter_kwh * spec.charge_efficiency``. The mean power over the step,
        ``energy_at_meter_kwh * 3600 / dt_s``, never exceeds the offer nor the vehicle's limit
        at the initial soc.
    """
    soc0 = state.soc
    end = min(state.target_soc, 1.0)
    p_max = spec.max_power_kw(kind)
    if offered_power_kw <= 0.0 or dt_s < MIN_STEP_S or soc0 >= end or p_max <= 0.0:
        return state, 0.0

    cap = spec.battery_capacity_kwh
    eta = spec.charge_efficiency
    knee = spec.taper_knee_soc
    k = (1.0 - TAPER_FLOOR_FRACTION) / (1.0 - knee)

    # Stage 1: constant power p1 until the taper falls below the offer (or the target).
    # Energy is accumulated from power x time (not from a soc difference) to stay exact
    # for tiny steps.
    p1 = min(offered_power_kw, p_max)
    s_cross = knee if p1 >= p_max else knee + (1.0 - p1 / p_max) / k
    soc = soc0
    remaining = dt_s
    metered_kwh = 0.0
    if soc < s_cross:
        rate1 = eta * p1 / (3600.0 * cap)  # soc per second
        if rate1 <= 0.0:  # an offer too small to represent
            return state, 0.0
        s_end1 = min(s_cross, end)
        t1 = (s_end1 - soc) / rate1
        if t1 >= remaining:
            metered_kwh = p1 * remaining / 3600.0
            soc = min(soc + rate1 * remaining, s_end1)
            remaining = 0.0
        else:
            metered_kwh = p1 * t1 / 3600.0
            soc = s_end1
            remaining -= t1

    # Stage 2: on the taper, g = 1 - k (soc - knee) decays as exp(-k r t).
    if remaining > 0.0 and soc < end:
        r = eta * p_max / (3600.0 * cap)
        g_s = 1.0 - k * (soc - knee)
        g_end = 1.0 - k * (end - knee)
        t2 = math.log(g_s / g_end) / (k * r)
        if t2 > remaining:
            dsoc = min(g_s * -math.expm1(-k * r * remaining) / k, end - soc)
        else:
            dsoc = end - soc
        metered_kwh += dsoc * cap / eta
        soc = min(soc + dsoc, end)

    if metered_kwh <= 0.0:
        return state, 0.0
    new_state = replace(
        state,
        soc=soc,
        energy_into_battery_kwh=state.energy_into_battery_kwh + metered_kwh * eta,
    )
    return new_state, metered_kwh


def discharge(
    spec: VehicleSpec,
    state: VehicleState,
    requested_power_kw: float,
    dt_s: float,
    kind: ChargeKind,
) -> tuple[VehicleState, float]:
    """Discharge a V2G vehicle for ``dt_s`` seconds at a constant requested power; exact.

    The vehicle exports ``min(requested_power_kw, spec.max_discharge_kw(kind))`` at the
    meter (constant power, no taper) until ``soc`` reaches ``state.min_soc`` (the V2G floor),
    then stops. The battery loses ``exported / spec.discharge_efficiency``.

    Args:
        spec: the vehicle (``v2g`` False: nothing is exported).
        state: its state at the start of the step.
        requested_power_kw: export power asked for at the meter, kW (> 0 to export).
        dt_s: step length, seconds.
        kind: "AC" or "DC".

    Returns:
        ``(new_state, exported_at_meter_kwh)`` (>= 0) with
        ``(state.soc - new_state.soc) * capacity == exported / discharge_efficiency`` and
        ``new_state.soc >= min(state.soc, state.min_soc)``.
    """
    p = min(requested_power_kw, spec.max_discharge_kw(kind))
    floor = state.min_soc
    if p <= 0.0 or dt_s < MIN_STEP_S or state.soc <= floor:
        return state, 0.0
    cap = spec.battery_capacity_kwh
    eta = spec.discharge_efficiency
    rate = p / (eta * 3600.0 * cap)  # soc per second
    if rate <= 0.0:  # a request too small to represent
        return state, 0.0
    t_floor = (state.soc - floor) / rate
    if t_floor >= dt_s:
        exported = p * dt_s / 3600.0
        soc = max(state.soc - exported / (eta * cap), floor)
    else:
        exported = (state.soc - floor) * cap * eta
        soc = floor
    if exported <= 0.0:
        return state, 0.0
    new_state = replace(
        state,
        soc=soc,
        energy_out_of_battery_kwh=state.energy_out_of_battery_kwh + exported / eta,
    )
    return new_state, exported


def phases_used(evse_phases: int, vehicle_phases: int) -> int:
    """Number of phases an AC session uses: ``min(evse_phases, vehicle_phases)``."""
    return min(evse_phases, vehicle_phases)


def ac_power_kw(
    current_a: float, n_phases: int, voltage_v: float = DEFAULT_PHASE_VOLTAGE_V
) -> float:
    """AC power from a per-phase current: ``P = I x V_phase x n_phases / 1000``, kW.

    Args:
        current_a: current per phase, A.
        n_phases: phases in use (1..3).
        voltage_v: phase-to-neutral voltage, V (default 230 V).
    """
    return current_a * voltage_v * n_phases / 1000.0


def ac_current_a(
    power_kw: float, n_phases: int, voltage_v: float = DEFAULT_PHASE_VOLTAGE_V
) -> float:
    """Per-phase current of an AC load, the inverse of :func:`ac_power_kw`, A."""
    if n_phases <= 0:
        return 0.0
    return power_kw * 1000.0 / (voltage_v * n_phases)
