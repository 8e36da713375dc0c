"""Shared pieces of the site I/O clients: readings with their age, errors, back-off, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value, its unit and when it was measured (timezone-aware UTC).

    ``value`` is ``None`` when the device reports the point as not implemented.
    """

    value: float | int | str | None
    unit: str | None
    measured_at: datetime


def is_stale(reading: Reading | None, now: datetime, timeout: timedelta) -> bool:
    """Whether ``reading`` is missing or older than ``timeout`` at ``now``.

    Callers (DLM) treat a stale reading as the worst case. A reading exactly ``timeout`` old
    is still fresh; a missing one or one without a value is stale.
    """
    if reading is None or reading.value is None:
        return True
    return now - reading.measured_at > timeout


class SiteIoError(Exception):
    """A site I/O request failed (base class)."""


class SiteIoUnavailableError(SiteIoError):
    """The peer is not connected: the connection failed, was lost, or back-off is running."""


class SiteIoProtocolError(SiteIoError):
    """The peer answered, but with an error (Modbus exception, OPC UA bad status, bad data)."""


class ModbusExceptionError(SiteIoProtocolError):
    """A Modbus exception response, e.g. code 2 (illegal data address)."""

    NAMES = {
        1: "illegal function",
        2: "illegal data address",
        3: "illegal data value",
        4: "server device failure",
        5: "acknowledge",
        6: "server device busy",
        8: "memory parity error",
        10: "gateway path unavailable",
        11: "gateway target device failed to respond",
    }

    def __init__(self, operation: str, address: int, count: int, exception_code: int) -> None:
        self.operation = operation
        self.address = address
        self.count = count
        self.exception_code = exception_code
        name = self.NAMES.get(exception_code, "unknown exception")
        super().__init__(
            f"Modbus exception {exception_code} ({name}) on {operation} of {count} "
            f"register(s) at {address}"
        )


@dataclass
class Backoff:
    """Exponential back-off on injected time: ``initial``, doubled per failure, up to ``maximum``.

    Created by each client when none is given.
    """

    initial: timedelta = timedelta(seconds=1)
    maximum: timedelta = timedelta(seconds=60)
    failures: int = 0
    next_attempt_at: datetime | None = None

    def may_attempt(self, now: datetime) -> bool:
        """Whether a connection attempt is allowed at ``now``."""
        return self.next_attempt_at is None or now >= self.next_attempt_at

    def failed(self, now: datetime) -> timedelta:
        """Record a failure at ``now``; return the delay until the next attempt."""
        delay: timedelta = min(self.initial * (2**self.failures), self.maximum)
        self.failures += 1
        self.next_attempt_at = now + delay
        return delay

    def succeeded(self) -> None:
        """Reset after a successful connection."""
        self.failures = 0
        self.next_attempt_at = None


class InFlight:
    """Counts requests in flight; ``drain()`` returns when none is."""

    def __init__(self) -> None:
        self._count = 0
        self._idle: asyncio.Event | None = None

    @property
    def busy(self) -> int:
        """Number of requests in flight."""
        return self._count

    def _event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            if self._count == 0:
                self._idle.set()
        return self._idle

    @asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Count the body as one request in flight."""
        self._count += 1
        self._event().clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._event().set()

    async def drain(self) -> None:
        """Return when nothing is in flight."""
        while self._count:
            await self._event().wait()
