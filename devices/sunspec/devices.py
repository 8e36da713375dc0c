"""SunSpec devices over Modbus TCP: site meter, PV inverter, BESS, building sub-meter.

Each device pairs pure physics from :mod:`devices.site` with a :class:`SunSpecServer`.
``advance(now)`` integrates the physics over ``[last, now]`` with the set-points in force
at the start of the interval, then writes the changed registers. A client's write (FC6 /
FC16) is validated against the model and the device's limits and takes effect for the
next interval. Time is injected; nothing here reads the clock.

Sign conventions:
- meters (model 203): ``W`` positive when importing (consuming), as the site convention.
- PV and BESS (model 701): ``W`` positive when injecting into the site (generation or
  discharge), negative when absorbing (BESS charging). Model 802 ``W`` follows 701.
- BESS set-point (model 704): ``WSetEna`` = ENABLED and ``WSet`` in W, positive discharge,
  negative charge, within ``[-max_charge, +max_discharge]`` (else exception 3); with
  ``WSetEna`` DISABLED the BESS idles. ``WMaxLimPct`` (when ``WMaxLimPctEna``) caps
  both directions at that share of the rated power.
- PV curtailment (model 704): ``WMaxLimPct`` (0..100 %, SF -1) caps the AC output at
  that share of the rating while ``WMaxLimPctEna`` is ENABLED (the initial state, at
  100 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from devices.site.bess import Battery, BessSpec
from devices.site.building import BuildingLoad, BuildingSpec
from devices.site.meter import MeterReading, SiteMeter
from devices.site.pv import PvPlant, PvSpec
from devices.sunspec.image import SunSpecImage
from devices.sunspec.server import SunSpecServer, Value

__all__ = [
    "BessDevice",
    "BuildingLoadDevice",
    "PvInverterDevice",
    "SiteMeterDevice",
    "SunSpecDevice",
    "sf_for",
]

_ACC32 = 2**32


def sf_for(max_abs: float, limit: int = 32767) -> int:
    """Smallest scale factor that keeps ``max_abs`` within ``limit`` raw counts."""
    if max_abs <= 0:
        return 0
    sf = math.ceil(math.log10(max_abs / limit))
    while max_abs / 10.0**sf > limit:
        sf += 1
    return sf


class SunSpecDevice:
    """Common part of the SunSpec devices: image, server, lock-step contract.

    Args:
        models: model ids after the common model 1.
        unit: Modbus device id.
        scale_factors: static SFs.
        values: initial engineering values.
        limits: ranges for client writes (engineering units).
        writable: the RW points implemented.
        name: model 1 ``Md``; ``serial`` model 1 ``SN``.
    """

    def __init__(
        self,
        models: Iterable[int],
        *,
        unit: int,
        scale_factors: Mapping[str, int],
        values: Mapping[str, Value],
        limits: Mapping[str, tuple[float, float]],
        writable: Iterable[str],
        name: str,
        serial: str,
    ) -> None:
        common: dict[str, Value] = {
            "1.Mn": "MiGrid",
            "1.Md": name,
            "1.SN": serial,
            "1.Vr": "0.1.0",
            "1.DA": unit,
        }
        self.image = SunSpecImage(
            [1, *models], scale_factors=scale_factors, values={**common, **values}
        )
        self.server = SunSpecServer(
            self.image, unit=unit, on_write=self._on_write, limits=limits, writable=writable
        )
        self.unit = unit
        self.now: datetime | None = None
        #: fault injection: while True the physics goes on but the registers keep their
        #: last values (a frozen meter or a hung inverter firmware)
        self.frozen = False

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0: a free port); returns the port."""
        return await self.server.start(host, port)

    async def close(self) -> None:
        """Stop serving."""
        await self.server.close()

    @property
    def busy(self) -> bool:
        """True while the endpoint handles an update or a request."""
        return self.server.busy

    async def drain(self) -> None:
        """Return when nothing of this device is in flight."""
        await self.server.drain()

    async def advance(self, now: datetime) -> None:
        """Physics over ``[last, now]``, then the registers (not while ``frozen``)."""
        if now.tzinfo is None:
            raise ValueError("now must be tz-aware")
        self.now = now
        self._physics(now)
        if not self.frozen:
            await self.server.update(self.telemetry())

    def _physics(self, now: datetime) -> None:
        raise NotImplementedError

    def telemetry(self) -> dict[str, Value]:
        """The engineering values the registers show after the last advance."""
        raise NotImplementedError

    def _on_write(self, values: dict[str, Value]) -> None:
        """Apply an accepted client write (the image is already updated)."""


def _meter_values(r: MeterReading, sign: float = 1.0) -> dict[str, Value]:
    p = [sign * x for x in r.power_w]
    return {
        "203.A": sum(r.current_a),
        "203.AphA": r.current_a[0],
        "203.AphB": r.current_a[1],
        "203.AphC": r.current_a[2],
        "203.PhV": sum(r.voltage_v) / 3,
        "203.PhVphA": r.voltage_v[0],
        "203.PhVphB": r.voltage_v[1],
        "203.PhVphC": r.voltage_v[2],
        "203.Hz": r.frequency_hz,
        "203.W": sum(p),
        "203.WphA": p[0],
        "203.WphB": p[1],
        "203.WphC": p[2],
        "203.TotWhImp": int(r.import_wh) % _ACC32,
        "203.TotWhExp": int(r.export_wh) % _ACC32,
        "203.Evt": 0,
    }


def _meter_sfs(max_power_w: float, voltage_v: float) -> dict[str, int]:
    return {
        "203.W_SF": sf_for(max_power_w),
        "203.A_SF": sf_for(max_power_w / voltage_v),
        "203.V_SF": sf_for(voltage_v * 1.5),
        "203.Hz_SF": -2,
        "203.TotWh_SF": 0,
    }


class SiteMeterDevice(SunSpecDevice):
    """The grid-connection meter: models 1 + 203.

    The runtime sets the measured power per phase each step with :meth:`set_power_w`
    (positive importing); ``advance`` integrates the energy registers.

    Args:
        start: time of the initial state (tz-aware UTC).
        unit: Modbus device id.
        config: ``max_power_w`` (sizes W_SF, default 1 MW), ``voltage_v`` (230),
            ``frequency_hz`` (50), ``serial``.
    """

    def __init__(self, start: datetime, *, unit: int = 1, config: Mapping[str, Any] | None = None):
        cfg = dict(config or {})
        v = float(cfg.get("voltage_v", 230.0))
        self.meter = SiteMeter(start, voltage_v=v, frequency_hz=float(cfg.get("frequency_hz", 50)))
        super().__init__(
            [203],
            unit=unit,
            scale_factors=_meter_sfs(float(cfg.get("max_power_w", 1e6)), v),
            values=_meter_values(self.meter.reading()),
            limits={},
            writable=(),
            name="SiteMeter",
            serial=str(cfg.get("serial", "SM-0001")),
        )

    def set_power_w(self, l1: float, l2: float, l3: float) -> None:
        """The measured power per phase from now on (positive importing)."""
        self.meter.set_power_w(l1, l2, l3)

    def _physics(self, now: datetime) -> None:
        self.meter.advance(now)

    def telemetry(self) -> dict[str, Value]:
        """See :class:`SunSpecDevice`."""
        return _meter_values(self.meter.reading())


class BuildingLoadDevice(SunSpecDevice):
    """A building sub-meter (models 1 + 203) following a BDEW profile (balanced 3-phase).

    Args:
        start: time of the initial state (tz-aware UTC).
        unit: Modbus device id.
        config: ``annual_kwh`` (250,000), ``profile`` (``G25``), ``utc_offset_h`` (1),
            ``voltage_v`` (230), ``max_power_w`` (sizes W_SF; default 3x the mean power
            x 4), ``serial``.
    """

    def __init__(self, start: datetime, *, unit: int = 1, config: Mapping[str, Any] | None = None):
        cfg = dict(config or {})
        spec = BuildingSpec(
            annual_kwh=float(cfg.get("annual_kwh", 250_000.0)),
            profile=str(cfg.get("profile", "G25")),
            utc_offset_h=float(cfg.get("utc_offset_h", 1.0)),
        )
        self.load = BuildingLoad(spec, start)
        v = float(cfg.get("voltage_v", 230.0))
        self.meter = SiteMeter(start, voltage_v=v)
        self._set_meter_power()
        max_w = float(cfg.get("max_power_w", spec.annual_kwh / 8760 * 1000 * 12))
        super().__init__(
            [203],
            unit=unit,
            scale_factors=_meter_sfs(max_w, v),
            values=_meter_values(self.meter.reading()),
            limits={},
            writable=(),
            name="BuildingLoad",
            serial=str(cfg.get("serial", "BL-0001")),
        )

    def _set_meter_power(self) -> None:
        w = self.load.power_kw * 1000 / 3
        self.meter.set_power_w(w, w, w)

    def _physics(self, now: datetime) -> None:
        self.load.advance(now)  # mean power over the interval
        self._set_meter_power()
        self.meter.advance(now)

    def telemetry(self) -> dict[str, Value]:
        """See :class:`SunSpecDevice`."""
        return _meter_values(self.meter.reading())


def _inverter_values(w: float, rated_w: float, v: float, hz: float) -> dict[str, Value]:
    per = w / 3
    a = abs(per) / v
    return {
        "701.ACType": "THREE_PHASE",
        "701.St": "ON",
        "701.ConnSt": "CONNECTED",
        "701.W": w,
        "701.VA": abs(w),
        "701.PF": 1.0,
        "701.A": 3 * a,
        "701.LNV": v,
        "701.LLV": v * math.sqrt(3),
        "701.Hz": hz,
        "701.WL1": per,
        "701.WL2": per,
        "701.WL3": per,
        "701.AL1": a,
        "701.AL2": a,
        "701.AL3": a,
        "701.VL1": v,
        "701.VL2": v,
        "701.VL3": v,
        "701.Alrm": 0,
    }


def _inverter_sfs(rated_w: float, v: float) -> dict[str, int]:
    return {
        "701.W_SF": sf_for(rated_w),
        "701.VA_SF": sf_for(rated_w),
        "701.A_SF": sf_for(rated_w / v),
        "701.V_SF": sf_for(v * 2, 65535),
        "701.Hz_SF": -3,
        "701.PF_SF": -3,
        "701.TotWh_SF": 0,
        "702.W_SF": sf_for(rated_w, 65535),
        "702.VA_SF": sf_for(rated_w, 65535),
        "702.V_SF": sf_for(v * 2, 65535),
        "702.A_SF": sf_for(rated_w / v, 65535),
        "704.WMaxLimPct_SF": -1,
        "704.WSet_SF": 0,
    }


class PvInverterDevice(SunSpecDevice):
    """A PV inverter: models 1 + 701 + 702 + 704, curtailable through ``WMaxLimPct``.

    Args:
        start: time of the initial state (tz-aware UTC).
        unit: Modbus device id.
        config: ``rated_kw`` (100), ``dc_ac_ratio``, ``tilt_deg``, ``azimuth_deg``,
            ``utc_offset_h`` (see :class:`devices.site.pv.PvSpec`), ``voltage_v``,
            ``serial``.
    """

    def __init__(self, start: datetime, *, unit: int = 1, config: Mapping[str, Any] | None = None):
        cfg = dict(config or {})
        keys = ("rated_kw", "dc_ac_ratio", "tilt_deg", "azimuth_deg", "gamma_pdc", "utc_offset_h")
        spec = PvSpec(**{k: cfg[k] for k in keys if k in cfg})
        self.pv = PvPlant(spec, start)
        self.voltage_v = float(cfg.get("voltage_v", 230.0))
        rated_w = spec.rated_kw * 1000
        self.rated_w = rated_w
        values: dict[str, Value] = {
            **_inverter_values(self.pv.power_kw * 1000, rated_w, self.voltage_v, 50.0),
            "701.TotWhInj": 0,
            "702.WMaxRtg": rated_w,
            "702.VAMaxRtg": rated_w,
            "702.VNomRtg": self.voltage_v,
            "702.WMax": rated_w,
            "702.VAMax": rated_w,
            "704.WMaxLimPctEna": "ENABLED",
            "704.WMaxLimPct": 100.0,
        }
        super().__init__(
            [701, 702, 704],
            unit=unit,
            scale_factors=_inverter_sfs(rated_w, self.voltage_v),
            values=values,
            limits={"704.WMaxLimPct": (0.0, 100.0)},
            writable=("704.WMaxLimPct", "704.WMaxLimPctEna"),
            name="PvInverter",
            serial=str(cfg.get("serial", "PV-0001")),
        )

    def _on_write(self, values: dict[str, Value]) -> None:
        ena = self.image.get("704.WMaxLimPctEna") == 1
        pct = self.image.get("704.WMaxLimPct")
        self.pv.limit_pct = float(pct) if ena and isinstance(pct, int | float) else 100.0

    def _physics(self, now: datetime) -> None:
        self.pv.advance(now)

    def telemetry(self) -> dict[str, Value]:
        """See :class:`SunSpecDevice`."""
        w = self.pv.power_kw * 1000
        throttled = self.pv.limit_pct < 100 and self.pv.available_kw(self.pv.last) > self.pv.cap_kw
        return {
            **_inverter_values(w, self.rated_w, self.voltage_v, 50.0),
            "701.InvSt": "THROTTLED" if throttled else ("RUNNING" if w > 0 else "SLEEPING"),
            "701.TotWhInj": int(self.pv.energy_kwh * 1000),
        }


class BessDevice(SunSpecDevice):
    """A BESS: models 1 + 701 + 702 + 704 + 713 + 802 (sign conventions: module doc).

    Args:
        start: time of the initial state (tz-aware UTC).
        unit: Modbus device id.
        config: :class:`devices.site.bess.BessSpec` fields, ``soc`` (initial, 0.5),
            ``voltage_v`` (AC, 230), ``dc_voltage_v`` (800), ``serial``.
    """

    def __init__(self, start: datetime, *, unit: int = 1, config: Mapping[str, Any] | None = None):
        cfg = dict(config or {})
        fields = BessSpec.__dataclass_fields__
        spec = BessSpec(**{k: float(v) for k, v in cfg.items() if k in fields})
        self.bess = Battery(spec, float(cfg.get("soc", 0.5)), start)
        self.voltage_v = float(cfg.get("voltage_v", 230.0))
        self.dc_voltage_v = float(cfg.get("dc_voltage_v", 800.0))
        self.rated_w = max(spec.max_charge_kw, spec.max_discharge_kw) * 1000
        cap_wh = spec.capacity_kwh * 1000
        sfs = {
            **_inverter_sfs(self.rated_w, self.voltage_v),
            "713.WH_SF": sf_for(cap_wh, 65535),
            "713.Pct_SF": -1,
            "802.AHRtg_SF": sf_for(cap_wh / self.dc_voltage_v, 65535),
            "802.WHRtg_SF": sf_for(cap_wh, 65535),
            "802.WChaDisChaMax_SF": sf_for(self.rated_w, 65535),
            "802.SoC_SF": -1,
            "802.SoH_SF": -1,
            "802.V_SF": sf_for(self.dc_voltage_v * 1.5, 65535),
            "802.CellV_SF": -3,
            "802.A_SF": sf_for(self.rated_w / self.dc_voltage_v),
            "802.AMax_SF": sf_for(self.rated_w / self.dc_voltage_v, 65535),
            "802.W_SF": sf_for(self.rated_w),
        }
        values: dict[str, Value] = {
            "701.TotWhInj": 0,
            "701.TotWhAbs": 0,
            "702.WMaxRtg": spec.max_discharge_kw * 1000,
            "702.WChaRteMaxRtg": spec.max_charge_kw * 1000,
            "702.WDisChaRteMaxRtg": spec.max_discharge_kw * 1000,
            "702.VNomRtg": self.voltage_v,
            "702.WMax": spec.max_discharge_kw * 1000,
            "702.WChaRteMax": spec.max_charge_kw * 1000,
            "702.WDisChaRteMax": spec.max_discharge_kw * 1000,
            "704.WMaxLimPctEna": "DISABLED",
            "704.WMaxLimPct": 100.0,
            "704.WSetEna": "DISABLED",
            "704.WSetMod": "WATTS",
            "704.WSet": 0,
            "713.WHRtg": cap_wh,
            "713.SoH": 100.0,
            "713.Sta": "OK",
            "802.AHRtg": cap_wh / self.dc_voltage_v,
            "802.WHRtg": cap_wh,
            "802.WChaRteMax": spec.max_charge_kw * 1000,
            "802.WDisChaRteMax": spec.max_discharge_kw * 1000,
            "802.SoCMax": spec.soc_max * 100,
            "802.SoCMin": spec.soc_min * 100,
            "802.SoH": 100.0,
            "802.LocRemCtl": "REMOTE",
            "802.Typ": "LITHIUM_ION",
            "802.State": "CONNECTED",
            "802.Evt1": 0,
            "802.Evt2": 0,
            "802.EvtVnd1": 0,
            "802.EvtVnd2": 0,
            "802.SetOp": "CONNECT",
            "802.SetInvState": "INVERTER_STARTED",
            "802.AlmRst": 0,
            **self.telemetry(),
        }
        super().__init__(
            [701, 702, 704, 713, 802],
            unit=unit,
            scale_factors=sfs,
            values=values,
            limits={
                "704.WMaxLimPct": (0.0, 100.0),
                "704.WSet": (-spec.max_charge_kw * 1000, spec.max_discharge_kw * 1000),
            },
            writable=("704.WMaxLimPct", "704.WMaxLimPctEna", "704.WSetEna", "704.WSet"),
            name="Bess",
            serial=str(cfg.get("serial", "BESS-0001")),
        )

    def _on_write(self, values: dict[str, Value]) -> None:
        img = self.image
        w = img.get("704.WSet") if img.get("704.WSetEna") == 1 else 0
        kw = float(w) / 1000 if isinstance(w, int | float) else 0.0
        if img.get("704.WMaxLimPctEna") == 1:
            pct = img.get("704.WMaxLimPct")
            if isinstance(pct, int | float):
                cap = self.rated_w * pct / 100 / 1000
                kw = min(max(kw, -cap), cap)
        self.bess.set_power_kw(kw)

    def _physics(self, now: datetime) -> None:
        self.bess.advance(now)

    def telemetry(self) -> dict[str, Value]:
        """See :class:`SunSpecDevice`."""
        b = self.bess
        s = b.spec
        w = b.power_kw * 1000
        soc_pct = b.soc * 100
        if w > 0:
            cha_st = "DISCHARGING"
        elif w < 0:
            cha_st = "CHARGING"
        elif b.soc >= s.soc_max - 1e-9:
            cha_st = "FULL"
        elif b.soc <= s.soc_min + 1e-9:
            cha_st = "EMPTY"
        else:
            cha_st = "HOLDING"
        wh_avail = max(0.0, (b.soc - s.soc_min) * s.capacity_kwh * 1000 * s.eta_discharge)
        return {
            **_inverter_values(w, self.rated_w, self.voltage_v, 50.0),
            "701.InvSt": "RUNNING" if w else "STANDBY",
            "701.TotWhInj": int(b.discharged_ac_kwh * 1000),
            "701.TotWhAbs": int(b.charged_ac_kwh * 1000),
            "713.WHAvail": wh_avail,
            "713.SoC": soc_pct,
            "802.SoC": soc_pct,
            "802.ChaSt": cha_st,
            "802.V": self.dc_voltage_v,
            "802.A": w / self.dc_voltage_v,
            "802.W": w,
        }
