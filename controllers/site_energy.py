"""The site energy controller: reads the site's devices over the wire, decides, writes back.

One :meth:`SiteEnergyController.step` per control step (DESIGN.md, "Data flow of one
control step"):

1. reads over Modbus TCP: the site meter (SunSpec model 203 ``W``), the PV inverter (701
   ``W``) and the BESS (802 ``SoC``, 701 ``W``); over OPC UA: the transformer's site
   import limit, loading and hot-spot temperature (a Read per step, or the cache of a
   subscription on the wall clock);
2. :func:`controllers.site_control.decide` on those measurements and the EV sum the CSMS
   measured (its stations' meter values);
3. writes: the BESS set-point (704 ``WSet``, only when it moved by more than the dead
   band, and 0 at once in fail safe) and the PV curtailment (704 ``WMaxLimPct``, only when
   it changed by more than a percentage point);
4. hands the CSMS the non-EV load (``None`` when the meter is lost: the DLM's worst case
   and minimum-only rule) and the import limit for the EVs.

A read that fails keeps the last good value, which ages: beyond the control's
``measurement_timeout_s`` it counts as lost (never as zero). A meter that answers but
whose energy registers stopped counting while it shows power is frozen and treated the
same way. Every device is optional but
the meter. The controller cannot tell emulated devices from physical ones: it is given
endpoints only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from controllers.grid_signal import GridSignal
from controllers.site_control import Measured, SiteControlConfig, SiteDecision, SiteInputs, decide
from controllers.site_io import OpcUaClient, Reading, SiteIoError, SunSpecClient

LOGGER = logging.getLogger("controllers.site_energy")

EventSink = Callable[[str, str, dict[str, Any]], None]

#: power [W] above which a meter's energy registers must count (1 Wh resolution: 500 W
#: moves them by 8 Wh a minute)
FROZEN_MIN_POWER_W = 500.0


class EvLoadManager(Protocol):
    """What the site controller needs of the CSMS (:class:`controllers.csms.Csms`)."""

    def ev_power_kw(self) -> float: ...  # noqa: D102

    def ev_minimum_kw(self) -> float: ...  # noqa: D102

    def set_non_ev_load(self, power_kw: float | None, measured_at: datetime) -> None: ...  # noqa: D102

    def set_external_limit(  # noqa: D102
        self, power_kw: float | None, valid_until: datetime | None = None
    ) -> None: ...


@dataclass(frozen=True)
class TransformerNodes:
    """OPC UA node ids of the transformer values the controller reads (any may be None).

    ``limit_kw``: the writable site import limit [kW]; ``loading_pct``: highest phase
    current over rated [%]; ``hot_spot_c``: winding hot-spot [degC]. Strings as the
    :class:`~controllers.site_io.OpcUaClient` takes them (``ns=2;s=...`` or
    ``nsu=<uri>;s=...``).
    """

    limit_kw: str | None = None
    loading_pct: str | None = None
    hot_spot_c: str | None = None

    def all(self) -> list[str]:
        """The configured node ids, in a fixed order."""
        return [n for n in (self.limit_kw, self.loading_pct, self.hot_spot_c) if n]


@dataclass(frozen=True)
class MeterSign:
    """Sign of a meter's ``W``: +1 when it reads import positive, -1 otherwise.

    The emulated site meter reads import positive (DESIGN.md convention); a physical meter
    mounted the other way round, or one that follows the generator convention, is -1.
    """

    factor: float = 1.0


class SiteEnergyController:
    """Site energy control over the wire (module docstring).

    Args:
        config: limits and modes of :func:`~controllers.site_control.decide`.
        meter: the site meter's SunSpec client (model 203).
        pv: the PV inverter's client (701, 704), optional.
        bess: the BESS's client (701, 704, 802), optional; needs ``config.bess``.
        transformer: an OPC UA client whose node ids include ``transformer_nodes``.
        transformer_nodes: which node is which.
        pv_rated_kw: the inverter's rating (to turn a cap in kW into ``WMaxLimPct``).
        meter_sign: sign of the meter's ``W`` (:class:`MeterSign`).
        setpoint_deadband_kw: a BESS set-point change smaller than this is not written.
        poll_transformer: read the transformer every step (lock-step twin) instead of
            relying on its subscription (bench).
        on_event: ``(source, kind, payload)`` sink for decisions and I/O events.

    Raises:
        ValueError: a BESS client without ``config.bess`` limits.
    """

    def __init__(
        self,
        config: SiteControlConfig,
        *,
        meter: SunSpecClient,
        pv: SunSpecClient | None = None,
        bess: SunSpecClient | None = None,
        transformer: OpcUaClient | None = None,
        transformer_nodes: TransformerNodes | None = None,
        pv_rated_kw: float | None = None,
        meter_sign: MeterSign | None = None,
        setpoint_deadband_kw: float = 0.5,
        poll_transformer: bool = True,
        on_event: EventSink | None = None,
    ) -> None:
        if bess is not None and config.bess is None:
            raise ValueError("a BESS client needs config.bess (capacity, power limits)")
        self.config = config
        self.meter = meter
        self.pv = pv
        self.bess = bess
        self.transformer = transformer
        self.nodes = transformer_nodes or TransformerNodes()
        self.pv_rated_kw = pv_rated_kw
        self.meter_sign = meter_sign or MeterSign()
        self.deadband_kw = setpoint_deadband_kw
        self.poll_transformer = poll_transformer
        self.on_event = on_event
        self.measured: dict[str, Measured] = {}
        self.last_decision: SiteDecision | None = None
        self.bess_written_kw: float | None = None
        self.pv_written_pct: float | None = None
        self.exchanges = 0
        self._device_ok: dict[str, bool] = {}
        self._counters: tuple[float, float] | None = None
        self._counters_at: datetime | None = None
        self._meter_frozen = False

    # ------------------------------------------------------------------ state
    def _clients(self) -> list[SunSpecClient | OpcUaClient]:
        out: list[SunSpecClient | OpcUaClient] = [self.meter]
        out += [c for c in (self.pv, self.bess, self.transformer) if c is not None]
        return out

    @property
    def busy(self) -> bool:
        """Whether any request of the controller's clients is in flight."""
        return any(c.busy for c in self._clients())

    async def drain(self) -> None:
        """Return when no request of any client is in flight."""
        for client in self._clients():
            await client.drain()

    async def close(self) -> None:
        """Close every connection."""
        for client in self._clients():
            await client.close()

    # -------------------------------------------------------------------- I/O
    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event("site", kind, payload)

    def _io_result(self, device: str, ok: bool, error: str | None = None) -> None:
        """Emit a device's transition between reachable and unreachable."""
        if self._device_ok.get(device, True) != ok:
            payload: dict[str, Any] = {"device": device}
            if error:
                payload["error"] = error
            self._emit("site.device_up" if ok else "site.device_lost", payload)
        self._device_ok[device] = ok

    def _keep(self, name: str, reading: Reading | None, scale: float = 1.0) -> None:
        if reading is not None and isinstance(reading.value, int | float):
            self.measured[name] = Measured(float(reading.value) * scale, reading.measured_at)

    async def _read_sunspec(
        self, device: str, client: SunSpecClient, model_id: int, names: list[str], now: datetime
    ) -> dict[str, Reading] | None:
        try:
            self.exchanges += 1
            readings = await client.read_points(model_id, names, now)
        except SiteIoError as exc:
            self._io_result(device, False, str(exc))
            return None
        self._io_result(device, True)
        return readings

    async def _read_all(self, now: datetime) -> None:
        meter = await self._read_sunspec(
            "meter", self.meter, 203, ["W", "TotWhImp", "TotWhExp"], now
        )
        if meter is not None and not self._frozen(meter, now):
            self._keep("site_import_kw", meter["W"], self.meter_sign.factor / 1000.0)
        if self.pv is not None:
            pv = await self._read_sunspec("pv", self.pv, 701, ["W"], now)
            if pv is not None:
                self._keep("pv_power_kw", pv["W"], 1 / 1000.0)
        if self.bess is not None:
            soc = await self._read_sunspec("bess", self.bess, 802, ["SoC"], now)
            if soc is not None:
                self._keep("bess_soc", soc["SoC"], 1 / 100.0)
                power = await self._read_sunspec("bess", self.bess, 701, ["W"], now)
                if power is not None:
                    self._keep("bess_power_kw", power["W"], 1 / 1000.0)
        if self.transformer is not None:
            tr = self.transformer
            try:
                self.exchanges += 1
                if self.poll_transformer:
                    await tr.read(now)
                else:
                    await tr.step(now)
                self._io_result("transformer", tr.connected)
            except SiteIoError as exc:
                self._io_result("transformer", False, str(exc))
            for name, node in (
                ("transformer_limit_kw", self.nodes.limit_kw),
                ("transformer_loading_pct", self.nodes.loading_pct),
                ("transformer_hot_spot_c", self.nodes.hot_spot_c),
            ):
                if node is not None:
                    self._keep(name, tr.reading(node))

    async def read_import_kw(self, now: datetime) -> float | None:
        """One read of the meter's total active power only: site import [kW].

        The fast path of a wall-clock runtime watching for a load change between control
        steps (one Modbus read of model 203 ``W``); None when the meter does not answer
        (the next control step reports it lost). Does not change what :meth:`step` uses.
        """
        readings = await self._read_sunspec("meter", self.meter, 203, ["W"], now)
        if readings is None:
            return None
        value = readings["W"].value
        if not isinstance(value, int | float):
            return None
        return float(value) * self.meter_sign.factor / 1000.0

    def _frozen(self, meter: dict[str, Reading], now: datetime) -> bool:
        """Whether the meter's registers have stopped counting (a frozen meter).

        A meter that reports ``|W| >= FROZEN_MIN_POWER_W`` but whose energy registers
        (``TotWhImp``, ``TotWhExp``) have not moved for longer than the measurement
        timeout is frozen: its readings are not taken (they age into the fail safe) and
        ``site.meter_frozen`` is emitted. Any change of the registers clears it.
        """
        w, imp, exp = (meter[k].value for k in ("W", "TotWhImp", "TotWhExp"))
        # an accumulator reading 0 is "not implemented" in SunSpec (None here): a site that
        # never exported has TotWhExp None; a meter with neither cannot be checked
        if not isinstance(imp, int | float) and not isinstance(exp, int | float):
            return False
        counters = (
            float(imp) if isinstance(imp, int | float) else 0.0,
            float(exp) if isinstance(exp, int | float) else 0.0,
        )
        if counters != self._counters:
            self._counters, self._counters_at = counters, now
            if self._meter_frozen:
                self._meter_frozen = False
                self._emit("site.meter_unfrozen", {})
            return False
        moving = isinstance(w, int | float) and abs(float(w)) >= FROZEN_MIN_POWER_W
        still_s = (now - self._counters_at).total_seconds() if self._counters_at else 0.0
        if moving and still_s > self.config.measurement_timeout_s:
            last = self.measured.get("site_import_kw")
            if last is not None and self._counters_at is not None:
                # what it showed since is not a measurement: age it from the last count
                self.measured["site_import_kw"] = Measured(
                    last.value, min(last.measured_at, self._counters_at))
            if not self._meter_frozen:
                self._meter_frozen = True
                self._emit("site.meter_frozen", {
                    "power_w": w, "energy_registers_still_s": still_s,
                })
            return True
        return self._meter_frozen

    async def _write_bess(self, kw: float, now: datetime) -> None:
        assert self.bess is not None
        last = self.bess_written_kw
        if last is not None and abs(kw - last) < self.deadband_kw and not (kw == 0 and last):
            return
        try:
            self.exchanges += 1
            await self.bess.set_power_setpoint(kw * 1000.0, now)
        except SiteIoError as exc:
            self._io_result("bess", False, str(exc))
            self.bess_written_kw = None  # unknown: write again next step
            return
        self.bess_written_kw = kw
        self._emit("site.bess_setpoint", {"power_kw": round(kw, 3)})

    async def _write_pv(self, cap_kw: float | None, now: datetime) -> None:
        assert self.pv is not None
        if cap_kw is None or not self.pv_rated_kw:
            pct = 100.0
        else:
            pct = max(0.0, min(100.0, cap_kw / self.pv_rated_kw * 100.0))
        last = self.pv_written_pct
        if last is not None and abs(pct - last) < 1.0 and not (pct == 100.0 and last != 100.0):
            return
        if last is None and pct == 100.0:
            self.pv_written_pct = 100.0  # the inverter starts uncurtailed
            return
        try:
            self.exchanges += 1
            await self.pv.set_pv_curtailment(round(pct, 1), now)
        except SiteIoError as exc:
            self._io_result("pv", False, str(exc))
            self.pv_written_pct = None
            return
        self.pv_written_pct = pct
        self._emit("site.pv_curtailment", {"limit_pct": round(pct, 1)})

    # ------------------------------------------------------------------- step
    async def step(
        self, now: datetime, dt_s: float, csms: EvLoadManager, grid: GridSignal | None = None
    ) -> SiteDecision:
        """Read, decide, write and hand the CSMS its inputs; returns the decision.

        Args:
            now: control time (UTC, injected).
            dt_s: length of the coming control step [s].
            csms: the EV side (EV sum, minimum power; takes non-EV load and limit).
            grid: the grid's requests in force (OpenADR), if any.
        """
        await self._read_all(now)
        m = self.measured
        inputs = SiteInputs(
            site_import_kw=m.get("site_import_kw"),
            ev_power_kw=csms.ev_power_kw(),
            pv_power_kw=m.get("pv_power_kw"),
            bess_soc=m.get("bess_soc"),
            bess_power_kw=m.get("bess_power_kw"),
            transformer_limit_kw=m.get("transformer_limit_kw"),
            transformer_loading_pct=m.get("transformer_loading_pct"),
            transformer_hot_spot_c=m.get("transformer_hot_spot_c"),
            ev_minimum_kw=csms.ev_minimum_kw(),
            grid=grid,
        )
        decision = decide(inputs, self.config, now, dt_s)
        previous = self.last_decision
        if previous is None or previous.fail_safe != decision.fail_safe:
            if decision.fail_safe or previous is not None:
                self._emit(
                    "site.fail_safe" if decision.fail_safe else "site.fail_safe_cleared",
                    {"reasons": list(decision.reasons)},
                )
        self.last_decision = decision
        if self.bess is not None:
            await self._write_bess(decision.bess_setpoint_kw, now)
        if self.pv is not None:
            await self._write_pv(decision.pv_limit_kw, now)
        csms.set_non_ev_load(decision.non_ev_load_kw, now)
        csms.set_external_limit(decision.ev_limit_kw)
        return decision
