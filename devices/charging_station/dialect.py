"""What differs between OCPP versions, behind one interface used by ``ChargingStation``."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devices.charging_station.profiles import (
    ChargingProfile,
    ChargingProfileKind,
    ChargingProfilePurpose,
    ChargingRateUnit,
    ChargingSchedule,
    ChargingSchedulePeriod,
    OperationMode,
    RecurrencyKind,
)

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from devices.charging_station.evse import Evse, Session
    from devices.charging_station.station import ChargingStation

__all__ = ["Dialect", "iso", "parse_schedule", "parse_time"]


def iso(t: datetime) -> str:
    """ISO 8601 UTC with a trailing Z (milliseconds only when non-zero)."""
    t = t.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> datetime | None:
    """Parse an OCPP dateTime (RFC 3339); a value without offset is taken as UTC.

    Raises:
        ValueError: not a date-time.
    """
    if s is None:
        return None
    t = datetime.fromisoformat(s)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_schedule(s: dict[str, Any]) -> ChargingSchedule:
    """A snake_case ChargingSchedule(Type) payload (any version) as a ChargingSchedule.

    2.1 periods may omit ``limit`` (then ``math.inf``: only the hardware limits) and carry
    ``operationMode``, ``setpoint`` and ``dischargeLimit``.
    """
    return ChargingSchedule(
        charging_rate_unit=ChargingRateUnit(s["charging_rate_unit"]),
        periods=tuple(
            ChargingSchedulePeriod(
                start_period_s=int(p["start_period"]),
                limit=float(p["limit"]) if p.get("limit") is not None else math.inf,
                number_phases=p.get("number_phases"),
                operation_mode=OperationMode(p.get("operation_mode", "ChargingOnly")),
                setpoint=None if p.get("setpoint") is None else float(p["setpoint"]),
                discharge_limit=(
                    None if p.get("discharge_limit") is None else float(p["discharge_limit"])
                ),
            )
            for p in s["charging_schedule_period"]
        ),
        start_schedule=parse_time(s.get("start_schedule")),
        duration_s=s.get("duration"),
        min_charging_rate=s.get("min_charging_rate"),
        id=int(s.get("id", 0)),
    )


def make_profile(
    *,
    profile_id: int,
    stack_level: int,
    purpose: str,
    kind: str,
    schedule: dict[str, Any],
    recurrency: str | None,
    valid_from: str | None,
    valid_to: str | None,
    transaction_id: str | None,
) -> ChargingProfile:
    """Build a :class:`ChargingProfile` from parsed payload fields (1.6 names mapped)."""
    if purpose == "ChargePointMaxProfile":
        purpose = ChargingProfilePurpose.CHARGING_STATION_MAX.value
    return ChargingProfile(
        id=profile_id,
        stack_level=stack_level,
        purpose=ChargingProfilePurpose(purpose),
        kind=ChargingProfileKind(kind),
        schedule=parse_schedule(schedule),
        recurrency=RecurrencyKind(recurrency) if recurrency else None,
        valid_from=parse_time(valid_from),
        valid_to=parse_time(valid_to),
        transaction_id=transaction_id,
    )


class Dialect(ABC):
    """Version-specific messages and flows; the station calls these, they call it back."""

    version: str
    subprotocol: str

    def __init__(self, station: ChargingStation) -> None:
        self.st = station

    @abstractmethod
    def make_charge_point(self, ws: ClientConnection) -> Any:
        """An ``ocpp`` ChargePoint subclass instance with this version's handlers."""

    @abstractmethod
    def boot_payload(self) -> dict[str, Any]:
        """BootNotification request."""

    @abstractmethod
    def status_payload(self, ev: Evse) -> dict[str, Any]:
        """StatusNotification request for the EVSE's connector."""

    @abstractmethod
    def authorize_payload(self, sess: Session) -> dict[str, Any]:
        """Authorize request."""

    @abstractmethod
    def authorize_status(self, reply: dict[str, Any]) -> str:
        """AuthorizationStatus from an Authorize reply."""

    @abstractmethod
    def plugged_status(self) -> str:
        """Connector status when a vehicle plugs in (Occupied / Preparing)."""

    @abstractmethod
    async def start_transaction(self, ev: Evse, sess: Session, trigger: str) -> None:
        """Start the transaction of an authorized session (messages + bookkeeping)."""

    @abstractmethod
    async def end_transaction(self, ev: Evse, sess: Session, reason: str, trigger: str) -> None:
        """End the transaction (messages + bookkeeping); ``reason``: 2.0.1 ReasonEnumType."""

    @abstractmethod
    def meter_values(self, ev: Evse, sess: Session | None, context: str) -> None:
        """Queue sampled meter values of the EVSE (periodic in a transaction, or triggered)."""

    @abstractmethod
    def charging_state_changed(self, ev: Evse, sess: Session) -> None:
        """Queue what tells the CSMS the charging state changed."""

    @abstractmethod
    def unplugged_status(self, ev: Evse) -> None:
        """Set and queue the connector status after the vehicle left."""
