"""OCPP 2.0.1 specifics: messages the station sends and the handlers of CSMS requests.

Transactions follow OCPP 2.0.1 Part 2 E (TxStartPoint Authorized, TxStopPoint EVConnected):
TransactionEvent Started on authorization, Updated (MeterValuePeriodic every
TxUpdatedInterval, ChargingStateChanged), Ended when the cable is unplugged or on
RequestStopTransaction. Sampled values of a transaction go in TransactionEvent; MeterValues
is used outside a transaction (TriggerMessage).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from ocpp.v201 import ChargePoint as _ChargePoint201
from ocpp.v201 import call_result

from devices.charging_station.dialect import Dialect, iso, make_profile
from devices.charging_station.profiles import ChargingProfilePurpose
from devices.charging_station.rpc import RpcError, StationLinkMixin, handler

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from devices.charging_station.evse import Evse, Session
    from devices.charging_station.station import ChargingStation

__all__ = ["StationChargePoint201", "V201Dialect"]

_UNIT_WH = {"unit": "Wh"}
_UNIT_W = {"unit": "W"}
_UNIT_A = {"unit": "A"}
_UNIT_PCT = {"unit": "Percent"}
_PHASES = ("L1", "L2", "L3")


def sampled_values(
    st: ChargingStation, ev: Evse, sess: Session | None, context: str
) -> list[dict[str, Any]]:
    """Energy register (Wh), power (W), current per phase (A), SoC on DC (%)."""
    sv: list[dict[str, Any]] = [
        {
            "value": ev.reported_register_wh,
            "measurand": "Energy.Active.Import.Register",
            "context": context,
            "unitOfMeasure": _UNIT_WH,
        },
        {
            "value": ev.power_kw * 1000.0,
            "measurand": "Power.Active.Import",
            "context": context,
            "unitOfMeasure": _UNIT_W,
        },
    ]
    cur = ev.station_current_a
    n = ev.spec.phases if ev.spec.kind == "AC" else 3
    for i in range(n):
        sv.append(
            {
                "value": cur[i],
                "measurand": "Current.Import",
                "phase": _PHASES[i],
                "context": context,
                "unitOfMeasure": _UNIT_A,
            }
        )
    if ev.reports_soc and sess is not None:
        sv.append(
            {
                "value": round(sess.reported_soc * 100.0, 3),
                "measurand": "SoC",
                "location": "EV",
                "context": context,
                "unitOfMeasure": _UNIT_PCT,
            }
        )
    return sv


class V201Dialect(Dialect):
    """OCPP 2.0.1 messages and transaction flow."""

    version = "2.0.1"
    subprotocol = "ocpp2.0.1"

    def make_charge_point(self, ws: ClientConnection) -> StationChargePoint201:
        """A ChargePoint bound to this station."""
        cp = StationChargePoint201(self.st.station_id, ws, response_timeout=30)
        cp._station = self.st
        return cp

    def boot_payload(self) -> dict[str, Any]:
        """BootNotificationRequest, reason PowerUp (B01)."""
        spec = self.st.spec
        return {
            "chargingStation": {"model": spec.model, "vendorName": spec.vendor},
            "reason": "PowerUp",
        }

    def status_payload(self, ev: Evse) -> dict[str, Any]:
        """StatusNotificationRequest (G01)."""
        assert self.st.now is not None
        return {
            "timestamp": self.st.now_iso,
            "connectorStatus": ev.status,
            "evseId": ev.spec.evse_id,
            "connectorId": 1,
        }

    def authorize_payload(self, sess: Session) -> dict[str, Any]:
        """AuthorizeRequest (C01)."""
        return {"idToken": {"idToken": sess.id_token, "type": sess.id_token_type}}

    def authorize_status(self, reply: dict[str, Any]) -> str:
        """idTokenInfo.status."""
        return str(reply["idTokenInfo"]["status"])

    def plugged_status(self) -> str:
        """Connector status of an EVSE with a vehicle."""
        return "Occupied"

    def _tx_event(
        self,
        sess: Session,
        event_type: str,
        trigger: str,
        info: dict[str, Any],
        meter: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        st = self.st
        assert st.now is not None
        msg: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": st.now_iso,
            "triggerReason": trigger,
            "seqNo": sess.seq_no,
            "transactionInfo": info,
        }
        sess.seq_no += 1
        if meter is not None:
            msg["meterValue"] = [{"timestamp": msg["timestamp"], "sampledValue": meter}]
        if not st.online:
            msg["offline"] = True
        return msg

    async def start_transaction(self, ev: Evse, sess: Session, trigger: str) -> None:
        """TransactionEvent Started (E02/F01); a rejected idTokenInfo ends it (E05)."""
        st = self.st
        tx_id = self._transaction_id(st._new_transaction_number())
        st._begin_transaction(ev, sess, None)
        info: dict[str, Any] = {"transactionId": tx_id, "chargingState": sess.charging_state}
        if sess.remote_start_id is not None:
            info["remoteStartId"] = sess.remote_start_id
        msg = self._tx_event(
            sess,
            "Started",
            trigger,
            info,
            self._registers(ev, "Transaction.Begin"),
        )
        msg["idToken"] = {"idToken": sess.id_token, "type": sess.id_token_type}
        msg["evse"] = {"id": ev.spec.evse_id, "connectorId": 1}
        st._transaction_known(ev, sess, tx_id)
        reply = await st._ask("TransactionEvent", msg, tx=True)
        status = (reply or {}).get("idTokenInfo", {}).get("status", "Accepted")
        if status != "Accepted" and sess.tx_active:
            st._emit(
                "authorization.rejected",
                {"evse_id": ev.spec.evse_id, "id_token": sess.id_token, "status": status},
            )
            sess.authorized = False
            await self.end_transaction(ev, sess, "DeAuthorized", "Deauthorized")

    def _transaction_id(self, n: int) -> str:
        tx = f"{self.st.station_id}-{n}"
        if len(tx) > 36:  # identifierString[36]
            tx = str(uuid.uuid5(uuid.NAMESPACE_URL, tx))
        return tx

    async def end_transaction(self, ev: Evse, sess: Session, reason: str, trigger: str) -> None:
        """TransactionEvent Ended (E06/E07/F03)."""
        st = self.st
        if not sess.tx_active:
            return
        plugged = ev.session is sess and reason != "EVDisconnected"
        st._finish_transaction(ev, sess, reason)
        assert sess.transaction_id is not None
        info = {
            "transactionId": sess.transaction_id,
            "stoppedReason": reason,
            "chargingState": "EVConnected" if plugged else "Idle",
        }
        msg = self._tx_event(
            sess,
            "Ended",
            trigger,
            info,
            self._registers(ev, "Transaction.End"),
        )
        await st._wait([st._enqueue("TransactionEvent", msg, tx=True, wait=True)])

    def meter_values(self, ev: Evse, sess: Session | None, context: str) -> None:
        """Queue sampled values (J02).

        Periodic samples of a transaction go in TransactionEvent Updated (E02); samples
        outside one, or requested by TriggerMessage (F06), in MeterValuesRequest.
        """
        st = self.st
        assert st.now is not None
        sv = self._sampled(ev, sess, context)
        if sess is not None and sess.tx_active and context == "Sample.Periodic":
            assert sess.transaction_id is not None
            st._enqueue(
                "TransactionEvent",
                self._tx_event(
                    sess,
                    "Updated",
                    "MeterValuePeriodic",
                    self._info(ev, sess),
                    sv,
                ),
                tx=True,
            )
        else:
            st._enqueue(
                "MeterValues",
                {
                    "evseId": ev.spec.evse_id,
                    "meterValue": [{"timestamp": st.now_iso, "sampledValue": sv}],
                },
            )

    def _registers(self, ev: Evse, context: str) -> list[dict[str, Any]]:
        """Sampled values of a transaction's begin / end.

        The energy register, and the vehicle's SoC on an EVSE with ``report_soc`` (DC
        EVSEs without it report SoC in periodic samples only, as before).
        """
        sv: list[dict[str, Any]] = [
            {
                "value": ev.reported_register_wh,
                "measurand": "Energy.Active.Import.Register",
                "context": context,
                "unitOfMeasure": _UNIT_WH,
            }
        ]
        sess = ev.session
        if ev.spec.report_soc and sess is not None:
            sv.append({"value": round(sess.reported_soc * 100.0, 3), "measurand": "SoC",
                       "location": "EV", "context": context, "unitOfMeasure": _UNIT_PCT})
        return sv

    def _sampled(self, ev: Evse, sess: Session | None, context: str) -> list[dict[str, Any]]:
        """Sampled values of a meter reading (J02)."""
        return sampled_values(self.st, ev, sess, context)

    def _info(self, ev: Evse, sess: Session) -> dict[str, Any]:
        """The transactionInfo of a periodic TransactionEvent Updated."""
        assert sess.transaction_id is not None
        return {"transactionId": sess.transaction_id}

    def charging_state_changed(self, ev: Evse, sess: Session) -> None:
        """TransactionEvent Updated, ChargingStateChanged."""
        assert sess.transaction_id is not None
        info = self._info(ev, sess)
        info["chargingState"] = sess.charging_state
        self.st._enqueue(
            "TransactionEvent",
            self._tx_event(
                sess,
                "Updated",
                "ChargingStateChanged",
                info,
                None,
            ),
            tx=True,
        )

    def unplugged_status(self, ev: Evse) -> None:
        """Connector Available."""
        ev.status = "Available"


def _profile_201(cp: dict[str, Any], transaction_id: str | None) -> Any:
    """A ChargingProfileType (snake_case keys, 2.0.1 section 2.10) as a profile object."""
    return make_profile(
        profile_id=cp["id"],
        stack_level=cp["stack_level"],
        purpose=cp["charging_profile_purpose"],
        kind=cp["charging_profile_kind"],
        schedule=cp["charging_schedule"][0],
        recurrency=cp.get("recurrency_kind"),
        valid_from=cp.get("valid_from"),
        valid_to=cp.get("valid_to"),
        transaction_id=transaction_id,
    )


def _reply(status: str, reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"status": status}
    if reason:
        out["statusInfo"] = {"reasonCode": reason}
    return out


class StationChargePoint201(StationLinkMixin, _ChargePoint201):  # type: ignore[misc]
    """Handlers of the CSMS requests an OCPP 2.0.1 station supports.

    K01, K08, K10, F01-F03, F06, B06/B07 minimal, B11 no-op. They never await a call.
    """

    @handler("SetChargingProfile")
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        """K01: install; Rejected with a reasonCode if the profile is not acceptable."""
        cp = charging_profile
        if cp["charging_profile_purpose"] == "ChargingStationExternalConstraints":
            return _reply("Rejected", "InvalidValue")
        try:
            profile = _profile_201(cp, cp.get("transaction_id"))
        except ValueError:
            return _reply("Rejected", "InvalidValue")
        ok, reason = self._station.install_profile(evse_id, profile)
        return _reply("Accepted") if ok else _reply("Rejected", reason)

    @handler("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """K10: Accepted if anything was cleared, else Unknown."""
        crit = charging_profile_criteria or {}
        purpose = crit.get("charging_profile_purpose")
        removed = self._station.clear_profiles(
            charging_profile_id,
            crit.get("evse_id"),
            ChargingProfilePurpose(purpose) if purpose else None,
            crit.get("stack_level"),
        )
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @handler("GetCompositeSchedule")
    def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> dict[str, Any]:
        """K08: the composite schedule from now, in the requested unit."""
        res = self._station.composite(evse_id, duration, charging_rate_unit)
        if res is None or duration <= 0:
            return _reply("Rejected", "UnknownEVSE" if res is None else "InvalidValue")
        start, unit, periods = res
        out_periods = []
        for p in periods:
            d: dict[str, Any] = {"startPeriod": p.start_period_s, "limit": round(p.limit, 3)}
            if p.number_phases is not None:
                d["numberPhases"] = p.number_phases
            out_periods.append(d)
        return {
            "status": "Accepted",
            "schedule": {
                "evseId": evse_id,
                "duration": duration,
                "scheduleStart": iso(start),
                "chargingRateUnit": unit.value,
                "chargingSchedulePeriod": out_periods,
            },
        }

    @handler("RequestStartTransaction")
    def on_request_start_transaction(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """F01/F02: start now if a vehicle waits, else when one plugs in."""
        profile = None
        if charging_profile is not None:
            cp = charging_profile
            if cp["charging_profile_purpose"] != "TxProfile":
                return _reply("Rejected", "InvalidProfile")
            try:
                profile = _profile_201(cp, None)
            except ValueError:
                return _reply("Rejected", "InvalidProfile")
        ok, tx = self._station.request_start(
            evse_id, id_token["id_token"], id_token["type"], remote_start_id, profile
        )
        out = _reply("Accepted" if ok else "Rejected")
        if tx is not None:
            out["transactionId"] = tx
        return out

    @handler("RequestStopTransaction")
    def on_request_stop_transaction(self, transaction_id: str, **_: Any) -> dict[str, Any]:
        """F03: end the transaction after the reply."""
        return _reply("Accepted" if self._station.request_stop(transaction_id) else "Rejected")

    @handler("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        """B06, minimal: a flat store keyed by variable name."""
        results = []
        for item in get_variable_data:
            comp, var = item["component"], item["variable"]
            name = var["name"]
            key = "MeterValueSampleInterval" if name == "TxUpdatedInterval" else name
            value = self._station.config.get(key)
            r: dict[str, Any] = {
                "attributeStatus": "Accepted" if value is not None else "UnknownVariable",
                "component": _camel(comp),
                "variable": _camel(var),
            }
            if value is not None:
                r["attributeValue"] = value
            results.append(r)
        return {"getVariableResult": results}

    @handler("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        """B07, minimal: every variable stored; a bad known value is Rejected."""
        results = []
        for item in set_variable_data:
            comp, var = item["component"], item["variable"]
            try:
                self._station.set_config(var["name"], str(item["attribute_value"]))
                status = "Accepted"
            except RpcError:
                status = "Rejected"
            results.append(
                {"attributeStatus": status, "component": _camel(comp), "variable": _camel(var)}
            )
        return {"setVariableResult": results}

    @handler("Reset")
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        """B11/B12: accepted, no effect."""
        return call_result.Reset(status="Accepted")

    @handler("TriggerMessage")
    def on_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        """F06: BootNotification, Heartbeat, StatusNotification, MeterValues."""
        status = self._station.trigger(requested_message, evse["id"] if evse else None)
        return call_result.TriggerMessage(status=status)


def _camel(d: dict[str, Any]) -> dict[str, Any]:
    from ocpp.charge_point import snake_to_camel_case

    out: dict[str, Any] = snake_to_camel_case(d)
    return out
