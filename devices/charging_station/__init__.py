"""Emulated OCPP 1.6 / 2.0.1 / 2.1 charging station: EVSEs, vehicles, profiles, V2G (2.1)."""

from devices.charging_station.evse import EvseReading, EvseSpec, StationSpec
from devices.charging_station.profiles import (
    ChargingProfile,
    ChargingProfileKind,
    ChargingProfilePurpose,
    ChargingRateUnit,
    ChargingSchedule,
    ChargingSchedulePeriod,
    CompositePeriod,
    Limit,
    Operation,
    OperationMode,
    ProfileRejectedError,
    ProfileStore,
    RecurrencyKind,
)
from devices.charging_station.station import ChargingStation, EventSink, client_ssl_context
from devices.charging_station.tamper import TelemetryTamper

__all__ = [
    "ChargingProfile",
    "ChargingProfileKind",
    "ChargingProfilePurpose",
    "ChargingRateUnit",
    "ChargingSchedule",
    "ChargingSchedulePeriod",
    "ChargingStation",
    "CompositePeriod",
    "EventSink",
    "EvseReading",
    "EvseSpec",
    "Limit",
    "Operation",
    "OperationMode",
    "ProfileRejectedError",
    "ProfileStore",
    "RecurrencyKind",
    "StationSpec",
    "TelemetryTamper",
    "client_ssl_context",
]
