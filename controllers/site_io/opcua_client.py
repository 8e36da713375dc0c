"""Async OPC UA client (asyncua) for site values, on injected time.

A subscription to the configured node ids keeps a cache of :class:`Reading` objects: each
data-change notification replaces the node's reading, stamped with the value's source
timestamp (else the server timestamp, else the latest ``now``), never later than the latest
``now``. The cache is updated inside the notification callback, so a notification is handled
the moment it is delivered; ``busy`` counts connects, subscription set-up and writes.

asyncua's own reconnect supervisor is off: a lost connection is noticed by :meth:`step` (or
a failing write), the client is torn down, and reconnection waits for exponential back-off
on injected time, then subscribes again. Readings stay in the cache and age (see
:func:`~controllers.site_io.common.is_stale`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from controllers.exchange import ExchangeHook, ExchangeTap, jsonable
from controllers.site_io.common import (
    Backoff,
    InFlight,
    Reading,
    SiteIoProtocolError,
    SiteIoUnavailableError,
)

LOGGER = logging.getLogger("controllers.site_io.opcua")

_IO_ERRORS = (ConnectionError, OSError, asyncio.TimeoutError, UaError)


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _dv_record(dv: Any) -> dict[str, Any]:
    """A DataValue as an exchange record's value: value, status name, source timestamp."""
    variant = getattr(dv, "Value", None)
    value = getattr(variant, "Value", variant)
    status = getattr(dv, "StatusCode", None)
    ts = _aware(getattr(dv, "SourceTimestamp", None))
    return {
        "value": jsonable(value),
        "status": getattr(status, "name", None) or ("Good" if status is None else str(status)),
        "source_timestamp": ts.isoformat() if ts is not None else None,
    }


class _Handler:
    """asyncua subscription handler: updates the owner's cache."""

    def __init__(self, owner: OpcUaClient) -> None:
        self._owner = owner

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        """Store the new value of ``node`` with its source timestamp."""
        dv = data.monitored_item.Value
        resolved = node.nodeid.to_string()
        self._owner._on_value(resolved, val, dv)
        tap = self._owner._tap
        if tap.on:
            node_id = self._owner._keys.get(resolved, resolved)
            tap.record(
                "datachange",
                {"nodes": [node_id]},
                {"values": {node_id: _dv_record(dv)}},
                started=None,
                direction="in",
            )

    def status_change_notification(self, status: Any) -> None:
        """The subscription's status changed (e.g. the server shut down)."""
        LOGGER.info("OPC UA subscription status: %s", status)


class OpcUaClient:
    """OPC UA client that subscribes to site values and writes the site import limit.

    Args:
        url: endpoint, e.g. ``opc.tcp://127.0.0.1:4840/``.
        node_ids: node ids to subscribe to: ``"ns=2;i=7"``, ``"ns=2;s=Site.P"``, or with the
            namespace URI, resolved at each connect: ``"nsu=urn:migrid:x;s=YPTR1.TopOilTemp"``.
            Readings are keyed by these strings as given.
        limit_node_id: the writable node of the site import limit (kW).
        units: unit of each subscribed node id, for the readings (optional).
        publishing_interval_ms: requested subscription publishing interval.
        timeout_s: per-request timeout of the library.
        backoff: reconnect back-off on injected time.
        subscribe: keep a subscription (bench, wall clock); ``False`` for polling only
            with :meth:`read` (the lock-step twin: a read is a tracked request, so its
            result is in the cache when the runtime quiesces, whatever the wall-clock
            publishing interval).
        on_exchange: called with a :class:`controllers.exchange.Exchange` for every Read
            and Write service call and data-change notification (not for session set-up).
        perf_counter: clock for the records' ``duration_ms`` (e.g. ``time.perf_counter``).
    """

    def __init__(
        self,
        url: str,
        node_ids: Sequence[str],
        *,
        limit_node_id: str | None = None,
        units: Mapping[str, str] | None = None,
        publishing_interval_ms: float = 100.0,
        timeout_s: float = 2.0,
        watchdog_interval_s: float = 1.0,
        backoff: Backoff | None = None,
        subscribe: bool = True,
        on_exchange: ExchangeHook | None = None,
        perf_counter: Callable[[], float] | None = None,
    ) -> None:
        self.url = url
        self.subscribe = subscribe
        self.node_ids = list(node_ids)
        self.limit_node_id = limit_node_id
        self.units = dict(units or {})
        self._keys: dict[str, str] = {}  # resolved node id string -> node id as configured
        self.publishing_interval_ms = publishing_interval_ms
        self.timeout_s = timeout_s
        self.watchdog_interval_s = watchdog_interval_s
        self.backoff = backoff or Backoff()
        self.readings: dict[str, Reading] = {}
        self.notifications = 0
        self._now: datetime | None = None
        self._client: Client | None = None
        self._subscription: Any = None
        self._limit_type: ua.VariantType | None = None
        self._nodes: list[Node] = []
        self._lock = asyncio.Lock()
        self._inflight = InFlight()
        self._tap = ExchangeTap(on_exchange, "opcua", url, lambda: self._now, perf_counter)

    # ----------------------------------------------------------------- state
    @property
    def busy(self) -> int:
        """Requests in flight (connect, subscribe, writes)."""
        return self._inflight.busy

    async def drain(self) -> None:
        """Return when no request of this client is in flight."""
        await self._inflight.drain()

    @property
    def connected(self) -> bool:
        """Whether the session is up (with its subscription when subscribing)."""
        return (
            self._client is not None
            and (self._subscription is not None or not self.subscribe)
            and self._client.uaclient.state is UaClientState.CONNECTED
        )

    def set_now(self, now: datetime) -> None:
        """The latest injected time; notifications arriving later use it."""
        self._now = now

    def reading(self, node_id: str) -> Reading | None:
        """The cached reading of ``node_id`` (``None`` before its first notification)."""
        return self.readings.get(node_id)

    def _on_value(self, resolved: str, value: Any, dv: Any) -> None:
        node_id = self._keys.get(resolved)
        if node_id is None:
            return  # not one of ours (a subscription from before a reconnect)
        now = self._now
        ts = _aware(getattr(dv, "SourceTimestamp", None)) or _aware(
            getattr(dv, "ServerTimestamp", None)
        )
        if ts is None:
            ts = now
        elif now is not None and ts > now:
            ts = now
        if ts is None:
            return  # no time at all yet: nothing a caller could judge the age of
        old = self.readings.get(node_id)
        if old is not None and old.measured_at > ts:
            return  # a late notification older than what a read already brought
        status = getattr(dv, "StatusCode", None)
        good = status is None or bool(getattr(status, "is_good", lambda: True)())
        if not good or isinstance(value, bool | bytes | list | dict):
            stored: float | int | str | None = None
        elif isinstance(value, int | float | str):
            stored = value
        else:
            stored = None
        self.readings[node_id] = Reading(stored, self.units.get(node_id), ts)
        self.notifications += 1

    # ------------------------------------------------------------ connection
    async def step(self, now: datetime) -> bool:
        """Take ``now``; notice a lost connection; reconnect when back-off allows.

        Never raises for connection problems; returns whether the client is connected.
        """
        self.set_now(now)
        async with self._inflight.track(), self._lock:
            try:
                await self._ensure_connected(now)
            except SiteIoUnavailableError as exc:
                LOGGER.debug("OPC UA %s: %s", self.url, exc)
                return False
        return True

    async def connect(self, now: datetime) -> None:
        """Connect and subscribe now (raises :class:`SiteIoUnavailableError` on failure)."""
        self.set_now(now)
        async with self._inflight.track(), self._lock:
            await self._ensure_connected(now)

    async def close(self) -> None:
        """Disconnect (no back-off is started)."""
        async with self._lock:
            await self._teardown()

    async def _teardown(self) -> None:
        client, self._client = self._client, None
        self._subscription = None
        self._limit_type = None
        if client is None:
            return
        try:
            await client.disconnect()
        except Exception as exc:  # the transport may already be gone
            LOGGER.debug("OPC UA disconnect: %r", exc)
            client.disconnect_socket()

    async def _lost(self, now: datetime, exc: BaseException) -> SiteIoUnavailableError:
        await self._teardown()
        delay = self.backoff.failed(now)
        return SiteIoUnavailableError(f"OPC UA {self.url}: {exc!r}; retry in {delay}")

    async def _ensure_connected(self, now: datetime) -> None:
        if self._client is not None:
            if self.connected:
                return
            raise await self._lost(now, ConnectionError("connection lost"))
        if not self.backoff.may_attempt(now):
            raise SiteIoUnavailableError(
                f"OPC UA {self.url} unavailable; next attempt at {self.backoff.next_attempt_at}"
            )
        client = Client(
            self.url, timeout=self.timeout_s, watchdog_intervall=self.watchdog_interval_s
        )
        self._client = client
        try:
            await client.connect()
            resolved = [await self._resolve(client, n) for n in self.node_ids]
            self._keys = {r.to_string(): n for r, n in zip(resolved, self.node_ids, strict=True)}
            self._nodes = [client.get_node(r) for r in resolved]
            if not self.subscribe:
                self.backoff.succeeded()
                return
            sub = await client.create_subscription(self.publishing_interval_ms, _Handler(self))
            nodes = self._nodes
            if nodes:
                results = await sub.subscribe_data_change(nodes)
                for node_id, result in zip(self.node_ids, results, strict=True):
                    if not isinstance(result, int):
                        raise SiteIoProtocolError(
                            f"OPC UA {self.url}: subscribe {node_id}: {result}"
                        )
            self._subscription = sub
        except _IO_ERRORS as exc:
            raise await self._lost(now, exc) from exc
        except SiteIoProtocolError:
            await self._teardown()
            self.backoff.failed(now)
            raise
        self.backoff.succeeded()

    @staticmethod
    async def _resolve(client: Client, node_id: str) -> ua.NodeId:
        """A node id string; ``nsu=<uri>;...`` gets the server's index of ``uri``."""
        if node_id.startswith("nsu="):
            uri, _, rest = node_id[4:].partition(";")
            try:
                index = await client.get_namespace_index(uri)
            except ValueError as exc:
                raise SiteIoProtocolError(f"namespace {uri!r} not on the server") from exc
            node_id = f"ns={index};{rest}"
        try:
            return ua.NodeId.from_string(node_id)
        except (ValueError, UaError) as exc:
            raise SiteIoProtocolError(f"bad node id {node_id!r}: {exc}") from exc

    # ------------------------------------------------------------------ reads
    async def read(self, now: datetime) -> dict[str, Reading]:
        """Read every configured node now (one Read service call); update the cache.

        Values carry their source timestamp (see the module docstring). Returns the cache.

        Raises:
            SiteIoUnavailableError: not connected (or back-off running); the connection is
                torn down if the read failed on the transport.
        """
        self.set_now(now)
        async with self._inflight.track(), self._lock:
            await self._ensure_connected(now)
            assert self._client is not None
            if self._nodes:
                tap = self._tap
                started = tap.start() if tap.on else None
                try:
                    values = await self._client.read_attributes(self._nodes)
                except _IO_ERRORS as exc:
                    if tap.on:
                        tap.record("read", {"nodes": list(self.node_ids)}, None,
                                   started=started, error=exc)
                    raise await self._lost(now, exc) from exc
                if tap.on:
                    tap.record(
                        "read",
                        {"nodes": list(self.node_ids)},
                        {"values": {n: _dv_record(dv)
                                    for n, dv in zip(self.node_ids, values, strict=True)}},
                        started=started,
                    )
                for node, dv in zip(self._nodes, values, strict=True):
                    value = dv.Value.Value if dv.Value is not None else None
                    self._on_value(node.nodeid.to_string(), value, dv)
        return self.readings

    # ----------------------------------------------------------------- writes
    async def write_import_limit(self, power_kw: float, now: datetime) -> None:
        """Write the site import limit (kW) to ``limit_node_id``, as the node's data type.

        Raises:
            SiteIoUnavailableError: not connected (or back-off running); the connection is
                torn down if the write failed on the transport.
            SiteIoProtocolError: the server refused the write (bad status).
        """
        if self.limit_node_id is None:
            raise SiteIoProtocolError("no limit_node_id configured")
        self.set_now(now)
        async with self._inflight.track(), self._lock:
            await self._ensure_connected(now)
            assert self._client is not None
            tap = self._tap
            operation, started = "write", None
            request: dict[str, Any] = {"node": self.limit_node_id}
            try:
                node = self._client.get_node(await self._resolve(self._client, self.limit_node_id))
                if self._limit_type is None:
                    operation, started = "read_data_type", tap.start() if tap.on else None
                    self._limit_type = await node.read_data_type_as_variant_type()
                    if tap.on:
                        tap.record(operation, request, {"data_type": self._limit_type.name},
                                   started=started)
                vtype = self._limit_type
                value: float | int = (
                    float(power_kw)
                    if vtype in (ua.VariantType.Double, ua.VariantType.Float)
                    else round(power_kw)
                )
                if tap.on:
                    request = {"node": self.limit_node_id, "value": value,
                               "data_type": vtype.name}
                    operation, started = "write", tap.start()
                await node.write_value(ua.DataValue(ua.Variant(value, vtype)))
                if tap.on:
                    tap.record(operation, request, {"status": "Good"}, started=started)
            except UaStatusCodeError as exc:
                if tap.on:
                    tap.record(operation, request, {"status": type(exc).__name__},
                               started=started, error=exc)
                raise SiteIoProtocolError(
                    f"OPC UA {self.url}: write {self.limit_node_id}={power_kw}: {exc}"
                ) from exc
            except _IO_ERRORS as exc:
                if tap.on:
                    tap.record(operation, request, None, started=started, error=exc)
                raise await self._lost(now, exc) from exc
