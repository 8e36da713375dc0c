"""KPIs of a wall-clock run (field or shadow twin) from its per-step series.

The twin's KPI document (:func:`twin.kpis.compute_kpis`) without the session KPIs: a
bench run has no replayed sessions (what its vehicles wanted is not on the wire), so
requested/unmet energy and session counts would mean nothing. ``control_steps`` counts
the steps; ``simulated_s`` equals the wall time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.kpis import KpiInputs, compute_kpis

__all__ = ["wall_clock_kpis"]

#: KPIs of replayed sessions, dropped from wall-clock runs
SESSION_KPIS = ("energy_requested_kwh", "energy_unmet_kwh", "energy_met_share",
                "sessions_completed", "sessions_open_at_end", "sessions_refused")


def wall_clock_kpis(step_s: float, import_kw: np.ndarray, ev_kw: np.ndarray,
                    limit_kw: float, rtt_s: list[float], wall_s: float) -> dict[str, Any]:
    """The KPI document of a wall-clock run.

    Args:
        step_s: control step [s].
        import_kw: site import per step [kW], shape (n,).
        ev_kw: EV power per step [kW], shape (n,).
        limit_kw: the site's import limit [kW].
        rtt_s: OCPP round-trip times [s].
        wall_s: wall time of the run [s].
    """
    imp = np.asarray(import_kw, dtype=float)
    doc = compute_kpis(KpiInputs(
        step_s=step_s, import_kw=imp, limit_kw=np.full(len(imp), limit_kw),
        ev_power_kw=np.asarray(ev_kw, dtype=float), price_per_mwh=None, currency=None,
        sessions=[], sessions_refused=0, rtt_s=rtt_s, wall_time_s=wall_s, simulated_s=wall_s,
    ))
    for name in SESSION_KPIS:
        doc["kpis"].pop(name, None)
    doc["kpis"]["control_steps"] = {"value": len(imp), "unit": "1"}
    return doc
