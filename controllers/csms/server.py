"""The CSMS: OCPP 2.1 / 2.0.1 / 1.6 server with dynamic load management and V2G.

``Csms`` owns a websockets server (``ws://host:port/<station id>``, or any prefix path
such as ``/ocpp/<station id>``), one :class:`~controllers.csms.station.StationLink` per
connected station, the :class:`~controllers.csms.registry.Registry`, and the DLM loop:
``step(now)`` builds the DLM input from the registry, allocates
(:func:`controllers.dlm.allocate`) and sends a TxProfile to every EVSE whose set-point
changed, concurrently for all stations, sequentially per station (one outstanding call
per connection).

Admission (OCPP-J, OCPP 2.0.1 Part 4 section 3 and Part 2 section A):

- station id: last segment of the URL path; with ``known_stations`` configured an
  unknown id gets HTTP 404;
- OCPP security profile (``CsmsConfig.security``, :mod:`controllers.csms.security`):
  profile 0 asks HTTP Basic only from stations with a password; 1 and 2 from every
  station (user = station id, password checked against its scrypt hash; missing, wrong
  or unknown gives HTTP 401); 2 and 3 serve ``wss://`` (TLS 1.2+); 3 requires a client
  certificate from ``tls_ca_file`` whose subject CN is the station id (else HTTP 403).
  Every authentication failure is also emitted as ``security.auth_failed``;
- subprotocol ``ocpp2.1``, ``ocpp2.0.1`` or ``ocpp1.6`` (in that order of preference;
  a 2.1 link is a :class:`~controllers.csms.station.Station21`). A client offering none of
  them completes the handshake without a ``Sec-WebSocket-Protocol`` header and is closed
  at once (code 1002), as OCPP-J prescribes.

Every refusal is logged (logger ``controllers.csms``) and emitted as
``station.rejected``.

EVSE layout: kind, rating and phase rotation come from ``CsmsConfig.evses`` (the
operator's site configuration, which the twin runtime fills from the scenario); what
the protocol reports narrows it: EVSE ids (StatusNotification, TransactionEvent), phases
in use (``numberOfPhasesUsed``, per-phase Current.Import), cable and vehicle limits
(``cableMaxCurrent``, NotifyEVChargingNeeds). An EVSE missing from the configuration is
taken as AC, 3 phases, ``unknown_evse_max_current_a``, unknown rotation (a 1-phase
vehicle is then reserved on every phase).

V2G (OCPP 2.1): a controller (VPP, market) commands a signed set-point per EVSE with
:meth:`Csms.set_evse_setpoint_kw`; sign convention: positive = import (charging),
negative = export (discharging), kW at the EVSE meter. See that method for the rules
(who may discharge, how the DLM counts it, why the site limit holds).

Time is injected: handlers use the latest ``now`` given to :meth:`Csms.step` or
:meth:`Csms.set_now`; nothing reads the wall clock (round-trip times use the injected
``perf_counter`` when one is given).
"""

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from controllers.csms.auth import hash_password, is_hashed
from controllers.csms.config import CsmsConfig, EvseConfig
from controllers.csms.profiles import RateUnit
from controllers.csms.registry import Registry, TransactionRecord
from controllers.csms.rpc import SUBPROTOCOLS, VERSION_OF_SUBPROTOCOL, station_id_from_path
from controllers.csms.security import (
    BASIC_CHALLENGE,
    StationAuthenticator,
    report_handshake_failures,
    server_ssl_context,
)
from controllers.csms.station import (
    CommandError,
    Station16,
    Station21,
    Station201,
    StationLink,
)
from controllers.dlm import (
    DlmResult,
    EvseInput,
    EvseKey,
    SiteMeasurement,
    allocate,
    site_phases,
)

logger = logging.getLogger("controllers.csms")

EventSink = Callable[[datetime, str, str, dict[str, Any]], None]
"""(time, source, kind, payload) -> None; source is ``csms`` or ``dlm``."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: round-trip time samples a CSMS keeps (the most recent ones; see ``rtt_samples_s``)
RTT_SAMPLES_KEPT = 100_000
_CHANGE_EPS = 1e-9
#: Marks a batch item as a 2.1 CentralSetpoint TxProfile (value in W, signed).
_SETPOINT = "setpoint_w"


@dataclass(frozen=True)
class DriverInput:
    """What a driver entered in the app for a session (see :meth:`Csms.set_driver_input`)."""

    requested_energy_kwh: float | None
    departure: datetime | None
    priority: int = 0


def _require_utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return now


class Csms:
    """OCPP server (2.1, 2.0.1 and 1.6) with dynamic load management and V2G set-points.

    Args:
        config: site, DLM, admission and EVSE layout.
        on_event: receives ``(now, source, kind, payload)`` events: ``station.connected``
            / ``station.rejected`` / ``station.disconnected`` / ``station.booted`` /
            ``station.default_profile``, ``transaction.started`` / ``transaction.ended``,
            ``dlm.setpoint`` (only on change) / ``dlm.setpoint_failed``, V2G (see
            :meth:`set_evse_setpoint_kw`): ``v2g.setpoint`` (station, evse, transaction,
            setpoint_kw), ``v2g.setpoint_clamped`` (station, evse, requested_kw, reason),
            ``v2g.setpoint_rejected`` (station, evse, value [W], status),
            ``ocpp.callerror`` (sent or received), ``ocpp.frame`` (with
            ``record_frames``), ``security.auth_failed`` (station, reason, profile,
            HTTP status; never a password), ``security.tls_failed`` (a TLS handshake
            refused: OpenSSL's reason, profile); faulty stations (see
            :mod:`controllers.csms.station`): ``station.malformed_frame``,
            ``station.unresponsive`` / ``station.responsive``, ``station.clock_skew`` /
            ``station.clock_skew_cleared``, ``evse.profile_violation`` /
            ``evse.profile_compliant`` (see :meth:`step`).
        perf_counter: clock for round-trip times [s] (e.g. ``time.perf_counter``);
            without one no RTT is measured.

    Call :meth:`set_now` before stations connect: replies (BootNotification
    ``currentTime``) and events carry the latest injected time.

    Attributes:
        config: the configuration, with ``station_passwords`` replaced by their hashes.
        registry: stations, EVSEs and transactions.
        rtt_samples_s: round-trip time of every CSMS request answered [s], the most recent
            ones only: beyond :data:`RTT_SAMPLES_KEPT` the oldest half is dropped, so that a
            CSMS running for months does not grow by one float per request.
    """

    def __init__(
        self,
        config: CsmsConfig,
        *,
        on_event: EventSink | None = None,
        perf_counter: Callable[[], float] | None = None,
    ) -> None:
        hashes = {
            sid: pw if is_hashed(pw) else hash_password(pw)
            for sid, pw in sorted(config.station_passwords.items())
        }
        # keep only the hashes: plain passwords do not stay in memory here
        self.config = config.model_copy(update={"station_passwords": hashes})
        self.registry = Registry()
        self.rtt_samples_s: list[float] = []
        self._on_event = on_event
        self._perf = perf_counter
        self._now = _EPOCH
        self._known = frozenset(config.known_stations)
        self._auth = StationAuthenticator(
            config.security.profile, {**hashes, **config.security.passwords}
        )
        self._evse_configs: dict[EvseKey, EvseConfig] = {
            (sid, e.evse_id): e for sid, evses in config.evses.items() for e in evses
        }
        self._links: dict[str, StationLink] = {}
        self._sockets: dict[str, ServerConnection] = {}
        self._non_ev_kw: float | None = None
        self._non_ev_at: datetime | None = None
        self._non_ev_lost = False
        self._hold_minimum = False
        self._external_kw: float | None = None
        self._external_until: datetime | None = None
        self._driver: dict[str, DriverInput] = {}
        self._setpoints: dict[EvseKey, float] = {}
        self._setpoint_since: dict[EvseKey, datetime] = {}
        self._uncontrolled: set[EvseKey] = set()
        self._violating: dict[EvseKey, float] = {}
        self._sending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._station_tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._handlers = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: Server | None = None
        self._last: DlmResult | None = None
        self._tx_numbers = itertools.count(1)
        self._targets: dict[EvseKey, float] = {}
        self._target_phases: dict[EvseKey, int] = {}  # the vehicle's, as a controller states
        self._v2g_sent: dict[EvseKey, float] = {}
        self._v2g_refused: set[EvseKey] = set()

    # ================================================================ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start listening; returns the bound port (``port=0``: any free port).

        Security profiles 2 and 3 listen with TLS (``wss://``).

        Raises:
            OSError / ssl.SSLError: a TLS file is missing or unusable.
        """
        sec = self.config.security
        tls = None
        if sec.profile >= 2:
            assert sec.tls_cert_file is not None and sec.tls_key_file is not None
            tls = server_ssl_context(
                sec.tls_cert_file, sec.tls_key_file, sec.tls_ca_file if sec.profile == 3 else None
            )
            report_handshake_failures(tls, self._tls_failed)
        self._server = await serve(
            self._serve_station,
            host,
            port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
            ssl=tls,
        )
        bound = int(next(iter(self._server.sockets)).getsockname()[1])
        scheme = "ws" if tls is None else "wss"
        logger.info(
            "CSMS listening on %s://%s:%d/<station id> (security profile %d)",
            scheme,
            host,
            bound,
            sec.profile,
        )
        return bound

    def _tls_failed(self, reason: str) -> None:
        """A TLS handshake failed (no station id yet): log it, emit ``security.tls_failed``."""
        logger.warning("TLS handshake with a station failed: %s", reason)
        profile = self.config.security.profile
        self.emit("csms", "security.tls_failed", {"reason": reason, "profile": profile})

    async def stop(self) -> None:
        """Close every connection and the server; cancel outstanding tasks."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def busy(self) -> bool:
        """True while a handler runs or a CSMS request / spawned task is in flight."""
        return self._handlers > 0 or bool(self._tasks)

    async def drain(self) -> None:
        """Return when no request of the CSMS awaits a reply, no task and no handler runs."""
        while self.busy:
            await self._idle.wait()

    # ================================================================== inputs

    @property
    def now(self) -> datetime:
        """Latest injected time (UTC)."""
        return self._now

    def set_now(self, now: datetime) -> None:
        """Set the time used by handlers of incoming messages (tz-aware UTC)."""
        self._now = _require_utc(now)

    def set_non_ev_load(self, power_kw: float | None, measured_at: datetime) -> None:
        """Measured site load without the EVs [kW] (import positive) and its time.

        Args:
            power_kw: the non-EV load [kW]; ``None`` = the site meter is lost as of
                ``measured_at``: the last value and its time are kept, and the DLM treats
                the measurement as stale whatever its age (fail safe: every EVSE held at
                its minimum) until a later call with a value clears it.
            measured_at: time of the measurement, or of the loss (tz-aware UTC).
        """
        at = _require_utc(measured_at)
        if power_kw is None:
            if not self._non_ev_lost:
                logger.warning("site meter lost at %s: EVSEs held at their minimum", at)
            self._non_ev_lost = True
            return
        self._non_ev_kw = power_kw
        self._non_ev_at = at
        self._non_ev_lost = False

    def set_hold_minimum(self, hold: bool) -> None:
        """Shed every EV to its minimum current from the next step on (grid emergency).

        ``False`` lifts it. The external limit still applies; EVSEs whose minimum does not
        fit are paused.
        """
        self._hold_minimum = bool(hold)

    def set_external_limit(
        self, power_kw: float | None, valid_until: datetime | None = None
    ) -> None:
        """An extra import limit [kW] (e.g. an OpenADR event) until ``valid_until``.

        ``None`` removes it; after ``valid_until`` it no longer applies.
        """
        self._external_kw = power_kw
        self._external_until = None if valid_until is None else _require_utc(valid_until)

    def set_driver_input(
        self,
        id_token: str,
        requested_energy_kwh: float | None,
        departure: datetime | None,
        priority: int = 0,
    ) -> None:
        """Driver app input for the transaction(s) with this id token, now or later.

        Args:
            id_token: the id token (1.6 id tag) of the session.
            requested_energy_kwh: energy wanted [kWh], None if unknown.
            departure: departure time (tz-aware UTC), None if unknown.
            priority: higher is served first.
        """
        self._driver[id_token] = DriverInput(
            requested_energy_kwh,
            None if departure is None else _require_utc(departure),
            priority,
        )

    def set_evse_setpoint_kw(
        self, station_id: str, evse_id: int, power_kw: float | None,
        *, vehicle_phases: int | None = None,
    ) -> None:
        """A controller's signed set-point for one EVSE [kW at its meter], from the next step.

        Sign: positive = import (charge), negative = export (V2G discharge). ``None``
        removes it (the EVSE returns to plain DLM allocation). The target applies to the
        EVSE's open transaction and is forgotten when that transaction ends.

        Rules (applied at every :meth:`step`):

        - Discharge (``power_kw < 0``) is sent only to an OCPP 2.1 station whose EVSE is
          configured ``bidirectional`` (:class:`~controllers.csms.config.EvseConfig`), as
          a TxProfile with one ``CentralSetpoint`` period (``setpoint`` = ``power_kw`` x
          1000 W, ``limit`` 0, ``dischargeLimit`` = the set-point). Elsewhere (1.6, 2.0.1,
          not bidirectional) the target is clamped to 0 (charge-only: the EVSE is paused)
          and ``v2g.setpoint_clamped`` is emitted. A station that answers Rejected (a
          vehicle that is not V2G-capable) is clamped to 0 for the rest of the transaction
          (``v2g.setpoint_rejected``).
        - A discharging EVSE leaves the DLM's allocation; its *metered* export, at most
          ``|power_kw|``, is credited to the site as headroom (the non-EV load handed to
          the DLM is reduced by it). Export that is commanded but not yet metered (or that
          stopped at the vehicle's V2G floor) is not credited, so the site limit holds
          with the same guarantee as the DLM's: other EVSEs are raised only after the
          export shows in a meter value, and are reduced at the next step when it stops
          (the site may exceed its limit by the lost export for at most one meter
          interval plus one control step).
        - A charge target (``power_kw >= 0``, or a clamped one) caps the EVSE's maximum in
          the DLM; the DLM may give less (the site limit always wins). On AC the cap is a
          current per phase: ``power_kw / (voltage x phases)`` with the phases the
          transaction is measured or reported to use, else ``vehicle_phases`` (1 or 3:
          what the controller knows of the vehicle, e.g. a 1-phase on-board charger),
          else the EVSE's phases. Without ``vehicle_phases`` a 1-phase vehicle that has not
          drawn yet would be capped at a third of the target, below its minimum current
          for small targets, and never start. The DLM still reserves the cap on every phase
          the EVSE may load until the phases are measured.

        Raises:
            ValueError: ``power_kw`` is not finite, or ``vehicle_phases`` not 1..3.
        """
        key = (station_id, evse_id)
        if power_kw is None:
            self._target_phases.pop(key, None)
            if self._targets.pop(key, None) is not None and key in self._v2g_sent:
                self._end_discharge(key)
            return
        if power_kw != power_kw or power_kw in (float("inf"), float("-inf")):
            raise ValueError(f"power_kw must be finite, got {power_kw}")
        if vehicle_phases is not None and vehicle_phases not in (1, 2, 3):
            raise ValueError(f"vehicle_phases must be 1..3, got {vehicle_phases}")
        self._targets[key] = float(power_kw)
        if vehicle_phases is None:
            self._target_phases.pop(key, None)
        else:
            self._target_phases[key] = vehicle_phases
        if power_kw >= 0.0 and key in self._v2g_sent:
            self._end_discharge(key)

    def setpoint_targets(self) -> dict[EvseKey, float]:
        """The controllers' signed set-points in force [kW] (see :meth:`set_evse_setpoint_kw`)."""
        return dict(self._targets)

    def _target_phase_count(self, evse: EvseInput) -> int:
        """Phases a charge target is divided by (see :meth:`set_evse_setpoint_kw`)."""
        tx = self.registry.active_transaction_on(*evse.key)
        known = tx is not None and (tx.active_phases is not None or bool(tx.phases_used))
        stated = self._target_phases.get(evse.key)
        if known or stated is None:
            return max(len(evse.phases), 1)
        return min(stated, max(len(evse.phases), 1))  # a 3-phase car on a 1-phase EVSE

    def _end_discharge(self, key: EvseKey) -> None:
        """Back to the DLM: its next TxProfile must replace the CentralSetpoint one."""
        self._v2g_sent.pop(key, None)
        self._setpoints.pop(key, None)
        self._uncontrolled.add(key)  # worst case until a DLM TxProfile is accepted

    def _can_discharge(self, key: EvseKey) -> bool:
        station = self.registry.station(key[0])
        config = self._evse_config(*key)
        return (
            station.ocpp_version == "2.1"
            and config is not None
            and config.bidirectional
            and key not in self._v2g_refused
        )

    def _apply_targets(
        self, inputs: list[EvseInput], site: SiteMeasurement
    ) -> tuple[list[EvseInput], SiteMeasurement, dict[EvseKey, float]]:
        """Split the DLM inputs: discharging EVSEs out (credited), targets as maxima."""
        kept: list[EvseInput] = []
        discharging: dict[EvseKey, float] = {}
        credit_kw = 0.0
        voltage_v = self.config.site.voltage_v
        for evse in inputs:
            key = evse.key
            target = self._targets.get(key)
            if target is None:
                kept.append(evse)
                continue
            if target < 0.0 and self._can_discharge(key):
                discharging[key] = target
                tx = self.registry.active_transaction_on(*key)
                exported_kw = max(-(tx.power_w or 0.0), 0.0) / 1000.0 if tx else 0.0
                credit_kw += min(exported_kw, -target)
                continue
            if target < 0.0:
                if key not in self._v2g_refused:
                    self.emit("dlm", "v2g.setpoint_clamped", {
                        "station": key[0], "evse": key[1], "requested_kw": target,
                        "reason": "charge-only EVSE (not OCPP 2.1 or not bidirectional)"})
                target = 0.0
            if evse.kind == "AC":
                cap_a = target * 1000.0 / (voltage_v * self._target_phase_count(evse))
                kept.append(replace(evse, max_current_a=min(evse.max_current_a, cap_a)))
            else:
                kept.append(replace(evse, max_power_w=min(evse.max_power_w, target * 1000.0)))
        if credit_kw > 0.0 and site.non_ev_load_kw is not None:
            site = replace(site, non_ev_load_kw=site.non_ev_load_kw - credit_kw)
        return kept, site, discharging

    # ===================================================================== DLM

    async def step(self, now: datetime) -> None:
        """Run the DLM at ``now`` and send the TxProfiles that changed.

        Sends are started as tracked tasks (one per station, sequential within it) and
        awaited by :meth:`drain`; a station still busy with the previous sends, or
        offline, is skipped until the next step. An EVSE whose profile is in flight or
        was not accepted (Rejected, CALLERROR, timeout) counts as worst case (its maximum
        reserved) until one is accepted, and is sent again at every step.

        Break before make: the set-points that go up are sent only once every set-point
        that goes down in the same step has been accepted; if one is not (an unresponsive
        or lost station), the increases are held (``dlm.increase_held``) and decided again
        at the next step, so a station that fails to shed never leaves the site over its
        limit because another was raised into the capacity it should have freed. (A
        worst-case EVSE is already counted at its maximum: its failing does not hold.)

        Profile compliance: a meter value taken at least ``profile_violation_grace_s``
        after the set-point was sent (one meter interval plus the response time), of an
        EVSE whose set-point was accepted, is compared with the set-point; drawing more
        than the set-point's power + ``max(profile_violation_tolerance_kw,
        profile_violation_tolerance_share x set-point power)`` (defaults: max(1 kW,
        10 %)) is a violation (the station ignores or overshoots its profile):
        ``evse.profile_violation`` (station, evse, transaction, limit_kw, measured_kw,
        tolerance_kw) is emitted and the DLM reserves the EVSE's measured current instead
        of its set-point (``EvseInput.reserve_measured``) and never raises its set-point,
        so the other EVSEs are reduced, until a later judged meter value is within the
        tolerance (``evse.profile_compliant``). The site can exceed its limit only until
        the violation is seen: by at most the EVSE's excess over its set-point, for at
        most the grace period plus one control step.
        """
        self.set_now(now)
        inputs = [self._profile_check(e, now) for e in self._dlm_inputs(now)]
        inputs, site, discharging = self._apply_targets(inputs, self._site_measurement(now))
        result = allocate(self.config.site, site, inputs, self.config.dlm, now)
        self._last = result
        batches: dict[str, list[tuple[int, str, float, RateUnit]]] = {}
        for key, target in sorted(discharging.items()):
            station_id, evse_id = key
            tx = self.registry.active_transaction_on(station_id, evse_id)
            if tx is None or station_id not in self._links or station_id in self._sending:
                continue
            if self._v2g_sent.get(key) == target:
                continue
            self._v2g_sent[key] = target
            self.emit("dlm", "v2g.setpoint", {"station": station_id, "evse": evse_id,
                                              "transaction": tx.transaction_id,
                                              "setpoint_kw": target})
            item = (evse_id, tx.transaction_id, target * 1000.0, _SETPOINT)
            batches.setdefault(station_id, []).append(item)  # type: ignore[arg-type]
        raises: dict[str, list[tuple[int, str, float, RateUnit]]] = {}
        must_shed: set[EvseKey] = set()
        for evse in inputs:
            key = evse.key
            station_id, evse_id = key
            allocation = result.allocations[key]
            old, new = evse.previous_setpoint, allocation.setpoint
            changed = abs(new - old) > _CHANGE_EPS
            tx = self.registry.active_transaction_on(station_id, evse_id)
            if not (changed or key in self._uncontrolled) or evse_id <= 0 or tx is None:
                continue
            if station_id not in self._links or station_id in self._sending:
                continue
            if changed:
                self.emit(
                    "dlm",
                    "dlm.setpoint",
                    {
                        "station": station_id,
                        "evse": evse_id,
                        "transaction": tx.transaction_id,
                        "old": old,
                        "new": new,
                        "unit": allocation.unit,
                        "reason": allocation.reason,
                    },
                )
            item = (evse_id, tx.transaction_id, new, allocation.unit)
            if new > old + _CHANGE_EPS:  # sent once every decrease of the step is applied
                raises.setdefault(station_id, []).append(item)
                continue
            self._setpoints[key] = new
            self._setpoint_since[key] = now
            self._uncontrolled.add(key)  # until the station accepts it
            batches.setdefault(station_id, []).append(item)
            if not allocation.worst_case:  # counted at its new set-point: must shed
                must_shed.add(key)
        failed: list[str] = []
        sends: list[asyncio.Task[None]] = []
        for station_id, batch in sorted(batches.items()):
            self._sending.add(station_id)
            sends.append(self._spawn_task(
                station_id, self._send_batch(station_id, batch, failed, must_shed)))
        if raises:
            self._sending.update(raises)
            self._spawn_task("", self._send_raises(now, sends, failed, raises))

    def _profile_check(self, evse: EvseInput, now: datetime) -> EvseInput:
        """Judge the EVSE's latest meter value against its set-point (see :meth:`step`)."""
        key = evse.key
        cfg = self.config
        judged = (
            evse.controllable
            and evse.measured_at is not None
            and evse.setpoint_since is not None
            and evse.measured_at
            >= evse.setpoint_since + timedelta(seconds=cfg.profile_violation_grace_s)
        )
        measured_kw: float | None = None
        limit_kw = 0.0
        if judged:
            voltage_v = cfg.site.voltage_v
            if evse.kind == "AC":
                n = len(evse.phases)
                limit_kw = evse.previous_setpoint * n * voltage_v / 1000.0
                if evse.measured_current_a:
                    measured_kw = max(evse.measured_current_a) * n * voltage_v / 1000.0
                elif evse.measured_power_w is not None:
                    measured_kw = evse.measured_power_w / 1000.0
            elif evse.measured_power_w is not None:
                limit_kw = evse.previous_setpoint / 1000.0
                measured_kw = evse.measured_power_w / 1000.0
        if measured_kw is not None:
            tolerance_kw = max(
                cfg.profile_violation_tolerance_kw,
                cfg.profile_violation_tolerance_share * limit_kw,
            )
            payload: dict[str, Any] = {
                "station": key[0],
                "evse": key[1],
                "limit_kw": round(limit_kw, 3),
                "measured_kw": round(measured_kw, 3),
                "tolerance_kw": round(tolerance_kw, 3),
            }
            if measured_kw > limit_kw + tolerance_kw:
                if key not in self._violating:
                    tx = self.registry.active_transaction_on(*key)
                    payload["transaction"] = tx.transaction_id if tx else None
                    logger.warning(
                        "EVSE %s draws %.1f kW over its %.1f kW limit", key, measured_kw, limit_kw
                    )
                    self.emit("csms", "evse.profile_violation", payload)
                self._violating[key] = measured_kw
            elif key in self._violating:
                del self._violating[key]
                self.emit("csms", "evse.profile_compliant", payload)
        if key in self._violating:
            return replace(evse, reserve_measured=True)
        return evse

    def setpoints(self) -> dict[tuple[str, int], float]:
        """Set-point in force per (station, EVSE) with an open transaction.

        Current per phase [A] for AC, power [W] for DC: the last TxProfile sent, or the
        TxDefaultProfile limit when none was sent for this transaction yet.
        """
        return {e.key: e.previous_setpoint for e in self._dlm_inputs(self._now)}

    def available_power_kw(self) -> float:
        """Headroom for EVs at the last step [kW]: limit - non-EV load - margin (may be < 0)."""
        return 0.0 if self._last is None else self._last.available_kw

    def ev_power_kw(self) -> float:
        """Sum of the latest metered power of the open transactions [kW].

        Each transaction's latest ``Power.Active.Import`` (W -> kW); one without a power
        reading counts 0. The site controller uses it for the non-EV load: site meter -
        this EV sum.
        """
        return sum(tx.power_w or 0.0 for tx in self.registry.active_transactions()) / 1000.0

    def ev_minimum_kw(self) -> float:
        """Sum of the minimum power of the open transactions (as the DLM sees them) [kW].

        AC: minimum current [A] x phases loaded x site voltage [V]; DC: minimum power.
        Used by the PV-surplus mode's minimum-current option (the power every charging
        EVSE draws at least while it is not paused).
        """
        voltage_v = self.config.site.voltage_v
        total_w = 0.0
        for evse in self._dlm_inputs(self._now):
            if evse.kind == "AC":
                total_w += evse.min_current_a * len(evse.phases) * voltage_v
            else:
                total_w += evse.min_power_w
        return total_w / 1000.0

    def site_measurement(self) -> SiteMeasurement:
        """The site inputs the DLM allocates with now: non-EV load, external limit, flags.

        What the site controller handed the CSMS (``set_non_ev_load``,
        ``set_external_limit``, ``set_hold_minimum``); an expired external limit reads
        None. A shadow twin feeds its own CSMS with exactly these.
        """
        return self._site_measurement(self._now)

    @property
    def last_result(self) -> DlmResult | None:
        """The full DLM result of the last step."""
        return self._last

    def _site_measurement(self, now: datetime) -> SiteMeasurement:
        external = self._external_kw
        if self._external_until is not None and now > self._external_until:
            external = None
        return SiteMeasurement(
            self._non_ev_kw, self._non_ev_at, external, self._non_ev_lost, self._hold_minimum
        )

    def _evse_config(self, station_id: str, evse_id: int) -> EvseConfig | None:
        return self._evse_configs.get((station_id, evse_id))

    def _default_setpoint(self, kind: str, n_phases: int) -> float:
        site, current = self.config.site, self.config.dlm.default_current_a
        return current if kind == "AC" else current * n_phases * site.voltage_v

    def _dlm_inputs(self, now: datetime) -> list[EvseInput]:
        """One EvseInput per open transaction, sorted by (station, EVSE)."""
        site, dlm = self.config.site, self.config.dlm
        inputs: list[EvseInput] = []
        seen: set[EvseKey] = set()
        for tx in self.registry.active_transactions():
            key = (tx.station_id, tx.evse_id)
            if key in seen:
                logger.warning("two open transactions on %s; using the first", key)
                continue
            seen.add(key)
            inputs.append(self._evse_input(tx, key, site.phases, site.voltage_v, dlm.min_current_a))
        return inputs

    def _evse_input(
        self, tx: TransactionRecord, key: EvseKey, site_n: int, voltage_v: float, min_a: float
    ) -> EvseInput:
        config = self._evse_config(*key)
        evse = self.registry.station(tx.station_id).evse(tx.evse_id)
        kind = config.kind if config else ("DC" if evse.ev_transfer_mode == "DC" else "AC")
        rotation = config.phase_rotation if config else "Unknown"
        evse_n = config.phases if config else 3
        fallback_a = self.config.unknown_evse_max_current_a
        driver = self._driver.get(tx.id_token) if tx.id_token else None
        requested = (
            driver.requested_energy_kwh
            if driver
            else (None if evse.ev_energy_wh is None else evse.ev_energy_wh / 1000.0)
        )
        departure = driver.departure if driver else evse.ev_departure
        common: dict[str, Any] = {
            "key": key,
            "measured_power_w": tx.power_w,
            "measured_at": tx.measured_at or tx.started_at,
            "priority": driver.priority if driver else 0,
            "requested_energy_kwh": requested,
            "departure": departure,
            "energy_delivered_kwh": tx.energy_delivered_wh / 1000.0,
            "setpoint_since": self._setpoint_since.get(key, tx.started_at),
            "controllable": tx.station_id in self._links
            and tx.evse_id > 0
            and key not in self._uncontrolled,
        }
        if kind == "DC":
            phases = tuple(range(1, site_n + 1))
            limits = [fallback_a * site_n * voltage_v]
            if config and config.max_power_kw is not None:
                limits = [config.max_power_kw * 1000.0]
            if evse.ev_max_power_w is not None:
                limits.append(evse.ev_max_power_w)
            return EvseInput(
                kind="DC",
                phases=phases,
                min_power_w=(config.min_power_kw if config else 1.0) * 1000.0,
                max_power_w=min(limits),
                previous_setpoint=self._setpoints.get(
                    key, self._default_setpoint("DC", len(phases))
                ),
                **common,
            )
        all_evse_phases = tuple(range(1, evse_n + 1))
        used = tx.active_phases
        if used is None and tx.phases_used:
            used = tuple(range(1, min(tx.phases_used, evse_n) + 1))
        if used is None and evse.ev_transfer_mode == "AC_single_phase":
            used = (1,)
        used = tuple(p for p in used or all_evse_phases if p <= evse_n) or all_evse_phases
        phases = site_phases(rotation, used, site_n)
        max_limits = [config.ac_max_current_a(voltage_v) if config else fallback_a]
        max_limits += [v for v in (tx.cable_max_current_a, evse.ev_max_current_a) if v is not None]
        measured = None
        phased = [i for p, i in tx.current_a.items() if p > 0 and p in used]
        if phased or 0 in tx.current_a:
            top = max(phased or [tx.current_a[0]])
            measured = tuple(top for _ in phases)
        return EvseInput(
            kind="AC",
            phases=phases,
            min_current_a=max(min_a, evse.ev_min_current_a or 0.0),
            max_current_a=min(max_limits),
            measured_current_a=measured,
            previous_setpoint=self._setpoints.get(key, self._default_setpoint("AC", len(phases))),
            **common,
        )

    async def _send_raises(
        self,
        now: datetime,
        sends: list[asyncio.Task[None]],
        failed: list[str],
        raises: dict[str, list[tuple[int, str, float, RateUnit]]],
    ) -> None:
        """Send the step's increases once all its decreases are applied (break before make).

        A decrease that is not applied (timeout, CALLERROR, rejected, link lost) holds the
        increases back (``dlm.increase_held``): the capacity they would use is not free.
        A decrease refused because the transaction has ended meanwhile (the CSMS has seen
        the TransactionEvent Ended / StopTransaction: a plug-out race) does not hold them
        (``dlm.setpoint_moot``): nothing draws there any more.
        They are decided again at the next step, where the failed EVSE counts as worst case.
        """
        done = await asyncio.gather(*sends, return_exceptions=True)
        if failed or any(isinstance(d, BaseException) for d in done):
            for station_id in raises:
                self._sending.discard(station_id)
            logger.warning("increases held: decreases not applied at %s", sorted(set(failed)))
            self.emit(
                "dlm",
                "dlm.increase_held",
                {"stations": sorted(raises), "failed": sorted(set(failed))},
            )
            return
        tasks = []
        for station_id, batch in sorted(raises.items()):
            for evse_id, _, value, _ in batch:
                key = (station_id, evse_id)
                self._setpoints[key] = value
                self._setpoint_since[key] = now
                self._uncontrolled.add(key)
            tasks.append(
                self._spawn_task(station_id, self._send_batch(station_id, batch, [], set()))
            )
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_batch(
        self,
        station_id: str,
        batch: list[tuple[int, str, float, RateUnit]],
        failed: list[str],
        must_shed: set[EvseKey] | None = None,
    ) -> None:
        """Send the TxProfiles of one station in order.

        The station is noted in ``failed`` when a profile of an EVSE in ``must_shed`` (all
        when None) is not applied.
        """
        try:
            for evse_id, transaction_id, value, unit in batch:
                link = self._links.get(station_id)
                if link is None:
                    if any(must_shed is None or (station_id, e) in must_shed for e, *_ in batch):
                        failed.append(station_id)
                    return
                try:
                    if unit == _SETPOINT:
                        assert isinstance(link, Station21)
                        status = await link.send_setpoint(evse_id, transaction_id, value)
                    else:
                        status = await link.send_tx_profile(evse_id, transaction_id, value, unit)
                except CommandError as exc:
                    status = exc.code
                if unit == _SETPOINT:
                    self._setpoint_result((station_id, evse_id), value, status)
                    continue
                if status == "Accepted":
                    self._uncontrolled.discard((station_id, evse_id))
                    continue
                if self._transaction_over(station_id, transaction_id):
                    # the vehicle left while the decrease was on its way (plug-out race):
                    # nothing draws there, so the capacity is free and raises may go
                    self.emit("csms", "dlm.setpoint_moot", {
                        "station": station_id, "evse": evse_id,
                        "transaction": transaction_id, "status": status})
                    continue
                if must_shed is None or (station_id, evse_id) in must_shed:
                    failed.append(station_id)
                logger.warning(
                    "station %s EVSE %d: TxProfile %.1f %s not applied: %s",
                    station_id,
                    evse_id,
                    value,
                    unit,
                    status,
                )
                self.emit(
                    "csms",
                    "dlm.setpoint_failed",
                    {"station": station_id, "evse": evse_id, "value": value, "status": status},
                )
        finally:
            self._sending.discard(station_id)

    def _transaction_over(self, station_id: str, transaction_id: str) -> bool:
        """The CSMS has seen the transaction end (or forgotten it as ended long ago)."""
        tx = self.registry.transaction(station_id, transaction_id)
        return tx is None or not tx.active

    def _setpoint_result(self, key: EvseKey, value_w: float, status: str) -> None:
        """A CentralSetpoint TxProfile was answered: keep, refuse for the tx, or retry."""
        if status == "Accepted":
            self._setpoints[key] = 0.0  # the DLM's TxProfile must replace it afterwards
            self._uncontrolled.discard(key)
            return
        self._v2g_sent.pop(key, None)
        if status == "Rejected":
            self._v2g_refused.add(key)
            self._uncontrolled.add(key)  # a DLM TxProfile (clamped to 0) must follow
            self._setpoints.pop(key, None)
        logger.warning("EVSE %s: set-point %.0f W not applied: %s", key, value_w, status)
        self.emit("csms", "v2g.setpoint_rejected" if status == "Rejected"
                  else "dlm.setpoint_failed",
                  {"station": key[0], "evse": key[1], "value": value_w, "status": status})

    # ========================================================== station host

    def emit(self, source: str, kind: str, payload: dict[str, Any]) -> None:
        """Send an event to the sink, stamped with the injected ``now``."""
        if self._on_event is None:
            return
        try:
            self._on_event(self._now, source, kind, payload)
        except Exception:
            logger.exception("event sink failed on %s", kind)

    def handler_started(self) -> None:
        """Count a running handler (see :attr:`busy`)."""
        self._handlers += 1
        self._idle.clear()

    def handler_finished(self) -> None:
        """A handler finished."""
        self._handlers -= 1
        self._update_idle()

    def spawn(self, station_id: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task tracked by :meth:`drain`, cancelled on disconnect."""
        self._spawn_task(station_id, coro)

    def _spawn_task(
        self, station_id: str, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """:meth:`spawn` returning the task."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        self._station_tasks.setdefault(station_id, set()).add(task)
        self._idle.clear()

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._station_tasks.get(station_id, set()).discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("task for station %s failed", station_id, exc_info=t.exception())
            self._update_idle()

        task.add_done_callback(done)
        return task

    def perf(self) -> float | None:
        """The injected performance counter [s], or None."""
        return None if self._perf is None else self._perf()

    def record_rtt(self, seconds: float) -> None:
        """Keep a round-trip time sample [s] (bounded, see :attr:`rtt_samples_s`)."""
        samples = self.rtt_samples_s
        samples.append(seconds)
        if len(samples) > RTT_SAMPLES_KEPT:
            del samples[: len(samples) - RTT_SAMPLES_KEPT // 2]

    def record_frame(self, station_id: str, direction: str, frame: str) -> None:
        """Emit ``ocpp.frame`` when ``record_frames`` is on."""
        if self.config.record_frames:
            self.emit(
                "csms",
                "ocpp.frame",
                {"station": station_id, "direction": direction, "frame": frame},
            )

    def id_token_status(self, id_token: str | None) -> str:
        """``Accepted``, or ``Invalid`` when an allow list exists without this token."""
        allowed = self.config.allowed_id_tokens
        if allowed and (id_token is None or id_token not in allowed):
            return "Invalid"
        return "Accepted"

    def next_transaction_id(self) -> int:
        """Next OCPP 1.6 transaction id (1, 2, ...: deterministic)."""
        return next(self._tx_numbers)

    async def station_booted(self, link: StationLink) -> None:
        """Install TxDefaultProfile (and the station maximum) after a boot reply."""
        site, dlm = self.config.site, self.config.dlm
        dc_defaults = [
            (e.evse_id, dlm.default_current_a * site.phases * site.voltage_v)
            for (sid, _), e in sorted(self._evse_configs.items())
            if sid == link.id and e.kind == "DC"
        ]
        station_max = self.config.station_max_current_a.get(link.id)
        try:
            status = await link.install_default_profiles(
                dlm.default_current_a, dc_defaults, station_max, self._now
            )
        except CommandError as exc:
            status = exc.code
        self.registry.station(link.id).default_profile_status = status
        if status != "Accepted":
            logger.warning(
                "station %s: default charging profile not installed: %s", link.id, status
            )
        self.emit(
            "csms",
            "station.default_profile",
            {"station": link.id, "status": status, "limit_a": dlm.default_current_a},
        )

    def transaction_started(self, tx: TransactionRecord) -> None:
        """Forget set-points of an earlier transaction on the EVSE; emit the event.

        Fail safe: when the station's TxDefaultProfile was not installed (its
        SetChargingProfile failed or was not accepted), nothing limits the new
        transaction, so the EVSE counts as worst case until a TxProfile is accepted.
        """
        self._forget((tx.station_id, tx.evse_id))
        if self.registry.station(tx.station_id).default_profile_status not in (None, "Accepted"):
            self._uncontrolled.add((tx.station_id, tx.evse_id))
        self.emit(
            "csms",
            "transaction.started",
            {
                "station": tx.station_id,
                "evse": tx.evse_id,
                "transaction": tx.transaction_id,
                "id_token": tx.id_token,
                "meter_start_wh": tx.meter_start_wh,
                "soc": tx.soc_start,
            },
        )

    def transaction_ended(self, tx: TransactionRecord) -> None:
        """Forget the EVSE's set-point, V2G target and vehicle needs; emit the event."""
        self._forget((tx.station_id, tx.evse_id))
        self._targets.pop((tx.station_id, tx.evse_id), None)
        self._target_phases.pop((tx.station_id, tx.evse_id), None)
        self.registry.station(tx.station_id).evse(tx.evse_id).clear_ev()
        self.emit(
            "csms",
            "transaction.ended",
            {
                "station": tx.station_id,
                "evse": tx.evse_id,
                "transaction": tx.transaction_id,
                "id_token": tx.id_token,
                "meter_stop_wh": tx.meter_stop_wh,
                "energy_wh": tx.energy_delivered_wh,
                "exported_wh": tx.energy_exported_wh,
                "reason": tx.stopped_reason,
                "meter_start_wh": tx.meter_start_wh,
                "soc_start": tx.soc_start,
                "soc_end": tx.soc,
            },
        )

    def _forget(self, key: EvseKey) -> None:
        self._v2g_sent.pop(key, None)
        self._v2g_refused.discard(key)
        self._setpoints.pop(key, None)
        self._setpoint_since.pop(key, None)
        self._uncontrolled.discard(key)
        self._violating.pop(key, None)

    def _update_idle(self) -> None:
        if self.busy:
            self._idle.clear()
        else:
            self._idle.set()

    # =============================================================== websockets

    def _refuse(
        self,
        connection: ServerConnection,
        station_id: str | None,
        status: HTTPStatus,
        why: str,
        body: str | None = None,
    ) -> Response:
        logger.warning(
            "refused station %r from %s (%s %s): %s",
            station_id,
            connection.remote_address,
            connection.request.path if connection.request else "?",
            int(status),
            why,
        )
        self.emit(
            "csms",
            "station.rejected",
            {"station": station_id, "reason": why, "http_status": int(status)},
        )
        return connection.respond(status, (why if body is None else body) + "\n")

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        station_id = station_id_from_path(request.path)
        if station_id is None:
            return self._refuse(
                connection, None, HTTPStatus.NOT_FOUND, "no station id in the URL path"
            )
        if self._known and station_id not in self._known:
            return self._refuse(connection, station_id, HTTPStatus.NOT_FOUND, "unknown station")
        refusal = self._auth.check_certificate(
            station_id, connection.transport.get_extra_info("peercert")
        )
        if refusal is None and self._auth.needs_password_check(station_id):
            refusal = await asyncio.to_thread(
                self._auth.check_basic, station_id, request.headers.get("Authorization")
            )
        if refusal is None:
            return None
        self.emit(
            "csms",
            "security.auth_failed",
            {
                "station": station_id,
                "reason": refusal.reason,
                "profile": self._auth.profile,
                "http_status": int(refusal.status),
            },
        )
        # the body stays generic: it must not tell which station ids exist
        response = self._refuse(
            connection, station_id, refusal.status, refusal.reason, refusal.status.phrase
        )
        if refusal.challenge:
            response.headers["WWW-Authenticate"] = BASIC_CHALLENGE
        return response

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
        for protocol in SUBPROTOCOLS:
            if protocol in offered:
                return Subprotocol(protocol)
        return None  # complete the handshake without one, then close (OCPP-J)

    async def _serve_station(self, ws: ServerConnection) -> None:
        station_id = station_id_from_path(ws.request.path if ws.request else "")
        if station_id is None:  # process_request refused it already
            return
        version = VERSION_OF_SUBPROTOCOL.get(ws.subprotocol or "")
        if version is None:
            headers = ws.request.headers if ws.request else Headers()
            offered = ", ".join(headers.get_all("Sec-WebSocket-Protocol")) or "none"
            why = f"no supported OCPP subprotocol (offered: {offered}; supported: " + (
                ", ".join(SUBPROTOCOLS) + ")"
            )
            logger.warning("refused station %r from %s: %s", station_id, ws.remote_address, why)
            self.emit("csms", "station.rejected", {"station": station_id, "reason": why})
            await ws.close(1002, "no supported OCPP subprotocol")
            return
        old = self._sockets.get(station_id)
        if old is not None:
            logger.warning(
                "station %s connected again: closing its previous connection", station_id
            )
            self._cancel_station_tasks(station_id)
            self._tasks_close(old)
        link: StationLink
        if version == "2.1":
            link = Station21(station_id, ws, self)
        elif version == "2.0.1":
            link = Station201(station_id, ws, self)
        else:
            link = Station16(station_id, ws, self)
        self._links[station_id] = link
        self._sockets[station_id] = ws
        station = self.registry.station(station_id)
        station.ocpp_version = version
        station.connected = True
        station.connected_at = station.last_seen = self._now
        self.emit("csms", "station.connected", {"station": station_id, "version": version})
        try:
            await link.start()
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("station %s: connection handler failed", station_id)
        finally:
            if self._links.get(station_id) is link:
                del self._links[station_id]
                del self._sockets[station_id]
                station.connected = False
                self._sending.discard(station_id)
                self._cancel_station_tasks(station_id)
                self.emit(
                    "csms",
                    "station.disconnected",
                    {"station": station_id, "close_code": ws.close_code},
                )

    def _tasks_close(self, ws: ServerConnection) -> None:
        task = asyncio.get_running_loop().create_task(ws.close(1000, "replaced"))
        self._tasks.add(task)
        self._idle.clear()

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._update_idle()

        task.add_done_callback(done)

    def _cancel_station_tasks(self, station_id: str) -> None:
        for task in self._station_tasks.pop(station_id, set()):
            task.cancel()
