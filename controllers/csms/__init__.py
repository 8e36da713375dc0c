"""CSMS: OCPP 2.1 / 2.0.1 / 1.6 server (websockets + ocpp library) with DLM and V2G.

``Csms`` accepts stations, keeps a registry of stations, EVSEs and transactions, installs
a fail-safe TxDefaultProfile at boot and sends the DLM's set-points as TxProfiles
(OCPP 2.0.1 Part 2 section K). On OCPP 2.1 stations a controller's signed set-point per
EVSE (``Csms.set_evse_setpoint_kw``; positive = import / charging, negative = export /
discharging, kW) goes out as a CentralSetpoint TxProfile. Time is injected; nothing reads
the wall clock.
"""

from controllers.csms.auth import hash_password
from controllers.csms.config import CsmsConfig, EvseConfig
from controllers.csms.registry import EvseRecord, Registry, StationRecord, TransactionRecord
from controllers.csms.server import Csms, DriverInput, EventSink
from controllers.dlm import DlmConfig, SiteConfig

__all__ = [
    "Csms",
    "CsmsConfig",
    "DlmConfig",
    "DriverInput",
    "EventSink",
    "EvseConfig",
    "EvseRecord",
    "Registry",
    "SiteConfig",
    "StationRecord",
    "TransactionRecord",
    "hash_password",
]
