"""Notifications of the emulated VTN: webhooks to subscriptions and MQTT publishes.

On every create/update/delete of a program, event, report, subscription, ven or resource
the VTN builds one OpenADR 3.1.0 ``notification`` and

- POSTs it (``application/json``, ``Authorization: Bearer {bearerToken}`` when the
  subscription gave one) to the ``callbackUrl`` of every matching ``objectOperations``
  entry of every subscription the object is visible to;
- publishes it (same JSON) to the MQTT topics of :func:`topic_names` with QoS 1.

Echo check: the 3.1.0 document and user guide say nothing about verifying a callback URL.
VTNs in the wild probe ``{callbackUrl}/echo`` first; this VTN does the same before the
first delivery to a callback URL: ``GET {callbackUrl}/echo?challenge=<random>`` with the
subscription's bearer token. Any 2xx passes (a receiver should answer the challenge
string as the body; it is not enforced). On failure the notification is dropped (counted
in ``failed``) and the check is retried before the next one.

In-flight accounting (DESIGN.md quiesce contract): every webhook delivery and MQTT publish
is a task counted until it has completed (the receiver answered / the broker acknowledged
QoS 1). :attr:`Notifier.busy` and :meth:`Notifier.drain` expose it; ``webhooks_sent`` and
``mqtt_published`` are the sender-side counts a runtime compares with receivers' counts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import httpx

from devices.vtn import oadr3_models as m
from devices.vtn.store import StoredObject, targets_of

__all__ = ["Notifier", "topic_names"]

log = logging.getLogger(__name__)

_PLURAL = {
    "PROGRAM": "programs",
    "EVENT": "events",
    "REPORT": "reports",
    "SUBSCRIPTION": "subscriptions",
    "VEN": "vens",
    "RESOURCE": "resources",
}


def topic_names(base: str, *, with_create: bool = True) -> dict[str, str]:
    """The ``notifierOperationsTopics`` object for a topic base: CREATE/UPDATE/DELETE/ALL.

    ``base`` is e.g. ``programs`` or ``programs/program-1/events``.

    ``with_create=False`` for one object's own topics (the spec: no CREATE topic for a
    specific object id).
    """
    topics = {"UPDATE": f"{base}/update", "DELETE": f"{base}/delete", "ALL": f"{base}/+"}
    if with_create:
        topics["CREATE"] = f"{base}/create"
    return topics


def notification_topics(
    object_type: str, operation: str, obj: StoredObject, ven_ids: Iterable[str]
) -> list[str]:
    """MQTT topics (without prefix) one notification is published to.

    Args:
        object_type: ``PROGRAM`` ...
        operation: ``CREATE``, ``UPDATE`` or ``DELETE``.
        obj: the object.
        ven_ids: the vens the object concerns (targeted events/programs, a resource's ven).

    """
    op = operation.lower()
    plural = _PLURAL[object_type]
    out = [f"{plural}/{op}"]
    oid = obj.id.root
    if object_type in ("PROGRAM", "VEN") and operation != "CREATE":
        out.append(f"{plural}/{oid}/{op}")
    if object_type == "EVENT":
        out.append(f"programs/{getattr(obj, 'programID').root}/events/{op}")  # noqa: B009
    if object_type in ("EVENT", "PROGRAM", "RESOURCE"):
        out.extend(f"vens/{v}/{plural}/{op}" for v in sorted(set(ven_ids)))
    return out


Visible = Callable[[m.Subscription, str, StoredObject], list[str] | None]
"""``visible(subscription, object_type, obj)``: None when the subscription's client may not
see the object, else the targets to show it (target hiding)."""


def _with_targets(body: dict[str, Any], shown: list[str]) -> dict[str, Any]:
    if "targets" not in body:
        return body
    obj = dict(body["object"])
    if "targets" in obj:
        obj["targets"] = shown
    return {**body, "object": obj, "targets": shown}


class Notifier:
    """Sends the VTN's notifications and counts them while in flight.

    Args:
        mqtt_url: ``mqtt://host:port`` of the broker, or None (webhooks only).
        topic_prefix: prepended to every topic.
        echo_check: probe ``{callbackUrl}/echo`` before the first delivery.
        timeout_s: timeout of one webhook request, seconds.

    """

    def __init__(
        self,
        mqtt_url: str | None = None,
        *,
        topic_prefix: str = "",
        echo_check: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        self.mqtt_url = mqtt_url
        self.topic_prefix = topic_prefix
        self.echo_check = echo_check
        self.timeout_s = timeout_s
        self.webhooks_sent = 0
        self.mqtt_published = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._verified: set[str] = set()
        self._url_locks: dict[str, asyncio.Lock] = {}
        self._http: httpx.AsyncClient | None = None
        self._mqtt: aiomqtt.Client | None = None

    async def start(self) -> None:
        """Open the HTTP client and connect to the broker (if any).

        Raises:
            aiomqtt.MqttError: the broker refused or is unreachable.

        """
        self._http = httpx.AsyncClient(timeout=self.timeout_s)
        if self.mqtt_url:
            u = urlsplit(self.mqtt_url)
            client = aiomqtt.Client(
                u.hostname or "127.0.0.1",
                u.port or 1883,
                username=u.username,
                password=u.password,
                identifier=f"migrid-vtn-{secrets.token_hex(4)}",
            )
            await client.__aenter__()
            self._mqtt = client

    async def stop(self) -> None:
        """Drain, then close the HTTP client and the broker connection."""
        await self.drain()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._mqtt is not None:
            await self._mqtt.__aexit__(None, None, None)
            self._mqtt = None

    @property
    def busy(self) -> bool:
        """True while a webhook delivery or MQTT publish is in flight."""
        return bool(self._tasks)

    @property
    def in_flight(self) -> int:
        """Number of deliveries and publishes in flight."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Return once no delivery or publish is in flight (even ones spawned meanwhile)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify(
        self,
        object_type: str,
        operation: str,
        obj: StoredObject,
        subscriptions: Iterable[m.Subscription],
        *,
        visible: Visible,
        ven_ids: Iterable[str] = (),
    ) -> m.Notification:
        """Fan one operation out to webhooks and MQTT (returns at once; see ``drain``).

        Args:
            object_type: ``PROGRAM`` ...
            operation: ``CREATE``, ``UPDATE`` or ``DELETE``.
            obj: the object after the operation (before removal for DELETE).
            subscriptions: all subscriptions of the VTN.
            visible: ``visible(subscription, object_type, obj)``: None when the
                subscription's client may not see the object, else the targets shown.
            ven_ids: the vens the object concerns (for ``vens/{venID}/...`` topics).

        """
        note = m.Notification.model_validate(
            {
                "objectType": object_type,
                "operation": operation,
                "object": obj.model_dump(mode="json", exclude_none=True),
                **({"targets": targets_of(obj)} if targets_of(obj) else {}),
            }
        )
        body = note.model_dump(mode="json", exclude_none=True)
        for sub in subscriptions:
            if not self._matches(sub, object_type, operation, obj):
                continue
            shown = visible(sub, object_type, obj)
            if shown is None:
                continue
            sub_body = _with_targets(body, shown)
            for oo in sub.objectOperations:
                objs = {o.root for o in oo.objects}
                if object_type in objs and operation in oo.operations:
                    self._spawn(self._deliver(str(oo.callbackUrl), oo.bearerToken, sub_body))
        if self._mqtt is not None:
            for topic in notification_topics(object_type, operation, obj, ven_ids):
                self._spawn(self._publish(self.topic_prefix + topic, body))
        return note

    @staticmethod
    def _matches(sub: m.Subscription, object_type: str, operation: str, obj: Any) -> bool:
        if sub.programID is not None:
            pid = sub.programID.root
            if object_type == "PROGRAM" and obj.id.root != pid:
                return False
            if object_type == "EVENT" and obj.programID.root != pid:
                return False
        if sub.targets:
            wanted = {t.root for t in sub.targets}
            have = set(targets_of(obj))
            if have and not wanted & have:
                return False
        return True

    async def _deliver(self, url: str, token: str | None, body: dict[str, Any]) -> None:
        assert self._http is not None, "Notifier.start() not awaited"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        lock = self._url_locks.setdefault(url, asyncio.Lock())
        async with lock:  # one callback URL gets its notifications in order
            try:
                if self.echo_check and url not in self._verified:
                    challenge = secrets.token_urlsafe(16)
                    r = await self._http.get(
                        url.rstrip("/") + "/echo", params={"challenge": challenge},
                        headers=headers,
                    )
                    if not r.is_success:
                        raise httpx.HTTPStatusError(
                            f"echo check answered {r.status_code}", request=r.request,
                            response=r,
                        )
                    self._verified.add(url)
                r = await self._http.post(url, json=body, headers=headers)
                r.raise_for_status()
                self.webhooks_sent += 1
            except httpx.HTTPError as err:
                self.failed += 1
                log.warning("webhook %s: %s", url, err)

    async def _publish(self, topic: str, body: dict[str, Any]) -> None:
        assert self._mqtt is not None
        import json

        try:
            await self._mqtt.publish(topic, json.dumps(body).encode(), qos=1)
            self.mqtt_published += 1
        except aiomqtt.MqttError as err:
            self.failed += 1
            log.warning("mqtt publish %s: %s", topic, err)
