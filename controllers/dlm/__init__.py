"""Dynamic load management (DLM): pure, fail-safe allocation of site capacity to EVSEs.

No I/O and no clock: :func:`allocate` maps a site (limit, non-EV load, measurements with
their timestamps) and the active EVSEs to one set-point per EVSE, given ``now``. The CSMS
(``controllers.csms``) builds the inputs from OCPP telemetry and sends the set-points as
TxProfiles (OCPP 2.0.1 Part 2 section K, smart charging).
"""

from controllers.dlm.allocate import allocate
from controllers.dlm.config import DlmConfig, SiteConfig, Strategy
from controllers.dlm.model import (
    Allocation,
    DlmResult,
    EvseInput,
    EvseKey,
    EvseKind,
    SiteMeasurement,
)
from controllers.dlm.phases import PHASE_ROTATIONS, site_phases

__all__ = [
    "PHASE_ROTATIONS",
    "Allocation",
    "DlmConfig",
    "DlmResult",
    "EvseInput",
    "EvseKey",
    "EvseKind",
    "SiteConfig",
    "SiteMeasurement",
    "Strategy",
    "allocate",
    "site_phases",
]
