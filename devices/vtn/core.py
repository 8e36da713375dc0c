"""The emulated VTN's state and rules, independent of HTTP.

:class:`VtnCore` owns the store, the token issuer and the notifier, and applies the
OpenADR 3.1.0 object-privacy rules (Definition.md, "Object Privacy"):

- BL clients read and write everything.
- VEN clients see only the vens, resources, reports and subscriptions whose ``clientID``
  is their own; the VTN writes ``clientID`` from the token on create.
- Programs and events without targets are visible to every VEN. One with targets is
  visible to a VEN only when the request's ``targets`` AND the targets granted to the VEN
  (those of its ven objects and their resources) intersect the object's targets; the
  response then shows only those targets (target hiding). Notifications to a VEN's
  subscription use the subscription's ``targets`` as the request targets.

Time is injected: :meth:`set_now` (and :meth:`advance`) set the clock used for
timestamps, token expiry and replay; nothing here reads the wall clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from devices.vtn import oadr3_models as m
from devices.vtn.auth import Principal, TokenIssuer
from devices.vtn.config import ClientConfig, VtnConfig
from devices.vtn.notify import Notifier
from devices.vtn.problems import ProblemError
from devices.vtn.replay import GridEventFile, Replayer
from devices.vtn.store import Store, StoredObject, targets_of

__all__ = ["VtnCore", "parse_duration"]

_DURATION = re.compile(
    r"^(-?)P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration as a ``timedelta`` (a year is 365 days, a month 30).

    Raises:
        ValueError: not a duration.

    """
    g = _DURATION.match(text)
    if g is None:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    sign, y, mo, w, d, h, mi, s = g.groups()
    days = int(y or 0) * 365 + int(mo or 0) * 30 + int(w or 0) * 7 + int(d or 0)
    td = timedelta(days=days, hours=int(h or 0), minutes=int(mi or 0), seconds=float(s or 0))
    return -td if sign else td


class VtnCore:
    """State and rules of one emulated VTN.

    Args:
        config: clients, broker, topic prefix, token settings.
        now: the initial time (UTC, timezone-aware).

    """

    def __init__(self, config: VtnConfig, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        self.config = config
        self._now = now
        self.store = Store()
        self.clients: dict[str, ClientConfig] = {c.id: c for c in config.clients}
        self.issuer = TokenIssuer(config.clients, config.token_ttl_s, config.token_secret)
        self.notifier = Notifier(
            config.mqtt_url,
            topic_prefix=config.topic_prefix,
            echo_check=config.echo_check,
            timeout_s=config.webhook_timeout_s,
        )
        self.replayer: Replayer | None = None

    # --- time and lock-step -------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The VTN's current time (the latest ``now`` it was given)."""
        return self._now

    def set_now(self, now: datetime) -> None:
        """Set the clock used for timestamps and token expiry.

        Raises:
            ValueError: ``now`` is naive.

        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        self._now = now

    async def advance(self, now: datetime) -> list[m.Event]:
        """Set the clock to ``now`` and publish every replayed event due by then.

        Returns the events created (their notifications are in flight: see ``drain``).
        """
        self.set_now(now)
        if self.replayer is None:
            return []
        return self.replayer.due(self, now)

    @property
    def busy(self) -> bool:
        """True while a webhook delivery or MQTT publish is in flight."""
        return self.notifier.busy

    async def drain(self) -> None:
        """Return once no webhook delivery or MQTT publish is in flight."""
        await self.notifier.drain()

    def load_grid_events(self, file: GridEventFile) -> None:
        """Create the file's programs now and schedule its events for :meth:`advance`."""
        self.replayer = Replayer(file)
        self.replayer.create_programs(self)

    def add_client(self, client: ClientConfig) -> None:
        """Register (or replace) an OAuth2 client."""
        self.clients[client.id] = client
        self.issuer.add_client(client)

    # --- privacy ------------------------------------------------------------------------

    def granted_targets(self, client_id: str) -> set[str]:
        """Targets granted to a VEN client: those of its vens and their resources."""
        vens = [v for v in self.store.all("VEN") if v.clientID.root == client_id]  # type: ignore[union-attr]
        out: set[str] = set()
        ids = {v.id.root for v in vens}
        for v in vens:
            out.update(targets_of(v))
        for r in self.store.all("RESOURCE"):
            if r.venID.root in ids:  # type: ignore[union-attr]
                out.update(targets_of(r))
        return out

    def visible_targets(
        self, role: str, client_id: str, obj: StoredObject, requested: Iterable[str] | None
    ) -> list[str] | None:
        """For a program/event: the targets to show, or None when not visible.

        BL sees every object with all its targets. A VEN sees an untargeted object, and a
        targeted one when (requested AND granted) meets the object's targets.
        """
        have = targets_of(obj)
        if role == "BL" or not have:
            return have
        effective = set(requested or ()) & self.granted_targets(client_id)
        shown = [t for t in have if t in effective]
        return shown or None

    def owns(self, p: Principal, obj: StoredObject) -> bool:
        """Whether ``p`` may see a ven/resource/report/subscription (BL: always)."""
        return p.is_bl or (getattr(obj, "clientID", None) is not None and (
            obj.clientID.root == p.client_id  # type: ignore[union-attr]
        ))

    def _sub_visible(
        self, sub: m.Subscription, object_type: str, obj: StoredObject
    ) -> list[str] | None:
        """Targets to show ``obj`` with to a subscription's client; None: not visible.

        All targets, but for a VEN and a targeted program/event (target hiding).
        """
        client = self.clients.get(sub.clientID.root)
        role = client.role if client is not None else "VEN"
        if role == "BL":
            return targets_of(obj)
        if object_type in ("PROGRAM", "EVENT"):
            req = [t.root for t in sub.targets] if sub.targets else []
            return self.visible_targets(role, sub.clientID.root, obj, req)
        if object_type == "RESOURCE":
            ven = self.store.get("VEN", obj.venID.root)  # type: ignore[union-attr]
            ok = ven is not None and ven.clientID.root == sub.clientID.root  # type: ignore[union-attr]
        else:
            ok = getattr(obj, "clientID", None) is not None and (
                obj.clientID.root == sub.clientID.root  # type: ignore[union-attr]
            )
        return targets_of(obj) if ok else None

    def _ven_ids_for(self, object_type: str, obj: StoredObject) -> list[str]:
        if object_type == "RESOURCE":
            return [obj.venID.root]  # type: ignore[union-attr]
        if object_type not in ("PROGRAM", "EVENT"):
            return []
        have = set(targets_of(obj))
        out = []
        for v in self.store.all("VEN"):
            cid = v.clientID.root  # type: ignore[union-attr]
            if not have or have & self.granted_targets(cid):
                out.append(v.id.root)
        return out

    def notify(self, object_type: str, operation: str, obj: StoredObject) -> None:
        """Fan an operation out to subscriptions (webhooks) and MQTT."""
        self.notifier.notify(
            object_type,
            operation,
            obj,
            list(self.store.all("SUBSCRIPTION")),  # type: ignore[arg-type]
            visible=self._sub_visible,
            ven_ids=self._ven_ids_for(object_type, obj),
        )

    # --- operations (HTTP-independent; raise ProblemError) ----------------------------

    def create(
        self, object_type: str, body: Any, *, object_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> StoredObject:
        """Create, stamp with ``now``, notify CREATE."""
        obj = self.store.create(object_type, body, self._now, object_id=object_id, extra=extra)
        self.notify(object_type, "CREATE", obj)
        return obj

    def replace(
        self, object_type: str, object_id: str, body: Any, *, extra: dict[str, Any] | None = None
    ) -> StoredObject:
        """Replace (PUT), stamp ``modificationDateTime``, notify UPDATE."""
        obj = self.store.replace(object_type, object_id, body, self._now, extra=extra)
        self.notify(object_type, "UPDATE", obj)
        return obj

    def delete(self, object_type: str, object_id: str) -> StoredObject:
        """Delete, notify DELETE; a program takes its events along, a ven its resources."""
        obj = self.store.delete(object_type, object_id)
        self.notify(object_type, "DELETE", obj)
        if object_type == "PROGRAM":
            for ev in [e for e in self.store.all("EVENT") if e.programID.root == object_id]:  # type: ignore[union-attr]
                self.notify("EVENT", "DELETE", self.store.delete("EVENT", ev.id.root))
        if object_type == "VEN":
            for r in [r for r in self.store.all("RESOURCE") if r.venID.root == object_id]:  # type: ignore[union-attr]
                self.notify("RESOURCE", "DELETE", self.store.delete("RESOURCE", r.id.root))
        return obj

    def program_named(self, name: str) -> StoredObject | None:
        """The program with ``programName`` ``name``, if any."""
        for p in self.store.all("PROGRAM"):
            if p.programName == name:  # type: ignore[union-attr]
                return p
        return None

    def require_program(self, program_id: str) -> None:
        """Raise a 409 problem when no program has that id (a foreign-key violation)."""
        if self.store.get("PROGRAM", program_id) is None:
            raise ProblemError(409, f"no program {program_id!r}")
