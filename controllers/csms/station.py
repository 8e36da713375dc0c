"""The OCPP endpoint of one connected station: handlers on the ocpp library's ChargePoint.

One object per WebSocket. :class:`StationLink` holds what both versions share: it
parses every frame itself (so a bad frame gets the CALLERROR of the version's table in
:mod:`controllers.csms.rpc` and never ends the connection), keeps the schema validation
of the library for payloads (whatever validator backend is installed), counts running
handlers for ``drain()``, records frames and round-trip times, and runs actions that must
follow a reply (the TxDefaultProfile after BootNotification) as tracked tasks after the
reply is sent. Never ``await self.call`` inside an ``@on`` handler: the receive loop
waits for the handler, so the call would wait for its full timeout.

Faulty stations (the reactions tested with the emulator's injected faults,
:mod:`devices.charging_station.faults`):

- malformed frame (not JSON, not an RPC frame, unknown MessageTypeId, a CALL whose
  payload violates its schema): the CALLERROR of :mod:`controllers.csms.rpc` (OCPP-J 1.6
  §4.2.3, OCPP 2.0.1 Part 4 §4.2.3 / §4.3) and a ``station.malformed_frame`` event
  (station, reason, code). Rule: the connection is kept open; the CALLERROR is the
  protocol's answer and a bad frame carries nothing the DLM relies on. A malformed or
  unexpected *response* is dropped (never answered, OCPP-J) and reported the same way.
- no reply within ``response_timeout_s``: the request fails with ``Timeout`` (only that
  station's task waits; other stations go on), ``station.unresponsive`` (station,
  action, timeout_s) is emitted once until a request is answered again
  (``station.responsive``); a reply arriving after the timeout is dropped
  (``station.late_reply``).
- clock skew: a station timestamp more than ``clock_skew_tolerance_s`` from the CSMS's
  ``now`` emits ``station.clock_skew`` (station, offset_s) once, and from then on that
  station's meter values are timed by the CSMS's receive time (so they are neither
  stale nor in the future); ``station.clock_skew_cleared`` when a timestamp is within the
  tolerance again. Timestamps that may legitimately be old (2.0.1 TransactionEvent with
  ``offline`` true, 1.6 MeterValues/StopTransaction, which a station queues while
  offline) count when they lie in the future, or in the past but after the current
  connection was opened (a queued message is older than the connection that brings it).

:class:`Station201` and :class:`Station16` hold the handlers; their state goes to the
:class:`~controllers.csms.registry.Registry` of the :class:`StationHost` (the CSMS).
"""

import asyncio
import itertools
import json
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult
from ocpp.routing import on as _library_on
from ocpp.v16 import ChargePoint as _ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v21.enums import Action as Action21
from ocpp.v201 import ChargePoint as _ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import ConnectionClosed

from controllers.csms.config import CsmsConfig
from controllers.csms.meter import MeterReading, parse_meter_values, parse_timestamp
from controllers.csms.profiles import (
    DC_TX_DEFAULT_PROFILE_BASE,
    STATION_MAX_PROFILE_ID,
    TX_DEFAULT_PROFILE_ID,
    RateUnit,
    profile_v16,
    profile_v21_setpoint,
    profile_v201,
    tx_profile_id,
)
from controllers.csms.registry import Registry, TransactionRecord
from controllers.csms.rpc import CODES, MAX_DESCRIPTION, error_code

logger = logging.getLogger("controllers.csms")
_ocpp_logger = logging.getLogger("controllers.csms.ocpp")

#: Profile purposes the CSMS sends; ``StationMax`` is ChargingStationMaxProfile (2.0.1)
#: or ChargePointMaxProfile (1.6).
ProfilePurpose = Literal["TxDefaultProfile", "TxProfile", "StationMax"]

_F = TypeVar("_F", bound=Callable[..., Any])


def on(action: str) -> Callable[[_F], _F]:
    """Typed wrapper of :func:`ocpp.routing.on` (register a handler for an action)."""
    return cast(Callable[[_F], _F], _library_on(action))


def iso(now: datetime) -> str:
    """UTC time as OCPP text (``2025-06-02T08:00:00Z``)."""
    return now.isoformat().replace("+00:00", "Z")


class CommandError(Exception):
    """A request of the CSMS failed: CALLERROR (its code), ``Timeout``, or ``Closed``."""

    def __init__(self, code: str, description: str = "") -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code


class StationHost(Protocol):
    """What a station endpoint needs from the CSMS."""

    registry: Registry
    config: CsmsConfig

    @property
    def now(self) -> datetime:
        """Latest injected time."""
        ...

    def emit(self, source: str, kind: str, payload: dict[str, Any]) -> None:
        """Emit an event stamped with ``now``."""

    def handler_started(self) -> None:
        """A frame is being handled."""

    def handler_finished(self) -> None:
        """The frame has been handled."""

    def spawn(self, station_id: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine as a task tracked by ``drain()`` (cancelled on disconnect)."""

    def perf(self) -> float | None:
        """Injected performance counter [s], None when not measuring."""

    def record_rtt(self, seconds: float) -> None:
        """Round-trip time of a CSMS request [s]."""

    def record_frame(self, station_id: str, direction: str, frame: str) -> None:
        """Every frame in or out (only recorded with ``record_frames``)."""

    def id_token_status(self, id_token: str | None) -> str:
        """``Accepted`` or ``Invalid`` for an id token."""

    def next_transaction_id(self) -> int:
        """A new OCPP 1.6 transaction id."""

    async def station_booted(self, link: "StationLink") -> None:
        """After a BootNotification reply: install the default profiles."""

    def transaction_started(self, tx: TransactionRecord) -> None:
        """A transaction appeared."""

    def transaction_ended(self, tx: TransactionRecord) -> None:
        """A transaction ended."""


class StationLink:
    """Version-independent part of a station endpoint (mixed into the ChargePoints)."""

    version: str = ""
    host: StationHost

    if TYPE_CHECKING:  # provided by ocpp.ChargePoint, declared for mypy only
        id: str
        route_map: dict[str, dict[str, Any]]
        _response_queue: asyncio.Queue[Any]
        _unique_id_generator: Callable[[], object]

        async def _handle_call(self, msg: Call) -> Any: ...

        async def call(self, payload: Any, suppress: bool = True) -> Any:  # noqa: D102
            ...

        async def start(self) -> None:  # noqa: D102
            ...

    def _setup(self, host: StationHost, known_actions: frozenset[str]) -> None:
        self.host = host
        self._known_actions = known_actions
        self._post_reply: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._outstanding: dict[str, float | None] = {}
        self._timed_out: set[str] = set()
        counter = itertools.count(1)
        self._unique_id_generator = counter.__next__

    # ------------------------------------------------------------------ receive

    async def route_message(self, raw_msg: str | bytes) -> None:
        """Handle one received frame (replaces the library's router; never raises)."""
        host = self.host
        host.handler_started()
        try:
            text = raw_msg if isinstance(raw_msg, str) else raw_msg.decode("utf-8", "replace")
            host.record_frame(self.id, "in", text)
            host.registry.station(self.id).last_seen = host.now
            await self._route(raw_msg)
            for action in self._post_reply:
                host.spawn(self.id, action())
        except Exception:
            logger.exception("station %s: error while handling a frame", self.id)
        finally:
            self._post_reply.clear()
            host.handler_finished()

    def _malformed(self, reason: str, code: str | None) -> None:
        """Report a malformed frame of this station (the connection stays open)."""
        logger.warning("station %s: malformed frame: %s (%s)", self.id, reason, code)
        self.host.emit(
            "csms", "station.malformed_frame", {"station": self.id, "reason": reason, "code": code}
        )

    async def _route(self, raw_msg: str | bytes) -> None:
        codes = CODES[self.version]
        try:
            frame = json.loads(raw_msg)
        except ValueError:
            self._malformed("not JSON", codes.frame)
            await self._reply_error("-1", codes.frame, "Message is not valid JSON")
            return
        if not isinstance(frame, list) or not frame or type(frame[0]) is not int:
            self._malformed("not an RPC frame", codes.frame)
            await self._reply_error("-1", codes.frame, "Message is not [MessageTypeId, ...]")
            return
        type_id = frame[0]
        unique_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
        if type_id == Call.message_type_id:
            if unique_id is None or len(frame) != 4 or not isinstance(frame[2], str):
                description = "CALL must be [2, messageId, action, payload]"
                self._malformed("malformed CALL", codes.frame)
                await self._reply_error(unique_id or "-1", codes.frame, description)
                return
            await self._dispatch_call(Call(unique_id, frame[2], frame[3]))
        elif type_id in (CallResult.message_type_id, CallError.message_type_id):
            self._route_response(frame, unique_id)
        else:
            description = f"MessageTypeId {type_id} is not supported"
            self._malformed(f"MessageTypeId {type_id}", codes.message_type)
            await self._reply_error(unique_id or "-1", codes.message_type, description)

    async def _dispatch_call(self, msg: Call) -> None:
        codes = CODES[self.version]
        if msg.action not in self.route_map:
            if msg.action in self._known_actions:
                code, why = codes.not_supported, f"{msg.action} is not supported by this CSMS"
            else:
                code, why = codes.not_known, f"{msg.action} is not an OCPP {self.version} action"
            await self._reply_error(msg.unique_id, code, why)
            return
        try:
            await self._handle_call(msg)
        except OCPPError as exc:
            cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
            code = error_code(exc, self.version)
            self._malformed(f"{msg.action} payload violates its schema", code)
            await self._reply_error(msg.unique_id, code, str(cause or exc.description))

    def _route_response(self, frame: list[Any], unique_id: str | None) -> None:
        valid = unique_id is not None and (
            (frame[0] == CallResult.message_type_id and len(frame) == 3)
            or (frame[0] == CallError.message_type_id and len(frame) in (4, 5))
        )
        if valid and unique_id in self._timed_out:  # answered after the timeout: dropped
            self._timed_out.discard(unique_id)
            logger.info("station %s: late reply to %s dropped", self.id, unique_id)
            self.host.emit("csms", "station.late_reply", {"station": self.id,
                                                          "message_id": unique_id})
            return
        if not valid or unique_id not in self._outstanding:
            # never answer a response with a CALLERROR (OCPP-J); drop it
            self._malformed("unexpected or malformed response", None)
            return
        assert unique_id is not None
        started = self._outstanding.pop(unique_id)
        now_perf = self.host.perf()
        if started is not None and now_perf is not None:
            self.host.record_rtt(now_perf - started)
        if frame[0] == CallResult.message_type_id:
            self._response_queue.put_nowait(CallResult(unique_id, frame[2]))
            return
        details = frame[4] if len(frame) == 5 else {}
        self.host.emit(
            "csms",
            "ocpp.callerror",
            {
                "station": self.id,
                "direction": "received",
                "message_id": unique_id,
                "code": frame[2],
                "description": frame[3],
            },
        )
        self._response_queue.put_nowait(CallError(unique_id, frame[2], frame[3], details))

    # --------------------------------------------------------------------- send

    async def _reply_error(self, unique_id: str, code: str, description: str) -> None:
        frame = [4, unique_id, code, description[:MAX_DESCRIPTION], {}]
        await self._send(json.dumps(frame, separators=(",", ":")))

    async def _send(self, message: str) -> None:
        """Send a frame (overrides the library's; every outgoing frame passes here)."""
        host = self.host
        host.record_frame(self.id, "out", message)
        if message.startswith("[2,"):
            self._outstanding[json.loads(message)[1]] = host.perf()
        elif message.startswith("[4,"):
            frame = json.loads(message)
            host.emit(
                "csms",
                "ocpp.callerror",
                {
                    "station": self.id,
                    "direction": "sent",
                    "message_id": frame[1],
                    "code": frame[2],
                    "description": frame[3],
                },
            )
        await super()._send(message)  # type: ignore[misc]

    async def request(self, payload: Any) -> Any:
        """Send a CALL and wait for its result (one outstanding call per connection).

        Raises:
            CommandError: CALLERROR (its code), ``Timeout`` after ``response_timeout_s``,
                ``Closed`` when the connection is gone.
        """
        try:
            result = await self.call(payload, suppress=False)
        except OCPPError as exc:
            self._answered()
            raise CommandError(str(exc.code), str(exc.description)) from exc
        except TimeoutError as exc:
            self._timed_out.update(self._outstanding)  # a late reply is dropped, not taken
            self._outstanding.clear()  # for the reply to the next request
            self._unanswered(type(payload).__name__)
            raise CommandError("Timeout") from exc
        except ConnectionClosed as exc:
            raise CommandError("Closed") from exc
        self._answered()
        return result

    def _unanswered(self, action: str) -> None:
        host = self.host
        station = host.registry.station(self.id)
        if station.unresponsive_since is None:
            station.unresponsive_since = host.now
            timeout_s = host.config.response_timeout_s
            logger.warning("station %s: no reply to %s in %.1f s", self.id, action, timeout_s)
            host.emit(
                "csms",
                "station.unresponsive",
                {"station": self.id, "action": action, "timeout_s": timeout_s},
            )

    def _answered(self) -> None:
        host = self.host
        station = host.registry.station(self.id)
        if station.unresponsive_since is not None:
            since = station.unresponsive_since
            station.unresponsive_since = None
            host.emit(
                "csms",
                "station.responsive",
                {"station": self.id, "unresponsive_s": (host.now - since).total_seconds()},
            )

    def station_time(self, value: object, *, may_be_queued: bool = False) -> datetime | None:
        """A timestamp sent by the station, checked against the CSMS clock.

        Returns the time to use for a measurement: the station's timestamp, or None (use
        the receive time) while the station's clock is flagged as skewed (see the module
        docstring). ``may_be_queued``: the message may have been queued offline, so a
        timestamp in the past and before the current connection was opened proves
        nothing.
        """
        ts = parse_timestamp(value)
        host = self.host
        station = host.registry.station(self.id)
        if ts is not None:
            offset = (ts - host.now).total_seconds()
            tolerance = host.config.clock_skew_tolerance_s
            # a message queued offline is older than the connection that brought it
            connected = station.connected_at
            queued = may_be_queued and (connected is None or ts < connected)
            if offset > tolerance or (offset < -tolerance and not queued):
                if station.clock_skew_s is None:
                    logger.warning("station %s: clock off by %.0f s", self.id, offset)
                    host.emit(
                        "csms",
                        "station.clock_skew",
                        {"station": self.id, "offset_s": offset, "tolerance_s": tolerance},
                    )
                station.clock_skew_s = offset
            elif abs(offset) <= tolerance and station.clock_skew_s is not None:
                station.clock_skew_s = None
                host.emit(
                    "csms", "station.clock_skew_cleared", {"station": self.id, "offset_s": offset}
                )
        return None if station.clock_skew_s is not None else ts

    def _reading(self, meter_value: Any, *, may_be_queued: bool = False) -> MeterReading:
        """Parsed meter values, timed per :meth:`station_time`."""
        reading = parse_meter_values(meter_value)
        if reading.timestamp is not None:
            reading.timestamp = self.station_time(
                iso(reading.timestamp), may_be_queued=may_be_queued
            )
        return reading

    # --------------------------------------------------------- version specific

    async def _set_profile(
        self,
        evse_id: int,
        profile_id: int,
        purpose: ProfilePurpose,
        limit: float,
        unit: RateUnit,
        *,
        transaction_id: str | None = None,
        start: datetime | None = None,
    ) -> str:
        """SetChargingProfile with one period in this version's dialect; returns the status."""
        raise NotImplementedError

    async def send_tx_profile(
        self, evse_id: int, transaction_id: str, limit: float, unit: RateUnit
    ) -> str:
        """Send a TxProfile with one period; returns the status (``Accepted`` ...).

        OCPP 2.0.1 K01 / 1.6 section 5.16: SetChargingProfile, purpose TxProfile.
        """
        return await self._set_profile(
            evse_id,
            tx_profile_id(evse_id),
            "TxProfile",
            limit,
            unit,
            transaction_id=transaction_id,
        )

    async def install_default_profiles(
        self,
        limit_a: float,
        dc_defaults_w: list[tuple[int, float]],
        station_max_a: float | None,
        now: datetime,
    ) -> str:
        """TxDefaultProfile (A; W per DC EVSE) and optional station maximum profile.

        Returns:
            ``Accepted`` if every profile was accepted, else the first other status.
        """
        statuses = [
            await self._set_profile(0, TX_DEFAULT_PROFILE_ID, "TxDefaultProfile", limit_a, "A")
        ]
        for evse_id, limit_w in dc_defaults_w:
            statuses.append(
                await self._set_profile(
                    evse_id,
                    DC_TX_DEFAULT_PROFILE_BASE + evse_id,
                    "TxDefaultProfile",
                    limit_w,
                    "W",
                )
            )
        if station_max_a is not None:
            statuses.append(
                await self._set_profile(
                    0, STATION_MAX_PROFILE_ID, "StationMax", station_max_a, "A", start=now
                )
            )
        return _first_status(statuses)

    def _booted(
        self, vendor: str | None, model: str | None, firmware: str | None, serial: str | None
    ) -> None:
        host = self.host
        station = host.registry.station(self.id)
        station.vendor, station.model = vendor, model
        station.firmware, station.serial = firmware, serial
        station.booted_at = host.now
        host.emit(
            "csms",
            "station.booted",
            {"station": self.id, "version": self.version, "vendor": vendor, "model": model},
        )
        self._post_reply.append(lambda: host.station_booted(self))

    def _status(self, evse_id: int, connector_id: int, status: str) -> None:
        evse = self.host.registry.station(self.id).evse(evse_id)
        evse.connector_status[connector_id] = status
        evse.status_at = self.host.now


def _first_status(statuses: list[str]) -> str:
    return next((s for s in statuses if s != "Accepted"), "Accepted")


class Station201(StationLink, _ChargePoint201):  # type: ignore[misc]
    """OCPP 2.0.1 endpoint (CSMS side) of one charging station."""

    version = "2.0.1"

    def __init__(self, station_id: str, connection: Any, host: StationHost) -> None:
        super().__init__(
            station_id,
            connection,
            response_timeout=host.config.response_timeout_s,
            logger=_ocpp_logger,
        )
        self._setup(host, frozenset(a.value for a in Action201))

    async def _set_profile(
        self,
        evse_id: int,
        profile_id: int,
        purpose: ProfilePurpose,
        limit: float,
        unit: RateUnit,
        *,
        transaction_id: str | None = None,
        start: datetime | None = None,
    ) -> str:
        """See :meth:`StationLink._set_profile` (K01 SetChargingProfile; 2.1: ChargingOnly)."""
        profile = profile_v201(
            profile_id,
            "ChargingStationMaxProfile" if purpose == "StationMax" else purpose,
            limit,
            unit,
            transaction_id=transaction_id,
            start=start,
        )
        result = await self.request(
            self._call.SetChargingProfile(evse_id=evse_id, charging_profile=profile)
        )
        return str(result.status)

    @on("BootNotification")
    def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        """B01: accept, return the heartbeat interval; default profiles follow the reply."""
        self._booted(
            charging_station.get("vendor_name"),
            charging_station.get("model"),
            charging_station.get("firmware_version"),
            charging_station.get("serial_number"),
        )
        return result201.BootNotification(
            current_time=iso(self.host.now),
            interval=self.host.config.heartbeat_interval_s,
            status="Accepted",
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        """G02: the CSMS time."""
        return result201.Heartbeat(current_time=iso(self.host.now))

    @on("StatusNotification")
    def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> Any:
        """G01: remember the connector status; learns the EVSE; checks the clock."""
        self.station_time(timestamp)
        self._status(evse_id, connector_id, connector_status)
        return result201.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        """C01: accepted unless an allow list is configured and the token is not on it."""
        status = self.host.id_token_status(id_token.get("id_token"))
        return result201.Authorize(id_token_info={"status": status})

    @on("TransactionEvent")
    def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        **kwargs: Any,
    ) -> Any:
        """E01-E15: Started/Updated/Ended; meter values update the transaction."""
        host, registry, now = self.host, self.host.registry, self.host.now
        tx_id = str(transaction_info["transaction_id"])
        evse = kwargs.get("evse") or {}
        token = (kwargs.get("id_token") or {}).get("id_token")
        tx = registry.transaction(self.id, tx_id)
        created = False
        if tx is None:
            tx, created = registry.open_transaction(self.id, tx_id, int(evse.get("id", 0)), now)
        elif not tx.active:  # an event after Ended: keep the record closed
            return result201.TransactionEvent()
        if "id" in evse and tx.evse_id != evse["id"]:
            registry.move_transaction(tx, int(evse["id"]), now)
        if "connector_id" in evse:
            tx.connector_id = int(evse["connector_id"])
        tx.id_token = token or tx.id_token
        tx.charging_state = transaction_info.get("charging_state", tx.charging_state)
        if kwargs.get("number_of_phases_used") is not None:
            tx.phases_used = int(kwargs["number_of_phases_used"])
        if kwargs.get("cable_max_current") is not None:
            tx.cable_max_current_a = float(kwargs["cable_max_current"])
        queued = bool(kwargs.get("offline"))
        self.station_time(timestamp, may_be_queued=queued)
        reading = self._reading(kwargs.get("meter_value"), may_be_queued=queued)
        if kwargs.get("meter_value"):
            tx.apply(reading, now)
        if created:
            host.transaction_started(tx)
        if event_type == "Ended":
            reason = transaction_info.get("stopped_reason", "Local")
            registry.end_transaction(tx, now, reason, reading.energy_wh)
            host.transaction_ended(tx)
        if token is None:
            return result201.TransactionEvent()
        return result201.TransactionEvent(id_token_info={"status": host.id_token_status(token)})

    @on("MeterValues")
    def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        """J01: meter values outside TransactionEvent go to the EVSE's open transaction."""
        tx = self.host.registry.active_transaction_on(self.id, evse_id)
        if tx is not None:
            tx.apply(self._reading(meter_value), self.host.now)
        return result201.MeterValues()

    @on("NotifyEVChargingNeeds")
    def on_notify_ev_charging_needs(
        self, evse_id: int, charging_needs: dict[str, Any], **_: Any
    ) -> Any:
        """K15: vehicle limits, requested energy and departure (ISO 15118)."""
        evse = self.host.registry.station(self.id).evse(evse_id)
        evse.ev_transfer_mode = charging_needs.get("requested_energy_transfer")
        evse.ev_departure = parse_timestamp(charging_needs.get("departure_time"))
        ac = charging_needs.get("ac_charging_parameters")
        dc = charging_needs.get("dc_charging_parameters")
        if isinstance(ac, dict):
            evse.ev_max_current_a = float(ac["ev_max_current"])
            evse.ev_min_current_a = float(ac["ev_min_current"])
            evse.ev_energy_wh = float(ac["energy_amount"])
        if isinstance(dc, dict):
            if dc.get("ev_max_power") is not None:
                evse.ev_max_power_w = float(dc["ev_max_power"])
            if dc.get("energy_amount") is not None:
                evse.ev_energy_wh = float(dc["energy_amount"])
        return result201.NotifyEVChargingNeeds(status="Accepted")

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        """B07: acknowledged."""
        return result201.NotifyReport()

    @on("NotifyEvent")
    def on_notify_event(self, **_: Any) -> Any:
        """N07: acknowledged."""
        return result201.NotifyEvent()

    @on("SecurityEventNotification")
    def on_security_event_notification(self, **_: Any) -> Any:
        """A04: acknowledged."""
        return result201.SecurityEventNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **_: Any) -> Any:
        """L01: acknowledged."""
        return result201.FirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status_notification(self, **_: Any) -> Any:
        """N01: acknowledged."""
        return result201.LogStatusNotification()

    @on("NotifyChargingLimit")
    def on_notify_charging_limit(self, **_: Any) -> Any:
        """K11: acknowledged."""
        return result201.NotifyChargingLimit()

    @on("ClearedChargingLimit")
    def on_cleared_charging_limit(self, **_: Any) -> Any:
        """K13: acknowledged."""
        return result201.ClearedChargingLimit()

    @on("ReportChargingProfiles")
    def on_report_charging_profiles(self, **_: Any) -> Any:
        """K09: acknowledged."""
        return result201.ReportChargingProfiles()

    @on("NotifyMonitoringReport")
    def on_notify_monitoring_report(self, **_: Any) -> Any:
        """N02: acknowledged."""
        return result201.NotifyMonitoringReport()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        """P01: no vendor extensions here."""
        return result201.DataTransfer(status="UnknownVendorId")


class Station21(Station201):
    """OCPP 2.1 endpoint (CSMS side): the 2.0.1 handlers on the 2.1 schemas, plus V2G.

    The ``ocpp`` library's ``v21.ChargePoint`` only swaps the call / call-result modules
    and the schema folder; this class does the same on :class:`Station201` (whose
    handlers return dataclasses that serialise to valid 2.1 payloads). Meter values may
    carry ``Energy.Active.Export.Register`` / ``Power.Active.Export`` (see
    :mod:`controllers.csms.meter`). :meth:`send_setpoint` sends a CentralSetpoint
    TxProfile (signed, W; positive = charge, negative = discharge).
    """

    version = "2.1"
    _call = call21
    _call_result = result21
    _ocpp_version = "2.1"

    def __init__(self, station_id: str, connection: Any, host: StationHost) -> None:
        super().__init__(station_id, connection, host)
        self._known_actions = frozenset(a.value for a in Action21)

    async def send_setpoint(self, evse_id: int, transaction_id: str, setpoint_w: float) -> str:
        """TxProfile with one CentralSetpoint period [W, signed]; returns the status."""
        profile = profile_v21_setpoint(
            tx_profile_id(evse_id), setpoint_w, transaction_id=transaction_id
        )
        result = await self.request(
            call21.SetChargingProfile(evse_id=evse_id, charging_profile=profile)
        )
        return str(result.status)


class Station16(StationLink, _ChargePoint16):  # type: ignore[misc]
    """OCPP 1.6 endpoint (central system side) of one charge point."""

    version = "1.6"

    def __init__(self, station_id: str, connection: Any, host: StationHost) -> None:
        super().__init__(
            station_id,
            connection,
            response_timeout=host.config.response_timeout_s,
            logger=_ocpp_logger,
        )
        self._setup(host, frozenset(a.value for a in Action16))

    async def _set_profile(
        self,
        evse_id: int,
        profile_id: int,
        purpose: ProfilePurpose,
        limit: float,
        unit: RateUnit,
        *,
        transaction_id: str | None = None,
        start: datetime | None = None,
    ) -> str:
        """See :meth:`StationLink._set_profile` (1.6 section 5.16 SetChargingProfile)."""
        profile = profile_v16(
            profile_id,
            "ChargePointMaxProfile" if purpose == "StationMax" else purpose,
            limit,
            unit,
            transaction_id=None if transaction_id is None else int(transaction_id),
            start=start,
        )
        result = await self.request(
            call16.SetChargingProfile(connector_id=evse_id, cs_charging_profiles=profile)
        )
        return str(result.status)

    @on("BootNotification")
    def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **kwargs: Any
    ) -> Any:
        """4.2: accept, return the heartbeat interval; default profiles follow the reply."""
        self._booted(
            charge_point_vendor,
            charge_point_model,
            kwargs.get("firmware_version"),
            kwargs.get("charge_point_serial_number"),
        )
        return result16.BootNotification(
            current_time=iso(self.host.now),
            interval=self.host.config.heartbeat_interval_s,
            status="Accepted",
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        """4.6: the central system time."""
        return result16.Heartbeat(current_time=iso(self.host.now))

    @on("StatusNotification")
    def on_status_notification(
        self, connector_id: int, error_code: str, status: str, **_: Any
    ) -> Any:
        """4.9: remember the connector status (connector id = EVSE id, 0 = station)."""
        if "timestamp" in _:
            self.station_time(_["timestamp"])
        self._status(connector_id, connector_id, status)
        return result16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_tag: str, **_: Any) -> Any:
        """4.1: accepted unless an allow list is configured and the tag is not on it."""
        return result16.Authorize(id_tag_info={"status": self.host.id_token_status(id_tag)})

    @on("StartTransaction")
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> Any:
        """4.8: a new transaction id from the CSMS counter."""
        host = self.host
        number = host.next_transaction_id()
        tx, _created = host.registry.open_transaction(self.id, str(number), connector_id, host.now)
        tx.id_token, tx.connector_id = id_tag, connector_id
        tx.meter_start_wh = tx.energy_wh = float(meter_start)
        host.transaction_started(tx)
        return result16.StartTransaction(
            transaction_id=number, id_tag_info={"status": host.id_token_status(id_tag)}
        )

    @on("StopTransaction")
    def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **kwargs: Any
    ) -> Any:
        """4.10: end the transaction; ``transactionData`` meter values are applied."""
        host = self.host
        tx = host.registry.transaction(self.id, str(transaction_id))
        if tx is None:  # unknown to us (e.g. started while we were down)
            tx, _ = host.registry.open_transaction(self.id, str(transaction_id), 0, host.now)
            host.transaction_started(tx)
        if tx.active:
            if kwargs.get("transaction_data"):
                tx.apply(self._reading(kwargs["transaction_data"], may_be_queued=True), host.now)
            reason = kwargs.get("reason", "Local")
            host.registry.end_transaction(tx, host.now, reason, float(meter_stop))
            host.transaction_ended(tx)
        id_tag = kwargs.get("id_tag")
        if id_tag is None:
            return result16.StopTransaction()
        return result16.StopTransaction(id_tag_info={"status": host.id_token_status(id_tag)})

    @on("MeterValues")
    def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any
    ) -> Any:
        """4.7: applied to the transaction named, else the connector's open one."""
        registry = self.host.registry
        tx = None
        if kwargs.get("transaction_id") is not None:
            tx = registry.transaction(self.id, str(kwargs["transaction_id"]))
        if tx is None:
            tx = registry.active_transaction_on(self.id, connector_id)
        if tx is not None and tx.active:
            tx.apply(self._reading(meter_value, may_be_queued=True), self.host.now)
        return result16.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        """4.3: no vendor extensions here."""
        return result16.DataTransfer(status="UnknownVendorId")

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status_notification(self, **_: Any) -> Any:
        """4.4: acknowledged."""
        return result16.DiagnosticsStatusNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **_: Any) -> Any:
        """4.5: acknowledged."""
        return result16.FirmwareStatusNotification()
