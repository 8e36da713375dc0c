"""The site-device side of a lock-step run: plant, site energy controller, traces, KPIs.

:class:`SiteSide` joins :class:`twin.site_plant.SitePlant` (the emulated devices) and
:class:`controllers.site_energy.SiteEnergyController` (which reaches them only through
their endpoints, over Modbus TCP and OPC UA) and records what both did. The runtime calls,
per step: :meth:`SiteSide.advance` after the stations' physics, then :meth:`SiteSide.control`
before the CSMS's DLM step (DESIGN.md, "Data flow of one control step").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np

from controllers.exchange import Exchange
from controllers.grid_signal import GridSignal
from controllers.site_control import BessLimits, SiteControlConfig, SiteDecision
from controllers.site_energy import EvLoadManager, MeterSign, SiteEnergyController, TransformerNodes
from controllers.site_io import Backoff, OpcUaClient, SunSpecClient
from devices.site.building import slp_year
from twin.scenario import Scenario
from twin.scenario_site import ModbusDevice, SiteDevices
from twin.site_plant import TRANSFORMER_NODES, PlantTruth, SitePlant

EventSink = Callable[[datetime, str, str, dict[str, Any]], None]
DeviceExchangeHook = Callable[[str, Exchange], None]
"""``(device name, exchange)``: ``meter``, ``pv``, ``bess`` or ``transformer``."""

Row = tuple[str, str, float, str]


def control_config(scenario: Scenario, devices: SiteDevices) -> SiteControlConfig:
    """The site energy control's parameters from a scenario."""
    c = devices.control
    bess = None
    if (b := devices.bess) is not None:
        bess = BessLimits(
            capacity_kwh=b.capacity_kwh,
            max_charge_kw=b.max_charge_kw,
            max_discharge_kw=b.max_discharge_kw,
            soc_min=c.bess_soc_min,
            soc_max=b.soc_max,
            efficiency_charge=b.eta_charge,
            efficiency_discharge=b.eta_discharge,
        )
    return SiteControlConfig(
        grid_limit_kw=scenario.site.grid_limit_kw,
        measurement_timeout_s=c.measurement_timeout_s,
        peak_shave_kw=c.peak_shave_kw,
        charge_margin_kw=c.charge_margin_kw,
        bess=bess,
        pv_surplus_mode=c.pv_surplus_mode,
        surplus_grid_kw=c.surplus_grid_kw,
        surplus_min_current=c.surplus_min_current,
        export_limit_kw=c.export_limit_kw,
        transformer_max_loading_pct=c.transformer_max_loading_pct,
        transformer_hot_spot_max_c=c.transformer_hot_spot_max_c,
    )


def worst_case_non_ev_kw(scenario: Scenario) -> float:
    """Non-EV load [kW] the DLM assumes when the site meter is lost.

    The other base load's peak plus the building's peak over the run's year(s) (its BDEW
    profile's highest quarter hour x annual energy); PV counts as 0 and the BESS as idle
    (the controller stops it in fail safe).
    """
    peak = scenario.site.base_load.peak_kw
    devices = scenario.site_devices
    if devices is not None and (b := devices.building) is not None:
        years = {scenario.run.start.year, scenario.run.end.year}
        peak += b.annual_kwh * max(float(slp_year(b.profile, y).max()) for y in years)
    return peak


def _sunspec_client(
    dev: ModbusDevice, port: int | None, name: str = "",
    on_exchange: DeviceExchangeHook | None = None,
    perf_counter: Callable[[], float] | None = None,
) -> SunSpecClient:
    """A client at the device's physical address, or at its emulator's loopback port."""
    if dev.binding == "physical":
        assert dev.host is not None and dev.port is not None
        host, p = dev.host, dev.port
    else:
        assert port is not None
        host, p = "127.0.0.1", port
    bases = (dev.base,) if dev.base is not None else (40000, 0, 50000)
    return SunSpecClient(host, p, device_id=dev.unit, bases=bases, timeout_s=dev.timeout_s,
                         backoff=Backoff(),
                         on_exchange=partial(on_exchange, name) if on_exchange else None,
                         perf_counter=perf_counter)


def site_controller(
    scenario: Scenario,
    devices: SiteDevices,
    ports: Mapping[str, int],
    plant_endpoint: str | None,
    on_event: Callable[[str, str, dict[str, Any]], None],
    on_exchange: DeviceExchangeHook | None = None,
    perf_counter: Callable[[], float] | None = None,
) -> SiteEnergyController:
    """The site energy controller, given endpoints only (physical or emulated).

    Args:
        scenario: the scenario (or the bench's shadow scenario) for the control limits.
        devices: the site devices with their bindings.
        ports: loopback ports of the emulated SunSpec devices by name.
        plant_endpoint: the emulated transformer's OPC UA endpoint (None without one).
        on_event: ``(source, kind, payload)`` sink.
        on_exchange: ``(device name, exchange)`` for every Modbus and OPC UA exchange of
            the controller's clients (:mod:`controllers.exchange`; None: not recorded).
        perf_counter: clock for the exchanges' ``duration_ms``.
    """
    transformer = None
    nodes = None
    if (t := devices.transformer) is not None:
        if t.binding == "physical":
            assert t.endpoint is not None
            nodes, endpoint = TransformerNodes(**t.node_ids), t.endpoint
        else:
            assert plant_endpoint is not None
            nodes, endpoint = TransformerNodes(**TRANSFORMER_NODES), plant_endpoint
        transformer = OpcUaClient(
            endpoint, nodes.all(), limit_node_id=nodes.limit_kw, subscribe=False,
            backoff=Backoff(),
            on_exchange=partial(on_exchange, "transformer") if on_exchange else None,
            perf_counter=perf_counter)
    d = devices
    x = (on_exchange, perf_counter)
    return SiteEnergyController(
        control_config(scenario, d),
        meter=_sunspec_client(d.meter, ports.get("meter"), "meter", *x),
        pv=_sunspec_client(d.pv, ports.get("pv"), "pv", *x) if d.pv is not None else None,
        bess=_sunspec_client(d.bess, ports.get("bess"), "bess", *x) if d.bess is not None
        else None,
        transformer=transformer,
        transformer_nodes=nodes,
        pv_rated_kw=d.pv.rated_kw if d.pv is not None else None,
        meter_sign=MeterSign(1.0 if d.meter.import_positive else -1.0),
        setpoint_deadband_kw=d.control.setpoint_deadband_kw,
        poll_transformer=True,
        on_event=on_event,
    )


class SiteSide:
    """Site devices and their controller in one lock-step run (module docstring).

    Args:
        scenario: the scenario (with ``site_devices``).
        steps: number of control steps (sizes the KPI series).
        on_event: run-folder event sink.
    """

    def __init__(self, scenario: Scenario, steps: int, on_event: EventSink) -> None:
        assert scenario.site_devices is not None
        self.scenario = scenario
        self.devices = scenario.site_devices
        self.on_event = on_event
        self.plant = SitePlant(
            self.devices, scenario.run.start, scenario.site.voltage_v, on_event=on_event
        )
        self.controller: SiteEnergyController | None = None
        self._now = scenario.run.start
        n = steps
        self.series: dict[str, np.ndarray] = {
            name: np.full(n, np.nan)
            for name in ("import_kw", "pv_kw", "pv_available_kw", "bess_kw", "bess_soc",
                         "loading_pct", "hot_spot_c", "top_oil_c", "fail_safe")
        }

    def _controller_event(self, source: str, kind: str, payload: dict[str, Any]) -> None:
        self.on_event(self._now, source, kind, payload)

    async def start(self, now: datetime) -> None:
        """Start the emulators and connect the controller's clients."""
        await self.plant.start(now)
        self.controller = site_controller(
            self.scenario, self.devices, self.plant.ports, self.plant.endpoint,
            self._controller_event,
        )

    @property
    def endpoints(self) -> list[Any]:
        """Everything the runtime's quiesce must wait for."""
        out = self.plant.endpoints
        if self.controller is not None:
            out.append(self.controller)
        return out

    async def close(self) -> None:
        """Disconnect the controller, stop the emulators."""
        if self.controller is not None:
            await self.controller.close()
        await self.plant.close()

    async def advance(
        self, now: datetime, ev_phase_kw: tuple[float, float, float], base_kw: float, k: int
    ) -> PlantTruth:
        """Devices' physics over the step ending at ``now`` (step number ``k`` >= 1)."""
        self._now = now
        truth = await self.plant.advance(now, ev_phase_kw, base_kw)
        s, i = self.series, k - 1
        s["import_kw"][i] = truth.import_kw
        s["pv_kw"][i] = truth.pv_kw
        s["pv_available_kw"][i] = truth.pv_available_kw
        s["bess_kw"][i] = truth.bess_kw
        for name, value in (("bess_soc", truth.bess_soc), ("loading_pct", truth.loading_pct),
                            ("hot_spot_c", truth.hot_spot_c), ("top_oil_c", truth.top_oil_c)):
            if value is not None:
                s[name][i] = value
        return truth

    async def control(
        self, now: datetime, dt_s: float, csms: EvLoadManager, k: int | None = None,
        grid: GridSignal | None = None,
    ) -> SiteDecision:
        """The site controller's step: reads, decision, writes, CSMS inputs."""
        assert self.controller is not None
        self._now = now
        decision = await self.controller.step(now, dt_s, csms, grid)
        if k is not None and k >= 1:
            self.series["fail_safe"][k - 1] = float(decision.fail_safe)
        return decision

    def rows(self, truth: PlantTruth, decision: SiteDecision | None) -> list[Row]:
        """Trace rows of the site devices for one step.

        Besides each device's own entity (``building``, ``pv``, ``bess``,
        ``transformer``, ``meter``), the ``site`` entity gets each device's contribution
        to the site import (``building_kw`` positive, ``pv_kw`` negative, ``bess_kw``
        positive when charging), so that the site stack adds up to ``import_kw``.
        """
        rows: list[Row] = []
        d = self.devices
        if d.building is not None:
            rows.append(("building", "power_kw", truth.building_kw, "kW"))
            rows.append(("site", "building_kw", truth.building_kw, "kW"))
        if d.pv is not None:
            rows.append(("pv", "power_kw", truth.pv_kw, "kW"))
            rows.append(("pv", "available_kw", truth.pv_available_kw, "kW"))
            rows.append(("site", "pv_kw", -truth.pv_kw, "kW"))
        if d.bess is not None and truth.bess_soc is not None:
            rows.append(("bess", "power_kw", truth.bess_kw, "kW"))
            rows.append(("bess", "soc", truth.bess_soc, "1"))
            rows.append(("site", "bess_kw", -truth.bess_kw, "kW"))
        if truth.loading_pct is not None:
            rows.append(("transformer", "loading_pct", truth.loading_pct, "%"))
        if truth.hot_spot_c is not None:
            rows.append(("transformer", "hot_spot_c", truth.hot_spot_c, "degC"))
        if truth.top_oil_c is not None:
            rows.append(("transformer", "top_oil_c", truth.top_oil_c, "degC"))
        if decision is not None:
            rows.append(("site", "fail_safe", float(decision.fail_safe), "1"))
            rows.append(("site", "control_limit_kw", decision.site_limit_kw, "kW"))
            if d.bess is not None:
                rows.append(("bess", "setpoint_kw", decision.bess_setpoint_kw, "kW"))
        assert self.controller is not None
        measured = self.controller.measured.get("site_import_kw")
        if measured is not None:
            rows.append(("meter", "import_kw", measured.value, "kW"))
        return rows

    @property
    def loss_of_life_h(self) -> float | None:
        """The transformer's equivalent ageing over the run [h] (None without one)."""
        tr = self.plant.transformer
        return tr.loss_of_life_h if tr is not None else None

    @property
    def exchanges(self) -> int:
        """Modbus and OPC UA requests the controller made (reads and writes)."""
        return self.controller.exchanges if self.controller is not None else 0
