"""Charging-station faults in scenario and bench files (``faults:``).

A scenario lists faults of its emulated charging stations at the top level::

    faults:
      - station: CA001            # a station id of the scenario (prefix + number)
        kind: link_drop           # see below
        start: 2019-09-10T17:00:00Z
        end: 2019-09-10T17:20:00Z
      - {station: CA002, kind: delay_responses, start: ..., end: ..., delay_s: 0.2}
      - {station: CA003, kind: clock_skew, start: ..., end: ..., skew_s: -600}
      - {station: CB001, kind: overshoot, start: ..., end: ..., factor: 1.5}

A bench file puts them on an emulated station (``stations: [{id: ..., faults: [...]}]``)
with the window as offsets from the bench start (``start_s``, ``end_s``); a physical
charger cannot be given faults (the bench file is rejected).

Kinds (what the station does: :mod:`devices.charging_station.faults`; how the CSMS
reacts: :mod:`controllers.csms.station` and :meth:`controllers.csms.Csms.step`):

- ``link_drop``: the station closes its WebSocket and stays offline until ``end``, then
  reconnects with its back-off; the CSMS counts its EVSEs at their maximum meanwhile.
- ``delay_responses`` (``delay_s`` > 0, real seconds) / ``drop_responses``: replies to the
  CSMS's requests come late / never; the CSMS times out (``station.unresponsive``) and
  counts the EVSE at its maximum until a set-point is accepted again.
- ``malformed_frames`` (``every_s``: period, 0 = every step): invalid JSON, an unknown
  MessageTypeId, a payload violating its schema; the CSMS answers CALLERROR and reports
  ``station.malformed_frame``, the link stays up.
- ``clock_skew`` (``skew_s`` != 0): the station's timestamps are off; the CSMS reports
  ``station.clock_skew`` and times the meter values by their receipt.
- ``ignore_profiles`` / ``overshoot`` (``factor`` > 1): the EVSEs draw more than their
  set-point; the CSMS reports ``evse.profile_violation`` and reserves the measured power.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.charging_station.faults import FaultKind, StationFaults
from devices.charging_station.faults import StationFault as DeviceFault
from twin.scenario_time import UtcDatetime

__all__ = ["BenchFault", "FaultParams", "StationFault", "bench_station_faults", "station_faults"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultParams(_Model):
    """Kind and parameters of a fault (the window is given by the subclasses).

    ``delay_s``: ``delay_responses`` reply delay [s of real time]; ``skew_s``:
    ``clock_skew`` offset of the station's timestamps [s]; ``factor``: ``overshoot``
    multiple of the profile limit; ``every_s``: ``malformed_frames`` period [s] (0 = at
    every step).
    """

    kind: FaultKind
    delay_s: float = Field(0.0, ge=0)
    skew_s: float = 0.0
    factor: float = Field(1.5, gt=0)
    every_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _parameters(self) -> FaultParams:
        if self.kind == "delay_responses" and self.delay_s <= 0:
            raise ValueError("delay_responses needs delay_s > 0")
        if self.kind == "clock_skew" and self.skew_s == 0:
            raise ValueError("clock_skew needs skew_s != 0")
        if self.kind == "overshoot" and self.factor <= 1:
            raise ValueError("overshoot needs factor > 1")
        return self

    def device_fault(self, start: datetime, end: datetime) -> DeviceFault:
        """The emulator's fault for the window ``[start, end)`` (UTC)."""
        return DeviceFault(
            self.kind,
            start,
            end,
            delay_s=self.delay_s,
            skew_s=self.skew_s,
            factor=self.factor,
            every_s=self.every_s,
        )


class StationFault(FaultParams):
    """A fault of one emulated station of a scenario over ``[start, end)`` (UTC)."""

    station: str
    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _window(self) -> StationFault:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class BenchFault(FaultParams):
    """A fault of an emulated bench station over ``[start_s, end_s)`` from the bench start."""

    start_s: float = Field(ge=0)
    end_s: float

    @model_validator(mode="after")
    def _window(self) -> BenchFault:
        if self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        return self


def station_faults(faults: list[StationFault], station_id: str) -> StationFaults | None:
    """The emulator's faults of ``station_id`` from a scenario's list (None: none)."""
    mine = [f.device_fault(f.start, f.end) for f in faults if f.station == station_id]
    return StationFaults.of(mine) if mine else None


def bench_station_faults(faults: list[BenchFault], bench_start: datetime) -> StationFaults | None:
    """The emulator's faults of a bench station, offsets taken from ``bench_start`` (UTC)."""
    mine = [
        f.device_fault(
            bench_start + timedelta(seconds=f.start_s), bench_start + timedelta(seconds=f.end_s)
        )
        for f in faults
    ]
    return StationFaults.of(mine) if mine else None
