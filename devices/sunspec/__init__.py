"""SunSpec devices over Modbus TCP: register image, endpoint and the site devices."""

from devices.sunspec.devices import (
    BessDevice,
    BuildingLoadDevice,
    PvInverterDevice,
    SiteMeterDevice,
    SunSpecDevice,
)
from devices.sunspec.image import SunSpecImage
from devices.sunspec.server import SunSpecServer

__all__ = [
    "BessDevice",
    "BuildingLoadDevice",
    "PvInverterDevice",
    "SiteMeterDevice",
    "SunSpecDevice",
    "SunSpecImage",
    "SunSpecServer",
]
