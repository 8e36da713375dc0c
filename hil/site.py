"""Site devices on the bench: emulated ones on loopback, physical ones at their addresses.

The site energy controller reads both over the wire.

The emulated devices are the twin's own :class:`twin.site_plant.SitePlant`, built from the
bench's ``site_devices`` with the physical devices left out; the controller
(:class:`controllers.site_energy.SiteEnergyController`) gets the emulated devices'
loopback endpoints and the physical devices' addresses, and cannot tell them apart.

The emulated plant advances on the wall clock (``now`` passed in by the bench loop); the
EV load it puts on an emulated site meter is what the CSMS's meter values say (the
field's view), spread evenly over the three phases. A physical meter measures the real
site; the emulated meter then still runs on loopback (unused) because the plant always
has one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from controllers.grid_signal import GridSignal
from controllers.site_control import SiteDecision
from controllers.site_energy import EvLoadManager, SiteEnergyController
from hil.recording import device_exchange_hook, perf_counter
from twin.scenario import Scenario
from twin.scenario_site import ModbusDevice, SiteDevices, SiteMeter, physical_devices
from twin.site_plant import PlantTruth, SitePlant
from twin.site_runtime import site_controller

EventSink = Callable[[datetime, str, str, dict[str, Any]], None]
Row = tuple[str, str, float, str]

__all__ = ["BenchSite", "emulated_only"]


def emulated_only(devices: SiteDevices) -> SiteDevices:
    """``devices`` with the physical ones left out (a physical meter: a default emulated)."""
    physical = set(physical_devices(devices))
    update: dict[str, Any] = {n: None for n in physical if n != "meter"}
    if "meter" in physical:
        update["meter"] = SiteMeter(max_power_kw=devices.meter.max_power_kw)
    return devices.model_copy(update=update)


class BenchSite:
    """The site side of a bench run (module docstring).

    Args:
        shadow: the bench as a scenario (:func:`hil.runtime.shadow_scenario`), for the
            site control's parameters.
        start: bench start (UTC).
        on_event: run-folder event sink.
        record: record every Modbus and OPC UA exchange of the controller as an
            ``exchange.modbus`` / ``exchange.opcua`` event (:mod:`hil.recording`).
    """

    def __init__(self, shadow: Scenario, start: datetime, on_event: EventSink,
                 record: bool = False) -> None:
        assert shadow.site_devices is not None
        self.shadow = shadow
        self.devices = shadow.site_devices
        self.physical = physical_devices(self.devices)
        self.on_event = on_event
        self.plant = SitePlant(emulated_only(self.devices), start, shadow.site.voltage_v,
                               on_event=on_event)
        self.controller: SiteEnergyController | None = None
        self.record = record
        self._now = start

    def bindings(self) -> dict[str, str]:
        """``device name -> address`` (``emulated 127.0.0.1:port`` or the physical one)."""
        out: dict[str, str] = {}
        for name, dev in self.devices.named().items():
            if isinstance(dev, ModbusDevice):
                if dev.binding == "physical":
                    out[name] = f"physical SunSpec {dev.host}:{dev.port} unit {dev.unit}"
                else:
                    out[name] = f"emulated SunSpec 127.0.0.1:{self.plant.ports.get(name)}"
            elif dev.binding == "physical":
                out[name] = f"physical OPC UA {dev.endpoint}"
            else:
                out[name] = f"emulated OPC UA {self.plant.endpoint}"
        return out

    def _controller_event(self, source: str, kind: str, payload: dict[str, Any]) -> None:
        self.on_event(self._now, source, kind, payload)

    async def start(self, now: datetime) -> None:
        """Start the emulated devices; connect the controller's clients (lazily)."""
        self._now = now
        await self.plant.start(now)
        self.controller = site_controller(
            self.shadow, self.devices, self.plant.ports, self.plant.endpoint,
            self._controller_event,
            on_exchange=device_exchange_hook(self.on_event) if self.record else None,
            perf_counter=perf_counter,
        )

    async def close(self) -> None:
        """Disconnect the controller, stop the emulators."""
        if self.controller is not None:
            await self.controller.close()
        await self.plant.close()

    async def advance(
        self, now: datetime, ev_phase_kw: tuple[float, float, float], base_kw: float
    ) -> PlantTruth:
        """The emulated devices' physics up to ``now`` (wall clock)."""
        self._now = now
        return await self.plant.advance(now, ev_phase_kw, base_kw)

    async def control(
        self, now: datetime, dt_s: float, csms: EvLoadManager, grid: GridSignal | None
    ) -> SiteDecision:
        """The site controller's step: reads, decision, writes, CSMS inputs."""
        assert self.controller is not None
        self._now = now
        return await self.controller.step(now, dt_s, csms, grid)

    async def read_import_kw(self, now: datetime) -> float | None:
        """Read only the site meter's import now [kW] (None: not answering / not started)."""
        if self.controller is None:
            return None
        return await self.controller.read_import_kw(now)

    @property
    def measured_import_kw(self) -> float | None:
        """The site import the controller last read from the meter [kW] (None: none yet)."""
        if self.controller is None:
            return None
        m = self.controller.measured.get("site_import_kw")
        return None if m is None else float(m.value)

    def rows(self, truth: PlantTruth, decision: SiteDecision | None) -> list[Row]:
        """Trace rows of the emulated devices' truth and the controller's decision."""
        rows: list[Row] = []
        p = self.plant
        if p.building is not None:
            rows.append(("building", "power_kw", truth.building_kw, "kW"))
        if p.pv is not None:
            rows.append(("pv", "power_kw", truth.pv_kw, "kW"))
            rows.append(("pv", "available_kw", truth.pv_available_kw, "kW"))
        if p.bess is not None and truth.bess_soc is not None:
            rows.append(("bess", "power_kw", truth.bess_kw, "kW"))
            rows.append(("bess", "soc", truth.bess_soc, "1"))
        for name, value, unit in (("loading_pct", truth.loading_pct, "%"),
                                  ("hot_spot_c", truth.hot_spot_c, "degC"),
                                  ("top_oil_c", truth.top_oil_c, "degC")):
            if value is not None:
                rows.append(("transformer", name, value, unit))
        if decision is not None:
            rows.append(("site", "fail_safe", float(decision.fail_safe), "1"))
            rows.append(("site", "control_limit_kw", decision.site_limit_kw, "kW"))
            if self.devices.bess is not None:
                rows.append(("bess", "setpoint_kw", decision.bess_setpoint_kw, "kW"))
        measured = self.measured_import_kw
        if measured is not None:
            rows.append(("meter", "import_kw", measured, "kW"))
        return rows

    @property
    def exchanges(self) -> int:
        """Modbus and OPC UA requests the controller made."""
        return self.controller.exchanges if self.controller is not None else 0
