"""SetChargingProfile payloads (OCPP 2.0.1 Part 2 section K; OCPP 1.6 section 3.13).

Profiles the CSMS installs:

- TxDefaultProfile (stack level 0, id 1, station-wide): the limit every new transaction
  starts with, ``default_current_a`` (0 A by default: a new transaction waits for the
  DLM). DC EVSEs get their own TxDefaultProfile in W (id ``100 + evse id``).
- ChargingStationMaxProfile / 1.6 ChargePointMaxProfile (stack level 0, id 2), optional.
- TxProfile per EVSE (id ``1000 + evse id``, stack level 0, bound to the transaction):
  the DLM set-point, one period from the start of the schedule. The same id is reused,
  so a new set-point replaces the previous profile (K01.FR.05).

Kinds: Relative for TxDefault and TxProfile (the period starts at once, no clock needed
on the station); Absolute with ``startSchedule`` for the station maximum (Relative
needs a session start, which a station-wide maximum does not have). Limits carry at
most one decimal (the 2.0.1 schema's description, the 1.6 schema's ``multipleOf: 0.1``).

OCPP 2.1 (V2G): :func:`profile_v21_setpoint` builds the TxProfile of a signed set-point,
one period with ``operationMode`` ``CentralSetpoint``, ``setpoint`` in W (positive =
import / charging, negative = export / discharging), ``limit = max(setpoint, 0)`` and
``dischargeLimit = min(setpoint, 0)`` so the station never overshoots it in either
direction. Same id as the DLM's TxProfile (it replaces it, and the DLM's replaces it back).

The builders return snake_case dicts for the ocpp library's call dataclasses.
"""

from datetime import datetime
from typing import Any, Literal

RateUnit = Literal["A", "W"]

TX_DEFAULT_PROFILE_ID = 1
STATION_MAX_PROFILE_ID = 2
DC_TX_DEFAULT_PROFILE_BASE = 100
TX_PROFILE_BASE = 1000


def tx_profile_id(evse_id: int) -> int:
    """Id of the TxProfile of an EVSE (stable: each new one replaces the last)."""
    return TX_PROFILE_BASE + evse_id


def _limit(value: float) -> float:
    return round(max(value, 0.0), 1)


def profile_v201(
    profile_id: int,
    purpose: Literal["TxDefaultProfile", "TxProfile", "ChargingStationMaxProfile"],
    limit: float,
    unit: RateUnit,
    *,
    transaction_id: str | None = None,
    start: datetime | None = None,
) -> dict[str, Any]:
    """A 2.0.1 ``ChargingProfileType`` with one schedule of one period.

    Args:
        profile_id: chargingProfile.id (also used as the schedule id).
        purpose: chargingProfilePurpose.
        limit: limit in ``unit`` (A per phase or W), rounded to 0.1.
        unit: chargingRateUnit.
        transaction_id: required for TxProfile.
        start: startSchedule; given = Absolute kind, None = Relative.
    """
    schedule: dict[str, Any] = {
        "id": profile_id,
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": 0, "limit": _limit(limit)}],
    }
    if start is not None:
        schedule["start_schedule"] = start.isoformat().replace("+00:00", "Z")
    profile: dict[str, Any] = {
        "id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative" if start is None else "Absolute",
        "charging_schedule": [schedule],
    }
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    return profile


def profile_v21_setpoint(
    profile_id: int, setpoint_w: float, *, transaction_id: str
) -> dict[str, Any]:
    """A 2.1 TxProfile: one CentralSetpoint period of ``setpoint_w`` [W, signed]."""
    sp = round(setpoint_w, 1)
    period = {
        "start_period": 0,
        "operation_mode": "CentralSetpoint",
        "setpoint": sp,
        "limit": max(sp, 0.0),
        "discharge_limit": min(sp, 0.0),
    }
    return {
        "id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Relative",
        "charging_schedule": [
            {"id": profile_id, "charging_rate_unit": "W", "charging_schedule_period": [period]}
        ],
        "transaction_id": transaction_id,
    }


def profile_v16(
    profile_id: int,
    purpose: Literal["TxDefaultProfile", "TxProfile", "ChargePointMaxProfile"],
    limit: float,
    unit: RateUnit,
    *,
    transaction_id: int | None = None,
    start: datetime | None = None,
) -> dict[str, Any]:
    """A 1.6 ``csChargingProfiles`` with one period (arguments as :func:`profile_v201`)."""
    schedule: dict[str, Any] = {
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": 0, "limit": _limit(limit)}],
    }
    if start is not None:
        schedule["start_schedule"] = start.isoformat().replace("+00:00", "Z")
    profile: dict[str, Any] = {
        "charging_profile_id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative" if start is None else "Absolute",
        "charging_schedule": schedule,
    }
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    return profile
