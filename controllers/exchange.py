"""Exchange records: every request a controller client makes or receives, for recording.

The site I/O clients (:class:`controllers.site_io.SunSpecClient`,
:class:`controllers.site_io.OpcUaClient`) and the VEN (:class:`controllers.ven.client.Ven`,
with its webhook server and MQTT listener) take an optional ``on_exchange`` callback and
call it once per protocol exchange with an :class:`Exchange`:

* ``modbus``: every FC3 read (``read_holding_registers``: SunSpec discovery, spans and
  blocks) and FC16 write (``write_registers``) on the wire, one record per request;
* ``opcua``: every Read service call (``read``: all configured nodes at once;
  ``read_data_type`` before the first write), every Write (``write``) and, when
  subscribing, every data-change notification (``datachange``, direction ``in``);
  session set-up (connect, namespace lookup, subscription) is not recorded;
* ``openadr``: every HTTP request of the VEN (token, registration, reads, subscriptions,
  reports: ``"GET /events"``, ``"POST /reports"``) and every notification it receives
  (webhook requests, direction ``in``; MQTT messages, ``"PUBLISH <topic>"``).

``time`` is the injected ``now`` the client was last given (the control step's time);
``duration_ms`` comes from the injected ``perf_counter`` (``None`` without one), so that
nothing here reads a clock of its own. Text (HTTP bodies) is cut to
:data:`MAX_TEXT_CHARS` characters, lists (register values) to :data:`MAX_ITEMS` items;
a cut text ends with ``"…[+N chars]"`` and a cut list with ``"…[+N items]"``. Secrets
(OAuth2 client secrets, tokens, bearer tokens of subscriptions) are replaced with ``"***"``
before the record is made; HTTP headers are not recorded.

A hook that raises does not break the client: the error is logged once per client (then
counted in :attr:`ExchangeTap.hook_errors`) and the request's result stands. Without a
hook a client only tests one attribute per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "MAX_ITEMS",
    "MAX_TEXT_CHARS",
    "Exchange",
    "ExchangeHook",
    "ExchangeProtocol",
    "ExchangeTap",
    "clip",
    "jsonable",
]

LOGGER = logging.getLogger("controllers.exchange")

ExchangeProtocol = Literal["modbus", "opcua", "openadr"]

#: characters of a text (HTTP body, repr of an odd value) kept in a record
MAX_TEXT_CHARS = 4096
#: items of a list (register values, node values) kept in a record
MAX_ITEMS = 256


@dataclass(frozen=True, slots=True)
class Exchange:
    """One protocol exchange of a controller client (module docstring).

    Attributes:
        time: the injected ``now`` in force when the exchange completed (UTC; ``None``
            before the client was given any).
        duration_ms: from the request leaving to its answer (or failure) [ms], measured
            with the injected ``perf_counter``; ``None`` without one.
        protocol: ``modbus``, ``opcua`` or ``openadr``.
        peer: ``host:port/unit`` (Modbus), the endpoint URL (OPC UA), the VTN base URL
            (OpenADR requests), the broker URI (MQTT) or the sender's ``host:port``
            (webhook requests received).
        operation: ``read_holding_registers``, ``write_registers``; ``read``, ``write``,
            ``read_data_type``, ``datachange``; ``"GET /events"``, ``"POST /reports"``,
            ``"POST /openadr3/notifications"``, ``"PUBLISH <topic>"``.
        request: what was asked (JSON-ready): ``{"address", "count"[, "values"]}``;
            ``{"nodes": [...]}`` or ``{"node", "value"}``; ``{"method", "url"[, "query"],
            "body"}``.
        response: what came back (JSON-ready, ``None`` when nothing did):
            ``{"registers": [...]}`` or ``{"exception_code": n}``;
            ``{"values": {node: {"value", "status", "source_timestamp"}}}`` or
            ``{"status": ...}``; ``{"status_code", "body"}``.
        error: ``None``, or what went wrong (exception text) when no valid answer came.
        direction: ``out`` for requests the client made, ``in`` for ones it received.
    """

    time: datetime | None
    duration_ms: float | None
    protocol: ExchangeProtocol
    peer: str
    operation: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: str | None = None
    direction: Literal["out", "in"] = "out"

    def payload(self) -> dict[str, Any]:
        """The record as a JSON-ready mapping (the run folder's event payload)."""
        return {
            "time": self.time.isoformat() if self.time is not None else None,
            "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 3),
            "protocol": self.protocol,
            "peer": self.peer,
            "operation": self.operation,
            "direction": self.direction,
            "request": self.request,
            "response": self.response,
            "error": self.error,
        }


ExchangeHook = Callable[[Exchange], None]
"""``on_exchange(record)``: called once per exchange, synchronously, must not block."""


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked with the number of characters cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[+{len(text) - limit} chars]"


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data: scalars kept, containers walked, others as clipped repr.

    Lists longer than :data:`MAX_ITEMS` are cut (a last item notes how many were cut).
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return clip(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [jsonable(v) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"…[+{len(value) - MAX_ITEMS} items]")
        return items
    return clip(repr(value))


class ExchangeTap:
    """One client's connection to its ``on_exchange`` hook.

    Args:
        hook: the callback (``None``: recording off; :attr:`on` is then ``False`` and the
            client skips all record keeping).
        protocol: of every record.
        peer: default peer of the records.
        clock: the client's latest injected ``now``.
        perf_counter: monotonic clock for ``duration_ms`` (e.g. ``time.perf_counter``).
    """

    __slots__ = ("_clock", "_hook", "_logged", "_perf", "hook_errors", "on", "peer", "protocol")

    def __init__(
        self,
        hook: ExchangeHook | None,
        protocol: ExchangeProtocol,
        peer: str,
        clock: Callable[[], datetime | None],
        perf_counter: Callable[[], float] | None = None,
    ) -> None:
        self._hook = hook
        self.on = hook is not None
        self.protocol: ExchangeProtocol = protocol
        self.peer = peer
        self._clock = clock
        self._perf = perf_counter
        self._logged = False
        self.hook_errors = 0

    def start(self) -> float | None:
        """The perf counter now (``None`` without one); pass it to :meth:`record`."""
        return self._perf() if self._perf is not None else None

    def record(
        self,
        operation: str,
        request: dict[str, Any],
        response: dict[str, Any] | None,
        *,
        started: float | None,
        error: BaseException | str | None = None,
        peer: str | None = None,
        direction: Literal["out", "in"] = "out",
    ) -> None:
        """Make the record and hand it to the hook; a failing hook is logged once."""
        hook = self._hook
        if hook is None:
            return
        duration = None
        if started is not None and self._perf is not None:
            duration = (self._perf() - started) * 1000.0
        if isinstance(error, BaseException):
            error = clip(str(error) or repr(error))
        record = Exchange(
            time=self._clock(),
            duration_ms=duration,
            protocol=self.protocol,
            peer=peer if peer is not None else self.peer,
            operation=operation,
            request=request,
            response=response,
            error=error,
            direction=direction,
        )
        try:
            hook(record)
        except Exception:
            self.hook_errors += 1
            if not self._logged:
                self._logged = True
                LOGGER.exception(
                    "on_exchange hook failed for %s %s (logged once; later failures counted)",
                    self.protocol,
                    self.peer,
                )
