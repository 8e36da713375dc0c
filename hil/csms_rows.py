"""Trace rows of what a CSMS sees: every bench EVSE and the site, as the field shows it.

The field's view of an EVSE is its CSMS's: power, energy register and SoC from the
latest meter values of the open transaction, and the set-point in force. The bench
(field) and the shadow twin write the same rows, so that they compare quantity by
quantity.
"""

from __future__ import annotations

from controllers.csms import Csms
from hil.bench_file import BenchStation

__all__ = ["Row", "csms_rows"]

#: (entity, quantity, value, unit)
Row = tuple[str, str, float, str]


def csms_rows(csms: Csms, stations: list[BenchStation], limit_kw: float,
              import_kw: float, ev_kw: float) -> list[Row]:
    """One row per EVSE quantity and site quantity the CSMS knows now.

    EVSE ``<station>/<evse>``: ``power_kw`` (0 without a transaction), ``energy_kwh``,
    ``soc`` (when reported), ``setpoint_a`` (AC) or ``setpoint_w`` (DC); site:
    ``import_kw`` and ``ev_power_kw`` as given [kW], ``limit_kw``, ``ev_available_kw``.
    """
    setpoints = csms.setpoints()
    rows: list[Row] = []
    for s in stations:
        for e in range(1, s.evses + 1):
            name = f"{s.id}/{e}"
            tx = csms.registry.active_transaction_on(s.id, e)
            rows.append((name, "power_kw", (tx.power_w or 0.0) / 1000.0 if tx else 0.0, "kW"))
            if tx is not None and tx.energy_wh is not None:
                rows.append((name, "energy_kwh", tx.energy_wh / 1000.0, "kWh"))
            if tx is not None and tx.soc is not None:
                rows.append((name, "soc", tx.soc, "1"))
            sp = setpoints.get((s.id, e))
            if sp is not None:
                ac = s.current_kind == "AC"
                rows.append((name, "setpoint_a" if ac else "setpoint_w", sp,
                             "A" if ac else "W"))
    rows += [("site", "import_kw", import_kw, "kW"), ("site", "ev_power_kw", ev_kw, "kW"),
             ("site", "limit_kw", limit_kw, "kW"),
             ("site", "ev_available_kw", csms.available_power_kw(), "kW")]
    return rows
