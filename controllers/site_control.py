"""Site energy control: what the DLM may give the EVs, and what the BESS should do.

Pure logic, no I/O, time injected. Inputs are measurements with their age (site meter,
PV inverter, BESS, transformer); outputs are the non-EV load the DLM must assume, the
effective site limit, the PV surplus available to EVs and the BESS set-point.

Rules (issue #4, "Control"; fail-safe style of evcc's circuits and EVerest's energy
tree — a lost measurement removes headroom, never adds it):

* non-EV load = site meter import - EV power (the meter sees building load, PV, BESS and
  EVs together; the EV sum comes from the stations' own meters via the CSMS);
* site limit = min(grid connection limit, transformer limit when reported); when the
  transformer reports a loading above ``transformer_max_loading_pct`` the limit drops to
  the present import scaled down to that loading, and a hot-spot above
  ``transformer_hot_spot_max_c`` (IEC 60076-7 Table 4: 120 degC for normal cyclic
  loading) takes 10 % off the present import at every step until it cools;
* a stale or missing site meter (older than ``measurement_timeout_s``) sets ``fail_safe``:
  the non-EV load is reported as unknown (``None``), for which the DLM assumes its
  configured worst case and holds every EVSE at its minimum (or pauses it), and the BESS
  stops (set-point 0: no discharge);
* BESS peak shaving: discharge when the site import would exceed ``peak_shave_kw``,
  charge from PV surplus (export) or when import is below the threshold minus a margin;
  the set-point never drives the SoC below ``soc_min`` (20 % by default) nor above
  ``soc_max`` within the next control step, and never exceeds the power limits; BESS
  charging counts as non-EV load for the DLM, its discharge never as EV headroom (the
  grid limit holds even if the BESS trips);
* PV surplus mode: EVs may use only the exported PV power (plus ``surplus_grid_kw`` from
  the grid); with ``surplus_min_current`` at least the sum of the active EVSEs' minimum
  power (``ev_minimum_kw``), so that a started session keeps charging at its minimum
  current from the grid when the sun goes (the "minPV" mode of evcc);
* grid requests (OpenADR, :mod:`controllers.grid_signal`): an import capacity limit
  lowers the site limit; a SIMPLE level or a price above the ceiling keeps only a share
  of the EVs' headroom above their minimum power; a grid emergency keeps the minimum only
  and lets the BESS cover the site's load (never below its floor, never charging from
  the grid);
* PV curtailment: with an ``export_limit_kw``, PV output is capped so that the export
  expected on the next step stays within it (``pv_limit_kw``; ``None`` = uncurtailed).

Sign conventions: site power positive when importing; BESS power positive when
discharging (delivering to the site), negative when charging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from controllers.grid_signal import GridSignal


@dataclass(frozen=True)
class Measured:
    """A measured value [unit of its name] with the time it was measured (UTC)."""

    value: float
    measured_at: datetime

    def age_s(self, now: datetime) -> float:
        """Age of the value at ``now`` [s] (0 when measured in the future)."""
        return max(0.0, (now - self.measured_at).total_seconds())


def fresh(m: Measured | None, now: datetime, timeout_s: float) -> bool:
    """Whether ``m`` exists and is no older than ``timeout_s`` at ``now``."""
    return m is not None and m.age_s(now) <= timeout_s


@dataclass(frozen=True)
class BessLimits:
    """Stationary battery limits: energy capacity [kWh], SoC window (0..1), powers [kW].

    ``efficiency_charge`` / ``efficiency_discharge``: grid-to-cell and cell-to-grid
    efficiencies (0..1]; ``soc_resolution``: uncertainty of a SoC reading (SunSpec 802
    ``SoC`` with ``SoC_SF`` -1 reads in steps of 0.1 %), kept as a margin on both bounds.
    """

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    soc_min: float = 0.2
    soc_max: float = 0.95
    efficiency_charge: float = 0.95
    efficiency_discharge: float = 0.95
    soc_resolution: float = 0.001


@dataclass(frozen=True)
class SiteControlConfig:
    """Parameters of :func:`decide`.

    ``grid_limit_kw``: contracted import limit; ``peak_shave_kw``: import above which the
    BESS discharges (None: no peak shaving); ``charge_margin_kw``: the BESS recharges from
    the grid only while import stays this far below ``peak_shave_kw``;
    ``measurement_timeout_s``: age beyond which a measurement counts as lost;
    ``pv_surplus_mode``, ``surplus_grid_kw``, ``surplus_min_current``: PV-surplus charging;
    ``export_limit_kw``: largest allowed export (None: no PV curtailment);
    ``transformer_max_loading_pct`` and ``transformer_hot_spot_max_c``: transformer
    loading and hot-spot bounds (module docstring).
    """

    grid_limit_kw: float
    measurement_timeout_s: float = 30.0
    peak_shave_kw: float | None = None
    charge_margin_kw: float = 5.0
    bess: BessLimits | None = None
    pv_surplus_mode: bool = False
    surplus_grid_kw: float = 0.0
    surplus_min_current: bool = False
    export_limit_kw: float | None = None
    transformer_max_loading_pct: float = 100.0
    transformer_hot_spot_max_c: float = 120.0


@dataclass(frozen=True)
class SiteInputs:
    """Measurements at one control step.

    ``site_import_kw``: site meter (positive importing); ``ev_power_kw``: sum of the EVSE
    meters; ``pv_power_kw``: PV inverter output (>= 0); ``bess_soc`` (0..1) and
    ``bess_power_kw`` (positive discharging); ``transformer_limit_kw``: the limit the
    transformer (or its operator) reports; ``transformer_loading_pct`` (highest phase
    current over rated, %) and ``transformer_hot_spot_c`` (degC); ``ev_minimum_kw``: sum
    of the minimum power of the EVSEs with an open transaction; ``grid``: the OpenADR
    requests in force (:mod:`controllers.grid_signal`).
    """

    site_import_kw: Measured | None
    ev_power_kw: float
    pv_power_kw: Measured | None = None
    bess_soc: Measured | None = None
    bess_power_kw: Measured | None = None
    transformer_limit_kw: Measured | None = None
    transformer_loading_pct: Measured | None = None
    transformer_hot_spot_c: Measured | None = None
    ev_minimum_kw: float = 0.0
    grid: GridSignal | None = None


@dataclass(frozen=True)
class SiteDecision:
    """What the site controller decided.

    ``non_ev_load_kw``: load the DLM must assume besides the EVs, ``None`` when the site
    meter is lost (the DLM then applies its worst case and holds EVSEs at their minimum);
    ``site_limit_kw``: the limit in force; ``ev_budget_kw``: power the EVs may draw
    (limit minus non-EV load, or the PV surplus in surplus mode; never negative; 0 in fail
    safe, where only minimums are given); ``bess_setpoint_kw``: positive discharge,
    negative charge; ``pv_limit_kw``: PV output cap, ``None`` = uncurtailed;
    ``fail_safe``: a required measurement was lost; ``reasons``: why, for the event log.
    """

    non_ev_load_kw: float | None
    site_limit_kw: float
    ev_budget_kw: float
    bess_setpoint_kw: float
    fail_safe: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)
    pv_limit_kw: float | None = None

    @property
    def ev_limit_kw(self) -> float:
        """Import limit [kW] to hand the DLM: non-EV load + EV budget, or the site limit.

        In fail safe (non-EV load unknown) the site limit; the DLM's own worst case and
        minimum-only rule then apply.
        """
        if self.non_ev_load_kw is None:
            return self.site_limit_kw
        return min(self.site_limit_kw, self.non_ev_load_kw + self.ev_budget_kw)


def bess_power_bounds(limits: BessLimits, soc: float, dt_s: float) -> tuple[float, float]:
    """Allowed BESS power [kW] over the next ``dt_s`` seconds.

    Returns (max charge as a negative number, max discharge), such that the SoC stays
    within [soc_min, soc_max] even if the reading ``soc`` is off by the SoC resolution.
    Discharging P for dt takes P·dt/η_d from the cells;
    charging P puts P·dt·η_c in.
    """
    hours = dt_s / 3600.0
    margin = limits.soc_resolution
    room_down_kwh = max(0.0, (soc - margin - limits.soc_min) * limits.capacity_kwh)
    room_up_kwh = max(0.0, (limits.soc_max - margin - soc) * limits.capacity_kwh)
    max_dis = min(limits.max_discharge_kw, room_down_kwh * limits.efficiency_discharge / hours)
    max_chg = min(limits.max_charge_kw, room_up_kwh / limits.efficiency_charge / hours)
    return -max_chg, max_dis


def decide(
    inputs: SiteInputs, config: SiteControlConfig, now: datetime, dt_s: float
) -> SiteDecision:
    """Decide the site's non-EV load, EV budget and BESS set-point for the next step.

    Args:
        inputs: measurements with their times.
        config: limits and modes.
        now: the control time (UTC).
        dt_s: length of the coming control step [s] (bounds the BESS energy).

    Returns:
        the decision (see :class:`SiteDecision` and the module docstring for the rules).
    """
    reasons: list[str] = []
    timeout = config.measurement_timeout_s
    limit = config.grid_limit_kw
    if fresh(inputs.transformer_limit_kw, now, timeout):
        assert inputs.transformer_limit_kw is not None
        limit = min(limit, max(0.0, inputs.transformer_limit_kw.value))
    elif inputs.transformer_limit_kw is not None:
        reasons.append("transformer limit stale: grid limit only")

    meter_ok = fresh(inputs.site_import_kw, now, timeout)
    bess_ok = config.bess is not None and fresh(inputs.bess_soc, now, timeout)
    site_now = inputs.site_import_kw.value if meter_ok and inputs.site_import_kw else None
    limit = _transformer_bounds(inputs, config, now, limit, site_now, reasons)
    grid = inputs.grid
    if grid is not None and grid.import_limit_kw is not None:
        limit = min(limit, max(0.0, grid.import_limit_kw))
    emergency = grid is not None and grid.emergency
    if not meter_ok:
        reasons.append("site meter stale or missing: EVSEs at minimum, BESS stopped")
        return SiteDecision(
            non_ev_load_kw=None,
            site_limit_kw=limit,
            ev_budget_kw=0.0,
            bess_setpoint_kw=0.0,
            fail_safe=True,
            reasons=tuple(reasons),
        )
    assert inputs.site_import_kw is not None
    site_kw = inputs.site_import_kw.value
    non_ev = site_kw - inputs.ev_power_kw
    bess_now = (
        inputs.bess_power_kw.value
        if inputs.bess_power_kw is not None and fresh(inputs.bess_power_kw, now, timeout)
        else 0.0
    )
    # The load without the BESS: what the BESS has to work against.
    load_wo_bess = site_kw + bess_now

    setpoint = 0.0
    if config.bess is not None and bess_ok:
        assert inputs.bess_soc is not None
        lo, hi = bess_power_bounds(config.bess, inputs.bess_soc.value, dt_s)
        pv = inputs.pv_power_kw
        pv_kw = pv.value if pv is not None and fresh(pv, now, timeout) else 0.0
        if config.peak_shave_kw is not None and load_wo_bess > config.peak_shave_kw:
            setpoint = load_wo_bess - config.peak_shave_kw
        else:
            # charge with the larger of: the exported PV, and what the grid can give up
            # to the threshold minus the margin (one rule, or the two would alternate)
            if load_wo_bess < 0.0 and pv_kw > 0.0:
                setpoint = load_wo_bess  # store exported PV (negative = charge)
            if config.peak_shave_kw is not None:
                grid_room = load_wo_bess - (config.peak_shave_kw - config.charge_margin_kw)
                setpoint = min(setpoint, grid_room, 0.0)
        if emergency:
            # grid emergency: cover the site's load from the BESS (down to its floor),
            # never charge from the grid; storing exported PV is still fine
            setpoint = load_wo_bess if load_wo_bess > 0 or pv_kw > 0 else 0.0
        setpoint = min(max(setpoint, lo), hi)
    elif config.bess is not None:
        reasons.append("BESS SoC stale: BESS idle")

    # Non-EV load the EVs must leave room for on the coming step: the load without the
    # BESS plus its charging. Its discharge is never headroom for the EVs: a BESS that
    # trips mid-step must not push the site over its limit, and a discharge meant to
    # shave a peak would otherwise only be eaten by the EVs (the two controllers would
    # chase each other).
    non_ev_next = non_ev + bess_now - min(setpoint, 0.0)
    if config.pv_surplus_mode:
        surplus = max(0.0, -non_ev_next) + config.surplus_grid_kw
        if config.surplus_min_current:
            surplus = max(surplus, inputs.ev_minimum_kw)
        budget = min(surplus, limit - non_ev_next)
    else:
        budget = limit - non_ev_next
    budget = max(0.0, budget)
    if grid is not None and grid.ev_share < 1.0:
        # shed: the EVs keep their minimum and a share of the headroom above it
        floor = min(budget, inputs.ev_minimum_kw)
        budget = floor + max(0.0, grid.ev_share) * (budget - floor)
        reasons.extend(grid.reasons)
    pv_limit = None
    pv = inputs.pv_power_kw
    if config.export_limit_kw is not None and pv is not None and fresh(pv, now, timeout):
        # export expected next step: the EVs keep drawing what they draw now, at most
        # their budget
        export = -(non_ev_next + min(inputs.ev_power_kw, budget))
        excess = export - config.export_limit_kw
        if excess > 0:
            pv_limit = max(0.0, pv.value - excess)
            reasons.append(f"export {export:.1f} kW above {config.export_limit_kw} kW: PV capped")
    return SiteDecision(
        non_ev_load_kw=non_ev_next,
        site_limit_kw=limit,
        ev_budget_kw=budget,
        bess_setpoint_kw=setpoint,
        fail_safe=False,
        reasons=tuple(reasons),
        pv_limit_kw=pv_limit,
    )


def _transformer_bounds(
    inputs: SiteInputs,
    config: SiteControlConfig,
    now: datetime,
    limit: float,
    site_kw: float | None,
    reasons: list[str],
) -> float:
    """The limit lowered for transformer loading and hot-spot (module docstring)."""
    timeout = config.measurement_timeout_s
    load_now = max(0.0, site_kw) if site_kw is not None else None
    loading = inputs.transformer_loading_pct
    if fresh(loading, now, timeout) and loading is not None and load_now is not None:
        if loading.value > config.transformer_max_loading_pct and loading.value > 0:
            limit = min(limit, load_now * config.transformer_max_loading_pct / loading.value)
            reasons.append(f"transformer loading {loading.value:.0f} %: limit {limit:.1f} kW")
    hot = inputs.transformer_hot_spot_c
    if fresh(hot, now, timeout) and hot is not None and load_now is not None:
        if hot.value > config.transformer_hot_spot_max_c:
            limit = min(limit, 0.9 * load_now)
            reasons.append(f"transformer hot-spot {hot.value:.0f} degC: limit {limit:.1f} kW")
    return limit
