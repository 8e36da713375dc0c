"""The transformer emulator: the IEC 60076-7 thermal model behind an OPC UA server (asyncua).

Information model (no released OPC UA companion specification covers a distribution
transformer): IEC 61850-7-4 logical-node names in our own namespace
``urn:migrid:transformer``, string node ids (:data:`NODE_IDS`), browse path
``Objects/Transformer/...``:

- ``Transformer`` (Object): ``Transformer.SiteImportLimit`` SiteImportLimit_kW (Double,
  writable, finite and >= 0), ``Transformer.AmbientTemp`` AmbientTemp_C (Double).
- ``YPTR1`` (power transformer): ``YPTR1.Loading`` Loading_pct (highest phase current over
  rated current, %), ``YPTR1.TopOilTemp`` TopOilTemp_C, ``YPTR1.HotSpotTemp``
  HotSpotTemp_C, ``YPTR1.AgeingRate`` AgeingRate (relative V), ``YPTR1.LossOfLife``
  LossOfLife_h (integral of V dt), all Double.
- ``MMXU1`` (LV measurement): ``MMXU1.A.phsA|phsB|phsC`` (RMS current, A),
  ``MMXU1.PhV.phsA|phsB|phsC`` (phase-to-neutral RMS voltage, V), ``MMXU1.TotW`` (W),
  all Double.
- ``ATCC1`` (tap changer control): ``ATCC1.TapPos`` TapPos (Int32; writable only with
  ``TransformerSpec.tap_writable``, within ``[tap_min, tap_max]``).

Our namespace is the first one registered after the server's own, so its index is 2
(``ns=2;s=YPTR1.HotSpotTemp``); a client should still resolve the index from the URI.

A write of a bad value (negative, NaN or infinite limit; tap out of range) gets the
operation result ``BadOutOfRange`` and leaves the value as it was; a value of the wrong
type gets ``BadTypeMismatch`` (asyncua's check). The server keeps serving either way.

Time is injected: ``advance(now, ...)`` integrates the thermal model over ``[last, now]``
with the phase currents given, taken as the mean currents of that interval, then writes
every value with ``server.write_attribute_value`` (no network hop), source and server
timestamps ``now``. Nothing here reads the wall clock or sleeps; asyncua's once-a-second
CurrentTime writer is disabled. ``busy`` is true while ``advance`` is updating the address
space and ``drain()`` waits for that; requests from clients are in flight on the clients'
side (each client awaits its reply) and are drained there.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncua import ua as _ua
from asyncua.common.node import Node
from asyncua.server.server import Server

from devices.transformer.thermal import (
    ThermalParams,
    ThermalState,
    ageing_rate,
    initial_state,
    load_factor,
    step,
)

# asyncua annotates with NewTypes (ua.Int32, ua.String, ua.DateTime ...) that plain Python
# values do not satisfy under mypy, and does not re-export its names; use the module untyped.
ua: Any = _ua

__all__ = ["NAMESPACE_URI", "NODE_IDS", "TransformerServer", "TransformerSpec", "free_port"]

NAMESPACE_URI = "urn:migrid:transformer"

NODE_IDS: dict[str, str] = {
    "site_import_limit_kw": "Transformer.SiteImportLimit",
    "ambient_c": "Transformer.AmbientTemp",
    "loading_pct": "YPTR1.Loading",
    "top_oil_c": "YPTR1.TopOilTemp",
    "hot_spot_c": "YPTR1.HotSpotTemp",
    "ageing_rate": "YPTR1.AgeingRate",
    "loss_of_life_h": "YPTR1.LossOfLife",
    "current_a_phsA": "MMXU1.A.phsA",
    "current_a_phsB": "MMXU1.A.phsB",
    "current_a_phsC": "MMXU1.A.phsC",
    "voltage_v_phsA": "MMXU1.PhV.phsA",
    "voltage_v_phsB": "MMXU1.PhV.phsB",
    "voltage_v_phsC": "MMXU1.PhV.phsC",
    "power_w": "MMXU1.TotW",
    "tap_position": "ATCC1.TapPos",
}
"""Quantity -> string node id (identifier part) in namespace :data:`NAMESPACE_URI`."""

_PHASES = ("phsA", "phsB", "phsC")


@dataclass(frozen=True, slots=True)
class TransformerSpec:
    """Rating and behaviour of the emulated transformer.

    Attributes:
        name: display name of the ``Transformer`` object.
        rated_power_kva: rated apparent power.
        rated_voltage_v: rated line-to-line voltage of the LV side (the metered side).
        site_import_limit_kw: initial value of the writable site import limit.
        power_factor: displacement power factor used for TotW from V and I.
        tap_position: initial tap position (0 = principal tap).
        tap_min: lowest tap position.
        tap_max: highest tap position.
        tap_step_pct: voltage change per tap step, per cent of rated voltage.
        tap_writable: whether clients may write ``ATCC1.TapPos``.
        thermal: thermal characteristics (IEC 60076-7 ONAN distribution defaults).
        thermally_upgraded_paper: selects the ageing-rate equation.

    """

    name: str = "TR1"
    rated_power_kva: float = 630.0
    rated_voltage_v: float = 400.0
    site_import_limit_kw: float = 500.0
    power_factor: float = 1.0
    tap_position: int = 0
    tap_min: int = -2
    tap_max: int = 2
    tap_step_pct: float = 2.5
    tap_writable: bool = False
    thermal: ThermalParams = field(default_factory=ThermalParams)
    thermally_upgraded_paper: bool = False

    @property
    def rated_current_a(self) -> float:
        """Rated LV line current, A: S / (sqrt(3) U)."""
        return self.rated_power_kva * 1000.0 / (math.sqrt(3.0) * self.rated_voltage_v)

    def phase_voltage_v(self, tap_position: int) -> float:
        """No-load LV phase-to-neutral voltage at a tap position, V."""
        return (
            self.rated_voltage_v / math.sqrt(3.0) * (1.0 + self.tap_step_pct / 100.0 * tap_position)
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _RejectedError(Exception):
    pass


class TransformerServer:
    """One emulated transformer as an OPC UA server.

    Args:
        spec: rating and behaviour.
        host: address to listen on.
        port: TCP port; 0 picks a free one.
        ambient_c: initial ambient temperature (the oil starts at ambient, no load).
        on_event: optional sink ``(time, source, kind, payload)`` for accepted and rejected
            client writes; ``time`` is the latest ``now`` given to :meth:`advance`.

    """

    def __init__(
        self,
        spec: TransformerSpec | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ambient_c: float = 20.0,
        on_event: Callable[[datetime | None, str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.spec = spec or TransformerSpec()
        self.host = host
        self.port = port
        self.on_event = on_event
        self.state: ThermalState = initial_state(ambient_c)
        self.ambient_c = float(ambient_c)
        self.phase_currents_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.loss_of_life_h = 0.0
        self._voltages: tuple[float, float, float] | None = None
        self._now: datetime | None = None
        self._server: Server | None = None
        self._ns = 0
        self._nodes: dict[str, Node] = {}
        self._limit_kw = float(self.spec.site_import_limit_kw)
        self._tap = int(self.spec.tap_position)
        self._advancing = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ----------------------------------------------------------------- lifecycle
    @property
    def namespace_index(self) -> int:
        """Index of :data:`NAMESPACE_URI` in the server's namespace array."""
        return self._ns

    @property
    def endpoint(self) -> str:
        """The ``opc.tcp://`` endpoint URL (valid after :meth:`start`)."""
        return f"opc.tcp://{self.host}:{self.port}/migrid/transformer/"

    def node_id(self, quantity: str) -> ua.NodeId:
        """The NodeId of a quantity of :data:`NODE_IDS`."""
        return ua.NodeId(NODE_IDS[quantity], self._ns)

    async def start(self) -> str:
        """Build the address space, listen, and return the endpoint URL."""
        if self.spec.tap_min > self._tap or self._tap > self.spec.tap_max:
            raise ValueError(f"tap_position {self._tap} outside [tap_min, tap_max]")
        _check_limit(self._limit_kw)
        attempts = 5 if self.port == 0 else 1
        for attempt in range(attempts):
            port = self.port or free_port(self.host)
            server = Server()
            await server.init()
            server.disable_clock(True)
            server.set_server_name(f"MiGrid transformer {self.spec.name}")
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            server.set_endpoint(f"opc.tcp://{self.host}:{port}/migrid/transformer/")
            self._ns = await server.register_namespace(NAMESPACE_URI)
            await self._build(server)
            try:
                await server.start()
            except OSError:
                if attempt + 1 == attempts:
                    raise
                continue
            self._server = server
            self.port = port
            break
        self._install_write_guard()
        await self._publish()
        return self.endpoint

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        await self.drain()
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    @property
    def busy(self) -> bool:
        """True while :meth:`advance` is writing values into the address space."""
        return self._advancing > 0

    async def drain(self) -> None:
        """Return when :attr:`busy` is false."""
        await self._idle.wait()

    # ------------------------------------------------------------------- physics
    async def advance(
        self,
        now: datetime,
        phase_currents_a: Sequence[float],
        ambient_c: float,
        *,
        phase_voltages_v: Sequence[float] | None = None,
    ) -> None:
        """Integrate over ``[last now, now]`` and publish the values at ``now``.

        Args:
            now: tz-aware UTC time; the first call only sets the clock.
            phase_currents_a: mean LV RMS currents of phases A, B, C over the interval, A.
            ambient_c: ambient temperature over the interval, degC.
            phase_voltages_v: measured phase voltages, V; the no-load voltage of the
                tap position if omitted.

        Raises:
            ValueError: if ``now`` is naive or earlier than the last ``now``, or the
                inputs are not three finite currents and a finite ambient.

        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        currents = _three(phase_currents_a, "phase currents")
        if not math.isfinite(ambient_c):
            raise ValueError(f"ambient_c must be finite, got {ambient_c!r}")
        voltages = None if phase_voltages_v is None else _three(phase_voltages_v, "voltages")
        if self._now is not None:
            dt_s = (now - self._now).total_seconds()
            if dt_s < 0:
                raise ValueError(f"now {now} is before the last now {self._now}")
            k = load_factor(currents, self.spec.rated_current_a)
            v_start = self._ageing()
            self.state = step(self.state, k, ambient_c, dt_s, self.spec.thermal)
            # trapezoid over the interval; V is convex, the error is small for dt << tau_o
            self.loss_of_life_h += 0.5 * (v_start + self._ageing_at(self.state)) * dt_s / 3600
        else:
            self.state = initial_state(ambient_c)
        self._now = now
        self.ambient_c = float(ambient_c)
        self.phase_currents_a = currents
        self._voltages = voltages
        self._advancing += 1
        self._idle.clear()
        try:
            await self._publish()
        finally:
            self._advancing -= 1
            if self._advancing == 0:
                self._idle.set()

    # -------------------------------------------------------------- read access
    @property
    def site_import_limit_kw(self) -> float:
        """The site import limit in force (the last accepted write), kW."""
        return self._limit_kw

    @property
    def tap_position(self) -> int:
        """The tap position in force."""
        return self._tap

    @property
    def loading_pct(self) -> float:
        """Highest phase current over rated current, per cent."""
        return 100.0 * load_factor(self.phase_currents_a, self.spec.rated_current_a)

    def phase_voltages_v(self) -> tuple[float, float, float]:
        """Phase voltages published: measured if given to ``advance``, else no-load."""
        if self._voltages is not None:
            return self._voltages
        v = self.spec.phase_voltage_v(self._tap)
        return (v, v, v)

    def values(self) -> dict[str, float]:
        """Every published quantity by its :data:`NODE_IDS` key."""
        out: dict[str, float] = {
            "site_import_limit_kw": self._limit_kw,
            "ambient_c": self.ambient_c,
            "loading_pct": self.loading_pct,
            "top_oil_c": self.state.top_oil_c,
            "hot_spot_c": self.state.hot_spot_c,
            "ageing_rate": self._ageing(),
            "loss_of_life_h": self.loss_of_life_h,
            "tap_position": float(self._tap),
        }
        volts = self.phase_voltages_v()
        for ph, i, v in zip(_PHASES, self.phase_currents_a, volts, strict=True):
            out[f"current_a_{ph}"] = i
            out[f"voltage_v_{ph}"] = v
        out["power_w"] = self.spec.power_factor * sum(
            i * v for i, v in zip(self.phase_currents_a, volts, strict=True)
        )
        return out

    # ----------------------------------------------------------------- internals
    def _ageing(self) -> float:
        return self._ageing_at(self.state)

    def _ageing_at(self, state: ThermalState) -> float:
        return ageing_rate(
            min(state.hot_spot_c, 250.0), thermally_upgraded=self.spec.thermally_upgraded_paper
        )

    async def _build(self, server: Server) -> None:
        ns = self._ns
        objects = server.nodes.objects
        tr = await objects.add_object(
            ua.NodeId("Transformer", ns), ua.QualifiedName("Transformer", ns)
        )
        await tr.write_attribute(
            ua.AttributeIds.DisplayName,
            ua.DataValue(ua.Variant(ua.LocalizedText(f"Transformer {self.spec.name}"))),
        )
        ln = {
            name: await tr.add_object(ua.NodeId(name, ns), ua.QualifiedName(name, ns))
            for name in ("YPTR1", "MMXU1", "ATCC1")
        }
        mmxu_a = await ln["MMXU1"].add_object(ua.NodeId("MMXU1.A", ns), ua.QualifiedName("A", ns))
        mmxu_v = await ln["MMXU1"].add_object(
            ua.NodeId("MMXU1.PhV", ns), ua.QualifiedName("PhV", ns)
        )
        double = ua.VariantType.Double
        layout: list[tuple[str, Node, str, ua.VariantType]] = [
            ("site_import_limit_kw", tr, "SiteImportLimit_kW", double),
            ("ambient_c", tr, "AmbientTemp_C", double),
            ("loading_pct", ln["YPTR1"], "Loading_pct", double),
            ("top_oil_c", ln["YPTR1"], "TopOilTemp_C", double),
            ("hot_spot_c", ln["YPTR1"], "HotSpotTemp_C", double),
            ("ageing_rate", ln["YPTR1"], "AgeingRate", double),
            ("loss_of_life_h", ln["YPTR1"], "LossOfLife_h", double),
            ("power_w", ln["MMXU1"], "TotW", double),
            ("tap_position", ln["ATCC1"], "TapPos", ua.VariantType.Int32),
        ]
        for ph in _PHASES:
            layout.append((f"current_a_{ph}", mmxu_a, ph, double))
            layout.append((f"voltage_v_{ph}", mmxu_v, ph, double))
        for key, parent, browse, vtype in layout:
            initial: float | int = 0 if vtype == ua.VariantType.Int32 else 0.0
            node = await parent.add_variable(
                ua.NodeId(NODE_IDS[key], ns),
                ua.QualifiedName(browse, ns),
                ua.Variant(initial, vtype),
                varianttype=vtype,
            )
            self._nodes[key] = node
        await self._nodes["site_import_limit_kw"].set_writable(True)
        if self.spec.tap_writable:
            await self._nodes["tap_position"].set_writable(True)

    def _install_write_guard(self) -> None:
        """Validate client writes per item: a bad item gets BadOutOfRange, others proceed.

        asyncua has no per-item validation hook (a value setter can only raise, which fails
        the whole Write request with a ServiceFault), so the session's attribute service is
        wrapped: items on our writable nodes are checked first, the rest are passed on.
        """
        assert self._server is not None
        service = self._server.iserver.attribute_service
        original = service.write
        limit_id = self.node_id("site_import_limit_kw")
        tap_id = self.node_id("tap_position")

        async def guarded_write(params: ua.WriteParameters, **kw: Any) -> list[ua.StatusCode]:
            results: list[ua.StatusCode | None] = []
            passed: list[ua.WriteValue] = []
            for wv in params.NodesToWrite:
                status = None
                if wv.AttributeId == ua.AttributeIds.Value and wv.NodeId in (limit_id, tap_id):
                    status = self._check_write(wv)
                results.append(status)
                if status is None:
                    passed.append(wv)
            done = iter(
                await original(ua.WriteParameters(NodesToWrite=passed), **kw) if passed else []
            )
            out = [r if r is not None else next(done) for r in results]
            for wv, st in zip(params.NodesToWrite, out, strict=True):
                if st.is_good() and wv.AttributeId == ua.AttributeIds.Value:
                    self._accepted(wv)
            return out

        setattr(service, "write", guarded_write)  # noqa: B010 (shadow the bound method)

    def _check_write(self, wv: ua.WriteValue) -> ua.StatusCode | None:
        variant = wv.Value.Value if wv.Value is not None else None
        value = variant.Value if variant is not None else None
        key = "site_import_limit_kw" if wv.NodeId == self.node_id("site_import_limit_kw") else "tap"
        try:
            if key == "tap":
                if not self.spec.tap_writable:
                    return None  # asyncua answers BadNotWritable / BadUserAccessDenied
                if not isinstance(value, int) or not (
                    self.spec.tap_min <= value <= self.spec.tap_max
                ):
                    raise _RejectedError(f"tap position {value!r} outside the range")
            elif isinstance(value, float | int) and not isinstance(value, bool):
                _check_limit(float(value))
            else:
                return None  # wrong type: asyncua answers BadTypeMismatch
        except (_RejectedError, ValueError) as exc:
            self._emit("opcua.write_rejected", {"node": wv.NodeId.to_string(), "reason": str(exc)})
            return ua.StatusCode(ua.StatusCodes.BadOutOfRange)
        return None

    def _accepted(self, wv: ua.WriteValue) -> None:
        if wv.Value is None or wv.Value.Value is None:
            return
        value = wv.Value.Value.Value
        if wv.NodeId == self.node_id("site_import_limit_kw"):
            self._limit_kw = float(value)
            self._emit("opcua.limit_written", {"site_import_limit_kw": self._limit_kw})
        elif wv.NodeId == self.node_id("tap_position"):
            self._tap = int(value)
            self._emit("opcua.tap_written", {"tap_position": self._tap})

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(self._now, self.spec.name, kind, payload)

    async def _publish(self) -> None:
        assert self._server is not None
        server = self._server
        values = self.values()
        for key, node in self._nodes.items():
            if key == "site_import_limit_kw":
                continue  # owned by clients once started; written at build time below
            if key == "tap_position":
                variant = ua.Variant(self._tap, ua.VariantType.Int32)
            else:
                variant = ua.Variant(values[key], ua.VariantType.Double)
            await server.write_attribute_value(node.nodeid, self._datavalue(variant))
        if self._now is None:  # first publish: the initial limit
            await server.write_attribute_value(
                self._nodes["site_import_limit_kw"].nodeid,
                self._datavalue(ua.Variant(self._limit_kw, ua.VariantType.Double)),
            )

    def _datavalue(self, variant: ua.Variant) -> ua.DataValue:
        return ua.DataValue(
            variant,
            StatusCode=ua.StatusCode(ua.StatusCodes.Good),
            SourceTimestamp=self._now,
            ServerTimestamp=self._now,
        )


def _three(values: Sequence[float], what: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"need three finite {what}, got {values!r}")
    return (out[0], out[1], out[2])


def _check_limit(limit_kw: float) -> None:
    if not math.isfinite(limit_kw) or limit_kw < 0:
        raise ValueError(f"site import limit must be finite and >= 0 kW, got {limit_kw!r}")
