"""The charging-station emulator: physics of its EVSEs and an OCPP-J client to a CSMS.

One version-independent :class:`ChargingStation`; what differs between OCPP 1.6, 2.0.1 and
2.1 lives in :mod:`devices.charging_station.v16`, :mod:`devices.charging_station.v201` and
:mod:`devices.charging_station.v21` (V2G: bidirectional EVSEs, operation modes, export
metering; sign convention positive = import / charging, negative = export / discharging).

Time is injected: every public method takes ``now`` (tz-aware UTC) or uses the latest one
given; nothing here reads the wall clock or sleeps. The only real-time element is the
response timeout of a call (``response_timeout_s``), a safeguard against a dead peer.

Concurrency contract (see DESIGN.md "quiesce"): ``connect``, ``plug_in`` and ``plug_out``
await the replies of the calls they make (while online); ``advance`` runs the physics,
queues its telemetry and returns; the queued calls go out one at a time, in order, from a
tracked sender task. ``busy`` is true while any call awaits its reply, any task of the
station runs or any incoming CALL is being handled; ``drain()`` waits until it is false.
Handlers never await a call: work a CALL triggers is spawned after its reply is sent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
import orjson
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from devices.charging_station.dialect import Dialect, iso
from devices.charging_station.evse import (
    Evse,
    EvseReading,
    Session,
    StationSpec,
    phase_map,
)
from devices.charging_station.faults import MALFORMED_KINDS, StationFault, StationFaults
from devices.charging_station.profiles import (
    SUPPORTED_OPERATION_MODES,
    ChargingProfile,
    ChargingProfilePurpose,
    ChargingRateUnit,
    CompositePeriod,
    Limit,
    OperationMode,
    ProfileRejectedError,
    ProfileStore,
)
from devices.charging_station.rpc import RpcError, validate
from devices.charging_station.tamper import TelemetryTamper
from devices.vehicle import VehicleSpec, VehicleState, charge, discharge

__all__ = ["REASON_NO_V2X", "REASON_UNSUPPORTED_MODE", "ChargingStation", "EventSink"]

#: SetChargingProfile statusInfo.reasonCode (2.1) for an operationMode the emulator does not
#: implement (ExternalSetpoint, ExternalLimits, CentralFrequency, LocalFrequency,
#: LocalLoadBalancing).
REASON_UNSUPPORTED_MODE = "UnsupportedParam"
#: ... for a discharging period on an EVSE that is not bidirectional, or (TxProfile) with a
#: vehicle that is not V2G-capable.
REASON_NO_V2X = "UnsupportedRequest"

LOGGER = logging.getLogger("devices.charging_station")

EventSink = Callable[[datetime, str, str, dict[str, Any]], None]
"""``(time, source, kind, payload)``: receives the station's events."""

_Payload = dict[str, Any] | Callable[[], dict[str, Any] | None]


@dataclass(slots=True)
class _Out:
    """A call waiting in the outbox."""

    action: str
    payload: _Payload
    tx: bool  # transaction-related: kept while offline and sent after reconnecting
    future: asyncio.Future[dict[str, Any] | None] | None
    on_reply: Callable[[dict[str, Any]], None] | None
    raw: tuple[str, str] | None = None  # injected malformed frame: (reply id, frame text)


def client_ssl_context(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """TLS context of a station (OCPP security profiles 2 and 3): TLS 1.2 or later.

    OCPP 2.0.1 A00.FR.3xx / 1.6 Security Whitepaper: the station verifies the CSMS's
    server certificate (host name included) and, in profile 3, presents its own.

    Args:
        ca_file: PEM bundle trusted for the CSMS certificate; None: system trust store.
        cert_file: PEM client certificate (subject CN = station id), profile 3.
        key_file: its private key (None: inside ``cert_file``).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class ChargingStation:
    """An emulated OCPP charging station with its EVSEs and the vehicles plugged in.

    Args:
        spec: the station (id, OCPP version, EVSEs, intervals, fail-safe current).
        csms_url: base URL of the CSMS, e.g. ``ws://127.0.0.1:9000/ocpp``; the station
            connects to ``f"{csms_url}/{station_id}"``.
        on_event: receives ``(time, station_id, kind, payload)`` events (see README of the
            package: ocpp.connected, ocpp.disconnected, ocpp.boot, transaction.started,
            transaction.ended, profile.installed/cleared/rejected, ocpp.callerror,
            ocpp.frame when ``record_frames``, fault.started/ended and the other fault.*
            events of injected faults...).
        perf_counter: clock for round-trip times (``rtt_samples_s``); None: not measured.
        record_frames: emit every frame sent/received as an "ocpp.frame" event.
        seed: seed of the station's random generator (reconnect jitter).
        response_timeout_s: real-time limit for a reply before a call is given up, s.
        ssl_context: TLS client context for a ``wss://`` CSMS (OCPP security profiles 2
            and 3), overriding the spec's ``tls_*`` files; see :func:`client_ssl_context`.
        faults: injected faults in force over time windows (link drop, delayed or missing
            replies, malformed frames, clock skew, ignored or overshot profiles); see
            :mod:`devices.charging_station.faults`. None: a healthy station.

    Raises:
        ValueError: a bad spec (see :class:`StationSpec`), or TLS settings with a
            ``ws://`` URL.
        OSError / ssl.SSLError: a TLS file of the spec is missing or unusable.
    """

    #: Reconnect back-off (2.0.1 B10 RetryBackOffWaitMinimum/RandomRange), seconds.
    RETRY_WAIT_MIN_S = 1.0
    RETRY_WAIT_MAX_S = 60.0
    RETRY_RANDOM_RANGE_S = 1.0

    def __init__(
        self,
        spec: StationSpec,
        csms_url: str,
        *,
        on_event: EventSink | None = None,
        perf_counter: Callable[[], float] | None = None,
        record_frames: bool = False,
        seed: int = 0,
        response_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        faults: StationFaults | None = None,
    ) -> None:
        self.spec = spec
        self.faults = faults if faults is not None else StationFaults()
        self._faults_on: frozenset[str] = frozenset()
        self._malformed_at: datetime | None = None
        self._malformed_n = 0
        self.station_id = spec.station_id
        self.url = f"{csms_url.rstrip('/')}/{spec.station_id}"
        self._ssl = ssl_context
        if self._ssl is None and (spec.tls_ca_file or spec.tls_cert_file):
            self._ssl = client_ssl_context(spec.tls_ca_file, spec.tls_cert_file, spec.tls_key_file)
        if self._ssl is not None and not self.url.startswith("wss://"):
            raise ValueError(f"TLS settings given but the CSMS URL is not wss://: {self.url}")
        self._on_event = on_event
        self._perf = perf_counter
        self._record_frames = record_frames
        self._rng = np.random.default_rng(seed)
        self._response_timeout = response_timeout_s
        self.evses: dict[int, Evse] = {
            e.evse_id: Evse(spec=e, site_phase=phase_map(e.phase_rotation)) for e in spec.evses
        }
        self.profiles = ProfileStore([e.electrical() for e in spec.evses])
        self.rtt_samples_s: list[float] = []
        self.config: dict[str, str] = {
            "HeartbeatInterval": str(spec.heartbeat_interval_s),
            "MeterValueSampleInterval": str(spec.meter_interval_s),
        }
        self.meter_interval_s = spec.meter_interval_s
        self.heartbeat_interval_s = spec.heartbeat_interval_s

        self._now: datetime | None = None
        self._now_iso_for: datetime | None = None
        self._now_iso = ""
        self._ws: Any = None
        self._cp: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._online = False
        self._closed = False
        self._booted = False
        self._boot_retry_at: datetime | None = None
        self._last_heartbeat: datetime | None = None
        self._next_retry: datetime | None = None
        self._retry_attempt = 0
        self._reconnecting = False
        self._outbox: deque[_Out] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._pending: tuple[str, str, asyncio.Future[list[Any]]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers = 0
        self._handlers_done: asyncio.Future[None] | None = None
        self._deferred: list[Callable[[], Awaitable[Any]]] = []
        self._msg_counter = 0
        self._tx_counter = 0
        self._proto: Dialect = self._make_dialect()

    def _make_dialect(self) -> Dialect:
        if self.spec.ocpp_version == "1.6":
            from devices.charging_station.v16 import V16Dialect

            return V16Dialect(self)
        if self.spec.ocpp_version == "2.1":
            from devices.charging_station.v21 import V21Dialect

            return V21Dialect(self)
        from devices.charging_station.v201 import V201Dialect

        return V201Dialect(self)

    # ================================================================= public API
    @property
    def online(self) -> bool:
        """Whether the station has an open connection to its CSMS."""
        return self._online

    @property
    def now(self) -> datetime | None:
        """The latest time given to the station."""
        return self._now

    @property
    def now_iso(self) -> str:
        """The latest time given, as OCPP dateTime text (cached per time)."""
        now = self._now
        assert now is not None
        if now is not self._now_iso_for:
            self._now_iso_for = now
            skew = self.faults.skew_s(now) if self.faults else 0.0
            self._now_iso = iso(now + timedelta(seconds=skew) if skew else now)
        return self._now_iso

    async def connect(self, now: datetime) -> None:
        """Connect to the CSMS and boot; awaits the replies.

        WebSocket (subprotocol ``ocpp1.6``/``ocpp2.0.1``, no compression), BootNotification
        (2.0.1 B01 / 1.6 §4.2), a StatusNotification per connector.

        An injected ``link_drop`` in force at ``now``: no connection is attempted (the
        station starts offline and connects after the window, see :meth:`advance`).

        Raises:
            OSError / websockets.exceptions.InvalidHandshake / TimeoutError: the connection
                failed; a reconnect is then scheduled (see :meth:`advance`).
        """
        self._tick(now)
        self._closed = False
        if self.faults.link_down(now):  # injected link_drop: offline until the window ends
            self._schedule_retry()
            self._emit("ocpp.disconnected", {"reason": "injected fault: link_drop", "queued": 0,
                                             "next_retry": None})
            return
        try:
            await self._open()
        except Exception:
            self._schedule_retry()
            raise
        await self._after_connect(wait=True)

    async def plug_in(
        self,
        evse_id: int,
        vehicle: VehicleSpec,
        state: VehicleState,
        id_token: str,
        now: datetime,
        tamper: TelemetryTamper | None = None,
    ) -> None:
        """A vehicle plugs in on ``evse_id`` and presents ``id_token``.

        ``tamper``: falsify the telemetry this session's transaction reports over OCPP
        (a dishonest or faulty meter or vehicle, :mod:`devices.charging_station.tamper`);
        the physics and :meth:`evse_state` stay true.

        Integrates the physics to ``now``, then (2.0.1, E02/C01) StatusNotification Occupied,
        Authorize, TransactionEvent Started, or (1.6) StatusNotification Preparing, Authorize,
        StartTransaction, StatusNotification Charging/SuspendedEVSE/SuspendedEV. A pending
        remote start on the EVSE skips Authorize. Offline, the token is accepted locally
        and the transaction messages are queued. A rejected token: no transaction, no energy,
        an "authorization.rejected" event.

        Raises:
            KeyError: unknown EVSE.  RuntimeError: a vehicle is already plugged in there.
        """
        self._tick(now)
        ev = self.evses[evse_id]
        if ev.session is not None:
            raise RuntimeError(f"{self.station_id}: EVSE {evse_id} already occupied")
        sess = Session(vehicle=vehicle, state=state, id_token=id_token, plugged_at=now,
                       tamper=tamper)
        ev.session = sess
        ev.status = self._proto.plugged_status()
        self._emit(
            "vehicle.plugged_in",
            {
                "evse_id": evse_id,
                "model": vehicle.model,
                "soc": state.soc,
                "target_soc": state.target_soc,
            },
        )
        futs = [self._enqueue("StatusNotification", self._proto.status_payload(ev), wait=True)]
        trigger = "Authorized"
        pending = ev.pending_remote
        if pending is not None:
            ev.pending_remote = None
            sess.id_token, sess.id_token_type, sess.remote_start_id, prof = pending
            sess.pending_profile = prof
            trigger = "RemoteStart"
            status = "Accepted"
        else:
            status = await self._authorize(sess)
        await self._wait(futs)
        if status != "Accepted":
            self._emit(
                "authorization.rejected",
                {"evse_id": evse_id, "id_token": sess.id_token, "status": status},
            )
            return
        sess.authorized = True
        await self._proto.start_transaction(ev, sess, trigger)

    async def plug_out(self, evse_id: int, now: datetime) -> None:
        """The vehicle on ``evse_id`` leaves; no vehicle: nothing happens.

        Integrates to ``now``, ends the transaction if it runs (2.0.1 TransactionEvent Ended,
        stoppedReason EVDisconnected; 1.6 StopTransaction reason EVDisconnected), then
        StatusNotification Available.

        Raises:
            KeyError: unknown EVSE.
        """
        self._tick(now)
        ev = self.evses[evse_id]
        sess = ev.session
        if sess is None:
            return
        if sess.tx_active:
            await self._proto.end_transaction(ev, sess, "EVDisconnected", "EVCommunicationLost")
        ev.session = None
        self._emit(
            "vehicle.plugged_out",
            {"evse_id": evse_id, "soc": sess.state.soc, "session_energy_kwh": sess.energy_kwh},
        )
        self._proto.unplugged_status(ev)
        await self._wait(
            [self._enqueue("StatusNotification", self._proto.status_payload(ev), wait=True)]
        )

    async def advance(self, now: datetime) -> None:
        """Advance to ``now``; returns without waiting for replies (see :meth:`drain`).

        Physics over ``[last, now]`` for every EVSE with the limit in
        force at the start of the interval (composite schedule; offline: TxDefaultProfile,
        else ``fail_safe_current_a``), then queue the telemetry that is due: sampled meter
        values every ``meter_interval_s`` of a transaction (2.0.1 TransactionEvent Updated
        MeterValuePeriodic; 1.6 MeterValues), charging-state changes, Heartbeat; when
        offline and the back-off has elapsed, start a reconnect.

        Raises:
            ValueError: ``now`` is naive or earlier than the latest time given.
        """
        self._check_link()
        self._tick(now)
        if self.faults:
            await self._apply_faults(now)
        proto = self._proto
        for ev in self.evses.values():
            # Mean power and currents over the advance interval.
            mark_t = ev.mark_t
            if mark_t is not None and now > mark_t:
                dt = (now - mark_t).total_seconds()
                net_wh = (ev.register_wh - ev.mark_wh) - (ev.export_wh - ev.mark_export_wh)
                ev.power_kw = net_wh * 3.6 / dt
                self._update_currents(ev)
            ev.mark_t = now
            ev.mark_wh = ev.register_wh
            ev.mark_export_wh = ev.export_wh
            sess = ev.session
            if sess is None or not sess.tx_active:
                continue
            state = self._charging_state(ev, sess)
            if state != sess.charging_state:
                sess.charging_state = state
                proto.charging_state_changed(ev, sess)
            nm = sess.next_meter_at
            if nm is not None and now >= nm:
                step = timedelta(seconds=self.meter_interval_s)
                while nm <= now:
                    nm += step
                sess.next_meter_at = nm
                sess.samples += 1
                tamper = sess.tamper
                if (tamper is not None and tamper.rollback_kwh > 0
                        and sess.samples == tamper.rollback_at_sample):
                    ev.tamper_offset_wh -= tamper.rollback_kwh * 1000.0
                proto.meter_values(ev, sess, "Sample.Periodic")
        if self._online and self._booted:
            hb = self._last_heartbeat
            if hb is None or (now - hb).total_seconds() >= self.heartbeat_interval_s:
                self._last_heartbeat = now
                self._enqueue("Heartbeat", {})
        if self._online and not self._booted and self._boot_retry_at and now >= self._boot_retry_at:
            self._boot_retry_at = None
            self._spawn(self._boot())
        if self._online and self._booted and self.faults.malformed_due(now, self._malformed_at):
            self._malformed_at = now
            self._send_malformed()
        if (
            not self._online
            and not self._closed
            and not self._reconnecting
            and self._next_retry is not None
            and now >= self._next_retry
            and not self.faults.link_down(now)
        ):
            self._reconnecting = True
            self._spawn(self._reconnect())

    def evse_state(self, evse_id: int) -> EvseReading:
        """Truth of ``evse_id`` for the recorder (see :class:`EvseReading`).

        Raises:
            KeyError: unknown EVSE.
        """
        ev = self.evses[evse_id]
        sess = ev.session
        lim = self._limit(ev, self._now) if self._now is not None else Limit(0.0, 0.0, None)
        cur = [0.0, 0.0, 0.0]
        sign = -1.0 if ev.power_kw < 0.0 else 1.0  # export: negative site-phase currents
        for i, c in enumerate(ev.station_current_a):
            cur[ev.site_phase[i]] += sign * c
        return EvseReading(
            evse_id=evse_id,
            power_kw=ev.power_kw,
            energy_register_kwh=ev.register_wh / 1000.0,
            offered_current_a=lim.current_a,
            offered_power_kw=lim.power_w / 1000.0,
            current_a=(cur[0], cur[1], cur[2]),
            soc=sess.state.soc if sess else None,
            session_energy_kwh=sess.energy_kwh if sess else 0.0,
            transaction_id=sess.transaction_id if sess and sess.tx_active else None,
            connector_status=ev.status,
            charging_state=sess.charging_state if sess and sess.tx_active else None,
            online=self._online,
            export_register_kwh=ev.export_wh / 1000.0,
            operation_mode=ev.operation_mode if sess and sess.tx_active else None,
        )

    @property
    def busy(self) -> bool:
        """Whether anything of this station is in flight.

        True while a call awaits its reply, a task of the station runs, a CALL is being
        handled, or (online) calls wait in the outbox.
        """
        return bool(
            self._tasks
            or self._handlers
            or self._pending is not None
            or (self._online and self._outbox)
        )

    async def drain(self) -> None:
        """Return when nothing of this station is in flight (:attr:`busy` is false)."""
        while True:
            if self._tasks:
                await asyncio.wait(set(self._tasks))
                continue
            if self._online and self._outbox and self._sender is None:
                self._start_sender()
                continue
            if self._handlers:
                if self._handlers_done is None:
                    self._handlers_done = asyncio.get_running_loop().create_future()
                await self._handlers_done
                continue
            if self._pending is not None or (self._online and self._outbox):
                await asyncio.sleep(0)  # a yield to the loop, not a wait on time
                continue
            return

    async def close(self) -> None:
        """Close the connection for good (no reconnect); cancels the station's tasks."""
        self._closed = True
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        ws = self._ws
        was_online = self._online
        self._online = False
        self._fail_waiters()
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if was_online:
            self._emit("ocpp.disconnected", {"reason": "closed"})

    # ----------------------------------------------------------------- CSMS commands
    # Called by the version handlers; each returns what the reply needs.
    def install_profile(self, evse_id: int, profile: ChargingProfile) -> tuple[bool, str | None]:
        """Install a profile received from the CSMS; returns ``(accepted, reason_code)``.

        2.1 operation modes: a period whose mode is not implemented is rejected with
        :data:`REASON_UNSUPPORTED_MODE`; a discharging period (CentralSetpoint with a
        negative setpoint) on an EVSE that is not bidirectional (EVSE 0: any of them),
        or in a TxProfile while the vehicle plugged in is not V2G-capable, with
        :data:`REASON_NO_V2X`.
        """
        try:
            self._check_v2x(evse_id, profile)
            replaced = self.profiles.install(profile, evse_id, self._now)
        except ProfileRejectedError as e:
            self._emit(
                "profile.rejected",
                {
                    "evse_id": evse_id,
                    "profile_id": profile.id,
                    "purpose": profile.purpose.value,
                    "reason": e.reason_code,
                    "message": e.message,
                },
            )
            return False, e.reason_code
        self._emit(
            "profile.installed",
            {
                "evse_id": evse_id,
                "profile_id": profile.id,
                "purpose": profile.purpose.value,
                "stack_level": profile.stack_level,
                "kind": profile.kind.value,
                "unit": profile.schedule.charging_rate_unit.value,
                "limits": [None if math.isinf(p.limit) else p.limit
                           for p in profile.schedule.periods],
                "operation_modes": [p.operation_mode.value for p in profile.schedule.periods],
                "setpoints": [p.setpoint for p in profile.schedule.periods],
                "replaced": replaced,
            },
        )
        return True, None

    def _check_v2x(self, evse_id: int, profile: ChargingProfile) -> None:
        periods = profile.schedule.periods
        bad = sorted({p.operation_mode.value for p in periods
                      if p.operation_mode not in SUPPORTED_OPERATION_MODES})
        if bad:
            raise ProfileRejectedError(REASON_UNSUPPORTED_MODE,
                                       f"operationMode {', '.join(bad)} not supported")
        if not any(p.discharges for p in periods):
            return
        evses = list(self.evses.values()) if evse_id == 0 else (
            [self.evses[evse_id]] if evse_id in self.evses else [])
        if self.spec.ocpp_version != "2.1" or not all(e.spec.bidirectional for e in evses):
            raise ProfileRejectedError(REASON_NO_V2X, f"EVSE {evse_id} cannot discharge")
        if profile.purpose is ChargingProfilePurpose.TX:
            sess = evses[0].session if evses else None
            if sess is None or not sess.vehicle.v2g:
                raise ProfileRejectedError(REASON_NO_V2X, "vehicle is not V2G-capable")

    def clear_profiles(
        self,
        profile_id: int | None,
        evse_id: int | None,
        purpose: ChargingProfilePurpose | None,
        stack_level: int | None,
    ) -> list[int]:
        """Clear profiles by id or criteria; returns the ids removed."""
        removed = self.profiles.clear(
            profile_id, evse_id=evse_id, purpose=purpose, stack_level=stack_level
        )
        if removed:
            self._emit("profile.cleared", {"profile_ids": removed})
        return removed

    def composite(
        self, evse_id: int, duration_s: int, unit: str | None
    ) -> tuple[datetime, ChargingRateUnit, list[CompositePeriod]] | None:
        """Composite schedule from now; None for an unknown EVSE."""
        if evse_id != 0 and evse_id not in self.evses:
            return None
        assert self._now is not None
        kind = self.spec.evses[0].kind if evse_id == 0 else self.evses[evse_id].spec.kind
        u = (
            ChargingRateUnit(unit)
            if unit
            else (ChargingRateUnit.A if kind == "AC" else ChargingRateUnit.W)
        )
        return self._now, u, self.profiles.composite_schedule(evse_id, self._now, duration_s, u)

    def request_start(
        self,
        evse_id: int | None,
        id_token: str,
        id_token_type: str,
        remote_start_id: int | None,
        profile: ChargingProfile | None,
    ) -> tuple[bool, str | None]:
        """Remote start (2.0.1 F01/F02, 1.6 §5.11): ``(accepted, transaction_id if running)``.

        A plugged-in vehicle without a transaction starts one (after the reply is sent);
        an empty EVSE remembers the request until a vehicle plugs in.
        """
        if evse_id is not None:
            candidates = [self.evses[evse_id]] if evse_id in self.evses else []
        else:
            candidates = sorted(
                self.evses.values(), key=lambda e: (e.session is None, e.spec.evse_id)
            )
        for ev in candidates:
            sess = ev.session
            if sess is not None and sess.tx_active:
                if evse_id is not None:
                    return False, sess.transaction_id
                continue
            if sess is not None and not sess.tx_ended:
                sess.id_token, sess.id_token_type = id_token, id_token_type
                sess.remote_start_id, sess.pending_profile = remote_start_id, profile
                sess.authorized = True
                self._defer(partial(self._proto.start_transaction, ev, sess, "RemoteStart"))
                return True, None
            if sess is None:
                ev.pending_remote = (id_token, id_token_type, remote_start_id, profile)
                return True, None
        return False, None

    def request_stop(self, transaction_id: str) -> bool:
        """Remote stop (2.0.1 F03, 1.6 §5.12): end the transaction after the reply."""
        for ev in self.evses.values():
            sess = ev.session
            if sess is not None and sess.tx_active and sess.transaction_id == transaction_id:
                self._defer(partial(self._proto.end_transaction, ev, sess, "Remote", "RemoteStop"))
                return True
        return False

    def trigger(self, message: str, evse_id: int | None) -> str:
        """TriggerMessage (2.0.1 F06, 1.6 §5.17): Accepted / Rejected / NotImplemented."""
        evses = [self.evses[evse_id]] if evse_id in self.evses else list(self.evses.values())
        if evse_id is not None and evse_id != 0 and evse_id not in self.evses:
            return "Rejected"
        if message == "BootNotification":
            self._defer(self._boot)
        elif message == "Heartbeat":
            self._defer(partial(self._send_soon, "Heartbeat", {}))
        elif message == "StatusNotification":
            for ev in evses:
                self._defer(
                    partial(self._send_soon, "StatusNotification", self._proto.status_payload(ev))
                )
        elif message == "MeterValues":
            for ev in evses:
                self._defer(partial(self._trigger_meter, ev))
        else:
            return "NotImplemented"
        return "Accepted"

    def set_config(self, key: str, value: str) -> None:
        """Store a configuration value / device-model variable; applies the known ones.

        Raises:
            RpcError: PropertyConstraintViolation for a known key with a bad value (nothing
                is stored then).
        """
        try:
            if key == "HeartbeatInterval":
                self.heartbeat_interval_s = int(value)
            elif key in ("MeterValueSampleInterval", "TxUpdatedInterval"):
                self.meter_interval_s = max(1, int(value))
                key = "MeterValueSampleInterval"
        except ValueError as e:
            raise RpcError("PropertyConstraintViolation", f"{key}: {value!r}") from e
        self.config[key] = value

    # ================================================================= internals
    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self._on_event is not None and self._now is not None:
            self._on_event(self._now, self.station_id, kind, payload)

    def _frame(self, direction: str, raw: str | bytes) -> None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        self._emit("ocpp.frame", {"direction": direction, "raw": text})

    def _note_bad_frame(self, raw: str | bytes, why: str) -> None:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        self._emit("ocpp.bad_frame", {"reason": why, "raw": text[:500]})

    def _tick(self, now: datetime) -> None:
        """Integrate every EVSE's physics up to ``now`` and make ``now`` current."""
        if now.tzinfo is None:
            raise ValueError("now must be tz-aware UTC")
        if self._now is None:
            self._now = now
            for ev in self.evses.values():
                ev.t = ev.mark_t = now
            return
        if now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now}")
        self._now = now
        for ev in self.evses.values():
            self._integrate(ev, now)

    def _limit(self, ev: Evse, t: datetime) -> Limit:
        if self._online:
            return self.profiles.limit_at(ev.spec.evse_id, t)
        return self.profiles.limit_at(
            ev.spec.evse_id, t, include_tx=False, fallback_current_a=self.spec.fail_safe_current_a
        )

    def _faulty_offer_kw(self, ev: Evse, sess: Session, offered_kw: float, t: datetime) -> float:
        """The offer under ``ignore_profiles`` / ``overshoot`` at ``t`` [kW].

        The hardware maximum is the EVSE rating; on AC scaled to the phases the vehicle
        can use (a 1-phase vehicle on a 3-phase 32 A EVSE: 32 A x 230 V).
        """
        spec = ev.spec
        hardware_kw = spec.max_power_kw
        if spec.kind == "AC":
            hardware_kw *= min(spec.phases, sess.vehicle.ac_phases) / spec.phases
        return self.faults.offer_kw(t, offered_kw, hardware_kw)

    def _offer_kw(self, ev: Evse, sess: Session, lim: Limit) -> tuple[float, int]:
        spec = ev.spec
        if spec.kind == "AC":
            n = min(spec.phases, sess.vehicle.ac_phases, lim.phases or spec.phases)
            return min(lim.current_a * spec.voltage_v * n / 1000.0, spec.max_power_kw), n
        return min(lim.power_w / 1000.0, spec.max_power_kw), 0

    def _integrate(self, ev: Evse, t_end: datetime) -> None:
        t0 = ev.t
        if t0 is None or t_end <= t0:
            return
        ev.t = t_end
        sess = ev.session
        if sess is None or not sess.tx_active:
            ev.last_energy_kwh = 0.0
            return
        lim = self._limit(ev, t0)
        offered_kw, n = self._offer_kw(ev, sess, lim)
        export_kw = 0.0
        if self.spec.ocpp_version == "2.1":
            offered_kw, export_kw = self._operation_kw(ev, sess, offered_kw, t0)
        if self.faults:
            offered_kw = self._faulty_offer_kw(ev, sess, offered_kw, t0)
        dt = (t_end - t0).total_seconds()
        x_kwh = 0.0
        if export_kw > 0.0:
            state, x_kwh = discharge(sess.vehicle, sess.state, export_kw, dt, ev.spec.kind)
            e_kwh = 0.0
        else:
            state, e_kwh = charge(sess.vehicle, sess.state, offered_kw, dt, ev.spec.kind)
        sess.state = state
        sess.energy_kwh += e_kwh
        sess.exported_kwh += x_kwh
        ev.register_wh += e_kwh * 1000.0
        if sess.tamper is not None and sess.tamper.meter_drift != 1.0:
            ev.tamper_offset_wh += e_kwh * 1000.0 * (sess.tamper.meter_drift - 1.0)
        ev.export_wh += x_kwh * 1000.0
        ev.n_used = n
        ev.last_energy_kwh = e_kwh
        ev.last_export_kwh = x_kwh
        ev.last_offered_kw = offered_kw if export_kw <= 0.0 else export_kw

    def _operation_kw(
        self, ev: Evse, sess: Session, offered_kw: float, t: datetime
    ) -> tuple[float, float]:
        """2.1: ``(charge offer, discharge request)`` at the meter under the operation mode, kW.

        ChargingOnly: the limit. Idle: nothing. CentralSetpoint: a set-point >= 0 is a
        charge offer capped by the limit; a negative one asks ``-setpoint`` kW of export,
        capped by ``-dischargeLimit``, the EVSE's discharge rating, and (in
        :func:`devices.vehicle.discharge`) the vehicle's rating and its V2G floor; only a
        bidirectional EVSE with a V2G vehicle discharges.
        """
        op = self.profiles.operation_at(ev.spec.evse_id, t, include_tx=self._online)
        ev.operation_mode = op.mode.value
        if op.mode is OperationMode.IDLE:
            return 0.0, 0.0
        if op.mode is not OperationMode.CENTRAL_SETPOINT or op.setpoint_w is None:
            return offered_kw, 0.0
        sp_kw = op.setpoint_w / 1000.0
        if sp_kw >= 0.0:
            return min(offered_kw, sp_kw), 0.0
        if not (ev.spec.bidirectional and sess.vehicle.v2g):
            return 0.0, 0.0
        want = -sp_kw
        if op.discharge_limit_w is not None:
            want = min(want, -op.discharge_limit_w / 1000.0)
        return 0.0, max(0.0, min(want, ev.spec.discharge_kw))

    def _update_currents(self, ev: Evse) -> None:
        """Current magnitudes per station phase (import or export, by the power's sign)."""
        p = abs(ev.power_kw)
        spec = ev.spec
        if p <= 0.0:
            ev.station_current_a = (0.0, 0.0, 0.0)
        elif spec.kind == "AC":
            n = ev.n_used or spec.phases
            i = p * 1000.0 / (spec.voltage_v * n)
            ev.station_current_a = (i, i if n >= 2 else 0.0, i if n >= 3 else 0.0)
        else:  # DC charger: balanced three-phase AC input at the grid side
            i = p * 1000.0 / (spec.voltage_v * 3)
            ev.station_current_a = (i, i, i)

    def _charging_state(self, ev: Evse, sess: Session) -> str:
        if ev.last_energy_kwh > 0.0 or ev.last_export_kwh > 0.0:  # 2.1: discharging too
            return "Charging"
        if ev.last_offered_kw <= 0.0:
            return "SuspendedEVSE"
        return "SuspendedEV"

    def _initial_charging_state(self, ev: Evse, sess: Session) -> str:
        assert self._now is not None
        offered_kw, _ = self._offer_kw(ev, sess, self._limit(ev, self._now))
        ev.last_offered_kw = offered_kw
        if offered_kw <= 0.0:
            return "SuspendedEVSE"
        if sess.state.soc >= min(sess.state.target_soc, 1.0):
            return "SuspendedEV"
        return "Charging"

    def _new_transaction_number(self) -> int:
        self._tx_counter += 1
        return self._tx_counter

    def _begin_transaction(self, ev: Evse, sess: Session, transaction_id: str | None) -> None:
        """Bookkeeping common to both versions when a transaction starts."""
        assert self._now is not None
        sess.tx_active = True
        sess.started_at = self._now
        sess.meter_start_wh = ev.register_wh
        sess.soc_at_start = sess.state.soc
        sess.samples = 0
        sess.seq_no = 0
        sess.next_meter_at = self._now + timedelta(seconds=self.meter_interval_s)
        sess.charging_state = self._initial_charging_state(ev, sess)
        if transaction_id is not None:
            self._transaction_known(ev, sess, transaction_id)

    def _transaction_known(self, ev: Evse, sess: Session, transaction_id: str) -> None:
        """The transaction has its id: profiles may now refer to it."""
        assert sess.started_at is not None
        sess.transaction_id = transaction_id
        if not sess.tx_active:
            return
        self.profiles.set_transaction(ev.spec.evse_id, transaction_id, sess.started_at)
        self._emit(
            "transaction.started",
            {
                "evse_id": ev.spec.evse_id,
                "transaction_id": transaction_id,
                "id_token": sess.id_token,
                "meter_start_wh": sess.meter_start_wh,
                "soc": sess.state.soc,
            },
        )
        prof = sess.pending_profile
        sess.pending_profile = None
        if isinstance(prof, ChargingProfile):
            self.install_profile(ev.spec.evse_id, prof)

    def _finish_transaction(self, ev: Evse, sess: Session, reason: str) -> None:
        """Bookkeeping common to both versions when a transaction ends."""
        sess.tx_active = False
        sess.tx_ended = True
        sess.charging_state = None
        ev.last_offered_kw = 0.0
        removed = self.profiles.end_transaction(ev.spec.evse_id)
        if removed:
            self._emit("profile.cleared", {"profile_ids": removed, "reason": "TransactionEnded"})
        self._emit(
            "transaction.ended",
            {
                "evse_id": ev.spec.evse_id,
                "transaction_id": sess.transaction_id,
                "reason": reason,
                "energy_kwh": sess.energy_kwh,
                "meter_stop_wh": ev.register_wh,
                "soc": sess.state.soc,
            },
        )

    async def _authorize(self, sess: Session) -> str:
        if not self._online:
            return "Accepted"  # LocalAuthorizeOffline
        reply = await self._ask("Authorize", self._proto.authorize_payload(sess))
        if reply is None:  # lost on the way: treat as offline
            return "Accepted" if not self._online else "Invalid"
        return self._proto.authorize_status(reply)

    # ----------------------------------------------------------------- faults
    async def _apply_faults(self, now: datetime) -> None:
        """Emit fault windows opening/closing at ``now``; drop the link for ``link_drop``."""
        first: dict[str, StationFault] = {}
        for fault in self.faults.faults:
            if fault.active(now):
                first.setdefault(fault.kind, fault)
        on = frozenset(first)
        for kind in sorted(on - self._faults_on):
            f = first[kind]
            self._emit(
                "fault.started",
                {
                    "kind": kind,
                    "end": iso(f.end),
                    "delay_s": f.delay_s,
                    "skew_s": f.skew_s,
                    "factor": f.factor,
                    "every_s": f.every_s,
                },
            )
        for kind in sorted(self._faults_on - on):
            self._emit("fault.ended", {"kind": kind})
        self._faults_on = on
        if "link_drop" in on and self._online:
            ws = self._ws
            self._set_offline("injected fault: link_drop")
            if ws is not None:
                await ws.close(1001, "link drop (injected fault)")

    def _send_malformed(self) -> None:
        """Queue the next malformed frame (cycling through the variants)."""
        variant = MALFORMED_KINDS[self._malformed_n % len(MALFORMED_KINDS)]
        self._malformed_n += 1
        uid = self._next_message_id()
        if variant == "invalid_json":
            frame, reply_id = f'[2,"{uid}","Heartbeat",{{', "-1"
        elif variant == "bad_message_type":
            frame, reply_id = orjson.dumps([7, uid, "Heartbeat", {}]).decode(), uid
        else:  # bad_payload: a property the Heartbeat schema forbids
            bad = [2, uid, "Heartbeat", {"injectedFault": 1}]
            frame, reply_id = orjson.dumps(bad).decode(), uid
        self._emit("fault.malformed_frame", {"variant": variant, "frame": frame})
        self._outbox.append(_Out("Heartbeat", {}, False, None, None, raw=(reply_id, frame)))
        if self._sender is None:
            self._start_sender()

    async def _send_raw(self, item: _Out) -> bool:
        """Send an injected malformed frame and wait for the CSMS's answer to it."""
        assert item.raw is not None
        reply_id, frame = item.raw
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._pending = (reply_id, "malformed", fut)
        try:
            reply = await self._send_await(frame, fut)
        except (ConnectionClosed, ConnectionError, OSError):
            self._pending = None
            self._set_offline("connection lost during a call")
            if self._outbox and self._outbox[0] is item:
                self._outbox.popleft()
            return False
        except TimeoutError:
            self._pending = None
            self._outbox.popleft()
            self._emit("fault.malformed_unanswered", {"message_id": reply_id})
            return True
        self._pending = None
        self._outbox.popleft()
        if reply[0] == 4:
            self._emit(
                "ocpp.callerror",
                {
                    "direction": "in",
                    "action": None,
                    "code": reply[2] if len(reply) > 2 else "?",
                    "description": reply[3] if len(reply) > 3 else "",
                    "injected": True,
                },
            )
        else:
            self._emit("fault.malformed_accepted", {"message_id": reply_id})
        return True

    # ----------------------------------------------------------------- link
    def _auth_headers(self) -> dict[str, str] | None:
        pw = self.spec.password
        if pw is None:
            return None
        token = base64.b64encode(f"{self.station_id}:{pw}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _open(self) -> None:
        tls: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
        ws = await websockets.connect(
            self.url,
            subprotocols=[self._proto.subprotocol],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            proxy=None,
            additional_headers=self._auth_headers(),
            open_timeout=self._response_timeout,
            **tls,
        )
        if ws.subprotocol != self._proto.subprotocol:
            await ws.close()
            raise ConnectionError(f"CSMS chose subprotocol {ws.subprotocol!r}")
        cp = self._proto.make_charge_point(ws)
        cp._unique_id_generator = self._next_message_id
        self._ws, self._cp = ws, cp
        self._online = True
        self._retry_attempt = 0
        self._next_retry = None
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(cp, ws))
        self._emit("ocpp.connected", {"url": self.url, "subprotocol": ws.subprotocol})

    async def _after_connect(self, *, wait: bool) -> None:
        futs: list[asyncio.Future[dict[str, Any] | None] | None] = []
        if not self._booted:
            await self._boot()
        for ev in self.evses.values():
            futs.append(
                self._enqueue("StatusNotification", self._proto.status_payload(ev), wait=wait)
            )
        if self._outbox and self._sender is None:
            self._start_sender()
        if wait:
            await self._wait(futs)

    async def _boot(self) -> None:
        reply = await self._ask("BootNotification", self._proto.boot_payload(), front=True)
        if reply is None:
            return
        status = reply.get("status")
        interval = int(reply.get("interval", 0))
        self._emit("ocpp.boot", {"status": status, "interval": interval})
        if interval > 0:
            self.heartbeat_interval_s = interval
            self.config["HeartbeatInterval"] = str(interval)
        assert self._now is not None
        if status == "Accepted":
            self._booted = True
            self._last_heartbeat = self._now
        else:
            self._boot_retry_at = self._now + timedelta(seconds=interval or 60)

    async def _reconnect(self) -> None:
        try:
            await self._open()
        except Exception as e:  # refused, handshake rejected, timeout
            self._retry_attempt += 1
            self._schedule_retry()
            self._emit(
                "ocpp.reconnect_failed",
                {
                    "attempt": self._retry_attempt,
                    "error": f"{type(e).__name__}: {e}",
                    "next_retry": iso(self._next_retry) if self._next_retry else None,
                },
            )
            return
        finally:
            self._reconnecting = False
        await self._after_connect(wait=False)

    def _schedule_retry(self) -> None:
        if self._now is None:
            return
        base = min(self.RETRY_WAIT_MIN_S * 2.0**self._retry_attempt, self.RETRY_WAIT_MAX_S)
        delay = base + float(self._rng.uniform(0.0, self.RETRY_RANDOM_RANGE_S))
        self._next_retry = self._now + timedelta(seconds=delay)

    async def _read_loop(self, cp: Any, ws: Any) -> None:
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            LOGGER.exception("%s: reader failed", self.station_id)
        finally:
            if self._ws is ws:
                self._set_offline("connection closed")

    def _check_link(self) -> None:
        if self._online and self._ws is not None and self._ws.state is not State.OPEN:
            self._set_offline("connection closed")

    def _set_offline(self, reason: str) -> None:
        if not self._online:
            return
        self._online = False
        self._fail_waiters()
        if not self._closed:
            self._retry_attempt = 0
            self._schedule_retry()
        self._emit(
            "ocpp.disconnected",
            {
                "reason": reason,
                "queued": len(self._outbox),
                "next_retry": iso(self._next_retry) if self._next_retry else None,
            },
        )

    def _fail_waiters(self) -> None:
        """Wake every waiter: the pending call fails, queued callers get None."""
        if self._pending is not None and not self._pending[2].done():
            self._pending[2].set_exception(ConnectionError("connection lost"))
        for item in list(self._outbox):
            if item.future is not None and not item.future.done():
                item.future.set_result(None)
            if not item.tx:
                self._outbox.remove(item)

    # ----------------------------------------------------------------- outgoing calls
    def _next_message_id(self) -> str:
        self._msg_counter += 1
        return f"{self.station_id}-{self._msg_counter}"

    def _enqueue(
        self,
        action: str,
        payload: _Payload,
        *,
        tx: bool = False,
        wait: bool = False,
        on_reply: Callable[[dict[str, Any]], None] | None = None,
        front: bool = False,
    ) -> asyncio.Future[dict[str, Any] | None] | None:
        """Queue a CALL; with ``wait`` return a future of the reply payload (None: no reply).

        Offline, non-transaction calls are dropped (their future gives None) and
        transaction calls are kept for after the reconnect.
        """
        fut: asyncio.Future[dict[str, Any] | None] | None = None
        if wait:
            fut = asyncio.get_running_loop().create_future()
            if not self._online:
                fut.set_result(None)
        if not self._online and not tx:
            return fut
        item = _Out(action, payload, tx, fut, on_reply)
        if front:
            self._outbox.appendleft(item)
        else:
            self._outbox.append(item)
        if self._online and self._sender is None:
            self._start_sender()
        return fut

    def _ask(
        self,
        action: str,
        payload: _Payload,
        *,
        tx: bool = False,
        front: bool = False,
    ) -> asyncio.Future[dict[str, Any] | None]:
        """Queue a CALL and return the future of its reply payload (None: no reply)."""
        fut = self._enqueue(action, payload, tx=tx, wait=True, front=front)
        assert fut is not None
        return fut

    def _start_sender(self) -> None:
        self._sender = self._spawn(self._send_loop())

    async def _send_soon(self, action: str, payload: dict[str, Any]) -> None:
        await self._wait([self._enqueue(action, payload, wait=True)])

    async def _trigger_meter(self, ev: Evse) -> None:
        self._proto.meter_values(
            ev, ev.session if ev.session and ev.session.tx_active else None, "Trigger"
        )

    @staticmethod
    async def _wait(futs: list[asyncio.Future[dict[str, Any] | None] | None]) -> None:
        for f in futs:
            if f is not None:
                await f

    async def _send_loop(self) -> None:
        try:
            while self._outbox and self._online:
                if not await self._send_one(self._outbox[0]):
                    break
        finally:
            self._sender = None

    async def _send_one(self, item: _Out) -> bool:
        """Send the head of the outbox and wait for its reply; False if the link dropped."""
        if item.raw is not None:
            return await self._send_raw(item)
        payload = item.payload() if callable(item.payload) else item.payload
        outbox = self._outbox
        if payload is None:
            outbox.popleft()
            self._resolve(item, None)
            return True
        version = self.spec.ocpp_version
        action = item.action
        try:
            validate(version, action, payload)
        except RpcError as e:
            outbox.popleft()
            LOGGER.error("%s: invalid outgoing %s: %s", self.station_id, action, e)
            self._emit(
                "ocpp.invalid_message",
                {
                    "direction": "out",
                    "action": action,
                    "code": e.code,
                    "description": e.description,
                },
            )
            self._resolve(item, None)
            return True
        uid = self._next_message_id()
        frame = orjson.dumps([2, uid, action, payload]).decode()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._pending = (uid, action, fut)
        perf = self._perf
        t0 = perf() if perf is not None else 0.0
        try:
            reply = await self._send_await(frame, fut)
        except (ConnectionClosed, ConnectionError, OSError):
            self._pending = None
            self._set_offline("connection lost during a call")
            if outbox and outbox[0] is item and not item.tx:
                outbox.popleft()
            self._resolve(item, None)
            return False
        except TimeoutError:
            self._pending = None
            if outbox and outbox[0] is item:
                outbox.popleft()
            self._emit("ocpp.timeout", {"action": action, "message_id": uid})
            self._resolve(item, None)
            return True
        self._pending = None
        if perf is not None:
            self.rtt_samples_s.append(perf() - t0)
        outbox.popleft()
        if reply[0] == 4:
            code = reply[2] if len(reply) > 2 else "?"
            desc = reply[3] if len(reply) > 3 else ""
            self._emit(
                "ocpp.callerror",
                {"direction": "in", "action": action, "code": code, "description": desc},
            )
            self._resolve(item, None)
            return True
        result: dict[str, Any] = reply[2] if len(reply) > 2 else {}
        try:
            validate(version, action, result, response=True)
        except RpcError as e:
            self._emit(
                "ocpp.invalid_message",
                {"direction": "in", "action": action, "code": e.code, "description": e.description},
            )
            self._resolve(item, None)
            return True
        if item.on_reply is not None:
            try:
                item.on_reply(result)
            except Exception:
                LOGGER.exception("%s: reply handler of %s failed", self.station_id, action)
        self._resolve(item, result)
        return True

    async def _send_await(self, frame: str, fut: asyncio.Future[list[Any]]) -> list[Any]:
        """Send ``frame`` (recorded if asked); await its reply (expires after the timeout)."""
        if self._record_frames:
            self._frame("out", frame)
        await self._ws.send(frame)
        timer = asyncio.get_running_loop().call_later(self._response_timeout, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    @staticmethod
    def _resolve(item: _Out, value: dict[str, Any] | None) -> None:
        if item.future is not None and not item.future.done():
            item.future.set_result(value)

    def _on_reply(self, msg: list[Any]) -> None:
        p = self._pending
        if p is None or len(msg) < 2 or msg[1] != p[0]:
            self._emit("ocpp.unexpected_reply", {"message_id": msg[1] if len(msg) > 1 else None})
            return
        if not p[2].done():
            p[2].set_result(msg)

    # ----------------------------------------------------------------- tasks
    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            LOGGER.error("%s: task failed: %r", self.station_id, exc, exc_info=exc)
            self._emit("station.error", {"error": f"{type(exc).__name__}: {exc}"})

    def _defer(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run ``fn`` in a tracked task once the reply to the current CALL is sent."""
        self._deferred.append(fn)

    def _handler_begin(self) -> None:
        self._handlers += 1

    def _handler_end(self) -> None:
        self._handlers -= 1
        if self._deferred:
            todo, self._deferred = self._deferred, []
            for fn in todo:
                self._spawn(fn())
        if not self._handlers and self._handlers_done is not None:
            if not self._handlers_done.done():
                self._handlers_done.set_result(None)
            self._handlers_done = None


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
