"""OCPP 2.1 specifics: 2.0.1's flows plus V2G (bidirectional EVSEs, operation modes).

OCPP 2.1 keeps 2.0.1's transaction and smart-charging messages (validated here against the
2.1 schemas shipped with the ``ocpp`` package), so :class:`V21Dialect` reuses
:class:`~devices.charging_station.v201.V201Dialect` and adds:

* subprotocol ``ocpp2.1``;
* charging profiles whose periods carry ``operationMode`` (ChargingOnly, CentralSetpoint,
  Idle implemented; the others are rejected, see
  :meth:`~devices.charging_station.station.ChargingStation.install_profile`),
  ``setpoint`` (negative = discharge) and ``dischargeLimit``;
* metering of both directions: ``Energy.Active.Import.Register`` and
  ``Energy.Active.Export.Register`` (Wh), ``Power.Active.Import`` and
  ``Power.Active.Export`` (W, each >= 0: the one not flowing is 0), ``Current.Import`` or
  ``Current.Export`` per phase (A), and ``operationMode`` in the transactionInfo of
  TransactionEvent Updated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21

from devices.charging_station.v201 import StationChargePoint201, V201Dialect

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from devices.charging_station.evse import Evse, Session

__all__ = ["StationChargePoint21", "V21Dialect"]

_UNIT_WH = {"unit": "Wh"}
_UNIT_W = {"unit": "W"}
_UNIT_A = {"unit": "A"}
_UNIT_PCT = {"unit": "Percent"}
_PHASES = ("L1", "L2", "L3")


class V21Dialect(V201Dialect):
    """OCPP 2.1 messages: the 2.0.1 flow with bidirectional metering."""

    version = "2.1"
    subprotocol = "ocpp2.1"

    def make_charge_point(self, ws: ClientConnection) -> StationChargePoint21:
        """A 2.1 ChargePoint bound to this station."""
        cp = StationChargePoint21(self.st.station_id, ws, response_timeout=30)
        cp._station = self.st
        return cp

    def _registers(self, ev: Evse, context: str) -> list[dict[str, Any]]:
        """Import and export energy registers (Wh)."""
        return [
            {
                "value": ev.reported_register_wh,
                "measurand": "Energy.Active.Import.Register",
                "context": context,
                "unitOfMeasure": _UNIT_WH,
            },
            {
                "value": ev.export_wh,
                "measurand": "Energy.Active.Export.Register",
                "context": context,
                "unitOfMeasure": _UNIT_WH,
            },
        ]

    def _sampled(self, ev: Evse, sess: Session | None, context: str) -> list[dict[str, Any]]:
        """Registers, import and export power (W), current per phase (A), SoC on DC."""
        p_w = ev.power_kw * 1000.0
        sv = self._registers(ev, context)
        sv.append({"value": max(p_w, 0.0), "measurand": "Power.Active.Import",
                   "context": context, "unitOfMeasure": _UNIT_W})
        sv.append({"value": max(-p_w, 0.0), "measurand": "Power.Active.Export",
                   "context": context, "unitOfMeasure": _UNIT_W})
        measurand = "Current.Export" if p_w < 0.0 else "Current.Import"
        n = ev.spec.phases if ev.spec.kind == "AC" else 3
        for i in range(n):
            sv.append({"value": ev.station_current_a[i], "measurand": measurand,
                       "phase": _PHASES[i], "context": context, "unitOfMeasure": _UNIT_A})
        if sess is not None:  # 2.1 V2G needs the SoC (ISO 15118-20 reports it, AC too)
            sv.append({"value": round(sess.reported_soc * 100.0, 3), "measurand": "SoC",
                       "location": "EV", "context": context, "unitOfMeasure": _UNIT_PCT})
        return sv

    def _info(self, ev: Evse, sess: Session) -> dict[str, Any]:
        """The transactionInfo with the 2.1 operationMode in force."""
        info = super()._info(ev, sess)
        if ev.operation_mode is not None:
            info["operationMode"] = ev.operation_mode
        return info


class StationChargePoint21(StationChargePoint201):
    """The 2.0.1 handlers on an OCPP 2.1 link (2.1 schemas, 2.1 action list).

    SetChargingProfile accepts the 2.1 profile fields (``operationMode``, ``setpoint``,
    ``dischargeLimit``; ``limit`` optional); the checks are the station's
    (:meth:`~devices.charging_station.station.ChargingStation.install_profile`).
    """

    _call = call21
    _call_result = result21
    _ocpp_version = "2.1"
