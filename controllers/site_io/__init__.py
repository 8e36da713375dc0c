"""Site I/O clients: SunSpec over Modbus TCP and OPC UA, on injected time."""

from controllers.site_io.common import (
    Backoff,
    ModbusExceptionError,
    Reading,
    SiteIoError,
    SiteIoProtocolError,
    SiteIoUnavailableError,
    is_stale,
)
from controllers.site_io.opcua_client import OpcUaClient
from controllers.site_io.sunspec_client import SunSpecClient
from controllers.site_io.sunspec_models import SunSpecModelError

__all__ = [
    "Backoff",
    "ModbusExceptionError",
    "OpcUaClient",
    "Reading",
    "SiteIoError",
    "SiteIoProtocolError",
    "SiteIoUnavailableError",
    "SunSpecClient",
    "SunSpecModelError",
    "is_stale",
]
