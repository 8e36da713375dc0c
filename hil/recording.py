"""Traffic recording on the bench: the controllers' exchanges as run-folder events.

With ``run.record`` on (the default), every exchange of a bench session is an event of
``events.parquet``:

* ``ocpp.frame`` — every OCPP-J frame the CSMS (source ``csms``, payload ``station``,
  ``direction``, ``frame``) and each in-process emulated station (source: the station id,
  payload ``direction``, ``raw``) sends or receives;
* ``exchange.modbus`` / ``exchange.opcua`` — every Modbus request (FC3 read, FC16 write)
  and OPC UA Read/Write of the site energy controller; source: the device (``meter``,
  ``pv``, ``bess``, ``transformer``);
* ``exchange.openadr`` — every HTTP request of the VEN to its VTN (token, registration,
  reads, reports) and every notification it receives; source ``ven``.

An exchange event's ``time`` is the wall-clock time (UTC) at which the exchange
completed, so the file reads in the order things happened on the wire; its payload is
:meth:`controllers.exchange.Exchange.payload` — ``time`` (the control step's ``now``),
``duration_ms``, ``protocol``, ``peer``, ``operation``, ``direction``, ``request``,
``response``, ``error`` (see :mod:`controllers.exchange` for their content, the size
limits and the redaction of secrets).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controllers.exchange import Exchange, ExchangeHook

__all__ = ["EXCHANGE_KINDS", "device_exchange_hook", "exchange_hook", "perf_counter"]

EventSink = Callable[[datetime, str, str, dict[str, Any]], None]

#: event kind of each protocol
EXCHANGE_KINDS = {p: f"exchange.{p}" for p in ("modbus", "opcua", "openadr")}

#: the clock of the records' ``duration_ms``
perf_counter = time.perf_counter


def _event(on_event: EventSink, source: str, record: Exchange) -> None:
    on_event(datetime.now(UTC), source, EXCHANGE_KINDS[record.protocol], record.payload())


def exchange_hook(on_event: EventSink, source: str) -> ExchangeHook:
    """A client's ``on_exchange`` that writes each record as an event of ``source``."""

    def hook(record: Exchange) -> None:
        _event(on_event, source, record)

    return hook


def device_exchange_hook(on_event: EventSink) -> Callable[[str, Exchange], None]:
    """``(device name, record)`` hook for the site controller: the device is the source."""

    def hook(device: str, record: Exchange) -> None:
        _event(on_event, device, record)

    return hook
