"""Async SunSpec client over Modbus TCP (pymodbus), on injected time.

Discovery finds the "SunS" marker at 40000 (else 0, else 50000) and walks the model chain
(ID, L) to the end marker 0xFFFF. Point maps come from the official model definitions in
pysunspec2's JSON (:mod:`controllers.site_io.sunspec_models`). Every value comes back as a
:class:`Reading` stamped with the ``now`` the caller passed in.

Connection failures close the connection and start exponential back-off on injected time:
until ``now`` reaches the next attempt, calls raise :class:`SiteIoUnavailableError` without
touching the network; the next call after that reconnects and discovers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from controllers.exchange import ExchangeHook, ExchangeTap, jsonable
from controllers.site_io.common import (
    Backoff,
    InFlight,
    ModbusExceptionError,
    Reading,
    SiteIoProtocolError,
    SiteIoUnavailableError,
)
from controllers.site_io.sunspec_models import (
    ModelDef,
    PointDef,
    SunSpecModelError,
    decode_model,
    decode_raw,
    device_model_def,
    encode_raw,
    model_def,
)

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MARKER = 0xFFFF
DEFAULT_BASES = (40000, 0, 50000)
MAX_READ = 125  # registers per FC3 request (Modbus limit)
DER_CTL_AC = 704

_IO_ERRORS = (ModbusException, ConnectionError, OSError, asyncio.TimeoutError)


class SunSpecClient:
    """A SunSpec device (meter, PV inverter, BESS) at ``host:port``, unit ``device_id``.

    ``on_exchange`` (optional) is called with a :class:`controllers.exchange.Exchange` for
    every FC3 read and FC16 write on the wire (discovery included), ``duration_ms`` timed
    with ``perf_counter`` when one is given.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        device_id: int = 1,
        bases: Sequence[int] = DEFAULT_BASES,
        timeout_s: float = 1.0,
        backoff: Backoff | None = None,
        on_exchange: ExchangeHook | None = None,
        perf_counter: Callable[[], float] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.device_id = device_id
        self.bases = tuple(bases)
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.base: int | None = None
        #: model id -> (address of its ID register, its L) for each instance, in chain order
        self.models: dict[int, list[tuple[int, int]]] = {}
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._inflight = InFlight()
        self._now: datetime | None = None
        self._tap = ExchangeTap(
            on_exchange, "modbus", f"{host}:{port}/{device_id}", lambda: self._now, perf_counter
        )

    # ----------------------------------------------------------------- state
    @property
    def busy(self) -> int:
        """Requests in flight (connect and discovery included)."""
        return self._inflight.busy

    async def drain(self) -> None:
        """Return when no request of this client is in flight."""
        await self._inflight.drain()

    @property
    def connected(self) -> bool:
        """Whether the connection is up and discovery has completed."""
        return self._client is not None and self._client.connected and self.base is not None

    async def close(self) -> None:
        """Close the connection (no back-off is started)."""
        client, self._client = self._client, None
        self.base = None
        if client is not None:
            client.close()

    # ------------------------------------------------------------ connection
    async def connect(self, now: datetime) -> dict[int, list[tuple[int, int]]]:
        """Connect (if back-off allows at ``now``) and discover; return the model map."""
        self._now = now
        async with self._inflight.track(), self._lock:
            await self._ensure_connected(now)
        return self.models

    def _lost(self, now: datetime) -> None:
        client, self._client = self._client, None
        self.base = None
        if client is not None:
            client.close()
        self.backoff.failed(now)

    async def _ensure_connected(self, now: datetime) -> None:
        if self.connected:
            return
        if not self.backoff.may_attempt(now):
            raise SiteIoUnavailableError(
                f"SunSpec {self.host}:{self.port} unavailable; next attempt at "
                f"{self.backoff.next_attempt_at}"
            )
        if self._client is not None:
            self._client.close()
        self._client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            ok = await self._client.connect()
        except _IO_ERRORS as exc:
            self._lost(now)
            raise SiteIoUnavailableError(f"SunSpec {self.host}:{self.port}: {exc}") from exc
        if not ok:
            self._lost(now)
            raise SiteIoUnavailableError(f"SunSpec {self.host}:{self.port}: connection refused")
        try:
            await self._discover()
        except SiteIoUnavailableError:
            self._lost(now)
            raise
        except SiteIoProtocolError:
            await self.close()
            self.backoff.failed(now)
            raise
        self.backoff.succeeded()

    async def _discover(self) -> None:
        base: int | None = None
        seen: list[str] = []
        for candidate in self.bases:
            try:
                regs = await self._read_raw(candidate, 2)
            except ModbusExceptionError as exc:
                seen.append(f"{candidate}: exception {exc.exception_code}")
                continue
            if tuple(regs) == SUNS_MARKER:
                base = candidate
                break
            seen.append(f"{candidate}: {regs[0]:#06x} {regs[1]:#06x}")
        if base is None:
            raise SiteIoProtocolError(
                f"no SunS marker on {self.host}:{self.port} unit {self.device_id} "
                f"({'; '.join(seen)})"
            )
        models: dict[int, list[tuple[int, int]]] = {}
        addr = base + 2
        while True:
            if addr + 2 > 0x10000:
                raise SiteIoProtocolError(f"model chain runs past the register space at {addr}")
            model_id, length = await self._read_raw(addr, 2)
            if model_id == END_MARKER:
                break
            models.setdefault(model_id, []).append((addr, length))
            addr += 2 + length
        self.models = models
        self.base = base

    # --------------------------------------------------------------- raw I/O
    async def _read_raw(self, address: int, count: int) -> list[int]:
        out: list[int] = []
        while count > 0:
            n = min(count, MAX_READ)
            out.extend(await self._io("read", address, n, self._reader(address, n)))
            address += n
            count -= n
        return out

    def _reader(self, address: int, count: int) -> Callable[[AsyncModbusTcpClient], Awaitable[Any]]:
        def call(c: AsyncModbusTcpClient) -> Awaitable[Any]:
            return c.read_holding_registers(address, count=count, device_id=self.device_id)

        return call

    async def _write_raw(self, address: int, values: list[int]) -> None:
        await self._io(
            "write",
            address,
            len(values),
            lambda c: c.write_registers(address, values, device_id=self.device_id),
            values=values,
        )

    async def _io(
        self,
        operation: str,
        address: int,
        count: int,
        call: Callable[[AsyncModbusTcpClient], Awaitable[Any]],
        *,
        values: list[int] | None = None,
    ) -> list[int]:
        client = self._client
        if client is None or not client.connected:
            raise SiteIoUnavailableError(f"SunSpec {self.host}:{self.port}: not connected")
        if self._tap.on:
            return await self._io_recorded(operation, address, count, call, client, values)
        try:
            rr = await call(client)
        except _IO_ERRORS as exc:
            raise SiteIoUnavailableError(
                f"SunSpec {self.host}:{self.port}: {operation} at {address} failed: {exc}"
            ) from exc
        if rr.isError():
            raise ModbusExceptionError(
                operation, address, count, int(getattr(rr, "exception_code", 0))
            )
        return list(getattr(rr, "registers", []) or [])

    async def _io_recorded(
        self,
        operation: str,
        address: int,
        count: int,
        call: Callable[[AsyncModbusTcpClient], Awaitable[Any]],
        client: AsyncModbusTcpClient,
        values: list[int] | None,
    ) -> list[int]:
        """:meth:`_io` with an exchange record (``on_exchange`` set)."""
        tap = self._tap
        name = "write_registers" if operation == "write" else "read_holding_registers"
        request: dict[str, Any] = {"address": address, "count": count}
        if values is not None:
            request["values"] = jsonable(values)
        started = tap.start()
        try:
            rr = await call(client)
        except _IO_ERRORS as exc:
            tap.record(name, request, None, started=started, error=exc)
            raise SiteIoUnavailableError(
                f"SunSpec {self.host}:{self.port}: {operation} at {address} failed: {exc}"
            ) from exc
        except asyncio.CancelledError:
            tap.record(name, request, None, started=started, error="cancelled")
            raise
        if rr.isError():
            error = ModbusExceptionError(
                operation, address, count, int(getattr(rr, "exception_code", 0))
            )
            tap.record(
                name,
                request,
                {"exception_code": error.exception_code},
                started=started,
                error=error,
            )
            raise error
        registers = list(getattr(rr, "registers", []) or [])
        response: dict[str, Any] = (
            {"count": count} if values is not None else {"registers": jsonable(registers)}
        )
        tap.record(name, request, response, started=started)
        return registers

    async def _request(self, now: datetime, body: Callable[[], Awaitable[Any]]) -> Any:
        self._now = now
        async with self._inflight.track(), self._lock:
            await self._ensure_connected(now)
            try:
                return await body()
            except SiteIoUnavailableError:
                self._lost(now)
                raise
            except asyncio.CancelledError:
                # a late reply must not be taken for the next request's: start afresh
                await self.close()
                raise

    # ------------------------------------------------------------ SunSpec API
    def _locate(self, model_id: int, index: int) -> tuple[int, int]:
        instances = self.models.get(model_id, [])
        if index >= len(instances):
            raise SunSpecModelError(
                f"model {model_id} (instance {index}) not on {self.host}:{self.port}; "
                f"found {sorted(self.models)}"
            )
        return instances[index]

    async def _read_block(self, model_id: int, index: int) -> tuple[ModelDef, list[int]]:
        addr, length = self._locate(model_id, index)
        model_def(model_id)  # unknown model: SunSpecModelError before any traffic
        regs = await self._read_raw(addr, 2 + length)
        return device_model_def(model_id, length, regs), regs

    async def read_registers(self, address: int, count: int, now: datetime) -> list[int]:
        """Raw holding registers (FC3), e.g. vendor registers outside the SunSpec chain."""

        async def body() -> list[int]:
            return await self._read_raw(address, count)

        result: list[int] = await self._request(now, body)
        return result

    async def read_model(
        self, model_id: int, now: datetime, *, index: int = 0
    ) -> dict[str, Reading]:
        """All mapped points of a model, scale factors applied, measured at ``now``.

        Points inside groups are named ``Group.Point``; not-implemented values are ``None``.
        """

        async def body() -> dict[str, Reading]:
            mdef, regs = await self._read_block(model_id, index)
            return {
                name: Reading(value, unit, now)
                for name, (value, unit) in decode_model(mdef, regs).items()
            }

        result: dict[str, Reading] = await self._request(now, body)
        return result

    async def read_points(
        self, model_id: int, names: Sequence[str], now: datetime, *, index: int = 0
    ) -> dict[str, Reading]:
        """The named points of a model (see :meth:`read_model`).

        Top-level points (outside repeating groups) are read with one FC3 request that
        spans just them and their scale factors (``W`` and ``W_SF`` of model 701: 5
        registers instead of the 155-register block in two requests); other points read
        the whole block.
        """
        mdef = model_def(model_id)
        wanted = set(names)
        for name in names:
            point = mdef.points.get(name)
            if point is not None and isinstance(point.sf, str):
                wanted.add(point.sf)
        if not all(n in mdef.points and "." not in n and "[" not in n for n in wanted):
            readings = await self.read_model(model_id, now, index=index)
        else:
            readings = await self._read_span(mdef, wanted, now, index)
        missing = [n for n in names if n not in readings]
        if missing:
            raise SunSpecModelError(f"model {model_id} has no point(s) {missing}")
        return {n: readings[n] for n in names}

    async def _read_span(
        self, mdef: ModelDef, wanted: set[str], now: datetime, index: int
    ) -> dict[str, Reading]:
        """Read the register span holding ``wanted`` (top-level points) and decode it."""
        points = {n: mdef.points[n] for n in wanted}
        lo = min(p.offset for p in points.values())
        hi = max(p.offset + p.size for p in points.values())

        async def body() -> dict[str, Reading]:
            addr, length = self._locate(mdef.model_id, index)
            if hi > 2 + length or hi - lo > MAX_READ:
                _, regs = await self._read_block(mdef.model_id, index)
                decoded = decode_model(mdef, regs)
            else:
                span = await self._read_raw(addr + lo, hi - lo)
                sub = ModelDef(mdef.model_id, mdef.name, points, mdef.length)
                decoded = decode_model(sub, [0] * lo + span)
            return {
                name: Reading(value, unit, now)
                for name, (value, unit) in decoded.items()
                if name in points
            }

        result: dict[str, Reading] = await self._request(now, body)
        return result

    async def write_points(
        self,
        model_id: int,
        values: Mapping[str, float | int | str],
        now: datetime,
        *,
        index: int = 0,
    ) -> None:
        """Write engineering values to RW points, in the given order (one FC16 each).

        Scale factors are read from the device first; a value is rounded to the nearest
        step the scale factor allows. An enumeration takes its value or a symbol name
        (``{"WSetEna": "ENABLED"}``).
        """
        await self._write(model_id, values, now, index=index)

    async def _write(
        self,
        model_id: int,
        values: Mapping[str, float | int | str],
        now: datetime,
        *,
        index: int,
        optional: frozenset[str] = frozenset(),
        if_different: frozenset[str] = frozenset(),
    ) -> None:
        """Write ``values`` in order.

        ``optional`` points the device does not implement and ``if_different`` points that
        already hold the value (they may be read-only on the device) are skipped.
        """
        self._check_writable(model_def(model_id), values)

        async def body() -> None:
            mdef, regs = await self._read_block(model_id, index)
            self._check_writable(mdef, values)
            addr, _ = self._locate(model_id, index)
            decoded = decode_model(mdef, regs)
            for name, value in values.items():
                point = mdef.points[name]
                raw = self._to_raw(model_id, point, value, decoded)
                current = decode_raw(point, regs[point.offset : point.offset + point.size])
                if name in optional and current is None:
                    continue
                if name in if_different and current == raw:
                    continue
                await self._write_raw(addr + point.offset, encode_raw(point, raw))

        await self._request(now, body)

    @staticmethod
    def _check_writable(mdef: ModelDef, values: Mapping[str, float | int | str]) -> None:
        for name in values:
            point = mdef.points.get(name)
            if point is None:
                if "[" in name:
                    continue  # in a repeating group: checked against the device's L
                raise SunSpecModelError(f"model {mdef.model_id} has no point {name!r}")
            if "W" not in point.access:
                raise SunSpecModelError(f"model {mdef.model_id} point {name!r} is read-only")

    @staticmethod
    def _to_raw(
        model_id: int,
        point: PointDef,
        value: float | int | str,
        decoded: Mapping[str, tuple[float | int | str | None, str | None]],
    ) -> int:
        if isinstance(value, str):
            if value not in point.symbols:
                raise SunSpecModelError(
                    f"model {model_id} point {point.name}: {value!r} is not one of "
                    f"{sorted(point.symbols)}"
                )
            return point.symbols[value]
        sf: object = point.sf
        if isinstance(point.sf, str):
            sf = decoded.get(point.sf, (None, None))[0]
            if not isinstance(sf, int):
                raise SiteIoProtocolError(
                    f"model {model_id} point {point.name}: scale factor {point.sf} not implemented"
                )
        scale = int(sf) if isinstance(sf, int) else 0
        return round(value / 10.0**scale) if scale else round(value)

    def _has(self, model_id: int, name: str) -> bool:
        return name in model_def(model_id).points

    async def set_pv_curtailment(
        self, pct: float, now: datetime, *, enable: bool = True, index: int = 0
    ) -> None:
        """Limit PV active power to ``pct`` % of WMax (704 ``WMaxLimPct``, then its enable).

        The enable is written when the device implements it.
        """
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"curtailment {pct} % outside 0..100")
        values: dict[str, float | int | str] = {"WMaxLimPct": pct}
        if self._has(DER_CTL_AC, "WMaxLimPctEna"):
            values["WMaxLimPctEna"] = "ENABLED" if enable else "DISABLED"
        await self._write(
            DER_CTL_AC, values, now, index=index, optional=frozenset({"WMaxLimPctEna"})
        )

    async def set_power_setpoint(
        self, power_w: float, now: datetime, *, enable: bool = True, index: int = 0
    ) -> None:
        """Set the BESS active power set-point in W (704 ``WSet``, mode WATTS, then enable).

        The sign follows SunSpec DER: positive is injection (discharge), negative absorption.
        ``WSetMod`` is written only when the device holds another mode, and enables only
        when the device implements them.
        """
        values: dict[str, float | int | str] = {"WSet": power_w}
        if self._has(DER_CTL_AC, "WSetMod"):
            values["WSetMod"] = "WATTS"
        if self._has(DER_CTL_AC, "WSetEna"):
            values["WSetEna"] = "ENABLED" if enable else "DISABLED"
        await self._write(
            DER_CTL_AC,
            values,
            now,
            index=index,
            optional=frozenset({"WSetMod", "WSetEna"}),
            if_different=frozenset({"WSetMod"}),
        )
