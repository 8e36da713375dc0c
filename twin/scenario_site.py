"""The ``site_devices`` section of a scenario or bench file.

Meter, building, PV, BESS and transformer, each emulated or physical, and the site energy
control's parameters.

Every device names its binding (DESIGN.md, "The device layer is swappable"):

- ``binding: emulated`` (default): the runtime starts the emulator of :mod:`devices` on a
  loopback port and gives the controllers that endpoint;
- ``binding: physical``: the controllers talk to the given address: Modbus ``host``,
  ``port``, ``unit`` and SunSpec ``base`` (None: discover at 40000, 0, 50000); OPC UA
  ``endpoint`` and ``node_ids``. Physical devices evolve on the wall clock, so a
  lock-step ``migrid run`` refuses them (:func:`physical_devices`); ``migrid device
  check`` reads them once, and the bench runtime drives them.

Faults of an emulated device: ``outages`` take its endpoint off the network for a while
(link loss: the controllers' reads fail and the values age); ``frozen`` windows keep it
answering with registers that no longer change (a frozen meter: fresh-looking but stale
values, which the controller detects by energy registers that stop counting).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from twin.scenario_time import UtcDatetime


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outage(_Model):
    """A window in which an emulated device's endpoint is unreachable."""

    start: UtcDatetime
    duration_s: float = Field(gt=0)

    @property
    def end(self) -> datetime:
        """End of the window (UTC)."""
        return self.start + timedelta(seconds=self.duration_s)


class _Binding(_Model):
    binding: Literal["emulated", "physical"] = "emulated"
    outages: list[Outage] = Field(default_factory=list)
    frozen: list[Outage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _outages_emulated_only(self) -> _Binding:
        if (self.outages or self.frozen) and self.binding == "physical":
            raise ValueError("outages and frozen windows apply to emulated devices only")
        return self


class ModbusDevice(_Binding):
    """A SunSpec device over Modbus TCP.

    ``host``/``port``: required for ``physical``; ``unit``: Modbus device id; ``base``:
    SunSpec base address (None: discover); ``timeout_s``: per-request timeout.
    """

    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=247)
    base: int | None = Field(None, ge=0, le=65535)
    timeout_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _address(self) -> ModbusDevice:
        if self.binding == "physical" and (self.host is None or self.port is None):
            raise ValueError("a physical Modbus device needs host and port")
        return self


class SiteMeter(ModbusDevice):
    """The grid-connection meter (SunSpec 1 + 203).

    ``import_positive``: whether the meter's ``W`` is positive when the site imports (the
    emulator's convention; set false for a meter that reads the other way round).
    """

    import_positive: bool = True
    max_power_kw: float = Field(1000.0, gt=0)


class Building(ModbusDevice):
    """Building load behind a sub-meter (SunSpec 203), on a BDEW standard load profile.

    The profile comes from demandlib (BDEW 2025: ``G25`` commerce, ``H25`` household, ``L25``
    agriculture, ``P25`` household with PV, ``S25`` household with storage) scaled to
    ``annual_kwh``.
    """

    profile: Literal["G25", "H25", "L25", "P25", "S25"] = "G25"
    annual_kwh: float = Field(250_000.0, gt=0)
    utc_offset_h: float = 1.0


class Pv(ModbusDevice):
    """PV inverter (SunSpec 1 + 701 + 702 + 704), PVWatts on pvlib's TMY3 weather."""

    rated_kw: float = Field(100.0, gt=0)
    dc_ac_ratio: float = Field(1.2, gt=0)
    tilt_deg: float = Field(25.0, ge=0, le=90)
    azimuth_deg: float = Field(180.0, ge=0, lt=360)
    utc_offset_h: float | None = None


class Bess(ModbusDevice):
    """Stationary battery (SunSpec 1 + 701 + 702 + 704 + 713 + 802).

    ``soc_min``/``soc_max`` are the device's own protection window; the controller keeps
    the SoC within ``control.bess_soc_min`` (never below 20 %) and ``soc_max``.
    """

    capacity_kwh: float = Field(200.0, gt=0)
    max_charge_kw: float = Field(100.0, ge=0)
    max_discharge_kw: float = Field(100.0, ge=0)
    eta_charge: float = Field(0.95, gt=0, le=1)
    eta_discharge: float = Field(0.95, gt=0, le=1)
    soc_min: float = Field(0.1, ge=0, lt=1)
    soc_max: float = Field(0.9, gt=0, le=1)
    initial_soc: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _window(self) -> Bess:
        if not self.soc_min < self.soc_max:
            raise ValueError("soc_min must be below soc_max")
        if not self.soc_min <= self.initial_soc <= self.soc_max:
            raise ValueError("initial_soc must lie within [soc_min, soc_max]")
        return self


class Transformer(_Binding):
    """The distribution transformer (OPC UA, IEC 61850-7-4 style names).

    Emulated: IEC 60076-7 thermal model at ``rated_power_kva`` with a constant
    ``ambient_c``; the writable site import limit starts at ``site_import_limit_kw``.
    Physical: ``endpoint`` (``opc.tcp://...``) and ``node_ids`` for ``limit_kw``,
    ``loading_pct`` and ``hot_spot_c`` (any subset).
    """

    rated_power_kva: float = Field(630.0, gt=0)
    rated_voltage_v: float = Field(400.0, gt=0)
    site_import_limit_kw: float = Field(500.0, gt=0)
    ambient_c: float = 20.0
    endpoint: str | None = None
    node_ids: dict[Literal["limit_kw", "loading_pct", "hot_spot_c"], str] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _address(self) -> Transformer:
        if self.binding == "physical" and (not self.endpoint or not self.node_ids):
            raise ValueError("a physical transformer needs endpoint and node_ids")
        return self


class SiteControl(_Model):
    """Parameters of the site energy control (:mod:`controllers.site_control`).

    ``peak_shave_kw``: import above which the BESS discharges (None: no peak shaving);
    ``bess_soc_min``: the controller's floor, at least 0.2; ``export_limit_kw``: PV is
    curtailed beyond this export (None: never).
    """

    measurement_timeout_s: float = Field(30.0, gt=0)
    peak_shave_kw: float | None = Field(None, gt=0)
    charge_margin_kw: float = Field(5.0, ge=0)
    bess_soc_min: float = Field(0.2, ge=0.2, lt=1)
    pv_surplus_mode: bool = False
    surplus_min_current: bool = False
    surplus_grid_kw: float = Field(0.0, ge=0)
    export_limit_kw: float | None = Field(None, ge=0)
    transformer_max_loading_pct: float = Field(100.0, gt=0)
    transformer_hot_spot_max_c: float = Field(120.0, gt=0)
    setpoint_deadband_kw: float = Field(0.5, ge=0)


class SiteDevices(_Model):
    """The site's energy devices; ``meter`` is required for the control to run."""

    meter: SiteMeter = SiteMeter()
    building: Building | None = None
    pv: Pv | None = None
    bess: Bess | None = None
    transformer: Transformer | None = None
    control: SiteControl = SiteControl()

    @model_validator(mode="after")
    def _bess_window(self) -> SiteDevices:
        if self.bess is not None and self.control.bess_soc_min >= self.bess.soc_max:
            raise ValueError("control.bess_soc_min must be below bess.soc_max")
        return self

    def named(self) -> dict[str, ModbusDevice | Transformer]:
        """The configured devices by name."""
        out: dict[str, ModbusDevice | Transformer] = {"meter": self.meter}
        for name in ("building", "pv", "bess", "transformer"):
            dev = getattr(self, name)
            if dev is not None:
                out[name] = dev
        return out


def physical_devices(devices: SiteDevices) -> list[str]:
    """Names of the devices bound to physical addresses."""
    return [name for name, dev in devices.named().items() if dev.binding == "physical"]
