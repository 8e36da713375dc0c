"""KPIs of a run under grid events (OpenADR), and against an uncontrolled run of the day.

Definitions (series hold one mean value per control step):

* ``grid_event_steps`` — steps with an IMPORT_CAPACITY_LIMIT in force;
  ``grid_limit_violations`` — those whose mean import exceeded that limit by more than
  the violation tolerance; ``grid_limit_violation_max_kw`` — the largest excess;
* ``emergency_steps`` — steps with an ALERT_GRID_EMERGENCY in force;
  ``emergency_ev_energy_kwh`` — EV energy drawn in them;
* against the uncontrolled run (same sessions, no grid events, no limit):
  ``energy_moved_out_of_emergency_kwh`` — the uncontrolled run's EV energy in emergency
  hours minus this run's (energy not drawn while the grid was failing: deferred or, when
  the vehicle left first, not delivered — see ``energy_unmet_kwh``);
  ``energy_cost_uncontrolled`` and ``energy_cost_saving`` (uncontrolled cost minus this
  run's, Decimal to the cent, in the prices' currency).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from twin.kpis import VIOLATION_TOLERANCE_KW


@dataclass
class GridKpiInputs:
    """Per-step series of a run under grid events.

    ``event_limit_kw``: the import capacity limit in force (NaN when none);
    ``emergency``: 1 while an ALERT_GRID_EMERGENCY is in force, else 0.
    """

    step_s: float
    import_kw: np.ndarray
    ev_power_kw: np.ndarray
    event_limit_kw: np.ndarray
    emergency: np.ndarray


def _kpi(value: float | int, unit: str) -> dict[str, Any]:
    return {"value": round(value, 6) if isinstance(value, float) else value, "unit": unit}


def grid_kpis(k: GridKpiInputs) -> dict[str, Any]:
    """The grid-event KPIs of one run (module docstring)."""
    hours = k.step_s / 3600.0
    limited = ~np.isnan(k.event_limit_kw)
    over = np.where(limited, k.import_kw - np.nan_to_num(k.event_limit_kw), 0.0)
    emergency = k.emergency > 0.5
    return {
        "grid_event_steps": _kpi(int(limited.sum()), "1"),
        "grid_limit_violations": _kpi(int((over > VIOLATION_TOLERANCE_KW).sum()), "1"),
        "grid_limit_violation_max_kw": _kpi(float(max(over.max(initial=0.0), 0.0)), "kW"),
        "emergency_steps": _kpi(int(emergency.sum()), "1"),
        "emergency_ev_energy_kwh": _kpi(float(k.ev_power_kw[emergency].sum() * hours), "kWh"),
    }


def versus_uncontrolled(
    controlled: dict[str, Any], uncontrolled: dict[str, Any], emergency: np.ndarray,
    uncontrolled_ev_kw: np.ndarray, step_s: float,
) -> dict[str, Any]:
    """KPIs comparing a run with the uncontrolled run of the same day.

    Args:
        controlled: this run's ``kpis`` section (with ``emergency_ev_energy_kwh`` and,
            when prices are set, ``energy_cost``).
        uncontrolled: the uncontrolled run's ``kpis`` section.
        emergency: this run's emergency flag per step.
        uncontrolled_ev_kw: the uncontrolled run's EV power per step.
        step_s: control step [s].
    """
    hours = step_s / 3600.0
    mask = emergency > 0.5
    base_kwh = float(uncontrolled_ev_kw[mask].sum() * hours)
    out: dict[str, Any] = {
        "emergency_ev_energy_uncontrolled_kwh": _kpi(base_kwh, "kWh"),
        "energy_moved_out_of_emergency_kwh": _kpi(
            base_kwh - float(controlled["emergency_ev_energy_kwh"]["value"]), "kWh"
        ),
    }
    if "energy_cost" in controlled and "energy_cost" in uncontrolled:
        ours = Decimal(controlled["energy_cost"]["value"])
        theirs = Decimal(uncontrolled["energy_cost"]["value"])
        unit = controlled["energy_cost"]["unit"]
        out["energy_cost_uncontrolled"] = {"value": str(theirs), "unit": unit}
        out["energy_cost_saving"] = {"value": str(theirs - ours), "unit": unit}
    return out
