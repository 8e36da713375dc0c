"""OCPP-J RPC framework details: error codes per version, station id from the URL.

CALLERROR codes (OCPP-J 1.6 section 4.2.3 table 7; OCPP 2.0.1 Part 4 section 4.3):

==========================  =============================  ==============================
situation                   1.6                            2.0.1
==========================  =============================  ==============================
not JSON / no message id    FormationViolation, id "-1"    RpcFrameworkError, id "-1"
unknown MessageTypeId       FormationViolation             MessageTypeNotSupported
unknown action              NotImplemented                 NotImplemented
known action, no handler    NotSupported                   NotSupported
missing required field      ProtocolError ("incomplete")   OccurrenceConstraintViolation
wrong field type            TypeConstraintViolation        TypeConstraintViolation
extra field, bad enum ...   FormationViolation             FormatViolation
exception in a handler      InternalError                  InternalError
==========================  =============================  ==============================

Both specifications define NotImplemented as "Requested Action is not known by receiver"
and NotSupported as "recognized but not supported"; the ocpp library (2.1.0) answers the
other way round, and spells 1.6 codes the 2.0.1 way, hence this table.
"""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    OccurenceConstraintViolationError,
    OccurrenceConstraintViolationError,
    OCPPError,
    ProtocolError,
)

SUBPROTOCOLS: tuple[str, ...] = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")
"""Accepted WebSocket subprotocols, preferred first."""

VERSION_OF_SUBPROTOCOL = {"ocpp2.1": "2.1", "ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}

MAX_DESCRIPTION = 255
"""errorDescription is limited to 255 characters (2.0.1 Part 4)."""


@dataclass(frozen=True)
class ErrorCodes:
    """The CALLERROR codes of one OCPP version."""

    frame: str
    message_type: str
    not_known: str
    not_supported: str
    missing_field: str
    format: str
    occurrence: str


CODES = {
    "1.6": ErrorCodes(
        frame="FormationViolation",
        message_type="FormationViolation",
        not_known="NotImplemented",
        not_supported="NotSupported",
        missing_field="ProtocolError",
        format="FormationViolation",
        occurrence="OccurenceConstraintViolation",
    ),
    "2.0.1": ErrorCodes(
        frame="RpcFrameworkError",
        message_type="MessageTypeNotSupported",
        not_known="NotImplemented",
        not_supported="NotSupported",
        missing_field="OccurrenceConstraintViolation",
        format="FormatViolation",
        occurrence="OccurrenceConstraintViolation",
    ),
}
CODES["2.1"] = CODES["2.0.1"]  # OCPP 2.1 Part 4 keeps 2.0.1's RPC error codes


def error_code(exc: OCPPError, version: str) -> str:
    """The CALLERROR code for a validation error raised while handling a CALL.

    Args:
        exc: the exception (the library raises ProtocolError for a missing field).
        version: ``"1.6"`` or ``"2.0.1"``.
    """
    codes = CODES[version]
    if isinstance(exc, ProtocolError):
        return codes.missing_field
    if isinstance(exc, FormatViolationError | FormationViolationError):
        return codes.format
    if isinstance(exc, OccurrenceConstraintViolationError | OccurenceConstraintViolationError):
        return codes.occurrence
    return str(exc.code)


def station_id_from_path(path: str) -> str | None:
    """The station identity: the last non-empty segment of the URL path.

    ``/CP1``, ``/ocpp/CP1`` and ``/ocpp/CP1/`` all give ``CP1`` (percent-decoded); the
    query is ignored. None for an empty path or an identity longer than 48 characters
    (the 2.0.1 identity limit) or with control characters.
    """
    segments = [s for s in urlsplit(path).path.split("/") if s]
    if not segments:
        return None
    station_id = unquote(segments[-1])
    if not station_id or len(station_id) > 48 or not station_id.isprintable():
        return None
    return station_id
