"""KPIs of a run, computed from what the run folder holds.

Definitions (all over the run window):

* ``energy_delivered_kwh`` — energy metered at the EVSEs (Σ of the energy registers'
  increase), kWh.
* ``energy_requested_kwh`` / ``energy_unmet_kwh`` / ``energy_met_share`` — over the
  sessions that departed within the run: the drivers' need (see twin.scenario.Vehicles),
  the part of it not delivered, and delivered / requested (0..1).
* ``peak_import_kw`` — largest mean site import over a control step, kW.
* ``peak_demand_15min_kw`` — largest mean site import over a 15-minute demand interval
  from the run start (the metering interval of demand charges in ERCOT-area and most
  European tariffs), kW; equals ``peak_import_kw`` when the step is 15 min or longer.
* ``limit_violations`` — control steps whose mean import exceeded the grid limit by more
  than ``VIOLATION_TOLERANCE_KW``; ``limit_violation_max_kw`` the largest excess;
  ``limit_violation_kwh`` the energy above the limit.
* ``energy_cost`` — Σ over steps of site import energy * day-ahead price in force at the
  start of the step, in Decimal, rounded half-even to the cent once, at the end.
* ``ocpp_rtt_p50_ms`` / ``ocpp_rtt_p99_ms`` — round trip of every OCPP call made by the
  stations, wall clock; with ``wall_time_s`` and ``speedup`` these are the wall-time
  fields, kept apart under ``"wall"`` because they differ from run to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

#: Metering resolution of the site import below which an excess is not a violation [kW].
VIOLATION_TOLERANCE_KW = 0.1


@dataclass
class SessionOutcome:
    """What one replayed session asked for and got (energy in kWh at the EVSE meter)."""

    session_id: str
    evse: str
    requested_kwh: float
    delivered_kwh: float
    completed: bool


@dataclass
class KpiInputs:
    """Per-step site series and per-session outcomes of a run.

    Arrays have one value per control step (mean over the step ending at that time).
    """

    step_s: float
    import_kw: np.ndarray
    limit_kw: np.ndarray
    ev_power_kw: np.ndarray
    price_per_mwh: np.ndarray | None
    currency: str | None
    sessions: list[SessionOutcome]
    sessions_refused: int
    rtt_s: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    simulated_s: float = 0.0


def _kpi(value: float | int | str, unit: str) -> dict[str, Any]:
    if isinstance(value, float):
        value = round(value, 6)
    return {"value": value, "unit": unit}


def energy_cost(import_kw: np.ndarray, price_per_mwh: np.ndarray, step_s: float) -> Decimal:
    """Cost of the site's import at the prices in force, Decimal rounded to the cent.

    Each step's energy (kWh, float) is converted to Decimal at 1 Wh resolution and each
    price at 0.01 per MWh resolution before multiplication; rounding happens once, on
    the total (half-even). Export (negative import) earns at the same price.
    """
    total = Decimal(0)
    hours = Decimal(str(step_s)) / Decimal(3600)
    for p_kw, price in zip(import_kw.tolist(), price_per_mwh.tolist(), strict=True):
        energy_kwh = (Decimal(repr(round(p_kw, 3))) * hours)
        total += energy_kwh * Decimal(repr(round(price, 2))) / Decimal(1000)
    return total.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def peak_demand_kw(import_kw: np.ndarray, step_s: float, interval_s: float = 900.0) -> float:
    """Largest mean of ``import_kw`` over consecutive demand intervals, kW.

    Intervals of ``interval_s`` (whole steps, at least one) from the first step; a
    trailing partial interval counts with its own mean.
    """
    if not len(import_kw):
        return 0.0
    n = max(1, round(interval_s / step_s))
    means = [float(import_kw[i : i + n].mean()) for i in range(0, len(import_kw), n)]
    return max(0.0, max(means))


def compute_kpis(k: KpiInputs) -> dict[str, Any]:
    """The KPI document written to ``kpis.json`` (see the module docstring)."""
    hours = k.step_s / 3600.0
    over = k.import_kw - k.limit_kw
    violating = over > VIOLATION_TOLERANCE_KW
    done = [s for s in k.sessions if s.completed]
    requested = float(sum(s.requested_kwh for s in done))
    delivered_done = float(sum(min(s.delivered_kwh, s.requested_kwh) for s in done))
    kpis: dict[str, Any] = {
        "energy_delivered_kwh": _kpi(float(k.ev_power_kw.sum() * hours), "kWh"),
        "energy_requested_kwh": _kpi(requested, "kWh"),
        "energy_unmet_kwh": _kpi(requested - delivered_done, "kWh"),
        "energy_met_share": _kpi(delivered_done / requested if requested else 1.0, "1"),
        "sessions_completed": _kpi(len(done), "1"),
        "sessions_open_at_end": _kpi(len(k.sessions) - len(done), "1"),
        "sessions_refused": _kpi(k.sessions_refused, "1"),
        "peak_import_kw": _kpi(float(k.import_kw.max(initial=0.0)), "kW"),
        "peak_demand_15min_kw": _kpi(peak_demand_kw(k.import_kw, k.step_s), "kW"),
        "peak_ev_power_kw": _kpi(float(k.ev_power_kw.max(initial=0.0)), "kW"),
        "site_import_kwh": _kpi(float(k.import_kw.sum() * hours), "kWh"),
        "limit_violations": _kpi(int(violating.sum()), "1"),
        "limit_violation_max_kw": _kpi(float(max(over.max(initial=0.0), 0.0)), "kW"),
        "limit_violation_kwh": _kpi(float(np.clip(over, 0, None).sum() * hours), "kWh"),
    }
    if k.price_per_mwh is not None and k.currency:
        cost = energy_cost(k.import_kw, k.price_per_mwh, k.step_s)
        kpis["energy_cost"] = {"value": str(cost), "unit": k.currency}
    rtt_ms = np.asarray(k.rtt_s) * 1000.0
    wall: dict[str, Any] = {
        "wall_time_s": _kpi(k.wall_time_s, "s"),
        "speedup": _kpi(k.simulated_s / k.wall_time_s if k.wall_time_s else 0.0, "1"),
        "ocpp_calls": _kpi(len(k.rtt_s), "1"),
        "ocpp_rtt_p50_ms": _kpi(float(np.percentile(rtt_ms, 50)) if len(rtt_ms) else 0.0, "ms"),
        "ocpp_rtt_p99_ms": _kpi(float(np.percentile(rtt_ms, 99)) if len(rtt_ms) else 0.0, "ms"),
    }
    return {"kpis": kpis, "wall": wall}


def kpi_value(doc: dict[str, Any], name: str) -> float:
    """Numeric value of KPI ``name`` from a KPI document (either section).

    Raises:
        KeyError: no such KPI.
    """
    for section in ("kpis", "wall"):
        if name in doc.get(section, {}):
            return float(doc[section][name]["value"])
    raise KeyError(name)


def dumps(doc: dict[str, Any]) -> str:
    """Canonical JSON text of a KPI document (sorted keys, stable float repr)."""
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"
