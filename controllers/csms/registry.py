"""What the CSMS knows about stations, EVSEs and transactions (plain data, no I/O).

Updated by the OCPP handlers with the CSMS's injected ``now``; read by the DLM input
builder. OCPP 1.6 connector ids are EVSE ids here (1.6 has one connector per "EVSE").
"""

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from controllers.csms.meter import MeterReading

_ACTIVE_PHASE_MIN_A = 1.0
_ACTIVE_PHASE_SHARE = 0.25
_PHASE_DETECT_MIN_A = 2.0


@dataclass
class TransactionRecord:
    """One charging session.

    Attributes:
        station_id: the station.
        transaction_id: 2.0.1 transactionId; 1.6 the integer we assigned, as text.
        evse_id: EVSE (1.6: connector) id.
        id_token: the driver's id token / id tag, when known.
        started_at / stopped_at: CSMS time of start and end.
        meter_start_wh / meter_stop_wh: energy register at start / stop [Wh].
        energy_wh: latest energy register [Wh]; power_w latest power [W], signed:
            import - export (negative while a 2.1 EVSE discharges).
        export_start_wh / export_wh: export energy register (V2G, OCPP 2.1) at the first
            reading and latest [Wh], None when the station does not report it.
        current_a: latest current per EVSE phase [A] (key 0: without phase).
        soc: latest state of charge (0..1).
        soc_start: first state of charge reported in the transaction (0..1), None until
            one is reported (2.0.1 with SoC in Transaction.Begin: the start's).
        measured_at: time of the latest meter value (min of its timestamp and CSMS now).
        phases_used: 2.0.1 ``numberOfPhasesUsed``.
        active_phases: EVSE phases seen carrying current (learned from meter values).
        cable_max_current_a: 2.0.1 ``cableMaxCurrent`` [A].
        charging_state: 2.0.1 chargingState (Charging, SuspendedEV ...).
        stopped_reason: why it ended.
    """

    station_id: str
    transaction_id: str
    evse_id: int
    started_at: datetime
    id_token: str | None = None
    connector_id: int | None = None
    stopped_at: datetime | None = None
    meter_start_wh: float | None = None
    meter_stop_wh: float | None = None
    energy_wh: float | None = None
    power_w: float | None = None
    current_a: dict[int, float] = field(default_factory=dict)
    soc: float | None = None
    soc_start: float | None = None
    measured_at: datetime | None = None
    phases_used: int | None = None
    active_phases: tuple[int, ...] | None = None
    cable_max_current_a: float | None = None
    charging_state: str | None = None
    stopped_reason: str | None = None
    export_start_wh: float | None = None
    export_wh: float | None = None

    @property
    def energy_exported_wh(self) -> float:
        """Energy exported (V2G discharge) since the start [Wh], 0 when unknown."""
        if self.export_wh is None or self.export_start_wh is None:
            return 0.0
        return max(self.export_wh - self.export_start_wh, 0.0)

    @property
    def active(self) -> bool:
        """True until the transaction ended."""
        return self.stopped_at is None

    @property
    def energy_delivered_wh(self) -> float:
        """Energy since the start [Wh], 0 when unknown."""
        if self.energy_wh is None or self.meter_start_wh is None:
            return 0.0
        return max(self.energy_wh - self.meter_start_wh, 0.0)

    def apply(self, reading: MeterReading, now: datetime) -> None:
        """Take the values of a meter reading; its time is capped at ``now``."""
        if reading.energy_wh is not None:
            self.energy_wh = reading.energy_wh
            if self.meter_start_wh is None:
                self.meter_start_wh = reading.energy_wh
        net_w = reading.net_power_w
        if net_w is not None:
            self.power_w = net_w
        if reading.export_energy_wh is not None:
            self.export_wh = reading.export_energy_wh
            if self.export_start_wh is None:
                self.export_start_wh = reading.export_energy_wh
        if reading.current_a:
            self.current_a.update(reading.current_a)
            phased = {p: i for p, i in reading.current_a.items() if p > 0}
            top = max(phased.values(), default=0.0)
            if top >= _PHASE_DETECT_MIN_A:
                floor = max(_ACTIVE_PHASE_MIN_A, _ACTIVE_PHASE_SHARE * top)
                self.active_phases = tuple(sorted(p for p, i in phased.items() if i >= floor))
        if reading.soc is not None:
            self.soc = reading.soc
            if self.soc_start is None:
                self.soc_start = reading.soc
        ts = reading.timestamp
        self.measured_at = now if ts is None or ts > now else ts


@dataclass
class EvseRecord:
    """One EVSE as reported by its station.

    Attributes:
        evse_id: EVSE id.
        connector_status: last StatusNotification status per connector id.
        status_at: time of that status.
        ev_max_current_a / ev_min_current_a / ev_max_power_w: vehicle limits from
            NotifyEVChargingNeeds (ISO 15118, OCPP 2.0.1 K15) [A per phase, W].
        ev_energy_wh / ev_departure: requested energy [Wh] and departure time.
        ev_transfer_mode: ``AC_single_phase``, ``AC_three_phase``, ``DC`` ...
    """

    evse_id: int
    connector_status: dict[int, str] = field(default_factory=dict)
    status_at: datetime | None = None
    ev_max_current_a: float | None = None
    ev_min_current_a: float | None = None
    ev_max_power_w: float | None = None
    ev_energy_wh: float | None = None
    ev_departure: datetime | None = None
    ev_transfer_mode: str | None = None

    def clear_ev(self) -> None:
        """Forget the vehicle's charging needs (the session ended)."""
        self.ev_max_current_a = self.ev_min_current_a = self.ev_max_power_w = None
        self.ev_energy_wh = None
        self.ev_departure = None
        self.ev_transfer_mode = None


@dataclass
class StationRecord:
    """One charging station.

    Attributes:
        station_id: identity from the URL path.
        ocpp_version: ``"2.1"``, ``"2.0.1"`` or ``"1.6"`` (negotiated subprotocol).
        vendor / model / firmware / serial: from BootNotification.
        connected: WebSocket open now.
        last_seen: CSMS time of the last frame received.
        booted_at: CSMS time of the last BootNotification.
        default_profile_status: answer to the TxDefaultProfile sent after boot.
        unresponsive_since: CSMS time of the first unanswered request (response timeout)
            since the last answered one; None while the station answers.
        clock_skew_s: offset of the station's clock from the CSMS's [s] while it is
            beyond ``clock_skew_tolerance_s``; None while within.
        evses: per EVSE id (0 = the station itself in 1.6 StatusNotification).
    """

    station_id: str
    ocpp_version: str | None = None
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    connected: bool = False
    last_seen: datetime | None = None
    connected_at: datetime | None = None
    booted_at: datetime | None = None
    default_profile_status: str | None = None
    unresponsive_since: datetime | None = None
    clock_skew_s: float | None = None
    evses: dict[int, EvseRecord] = field(default_factory=dict)

    def evse(self, evse_id: int) -> EvseRecord:
        """The EVSE record, created on first mention."""
        record = self.evses.get(evse_id)
        if record is None:
            record = self.evses[evse_id] = EvseRecord(evse_id)
        return record


#: ended transactions a registry keeps by default (the most recent ones)
ENDED_KEPT = 10_000


class Registry:
    """Stations and transactions, keyed by station id and (station id, transaction id).

    Open transactions are also indexed by (station id, EVSE id): at most one per EVSE.
    End and move transactions through :meth:`end_transaction` and
    :meth:`move_transaction` so the index stays right.

    Ended transactions are kept so that a late message about one is recognised (and
    ignored), but only the ``ended_kept`` most recently ended ones: a CSMS that runs for
    months must not hold every session it has ever seen (the sessions themselves are in
    the ``transaction.ended`` events). Open transactions are always kept.
    """

    def __init__(self, ended_kept: int = ENDED_KEPT) -> None:
        self.stations: dict[str, StationRecord] = {}
        self.transactions: dict[tuple[str, str], TransactionRecord] = {}
        self._open: dict[tuple[str, int], TransactionRecord] = {}
        self._ended: deque[tuple[str, str]] = deque()
        self._ended_kept = ended_kept

    def station(self, station_id: str) -> StationRecord:
        """The station record, created on first mention."""
        record = self.stations.get(station_id)
        if record is None:
            record = self.stations[station_id] = StationRecord(station_id)
        return record

    def transaction(self, station_id: str, transaction_id: str) -> TransactionRecord | None:
        """A transaction by id, active or not."""
        return self.transactions.get((station_id, transaction_id))

    def open_transaction(
        self, station_id: str, transaction_id: str, evse_id: int, now: datetime
    ) -> tuple[TransactionRecord, bool]:
        """Get or create a transaction; returns (record, created).

        A new transaction on an EVSE ends any other still open there (its end was lost).
        """
        existing = self.transactions.get((station_id, transaction_id))
        if existing is not None:
            return existing, False
        record = TransactionRecord(station_id, transaction_id, evse_id, started_at=now)
        self.transactions[(station_id, transaction_id)] = record
        self._index(record, now)
        self.station(station_id).evse(evse_id)
        return record, True

    def end_transaction(
        self, tx: TransactionRecord, now: datetime, reason: str | None, meter_stop_wh: float | None
    ) -> None:
        """Close a transaction at ``now`` with its final register [Wh] if known."""
        tx.stopped_at = now
        tx.stopped_reason = reason
        if meter_stop_wh is not None:
            tx.meter_stop_wh = tx.energy_wh = meter_stop_wh
        else:
            tx.meter_stop_wh = tx.energy_wh
        key = (tx.station_id, tx.evse_id)
        if self._open.get(key) is tx:
            del self._open[key]
        self._retire(tx)

    def _retire(self, tx: TransactionRecord) -> None:
        """Note an ended transaction; forget the oldest ended ones beyond ``ended_kept``."""
        self._ended.append((tx.station_id, tx.transaction_id))
        while len(self._ended) > self._ended_kept:
            key = self._ended.popleft()
            old = self.transactions.get(key)
            if old is not None and not old.active:
                del self.transactions[key]

    def move_transaction(self, tx: TransactionRecord, evse_id: int, now: datetime) -> None:
        """The station named the EVSE of a transaction only now (2.0.1 ``evse``)."""
        key = (tx.station_id, tx.evse_id)
        if self._open.get(key) is tx:
            del self._open[key]
        tx.evse_id = evse_id
        self.station(tx.station_id).evse(evse_id)
        if tx.active:
            self._index(tx, now)

    def _index(self, tx: TransactionRecord, now: datetime) -> None:
        key = (tx.station_id, tx.evse_id)
        other = self._open.get(key)
        if other is not None and other is not tx:
            other.stopped_at = now
            other.stopped_reason = "Superseded"
            self._retire(other)
        self._open[key] = tx

    def active_transactions(self) -> list[TransactionRecord]:
        """Open transactions sorted by (station id, EVSE id)."""
        return [self._open[key] for key in sorted(self._open)]

    def active_transaction_on(self, station_id: str, evse_id: int) -> TransactionRecord | None:
        """The open transaction on an EVSE, if any."""
        return self._open.get((station_id, evse_id))
