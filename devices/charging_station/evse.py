"""EVSE specification, state and the reading the recorder takes of it.

One EVSE carries one connector (connector id 1), as in OCPP 2.0.1's device model with a single
connector per EVSE (1.6: connector id == EVSE id). No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from devices.charging_station.profiles import EvseElectrical
from devices.charging_station.tamper import TelemetryTamper
from devices.vehicle import VehicleSpec, VehicleState

__all__ = ["EvseReading", "EvseSpec", "Session", "StationSpec", "phase_map"]


@dataclass(frozen=True)
class EvseSpec:
    """One EVSE with one connector (connector_id 1).

    Attributes:
        evse_id: 1-based id (1.6: the connector id).
        kind: "AC" or "DC".
        max_power_kw: hardware limit at the meter, kW (11/22 AC 3-phase 16/32 A; 50/150 DC).
        phases: AC phases, 1 or 3.
        voltage_v: AC phase-to-neutral voltage, V.
        phase_rotation: OCPP phaseRotation (2.0.1 Part 2 device model, ``phaseRotation`` of
            the EVSE): the site phases the station's L1, L2, L3 are wired to, R=L1, S=L2,
            T=L3. "RST" -> a 1-phase vehicle loads site L1, "STR" -> L2, "TRS" -> L3.
        dc_voltage_v: nominal DC voltage used to convert A <-> W on a DC EVSE, V.
        bidirectional: the EVSE can discharge a V2G vehicle (AC_BPT / DC_BPT). Only
            meaningful on an OCPP 2.1 station: 1.6 and 2.0.1 stations are charge-only.
        max_discharge_kw: hardware discharge limit at the meter, kW (>= 0); None: the same
            as ``max_power_kw``.
        report_soc: the EVSE reports the vehicle's SoC measurand on AC too (a vehicle
            that communicates over ISO 15118); DC EVSEs always report it.
    """

    evse_id: int
    kind: Literal["AC", "DC"]
    max_power_kw: float
    phases: int = 3
    voltage_v: float = 230.0
    phase_rotation: str = "RST"
    dc_voltage_v: float = 400.0
    bidirectional: bool = False
    max_discharge_kw: float | None = None
    report_soc: bool = False

    def __post_init__(self) -> None:
        if self.evse_id < 1:
            raise ValueError(f"evse_id must be >= 1, got {self.evse_id}")
        if self.phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {self.phases}")
        if self.max_power_kw <= 0:
            raise ValueError("max_power_kw must be > 0")
        if self.max_discharge_kw is not None and self.max_discharge_kw < 0:
            raise ValueError("max_discharge_kw must be >= 0")
        phase_map(self.phase_rotation)  # validates

    @property
    def discharge_kw(self) -> float:
        """Discharge capability at the meter, kW (0 unless ``bidirectional``)."""
        if not self.bidirectional:
            return 0.0
        return self.max_power_kw if self.max_discharge_kw is None else self.max_discharge_kw

    def electrical(self) -> EvseElectrical:
        """The data the profile rules need."""
        return EvseElectrical(
            evse_id=self.evse_id,
            kind=self.kind,
            max_power_w=self.max_power_kw * 1000.0,
            phases=self.phases if self.kind == "AC" else 3,
            voltage_v=self.voltage_v,
            dc_voltage_v=self.dc_voltage_v,
        )


@dataclass(frozen=True)
class StationSpec:
    """A charging station.

    Attributes:
        station_id: OCPP identity (last path segment of the CSMS URL).
        ocpp_version: "1.6", "2.0.1" or "2.1" (only 2.1 discharges a bidirectional EVSE).
        evses: its EVSEs, ids 1..n.
        vendor, model: reported in BootNotification.
        meter_interval_s: period of sampled meter values during a transaction, s
            (2.0.1 SampledDataCtrlr.TxUpdatedInterval, 1.6 MeterValueSampleInterval).
        heartbeat_interval_s: until BootNotification's reply gives one, s.
        fail_safe_current_a: per-phase current used offline without a TxDefaultProfile, A.
        password: HTTP Basic password (security profiles 1 and 2) if set.
        tls_ca_file: PEM CA bundle trusted for the CSMS's server certificate (``wss://``,
            profiles 2 and 3); None: the system's trust store.
        tls_cert_file: PEM client certificate (subject CN = station id) for security
            profile 3; None: no client certificate.
        tls_key_file: PEM private key of ``tls_cert_file`` (None: inside that file).
    """

    station_id: str
    ocpp_version: Literal["1.6", "2.0.1", "2.1"]
    evses: tuple[EvseSpec, ...]
    vendor: str = "MiGrid"
    model: str = "TwinCharger"
    meter_interval_s: int = 60
    heartbeat_interval_s: int = 300
    fail_safe_current_a: float = 0.0
    password: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def __post_init__(self) -> None:
        ids = [e.evse_id for e in self.evses]
        if sorted(ids) != list(range(1, len(ids) + 1)):
            raise ValueError(f"EVSE ids must be 1..n, got {ids}")
        if self.ocpp_version not in ("1.6", "2.0.1", "2.1"):
            raise ValueError(f"unsupported OCPP version {self.ocpp_version!r}")
        if self.meter_interval_s <= 0:
            raise ValueError("meter_interval_s must be > 0")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_key_file without tls_cert_file")


@dataclass(frozen=True, slots=True)
class EvseReading:
    """Truth of one EVSE for the recorder.

    Attributes:
        evse_id: the EVSE.
        power_kw: mean power at the meter over the last ``advance`` interval, kW; signed,
            positive = import (charging), negative = export (V2G discharging).
        energy_register_kwh: the import meter register, kWh.
        offered_current_a: limit in force now (per phase for AC; DC current at the nominal
            DC voltage), A.
        offered_power_kw: the same limit as power, kW.
        current_a: mean current per *site* phase L1, L2, L3 over the last interval (after the
            phase rotation), A.
        soc: vehicle state of charge 0..1, None without a vehicle.
        session_energy_kwh: energy metered since the vehicle plugged in, kWh.
        transaction_id: the active transaction, None outside one.
        connector_status: "Available", "Occupied" (2.0.1) or the 1.6 status.
        charging_state: 2.0.1 ChargingStateEnumType of the transaction, None outside one.
        online: whether the station is connected to its CSMS.
        export_register_kwh: the export meter register (V2G), kWh.
        operation_mode: OCPP 2.1 operationMode in force in a transaction (ChargingOnly,
            CentralSetpoint, Idle), None outside one or on 1.6 / 2.0.1.
    """

    evse_id: int
    power_kw: float
    energy_register_kwh: float
    offered_current_a: float
    offered_power_kw: float
    current_a: tuple[float, float, float]
    soc: float | None
    session_energy_kwh: float
    transaction_id: str | None
    connector_status: str
    charging_state: str | None
    online: bool
    export_register_kwh: float = 0.0
    operation_mode: str | None = None


@dataclass(slots=True)
class Session:
    """A vehicle plugged in on an EVSE, with its transaction if one is running."""

    vehicle: VehicleSpec
    state: VehicleState
    id_token: str
    plugged_at: datetime
    id_token_type: str = "ISO14443"
    authorized: bool = False
    transaction_id: str | None = None  # 1.6: decimal text of the CSMS's integer id
    tx_active: bool = False
    tx_ended: bool = False
    started_at: datetime | None = None
    meter_start_wh: float = 0.0
    energy_kwh: float = 0.0
    exported_kwh: float = 0.0
    seq_no: int = 0
    charging_state: str | None = None
    remote_start_id: int | None = None
    next_meter_at: datetime | None = None
    tx_number: int = 0  # local number (1.6 before the CSMS's id arrives)
    pending_profile: object | None = None
    tamper: TelemetryTamper | None = None  # falsified reported telemetry (tamper.py)
    soc_at_start: float | None = None  # real SoC at the transaction start
    samples: int = 0  # periodic meter samples sent in the transaction

    @property
    def reported_soc(self) -> float:
        """The SoC (0..1) the vehicle reports (real unless ``tamper`` spoofs it)."""
        soc = self.state.soc
        if self.tamper is None:
            return soc
        return self.tamper.reported_soc(soc, self.soc_at_start)


@dataclass(slots=True)
class Evse:
    """Mutable state of one EVSE (owned by the station)."""

    spec: EvseSpec
    site_phase: tuple[int, int, int]  # site phase index (0..2) of station phase L1, L2, L3
    status: str = "Available"
    session: Session | None = None
    register_wh: float = 0.0
    export_wh: float = 0.0  # export register (V2G)
    t: datetime | None = None  # physics time
    mark_t: datetime | None = None  # time of the last advance
    mark_wh: float = 0.0
    mark_export_wh: float = 0.0
    last_export_kwh: float = 0.0  # export of the last physics sub-step
    operation_mode: str | None = None
    power_kw: float = 0.0
    n_used: int = 0
    station_current_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    last_energy_kwh: float = 0.0  # energy of the last physics sub-step
    last_offered_kw: float = 0.0
    pending_remote: tuple[str, str, int | None, object | None] | None = None
    tamper_offset_wh: float = 0.0  # reported register - real register (tamper.py)

    @property
    def reported_register_wh(self) -> float:
        """The import register the station reports (real unless tampered with), Wh."""
        return self.register_wh + self.tamper_offset_wh

    @property
    def reports_soc(self) -> bool:
        """Whether meter values carry the vehicle's SoC (DC, or AC with ``report_soc``)."""
        return self.spec.kind == "DC" or self.spec.report_soc


def phase_map(rotation: str) -> tuple[int, int, int]:
    """Site phase index (0 = L1 .. 2 = L3) of the station's L1, L2, L3 for ``rotation``.

    ``rotation`` is an OCPP phaseRotation: a permutation of "RST" (R=L1, S=L2, T=L3), or
    "NotApplicable"/"Unknown" (identity).

    Raises:
        ValueError: anything else.
    """
    if rotation in ("NotApplicable", "Unknown"):
        return (0, 1, 2)
    if sorted(rotation) != ["R", "S", "T"]:
        raise ValueError(f"bad phase rotation {rotation!r}")
    a, b, c = ("RST".index(ch) for ch in rotation)
    return (a, b, c)
