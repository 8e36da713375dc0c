"""The site's emulated energy devices in the lock-step twin, and the site's power balance.

:class:`SitePlant` starts the emulators of :mod:`devices` named by a scenario's
``site_devices`` section on loopback ports (SunSpec devices over Modbus TCP, the
transformer over OPC UA) and advances them each step (DESIGN.md, ``devices.advance``):

1. building load, PV and BESS integrate their physics over ``[t_{k-1}, t_k]`` with the
   set-points in force (BESS ``WSet``, PV ``WMaxLimPct`` written by the controller) and
   write their registers;
2. the site meter is set from the truth of the interval, per phase (import positive):
   ``base load/3 + building/3 - PV/3 - BESS/3 + EV power on that phase``, and integrates
   its energy registers;
3. the transformer takes the phase currents ``|P_phase| / V`` and the ambient
   temperature, runs the IEC 60076-7 thermal model and publishes over OPC UA.

Outages (``outages`` of a device) close a device's endpoint for their window and reopen
it on the same port afterwards; the physics goes on meanwhile (a link loss, not a dead
device). Time is injected; no wall clock is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devices.sunspec import (
    BessDevice,
    BuildingLoadDevice,
    PvInverterDevice,
    SiteMeterDevice,
    SunSpecDevice,
)
from devices.transformer.server import NAMESPACE_URI, NODE_IDS, TransformerServer, TransformerSpec
from twin.scenario_site import ModbusDevice, SiteDevices

EventSink = Callable[[datetime, str, str, dict[str, Any]], None]

#: node id strings (with the namespace URI, resolved by the client) of the emulated
#: transformer's values the controller reads
TRANSFORMER_NODES = {
    "limit_kw": f"nsu={NAMESPACE_URI};s={NODE_IDS['site_import_limit_kw']}",
    "loading_pct": f"nsu={NAMESPACE_URI};s={NODE_IDS['loading_pct']}",
    "hot_spot_c": f"nsu={NAMESPACE_URI};s={NODE_IDS['hot_spot_c']}",
}


@dataclass(frozen=True)
class PlantTruth:
    """The site's physics over the last interval (means) and its state at its end.

    Powers in kW: ``import_kw`` positive importing; ``pv_kw`` delivered, ``pv_available_kw``
    what the plant could have delivered uncurtailed (both means over the interval);
    ``bess_kw`` positive discharging; ``bess_soc`` 0..1 (None without a BESS); transformer
    ``loading_pct``, ``hot_spot_c``, ``top_oil_c`` (None without one).
    """

    import_kw: float
    building_kw: float
    pv_kw: float
    pv_available_kw: float
    bess_kw: float
    bess_soc: float | None
    loading_pct: float | None
    hot_spot_c: float | None
    top_oil_c: float | None


class SitePlant:
    """Emulated site devices of a scenario (module docstring).

    Args:
        devices: the scenario's ``site_devices`` (every device must be emulated).
        start: run start (UTC).
        voltage_v: site phase-to-neutral voltage [V].
        on_event: run-folder event sink ``(time, source, kind, payload)``.

    Raises:
        ValueError: a device bound to a physical address.
    """

    def __init__(
        self,
        devices: SiteDevices,
        start: datetime,
        voltage_v: float,
        on_event: EventSink | None = None,
    ) -> None:
        self.config = devices
        self.voltage_v = voltage_v
        self.on_event = on_event
        for name, dev in devices.named().items():
            if dev.binding != "emulated":
                raise ValueError(
                    f"site_devices.{name} is physical: the lock-step twin runs emulated "
                    "devices only (physical ones evolve on the wall clock: use a bench)"
                )
        m = devices.meter
        self.meter = SiteMeterDevice(
            start,
            unit=m.unit,
            config={"max_power_w": m.max_power_kw * 1000, "voltage_v": voltage_v},
        )
        self.sunspec: dict[str, SunSpecDevice] = {"meter": self.meter}
        self.building: BuildingLoadDevice | None = None
        self.pv: PvInverterDevice | None = None
        self.bess: BessDevice | None = None
        if (b := devices.building) is not None:
            self.building = BuildingLoadDevice(start, unit=b.unit, config={
                "annual_kwh": b.annual_kwh, "profile": b.profile,
                "utc_offset_h": b.utc_offset_h, "voltage_v": voltage_v,
            })
            self.sunspec["building"] = self.building
        if (p := devices.pv) is not None:
            pv_cfg: dict[str, Any] = {
                "rated_kw": p.rated_kw, "dc_ac_ratio": p.dc_ac_ratio, "tilt_deg": p.tilt_deg,
                "azimuth_deg": p.azimuth_deg, "voltage_v": voltage_v,
            }
            if p.utc_offset_h is not None:
                pv_cfg["utc_offset_h"] = p.utc_offset_h
            self.pv = PvInverterDevice(start, unit=p.unit, config=pv_cfg)
            self.sunspec["pv"] = self.pv
        if (s := devices.bess) is not None:
            self.bess = BessDevice(start, unit=s.unit, config={
                "capacity_kwh": s.capacity_kwh, "max_charge_kw": s.max_charge_kw,
                "max_discharge_kw": s.max_discharge_kw, "eta_charge": s.eta_charge,
                "eta_discharge": s.eta_discharge, "soc_min": s.soc_min, "soc_max": s.soc_max,
                "soc": s.initial_soc, "voltage_v": voltage_v,
            })
            self.sunspec["bess"] = self.bess
        self.transformer: TransformerServer | None = None
        if (t := devices.transformer) is not None:
            spec = TransformerSpec(
                rated_power_kva=t.rated_power_kva,
                rated_voltage_v=t.rated_voltage_v,
                site_import_limit_kw=t.site_import_limit_kw,
            )
            self.transformer = TransformerServer(
                spec, ambient_c=t.ambient_c, on_event=self._transformer_event
            )
        self.ports: dict[str, int] = {}
        self.endpoint: str | None = None
        self._down: set[str] = set()

    def _transformer_event(
        self, t: datetime | None, source: str, kind: str, payload: dict[str, Any]
    ) -> None:
        if self.on_event is not None and t is not None:
            self.on_event(t, source, kind, payload)

    # ------------------------------------------------------------------ life cycle
    async def start(self, now: datetime) -> None:
        """Start every endpoint on a free loopback port; publish the initial values."""
        for name, dev in self.sunspec.items():
            self.ports[name] = await dev.start("127.0.0.1", 0)
        if self.transformer is not None:
            self.endpoint = await self.transformer.start()
            ambient = self.config.transformer.ambient_c if self.config.transformer else 20.0
            await self.transformer.advance(now, (0.0, 0.0, 0.0), ambient)

    async def close(self) -> None:
        """Stop every endpoint."""
        for dev in self.sunspec.values():
            await dev.close()
        if self.transformer is not None:
            await self.transformer.stop()

    @property
    def endpoints(self) -> list[Any]:
        """The endpoints, for the runtime's quiesce (``busy``/``drain``)."""
        out: list[Any] = list(self.sunspec.values())
        if self.transformer is not None:
            out.append(self.transformer)
        return out

    def binding(self, name: str) -> ModbusDevice:
        """The scenario's configuration of a SunSpec device."""
        dev = getattr(self.config, name)
        assert isinstance(dev, ModbusDevice)
        return dev

    async def _outages(self, now: datetime) -> None:
        for name, dev in self.sunspec.items():
            frozen = any(w.start <= now < w.end for w in self.binding(name).frozen)
            if frozen != dev.frozen:
                dev.frozen = frozen
                self._emit(now, "site.device_frozen" if frozen else "site.device_unfrozen",
                           {"device": name})
            windows = self.binding(name).outages
            out = any(w.start <= now < w.end for w in windows)
            if out and name not in self._down:
                await dev.close()
                self._down.add(name)
                self._emit(now, "site.device_outage", {"device": name})
            elif not out and name in self._down:
                await dev.start("127.0.0.1", self.ports[name])
                self._down.discard(name)
                self._emit(now, "site.device_restored", {"device": name})

    def _emit(self, t: datetime, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(t, "twin", kind, payload)

    # --------------------------------------------------------------------- physics
    async def advance(
        self, now: datetime, ev_phase_kw: tuple[float, float, float], base_kw: float
    ) -> PlantTruth:
        """Advance every device to ``now``; returns the interval's truth.

        Args:
            now: end of the interval (UTC).
            ev_phase_kw: mean EV power per site phase L1..L3 over the interval [kW].
            base_kw: the scenario's other non-EV load over the interval [kW].
        """
        await self._outages(now)
        building_kw = pv_kw = bess_kw = 0.0
        pv_available = 0.0
        if self.building is not None:
            await self.building.advance(now)
            building_kw = self.building.load.power_kw
        if self.pv is not None:
            await self.pv.advance(now)
            pv_kw = self.pv.pv.power_kw
            pv_available = self.pv.pv.available_mean_kw
        if self.bess is not None:
            await self.bess.advance(now)
            bess_kw = self.bess.bess.power_kw
        shared_kw = (base_kw + building_kw - pv_kw - bess_kw) / 3.0
        phase_kw = tuple(shared_kw + ev for ev in ev_phase_kw)
        self.meter.set_power_w(*(p * 1000.0 for p in phase_kw))
        await self.meter.advance(now)
        loading = hot = oil = None
        if self.transformer is not None and self.config.transformer is not None:
            currents = tuple(abs(p) * 1000.0 / self.voltage_v for p in phase_kw)
            await self.transformer.advance(now, currents, self.config.transformer.ambient_c)
            values = self.transformer.values()
            loading, hot, oil = values["loading_pct"], values["hot_spot_c"], values["top_oil_c"]
        return PlantTruth(
            import_kw=sum(phase_kw),
            building_kw=building_kw,
            pv_kw=pv_kw,
            pv_available_kw=pv_available,
            bess_kw=bess_kw,
            bess_soc=self.bess.bess.soc if self.bess is not None else None,
            loading_pct=loading,
            hot_spot_c=hot,
            top_oil_c=oil,
        )
