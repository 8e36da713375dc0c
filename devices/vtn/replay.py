"""Replay of a grid-event file: programs and timed events the emulated VTN publishes.

File format (YAML or JSON)::

    programs:
      - id: dr-2021            # optional fixed id (else program-N)
        programName: DR-2021   # then any programRequest field
        targets: [group-1]
    events:
      - publish_at: 2021-07-01T12:00:00Z   # UTC; the event is created at this time
        id: ev-1                            # optional
        programID: dr-2021                  # or program: DR-2021 (the programName)
        eventName: peak
        intervalPeriod: {start: 2021-07-01T16:00:00Z, duration: PT1H}
        intervals: [{id: 0, payloads: [{type: IMPORT_CAPACITY_LIMIT, values: [50]}]}]

Each event body is validated as an OpenADR 3.1.0 ``eventRequest`` when the file is
loaded. ``time_offset`` (see :func:`shift_file`) moves every time in the file: a 2021
file can be replayed "now" on a bench.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from devices.vtn import oadr3_models as m

if TYPE_CHECKING:
    from devices.vtn.core import VtnCore

__all__ = ["GridEvent", "GridEventFile", "GridProgram", "Replayer", "load_grid_event_file",
           "shift_file"]


class GridProgram(BaseModel):
    """A program of the file: an optional fixed ``id`` plus ``programRequest`` fields."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]+$", max_length=128)

    def request(self) -> m.ProgramRequest:
        """The ``programRequest`` body (validated)."""
        return m.ProgramRequest.model_validate(self.model_dump(exclude={"id"}, mode="json"))


class GridEvent(BaseModel):
    """An event of the file: when to publish it, and its ``eventRequest`` fields.

    Attributes:
        publish_at: UTC time at which the VTN creates the event.
        id: optional fixed id.
        program: ``programName`` of the event's program, instead of ``programID``.

    """

    model_config = ConfigDict(extra="allow")

    publish_at: AwareDatetime
    id: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]+$", max_length=128)
    program: str | None = None

    def body(self) -> dict[str, Any]:
        """The event fields (``eventRequest`` without ``programID`` resolution)."""
        return self.model_dump(exclude={"publish_at", "id", "program"}, mode="json")


class GridEventFile(BaseModel):
    """A grid-event file: programs (created at load) and events (created at publish_at)."""

    model_config = ConfigDict(extra="forbid")

    programs: list[GridProgram] = Field(default_factory=list)
    events: list[GridEvent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> GridEventFile:
        for p in self.programs:
            p.request()
        names = {p.model_extra.get("programName") for p in self.programs if p.model_extra}
        ids = {p.id for p in self.programs if p.id}
        for i, e in enumerate(self.events):
            body = e.body()
            if e.program is not None:
                if e.program not in names:
                    raise ValueError(f"events[{i}]: no program named {e.program!r}")
                body["programID"] = "placeholder"
            elif body.get("programID") not in ids:
                raise ValueError(f"events[{i}]: programID must name a program of the file")
            m.EventRequest.model_validate(body)
        return self


def load_grid_event_file(path: Path) -> GridEventFile:
    """Read a grid-event file (``.json``, else YAML).

    Raises:
        OSError: unreadable file.
        ValueError: bad content (pydantic's message names the bad field).

    """
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return GridEventFile.model_validate(data or {})


def _shift(value: Any, offset: timedelta, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _shift(v, offset, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, offset, key) for v in value]
    if key in ("start", "publish_at") and isinstance(value, str):
        return (datetime.fromisoformat(value) + offset).isoformat()
    return value


def shift_file(
    file: GridEventFile, offset: timedelta | str | None, now: datetime
) -> GridEventFile:
    """The file with every time (``publish_at``, ``intervalPeriod.start``) moved.

    ``offset``: a ``timedelta``; ``"auto"``: ``now`` minus the earliest ``publish_at``;
    ``None``: the file as is.
    """
    if offset is None or (not file.events and offset == "auto"):
        return file
    if offset == "auto":
        offset = now - min(e.publish_at for e in file.events)
    assert isinstance(offset, timedelta)
    data = _shift(file.model_dump(mode="json", exclude_none=True), offset)
    return GridEventFile.model_validate(data)


class Replayer:
    """Publishes a file's events as the VTN's clock passes their ``publish_at``."""

    def __init__(self, file: GridEventFile) -> None:
        self.file = file
        self._pending = sorted(
            range(len(file.events)), key=lambda i: (file.events[i].publish_at, i)
        )
        self._program_ids: dict[str, str] = {}

    @property
    def pending(self) -> int:
        """Events not yet published."""
        return len(self._pending)

    def create_programs(self, vtn: VtnCore) -> None:
        """Create the file's programs (at the VTN's current time)."""
        for p in self.file.programs:
            req = p.request()
            existing = vtn.program_named(req.programName)
            obj = existing or vtn.create("PROGRAM", req, object_id=p.id)
            self._program_ids[req.programName] = obj.id.root

    def due(self, vtn: VtnCore, now: datetime) -> list[m.Event]:
        """Create every pending event with ``publish_at <= now`` (notifications fire)."""
        out: list[m.Event] = []
        while self._pending and self.file.events[self._pending[0]].publish_at <= now:
            ev = self.file.events[self._pending.pop(0)]
            body = ev.body()
            if ev.program is not None:
                body["programID"] = self._program_ids[ev.program]
            req = m.EventRequest.model_validate(body)
            obj = vtn.create("EVENT", req, object_id=ev.id)
            assert isinstance(obj, m.Event)
            out.append(obj)
        return out
