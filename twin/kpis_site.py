"""KPIs of the site's energy devices: PV, BESS, transformer, fail safe.

Definitions (over the run window; series hold one mean value per control step):

* ``pv_energy_kwh`` — PV energy delivered; ``pv_curtailed_kwh`` — available minus
  delivered; ``pv_self_consumption_share`` — the share of the PV energy used on site:
  ``1 - export / PV energy``, where export is the site's negative import (all of it
  attributed to PV, the usual convention of self-consumption metrics, e.g. Luthander et
  al., Applied Energy 142 (2015) 80-94).
* ``bess_charged_kwh`` / ``bess_discharged_kwh`` — AC energy in and out;
  ``bess_equivalent_full_cycles`` — (charged + discharged) / (2 x capacity);
  ``bess_min_soc`` / ``bess_max_soc`` — the extremes of the SoC at the step ends.
* ``transformer_peak_loading_pct`` — highest phase current over rated current;
  ``transformer_max_hot_spot_c`` / ``transformer_max_top_oil_c`` — IEC 60076-7
  temperatures; ``transformer_loss_of_life_h`` — equivalent ageing over the run.
* ``fail_safe_steps`` — control steps the site controller spent in fail safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class SiteKpiInputs:
    """Per-step series of the site devices (kW, 0..1, %, degC); None where absent."""

    step_s: float
    import_kw: np.ndarray
    pv_kw: np.ndarray | None = None
    pv_available_kw: np.ndarray | None = None
    bess_kw: np.ndarray | None = None
    bess_soc: np.ndarray | None = None
    bess_capacity_kwh: float | None = None
    loading_pct: np.ndarray | None = None
    hot_spot_c: np.ndarray | None = None
    top_oil_c: np.ndarray | None = None
    loss_of_life_h: float | None = None
    fail_safe: np.ndarray | None = None


def _kpi(value: float | int, unit: str) -> dict[str, Any]:
    return {"value": round(value, 6) if isinstance(value, float) else value, "unit": unit}


def site_kpis(k: SiteKpiInputs) -> dict[str, Any]:
    """The site-device KPIs (module docstring) to merge into ``kpis.json``."""
    hours = k.step_s / 3600.0
    out: dict[str, Any] = {}
    if k.pv_kw is not None:
        pv_kwh = float(k.pv_kw.sum() * hours)
        export_kwh = float(np.clip(-k.import_kw, 0, None).sum() * hours)
        out["pv_energy_kwh"] = _kpi(pv_kwh, "kWh")
        out["site_export_kwh"] = _kpi(export_kwh, "kWh")
        share = 1.0 - min(export_kwh, pv_kwh) / pv_kwh if pv_kwh > 0 else 1.0
        out["pv_self_consumption_share"] = _kpi(share, "1")
        if k.pv_available_kw is not None:
            curtailed = np.clip(k.pv_available_kw - k.pv_kw, 0, None)
            out["pv_curtailed_kwh"] = _kpi(float(curtailed.sum() * hours), "kWh")
    if k.bess_kw is not None and k.bess_soc is not None and len(k.bess_soc):
        charged = float(np.clip(-k.bess_kw, 0, None).sum() * hours)
        discharged = float(np.clip(k.bess_kw, 0, None).sum() * hours)
        out["bess_charged_kwh"] = _kpi(charged, "kWh")
        out["bess_discharged_kwh"] = _kpi(discharged, "kWh")
        if k.bess_capacity_kwh:
            cycles = (charged + discharged) / (2.0 * k.bess_capacity_kwh)
            out["bess_equivalent_full_cycles"] = _kpi(cycles, "1")
        out["bess_min_soc"] = _kpi(float(k.bess_soc.min()), "1")
        out["bess_max_soc"] = _kpi(float(k.bess_soc.max()), "1")
    if k.loading_pct is not None and len(k.loading_pct):
        out["transformer_peak_loading_pct"] = _kpi(float(k.loading_pct.max()), "%")
    if k.hot_spot_c is not None and len(k.hot_spot_c):
        out["transformer_max_hot_spot_c"] = _kpi(float(k.hot_spot_c.max()), "degC")
    if k.top_oil_c is not None and len(k.top_oil_c):
        out["transformer_max_top_oil_c"] = _kpi(float(k.top_oil_c.max()), "degC")
    if k.loss_of_life_h is not None:
        out["transformer_loss_of_life_h"] = _kpi(float(k.loss_of_life_h), "h")
    if k.fail_safe is not None:
        out["fail_safe_steps"] = _kpi(int(np.nansum(k.fail_safe)), "1")
    return out
