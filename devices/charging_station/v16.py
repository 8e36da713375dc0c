"""OCPP 1.6 specifics: messages the station sends and the handlers of Central System requests.

Transactions follow OCPP 1.6 §4 and §5: StatusNotification Preparing, Authorize,
StartTransaction (the Central System assigns the integer transactionId), MeterValues with
the transactionId every MeterValueSampleInterval, StatusNotification on every change of
Charging / SuspendedEV / SuspendedEVSE, StopTransaction, StatusNotification Finishing
(stopped, still plugged) / Available. Transaction messages are queued while offline (§3.5);
a queued message's transactionId is filled in when it is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocpp.v16 import ChargePoint as _ChargePoint16
from ocpp.v16 import call_result

from devices.charging_station.dialect import Dialect, iso, make_profile
from devices.charging_station.profiles import ChargingProfilePurpose
from devices.charging_station.rpc import RpcError, StationLinkMixin, handler

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from devices.charging_station.evse import Evse, Session

__all__ = ["StationChargePoint16", "V16Dialect"]

_PHASES = ("L1", "L2", "L3")
_REASONS_16 = {
    "EVDisconnected": "EVDisconnected",
    "Remote": "Remote",
    "DeAuthorized": "DeAuthorized",
    "Local": "Local",
}


def sampled_values_16(ev: Evse, sess: Session | None, context: str) -> list[dict[str, Any]]:
    """Energy register (Wh), power (W), current per phase (A), SoC on DC (%), as 1.6 text."""
    sv: list[dict[str, Any]] = [
        {
            "value": repr(ev.reported_register_wh),
            "context": context,
            "measurand": "Energy.Active.Import.Register",
            "unit": "Wh",
        },
        {
            "value": repr(ev.power_kw * 1000.0),
            "context": context,
            "measurand": "Power.Active.Import",
            "unit": "W",
        },
    ]
    cur = ev.station_current_a
    n = ev.spec.phases if ev.spec.kind == "AC" else 3
    for i in range(n):
        sv.append(
            {
                "value": repr(cur[i]),
                "context": context,
                "measurand": "Current.Import",
                "phase": _PHASES[i],
                "unit": "A",
            }
        )
    if ev.reports_soc and sess is not None:
        sv.append(
            {
                "value": repr(round(sess.reported_soc * 100.0, 3)),
                "context": context,
                "measurand": "SoC",
                "location": "EV",
                "unit": "Percent",
            }
        )
    return sv


class V16Dialect(Dialect):
    """OCPP 1.6 messages and transaction flow."""

    version = "1.6"
    subprotocol = "ocpp1.6"

    def make_charge_point(self, ws: ClientConnection) -> StationChargePoint16:
        """A ChargePoint bound to this station."""
        cp = StationChargePoint16(self.st.station_id, ws, response_timeout=30)
        cp._station = self.st
        return cp

    def boot_payload(self) -> dict[str, Any]:
        """BootNotification.req (§4.2)."""
        spec = self.st.spec
        return {"chargePointVendor": spec.vendor, "chargePointModel": spec.model}

    def status_payload(self, ev: Evse) -> dict[str, Any]:
        """StatusNotification.req (§4.9)."""
        assert self.st.now is not None
        return {
            "connectorId": ev.spec.evse_id,
            "errorCode": "NoError",
            "status": ev.status,
            "timestamp": self.st.now_iso,
        }

    def authorize_payload(self, sess: Session) -> dict[str, Any]:
        """Authorize.req (§4.1)."""
        return {"idTag": sess.id_token}

    def authorize_status(self, reply: dict[str, Any]) -> str:
        """idTagInfo.status."""
        return str(reply["idTagInfo"]["status"])

    def plugged_status(self) -> str:
        """Connector status with a vehicle, before the transaction."""
        return "Preparing"

    def _send_status(self, ev: Evse, status: str) -> None:
        ev.status = status
        self.st._enqueue("StatusNotification", self.status_payload(ev))

    async def start_transaction(self, ev: Evse, sess: Session, trigger: str) -> None:
        """StartTransaction.req (§4.8); the id comes with the reply (also when queued)."""
        st = self.st
        assert st.now is not None
        st._begin_transaction(ev, sess, None)
        sess.tx_number = st._new_transaction_number()
        payload = {
            "connectorId": ev.spec.evse_id,
            "idTag": sess.id_token,
            "meterStart": round(ev.reported_register_wh),
            "timestamp": st.now_iso,
        }

        def on_reply(reply: dict[str, Any]) -> None:
            st._transaction_known(ev, sess, str(reply["transactionId"]))
            status = reply.get("idTagInfo", {}).get("status", "Accepted")
            if status != "Accepted" and sess.tx_active:
                st._emit(
                    "authorization.rejected",
                    {"evse_id": ev.spec.evse_id, "id_token": sess.id_token, "status": status},
                )
                sess.authorized = False
                st._spawn(self.end_transaction(ev, sess, "DeAuthorized", "Deauthorized"))

        fut = st._enqueue("StartTransaction", payload, tx=True, wait=True, on_reply=on_reply)
        if ev.spec.report_soc:  # the vehicle's SoC at the start (1.6 has no field for it)
            self.meter_values(ev, sess, "Transaction.Begin")
        self._send_status(ev, self._status_for(sess))
        await st._wait([fut])

    @staticmethod
    def _status_for(sess: Session) -> str:
        return sess.charging_state or "Charging"

    async def end_transaction(self, ev: Evse, sess: Session, reason: str, trigger: str) -> None:
        """StopTransaction.req (§4.10) with the meter register and reason."""
        st = self.st
        assert st.now is not None
        if not sess.tx_active:
            return
        plugged = ev.session is sess and reason != "EVDisconnected"
        st._finish_transaction(ev, sess, reason)
        meter_stop = round(ev.reported_register_wh)
        ts = st.now_iso
        # StopTxnSampledData: the vehicle's SoC at the end rides in transactionData
        end_data = ([{"timestamp": ts, "sampledValue": sampled_values_16(
            ev, sess, "Transaction.End")}] if ev.spec.report_soc else None)

        def build() -> dict[str, Any] | None:
            if sess.transaction_id is None:
                return None  # StartTransaction never got an id
            out = {
                "transactionId": int(sess.transaction_id),
                "meterStop": meter_stop,
                "timestamp": ts,
                "idTag": sess.id_token,
                "reason": _REASONS_16.get(reason, "Other"),
            }
            if end_data is not None:
                out["transactionData"] = end_data
            return out

        fut = st._enqueue("StopTransaction", build, tx=True, wait=True)
        if plugged:
            self._send_status(ev, "Finishing")
        await st._wait([fut])

    def meter_values(self, ev: Evse, sess: Session | None, context: str) -> None:
        """MeterValues.req (§4.7), with the transactionId during a transaction."""
        st = self.st
        assert st.now is not None
        mv = [{"timestamp": st.now_iso, "sampledValue": sampled_values_16(ev, sess, context)}]
        if sess is not None and sess.tx_active:

            def build() -> dict[str, Any]:
                out: dict[str, Any] = {"connectorId": ev.spec.evse_id, "meterValue": mv}
                if sess.transaction_id is not None:
                    out["transactionId"] = int(sess.transaction_id)
                return out

            st._enqueue("MeterValues", build, tx=True)
        else:
            st._enqueue("MeterValues", {"connectorId": ev.spec.evse_id, "meterValue": mv})

    def charging_state_changed(self, ev: Evse, sess: Session) -> None:
        """StatusNotification Charging / SuspendedEV / SuspendedEVSE."""
        self._send_status(ev, self._status_for(sess))

    def unplugged_status(self, ev: Evse) -> None:
        """Connector Available."""
        ev.status = "Available"


def _profile_16(p: dict[str, Any]) -> Any:
    tx = p.get("transaction_id")
    return make_profile(
        profile_id=p["charging_profile_id"],
        stack_level=p["stack_level"],
        purpose=p["charging_profile_purpose"],
        kind=p["charging_profile_kind"],
        schedule=p["charging_schedule"],
        recurrency=p.get("recurrency_kind"),
        valid_from=p.get("valid_from"),
        valid_to=p.get("valid_to"),
        transaction_id=str(tx) if tx is not None else None,
    )


class StationChargePoint16(StationLinkMixin, _ChargePoint16):  # type: ignore[misc]
    """Handlers of the Central System requests an OCPP 1.6 charge point supports.

    Smart Charging §5.5/§5.7/§5.16, Remote Start/Stop §5.11/§5.12, configuration §5.3/§5.8
    minimal, Reset §5.13 no-op, TriggerMessage §5.17. They never await a call.
    """

    @handler("SetChargingProfile")
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        """§5.16: Accepted / Rejected."""
        try:
            profile = _profile_16(cs_charging_profiles)
        except ValueError:
            return call_result.SetChargingProfile(status="Rejected")
        ok, _reason = self._station.install_profile(connector_id, profile)
        return call_result.SetChargingProfile(status="Accepted" if ok else "Rejected")

    @handler("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """§5.5: Accepted if anything was cleared, else Unknown."""
        purpose = None
        if charging_profile_purpose is not None:
            purpose = ChargingProfilePurpose(
                "ChargingStationMaxProfile"
                if charging_profile_purpose == "ChargePointMaxProfile"
                else charging_profile_purpose
            )
        removed = self._station.clear_profiles(id, connector_id, purpose, stack_level)
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @handler("GetCompositeSchedule")
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> dict[str, Any]:
        """§5.7: the composite schedule from now (limits to 0.1 as the schema requires)."""
        res = self._station.composite(connector_id, duration, charging_rate_unit)
        if res is None or duration <= 0:
            return {"status": "Rejected"}
        start, unit, periods = res
        out_periods = []
        for p in periods:
            d: dict[str, Any] = {"startPeriod": p.start_period_s, "limit": round(p.limit, 1)}
            if p.number_phases is not None:
                d["numberPhases"] = p.number_phases
            out_periods.append(d)
        return {
            "status": "Accepted",
            "connectorId": connector_id,
            "scheduleStart": iso(start),
            "chargingSchedule": {
                "duration": duration,
                "startSchedule": iso(start),
                "chargingRateUnit": unit.value,
                "chargingSchedulePeriod": out_periods,
            },
        }

    @handler("RemoteStartTransaction")
    def on_remote_start_transaction(
        self,
        id_tag: str,
        connector_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.RemoteStartTransaction:
        """§5.11 (AuthorizeRemoteTxRequests = false)."""
        profile = None
        if charging_profile is not None:
            if charging_profile["charging_profile_purpose"] != "TxProfile":
                return call_result.RemoteStartTransaction(status="Rejected")
            try:
                profile = _profile_16({**charging_profile, "transaction_id": None})
            except ValueError:
                return call_result.RemoteStartTransaction(status="Rejected")
        ok, _tx = self._station.request_start(connector_id, id_tag, "ISO14443", None, profile)
        return call_result.RemoteStartTransaction(status="Accepted" if ok else "Rejected")

    @handler("RemoteStopTransaction")
    def on_remote_stop_transaction(
        self, transaction_id: int, **_: Any
    ) -> call_result.RemoteStopTransaction:
        """§5.12."""
        ok = self._station.request_stop(str(transaction_id))
        return call_result.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @handler("ChangeConfiguration")
    def on_change_configuration(
        self, key: str, value: str, **_: Any
    ) -> call_result.ChangeConfiguration:
        """§5.3, minimal: every key stored; a bad value for a known key is Rejected."""
        try:
            self._station.set_config(key, value)
        except RpcError:
            return call_result.ChangeConfiguration(status="Rejected")
        return call_result.ChangeConfiguration(status="Accepted")

    @handler("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> dict[str, Any]:
        """§5.8, minimal."""
        cfg = self._station.config
        keys = key if key else sorted(cfg)
        known = [{"key": k, "readonly": False, "value": cfg[k]} for k in keys if k in cfg]
        unknown = [k for k in keys if k not in cfg]
        out: dict[str, Any] = {"configurationKey": known}
        if unknown:
            out["unknownKey"] = unknown
        return out

    @handler("Reset")
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        """§5.13: accepted, no effect."""
        return call_result.Reset(status="Accepted")

    @handler("TriggerMessage")
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        """§5.17: BootNotification, Heartbeat, StatusNotification, MeterValues."""
        return call_result.TriggerMessage(
            status=self._station.trigger(requested_message, connector_id)
        )
