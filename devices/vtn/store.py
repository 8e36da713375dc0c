"""In-memory object store of the emulated VTN.

Programs, events, reports, subscriptions, vens and resources are kept as the generated
OpenADR 3.1.0 pydantic models.

Ids are deterministic (``program-1``, ``event-2`` ...: a counter per object type) so that
a run is reproducible. ``createdDateTime``/``modificationDateTime`` are the ``now`` passed
in, never the wall clock. Visibility and permission rules live in the routes
(:mod:`devices.vtn.app`); this module only keeps and stamps objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from devices.vtn import oadr3_models as m

__all__ = ["MODEL_OF", "OBJECT_TYPES", "Store", "StoredObject", "targets_of"]

StoredObject = m.Program | m.Event | m.Report | m.Subscription | m.Ven | m.Resource1
"""Any object the VTN keeps (``Resource1`` is the generated name of the ``resource``
schema; ``Resource`` is a report's resource block)."""

MODEL_OF: dict[str, type[BaseModel]] = {
    "PROGRAM": m.Program,
    "EVENT": m.Event,
    "REPORT": m.Report,
    "SUBSCRIPTION": m.Subscription,
    "VEN": m.Ven,
    "RESOURCE": m.Resource1,
}
OBJECT_TYPES: tuple[str, ...] = tuple(MODEL_OF)

T = TypeVar("T", bound=BaseModel)


def targets_of(obj: BaseModel) -> list[str]:
    """The object's ``targets`` as plain strings (empty when absent)."""
    raw = getattr(obj, "targets", None) or []
    return [t.root if isinstance(t, m.Target) else str(t) for t in raw]


def _dump(obj: BaseModel) -> dict[str, Any]:
    return obj.model_dump(mode="json", exclude_none=True)


class Store:
    """Objects by type and id, in creation order."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, StoredObject]] = {t: {} for t in OBJECT_TYPES}
        self._counters: dict[str, int] = dict.fromkeys(OBJECT_TYPES, 0)

    def all(self, object_type: str) -> list[StoredObject]:
        """All objects of ``object_type`` (``PROGRAM`` ...), oldest first."""
        return list(self._objects[object_type].values())

    def get(self, object_type: str, object_id: str) -> StoredObject | None:
        """One object, or None."""
        return self._objects[object_type].get(object_id)

    def new_id(self, object_type: str) -> str:
        """The next free deterministic id of that type (``event-7``)."""
        while True:
            self._counters[object_type] += 1
            oid = f"{object_type.lower()}-{self._counters[object_type]}"
            if oid not in self._objects[object_type]:
                return oid

    def create(
        self,
        object_type: str,
        body: BaseModel | dict[str, Any],
        now: datetime,
        *,
        object_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> StoredObject:
        """Store a new object built from a request body plus server metadata.

        Args:
            object_type: ``PROGRAM``, ``EVENT`` ...
            body: the validated request (or its JSON dict).
            now: creation time (UTC), stamped on both timestamps.
            object_id: a fixed id (grid-event files); default the next deterministic id.
            extra: server-provided fields (``clientID`` ...) that override the body.

        Raises:
            ValueError: ``object_id`` already used.

        """
        oid = object_id or self.new_id(object_type)
        if oid in self._objects[object_type]:
            raise ValueError(f"{object_type} {oid!r} exists")
        data = _dump(body) if isinstance(body, BaseModel) else dict(body)
        data.update(extra or {})
        data.update(
            id=oid, objectType=object_type, createdDateTime=now, modificationDateTime=now
        )
        obj: Any = MODEL_OF[object_type].model_validate(data)
        self._objects[object_type][oid] = obj
        return obj  # type: ignore[no-any-return]

    def replace(
        self,
        object_type: str,
        object_id: str,
        body: BaseModel | dict[str, Any],
        now: datetime,
        *,
        extra: dict[str, Any] | None = None,
    ) -> StoredObject:
        """Replace an object's client-provided fields (PUT), keeping id and creation time.

        Raises:
            KeyError: no such object.

        """
        old = self._objects[object_type][object_id]
        data = _dump(body) if isinstance(body, BaseModel) else dict(body)
        data.update(extra or {})
        data.update(
            id=object_id,
            objectType=object_type,
            createdDateTime=old.createdDateTime,
            modificationDateTime=now,
        )
        obj: Any = MODEL_OF[object_type].model_validate(data)
        self._objects[object_type][object_id] = obj
        return obj  # type: ignore[no-any-return]

    def delete(self, object_type: str, object_id: str) -> StoredObject:
        """Remove and return an object.

        Raises:
            KeyError: no such object.

        """
        return self._objects[object_type].pop(object_id)

    def delete_where(self, object_type: str, ids: Iterable[str]) -> list[StoredObject]:
        """Remove several objects (cascades), returning those removed."""
        return [self._objects[object_type].pop(i) for i in list(ids) if i in self._objects[
            object_type]]
