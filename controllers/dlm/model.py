"""Inputs and outputs of the allocation (frozen dataclasses, no behaviour)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

EvseKey = tuple[str, int]
"""(station id, EVSE id): sortable, the stable tie-break of the allocation order."""

EvseKind = Literal["AC", "DC"]


@dataclass(frozen=True)
class SiteMeasurement:
    """What is known about the site right now.

    Attributes:
        non_ev_load_kw: measured site load without the EVs [kW] (positive = import; may be
            negative with local generation); ``None`` = never measured (worst case).
        measured_at: time of that measurement (tz-aware UTC).
        external_limit_kw: an extra import limit [kW] (e.g. an OpenADR event); ``None`` =
            none.
        lost: the site controller reported the measurement lost (meter unreachable):
            treated as stale whatever the age of ``measured_at``; ``non_ev_load_kw`` is
            then the last value known.
        hold_minimum: the grid asks to shed EVs to their minimum (an OpenADR grid
            emergency, SIMPLE level 3): every admitted EVSE gets its minimum and no more
            (reason ``shed_min``).
    """

    non_ev_load_kw: float | None = None
    measured_at: datetime | None = None
    external_limit_kw: float | None = None
    lost: bool = False
    hold_minimum: bool = False


@dataclass(frozen=True)
class EvseInput:
    """One EVSE with an active transaction.

    Set-points and measurements of AC EVSEs are currents per phase [A]; of DC EVSEs power
    [W] (a DC charger draws balanced current from the site phases it is connected to).

    Attributes:
        key: (station id, EVSE id).
        kind: ``"AC"`` or ``"DC"``.
        phases: site phases (1-based) the vehicle loads, after the EVSE's phase rotation
            (see :func:`controllers.dlm.site_phases`); a 1-phase vehicle loads one.
        min_current_a: AC minimum current per phase [A] (IEC 61851-1: 6 A).
        max_current_a: AC maximum per phase [A]: min of EVSE, cable and vehicle limits.
        min_power_w: DC minimum power [W].
        max_power_w: DC maximum power [W].
        measured_current_a: AC measured current per entry of ``phases`` [A], or ``None``.
        measured_power_w: DC measured power [W] (AC: used when no currents are known).
        measured_at: time of the measurement; ``None`` = never measured (stale).
        priority: higher is served first.
        requested_energy_kwh: energy the driver wants in this session [kWh], if known.
        departure: when the vehicle leaves, if known (tz-aware UTC).
        energy_delivered_kwh: energy delivered so far in this session [kWh].
        previous_setpoint: set-point in force now [A or W] (0 = paused).
        setpoint_since: when ``previous_setpoint`` was sent; a measurement older than that
            does not show how the vehicle follows it.
        controllable: ``False`` when the EVSE cannot be commanded (station offline, last
            command rejected or timed out): counted as worst case like stale telemetry.
        reserve_measured: the EVSE draws more than its set-point (it ignores or overshoots
            its charging profile, as the CSMS found from its meter values): its measured
            current is reserved (at least its set-point; with stale telemetry or no
            control, at least its maximum too) and its set-point is never raised.
    """

    key: EvseKey
    kind: EvseKind = "AC"
    phases: tuple[int, ...] = (1, 2, 3)
    min_current_a: float = 6.0
    max_current_a: float = 32.0
    min_power_w: float = 0.0
    max_power_w: float = 0.0
    measured_current_a: tuple[float, ...] | None = None
    measured_power_w: float | None = None
    measured_at: datetime | None = None
    priority: int = 0
    requested_energy_kwh: float | None = None
    departure: datetime | None = None
    energy_delivered_kwh: float = 0.0
    previous_setpoint: float = 0.0
    setpoint_since: datetime | None = None
    controllable: bool = True
    reserve_measured: bool = False


@dataclass(frozen=True)
class Allocation:
    """The set-point of one EVSE.

    Attributes:
        key: (station id, EVSE id).
        setpoint: current per phase [A] for AC, power [W] for DC; 0 = pause, otherwise
            between the EVSE's minimum and maximum.
        unit: ``"A"`` or ``"W"`` (OCPP chargingRateUnit).
        current_a: the same set-point as current per loaded site phase [A].
        reserved_a: current per loaded phase [A] the allocation accounts for: the
            set-point, the EVSE's maximum when it is worst case, or its measured current
            when it violates its set-point (``reserve_measured``).
        worst_case: telemetry stale or EVSE not controllable.
        reason: why this value (``allocated``, ``max``, ``taper``, ``below_min``,
            ``no_headroom``, ``min_above_max``, ``hysteresis_hold``, ``worst_case``,
            ``fail_safe_min``: held at the minimum because the non-EV measurement is
            stale, missing or lost; ``profile_violation``: the EVSE draws more than its
            set-point, its measured current is reserved).
    """

    key: EvseKey
    setpoint: float
    unit: Literal["A", "W"]
    current_a: float
    reserved_a: float
    worst_case: bool
    reason: str


@dataclass(frozen=True)
class DlmResult:
    """Outcome of one allocation.

    Attributes:
        limit_kw: the binding import limit [kW] (grid or external).
        non_ev_load_kw: non-EV load used [kW] (the worst case when stale).
        non_ev_stale: the non-EV measurement was stale, missing or lost (fail safe: no
            EVSE above its minimum).
        available_kw: limit - non-EV load - safety margin [kW]; may be negative.
        phase_capacity_a: capacity per site phase for EVs [A], index 0 = L1; >= 0.
        phase_reserved_a: what the allocation accounts for per phase [A] (set-points, worst
            case EVSEs at their maximum).
        allocations: one per input EVSE, keyed and ordered by key.
        order: the EVSE keys in serving order (priority, strategy, key).
    """

    limit_kw: float
    non_ev_load_kw: float
    non_ev_stale: bool
    available_kw: float
    phase_capacity_a: tuple[float, ...]
    phase_reserved_a: tuple[float, ...]
    allocations: dict[EvseKey, Allocation] = field(default_factory=dict)
    order: tuple[EvseKey, ...] = ()
