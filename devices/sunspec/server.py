"""A Modbus TCP endpoint serving a :class:`~devices.sunspec.image.SunSpecImage`.

Built on pymodbus' current data model (``pymodbus.simulator.SimData`` / ``SimDevice``),
one device id. The twin updates registers with :meth:`SunSpecServer.update` (through
``ModbusTcpServer.async_setValues``); a client's writes (FC6/FC16) reach ``on_write`` after
they are validated against the model: a register that is not a writable point gets
exception 2 (illegal data address), a value the model or the device's ``limits`` refuse gets
exception 3 (illegal data value). The server keeps serving after bad requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from devices.sunspec.image import (
    IllegalAddressError,
    IllegalValueError,
    SunSpecImage,
    encode,
)

__all__ = ["SunSpecServer", "Value", "WriteHandler"]

LOGGER = logging.getLogger("devices.sunspec")

Value = int | float | str | None
WriteHandler = Callable[[dict[str, Value]], None]
"""Receives ``{point key: engineering value}`` of an accepted client write."""

_WRITE_FCS = frozenset({5, 6, 15, 16, 22, 23})


class SunSpecServer:
    """Modbus TCP server of one SunSpec device.

    Args:
        image: the register image (shared with the device; the server keeps it current).
        unit: the Modbus device id.
        on_write: called with the engineering values of each accepted client write, before
            the reply is sent.
        limits: ``{point key: (min, max)}`` in engineering units for writable points.
        writable: the RW points this device implements (None: every RW point of its
            models); a write to another register gets exception 2.
    """

    def __init__(
        self,
        image: SunSpecImage,
        *,
        unit: int = 1,
        on_write: WriteHandler | None = None,
        limits: Mapping[str, tuple[float, float]] | None = None,
        writable: Iterable[str] | None = None,
    ) -> None:
        self.image = image
        self.unit = unit
        self.on_write = on_write
        self.limits = dict(limits or {})
        self.writable = frozenset(writable) if writable is not None else None
        self.port: int | None = None
        self._server: ModbusTcpServer | None = None
        self._internal = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- life cycle -------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        device = SimDevice(
            id=self.unit,
            simdata=[
                SimData(
                    self.image.base,
                    values=list(self.image.registers),
                    datatype=DataType.REGISTERS,
                )
            ],
            action=self._action,
        )
        self._server = ModbusTcpServer(device, address=(host, port))
        await self._server.serve_forever(background=True)
        transport = self._server.transport
        sockets = getattr(transport, "sockets", None)
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def close(self) -> None:
        """Stop serving and close every connection."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    # --- lock-step contract -----------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while an update or a client request is being handled."""
        return self._in_flight > 0

    async def drain(self) -> None:
        """Return when nothing of this server is in flight."""
        while self._in_flight:
            await self._idle.wait()

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    # --- twin side --------------------------------------------------------------------
    async def update(self, values: Mapping[str, Value]) -> None:
        """Write engineering values (scale factors applied); only changed registers go out.

        Raises:
            IllegalValueError: a value does not fit its point.
            KeyError: an unknown point.
        """
        self._enter()
        try:
            img = self.image
            # encode everything first: a bad value leaves the image untouched
            changed: list[tuple[int, list[int]]] = []
            for key, value in values.items():
                spec = img.points[key]
                try:
                    regs = encode(spec.type, img.to_raw(key, value), spec.size)
                except IllegalValueError as exc:
                    raise IllegalValueError(f"{key}={value!r}: {exc}") from exc
                if regs != img.registers_of(key):
                    changed.append((spec.address, regs))
            for address, regs in changed:
                img.write_registers(address, regs)
            if self._server is None:
                return
            for address, regs in _merge(changed):
                self._internal = True
                try:
                    await self._server.async_setValues(self.unit, 16, address, regs)
                finally:
                    self._internal = False
        finally:
            self._leave()

    # --- client side ------------------------------------------------------------------
    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self._internal or set_values is None or function_code not in _WRITE_FCS:
            return None
        self._enter()
        try:
            regs = [int(v) for v in set_values]
            try:
                raws = self.image.decode_write(address, regs)
                values = {k: self.image.to_engineering(k, raw) for k, raw in raws.items()}
                for key, value in values.items():
                    if self.writable is not None and key not in self.writable:
                        raise IllegalAddressError(f"{key} is not implemented for writing")
                    lim = self.limits.get(key)
                    if lim is not None and isinstance(value, int | float):
                        if not lim[0] <= value <= lim[1]:
                            raise IllegalValueError(f"{key}={value} outside {lim}")
            except IllegalAddressError as exc:
                LOGGER.info("write refused (address): %s", exc)
                return ExcCodes.ILLEGAL_ADDRESS
            except IllegalValueError as exc:
                LOGGER.info("write refused (value): %s", exc)
                return ExcCodes.ILLEGAL_VALUE
            before = self.image.read(address, len(regs))
            self.image.write_registers(address, regs)
            if self.on_write is not None:
                try:
                    self.on_write(values)
                except IllegalValueError as exc:
                    LOGGER.info("write refused by the device: %s", exc)
                    self.image.write_registers(address, before)
                    return ExcCodes.ILLEGAL_VALUE
                except Exception:
                    LOGGER.exception("write handler failed")
                    self.image.write_registers(address, before)
                    return ExcCodes.DEVICE_FAILURE
            return None
        finally:
            self._leave()


def _merge(changed: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
    """Join adjacent register runs so that one update is as few writes as possible."""
    out: list[tuple[int, list[int]]] = []
    for address, regs in sorted(changed):
        if out and out[-1][0] + len(out[-1][1]) == address:
            out[-1] = (out[-1][0], out[-1][1] + regs)
        else:
            out.append((address, list(regs)))
    return out
