"""OCPP-J framing and schema validation for the station emulator.

* Every message sent or received is validated against the official OCPP JSON schemas shipped
  with the ``ocpp`` package, compiled once per schema with ``fastjsonschema`` (the library's
  own path validates with ``jsonschema`` in a thread pool, ~15x slower).
* Incoming CALLs are answered with the CALLERROR codes of OCPP-J 1.6 §4.2.3 and OCPP 2.0.1
  Part 4 §4.3: unknown action -> NotImplemented, known but unsupported -> NotSupported,
  missing field -> OccurrenceConstraintViolation (1.6 spells it OccurenceConstraintViolation),
  wrong JSON type or bad date/length -> TypeConstraintViolation, value outside an enum or
  range -> PropertyConstraintViolation, additional property -> FormatViolation (1.6:
  FormationViolation), frame not an RPC frame -> RpcFrameworkError (2.0.1) / ProtocolError.

:class:`StationLinkMixin` is mixed into ``ocpp.v201.ChargePoint`` / ``ocpp.v16.ChargePoint``
subclasses: it replaces the library's message routing (to hand replies to the station's own
call path and count running handlers) and its handler dispatch (to validate with the compiled
schemas). Handlers stay ordinary ``@on`` methods.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import fastjsonschema
import ocpp
import orjson
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.messages import Call
from ocpp.routing import on as _on
from ocpp.v16.enums import Action as Action16
from ocpp.v21.enums import Action as Action21
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from devices.charging_station.station import ChargingStation

__all__ = ["RpcError", "StationLinkMixin", "error_code", "handler", "validate"]

_F = TypeVar("_F", bound=Callable[..., Any])


def handler(action: str) -> Callable[[_F], _F]:
    """``ocpp.routing.on`` with a type: marks a ChargePoint method as the handler of ``action``."""
    return cast(Callable[[_F], _F], _on(action))


LOGGER = logging.getLogger("devices.charging_station")

_SCHEMA_ROOT = Path(ocpp.__file__).parent
_VALIDATORS: dict[tuple[str, str, bool], Callable[[Any], Any] | None] = {}

_CODES_16 = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "RpcFrameworkError": "ProtocolError",
    "MessageTypeNotSupported": "ProtocolError",
}


class RpcError(Exception):
    """An OCPP-J CALLERROR to send: generic (2.0.1 spelling) ``code``, description, details."""

    def __init__(self, code: str, description: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


def error_code(version: str, code: str) -> str:
    """The CALLERROR code spelled as OCPP ``version`` ("1.6", "2.0.1", "2.1") spells it."""
    return _CODES_16.get(code, code) if version == "1.6" else code


def _validator(version: str, action: str, response: bool) -> Callable[[Any], Any] | None:
    key = (version, action, response)
    try:
        return _VALIDATORS[key]
    except KeyError:
        pass
    if version == "1.6":
        name = action + ("Response" if response else "")
        path = _SCHEMA_ROOT / "v16" / "schemas" / f"{name}.json"
    else:
        name = action + ("Response" if response else "Request")
        folder = "v21" if version == "2.1" else "v201"
        path = _SCHEMA_ROOT / folder / "schemas" / f"{name}.json"
    fn: Callable[[Any], Any] | None = None
    if path.is_file():
        schema = orjson.loads(path.read_text(encoding="utf-8-sig"))
        fn = fastjsonschema.compile(schema)
    _VALIDATORS[key] = fn
    return fn


_RULE_CODES = {
    "type": "TypeConstraintViolation",
    "format": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "minLength": "TypeConstraintViolation",
    "required": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "additionalProperties": "FormatViolation",
    "enum": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "multipleOf": "PropertyConstraintViolation",
    "pattern": "PropertyConstraintViolation",
}


def validate(version: str, action: str, payload: Any, *, response: bool = False) -> None:
    """Validate ``payload`` of ``action`` (request or response) against the official schema.

    Raises:
        RpcError: with the generic code of the violation (see module docstring);
            NotImplemented if the version has no schema for ``action``.
    """
    fn = _validator(version, action, response)
    if fn is None:
        raise RpcError("NotImplemented", f"no schema for {action} in OCPP {version}")
    try:
        fn(payload)
    except fastjsonschema.JsonSchemaValueException as e:
        code = _RULE_CODES.get(e.rule or "", "FormatViolation")
        raise RpcError(code, e.message, {"path": ".".join(map(str, e.path or []))}) from None


def known_action(version: str, action: str) -> bool:
    """Whether ``action`` is an action of OCPP ``version``."""
    enum: Any = {"1.6": Action16, "2.1": Action21}.get(version, Action201)
    try:
        enum(action)
    except ValueError:
        return False
    return True


class StationLinkMixin:
    """Routing and dispatch for a ChargePoint owned by a :class:`ChargingStation`.

    Must precede the ``ocpp`` ChargePoint class in the bases. The owner sets ``_station``.
    """

    _station: ChargingStation
    _ocpp_version: str
    route_map: dict[str, dict[str, Any]]

    async def route_message(self, raw_msg: str | bytes) -> None:
        """Route one frame: replies to the station's call path, CALLs to the handlers."""
        st = self._station
        if st._record_frames:
            st._frame("in", raw_msg)
        version = self._ocpp_version
        try:
            msg = orjson.loads(raw_msg)
        except orjson.JSONDecodeError:
            st._note_bad_frame(raw_msg, "not JSON")
            if version != "1.6":  # 2.0.1 Part 4 §4.2.3: messageId "-1" if unreadable
                await self._send_error("-1", "RpcFrameworkError", "frame is not valid JSON", None)
            return
        if not isinstance(msg, list) or not msg or not isinstance(msg[0], int):
            st._note_bad_frame(raw_msg, "not an OCPP-J frame")
            if version != "1.6":
                await self._send_error("-1", "RpcFrameworkError", "not an OCPP-J frame", None)
            return
        mtype = msg[0]
        if mtype in (3, 4):
            st._on_reply(msg)
            return
        uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else "-1"
        if version == "2.1" and mtype in (5, 6):
            # OCPP-J 2.1 CALLRESULTERROR (5) / SEND (6): never answered; the emulator
            # neither uses nor acts on them (the ``ocpp`` 2.1.0 library has neither).
            st._emit("ocpp.unhandled_frame", {"message_type": mtype, "message_id": uid})
            return
        if mtype != 2:
            st._note_bad_frame(raw_msg, f"message type {mtype}")
            await self._send_error(
                uid, "MessageTypeNotSupported", f"MessageTypeId {mtype} not supported", None
            )
            return
        if len(msg) != 4 or uid == "-1" or not isinstance(msg[2], str):
            st._note_bad_frame(raw_msg, "malformed CALL")
            await self._send_error(uid, "RpcFrameworkError", "malformed CALL frame", None)
            return
        if not isinstance(msg[3], dict):
            await self._send_error(uid, "FormatViolation", "payload is not an object", msg[2])
            return
        if st.faults and st.faults.reply_delay_s(st.now) is None:  # injected drop_responses
            st._emit("fault.call_dropped", {"action": msg[2], "message_id": uid})
            return
        st._handler_begin()
        try:
            await self._dispatch(uid, msg[2], msg[3])
        finally:
            st._handler_end()

    async def _dispatch(self, uid: str, action: str, payload: dict[str, Any]) -> None:
        st = self._station
        version = self._ocpp_version
        handlers = self.route_map.get(action)
        if handlers is None or "_on_action" not in handlers:
            if known_action(version, action):
                await self._send_error(uid, "NotSupported", f"{action} not supported", action)
            else:
                await self._send_error(uid, "NotImplemented", f"unknown action {action}", action)
            return
        try:
            validate(version, action, payload)
            handler = handlers["_on_action"]
            response = handler(**camel_to_snake_case(payload))
            if inspect.isawaitable(response):
                response = await response
            if isinstance(response, dict):
                result = response
            else:
                result = snake_to_camel_case(remove_nones(serialize_as_dict(response)))
            validate(version, action, result, response=True)
        except RpcError as e:
            await self._send_error(uid, e.code, e.description, action, e.details)
            return
        except Exception as e:  # a bug in a handler: InternalError, keep the link
            LOGGER.exception("%s: handler for %s failed", st.station_id, action)
            await self._send_error(uid, "InternalError", f"{type(e).__name__}: {e}", action)
            return
        await self._send_frame(orjson.dumps([3, uid, result]).decode())

    async def _send_error(
        self,
        uid: str,
        code: str,
        description: str,
        action: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        code = error_code(self._ocpp_version, code)
        self._station._emit(
            "ocpp.callerror",
            {"direction": "out", "action": action, "code": code, "description": description},
        )
        await self._send_frame(orjson.dumps([4, uid, code, description, details or {}]).decode())

    async def _send_frame(self, frame: str) -> None:
        st = self._station
        if st.faults:
            delay = st.faults.reply_delay_s(st.now)
            if delay is None:  # injected drop_responses
                return
            if delay > 0:  # injected delay_responses: real time, like the reply timeout
                st._spawn(self._send_later(frame, delay))
                return
        if st._record_frames:
            st._frame("out", frame)
        await self._connection.send(frame)  # type: ignore[attr-defined]

    async def _send_later(self, frame: str, delay_s: float) -> None:
        """Send a reply ``delay_s`` seconds of real time late (injected fault)."""
        await asyncio.sleep(delay_s)
        st = self._station
        if st._record_frames:
            st._frame("out", frame)
        try:
            await self._connection.send(frame)  # type: ignore[attr-defined]
        except ConnectionClosed:
            st._emit("fault.late_reply_lost", {"frame": frame[:200]})

    async def _send(self, message: str) -> None:  # the library's path, unused by us
        await self._send_frame(message)

    async def _handle_call(self, msg: Call) -> None:  # keep the library's entry point working
        await self._dispatch(msg.unique_id, msg.action, msg.payload)
