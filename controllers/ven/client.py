"""The OpenADR 3 VEN client: auth, registration, programs/events, notifications, reports.

Time is injected: ``start(now)``/``step(now)``/``report(..., now)`` carry the runtime's
clock; handlers of incoming notifications use the latest ``now`` given. Nothing raises out
of ``step``: failures become warnings (``warnings`` and ``ven.warning`` events) and the VEN
keeps its last valid state.

Every object received (list reads, webhook bodies, MQTT payloads) goes through
``controllers.ven.tolerant.normalise`` (what real VTNs send, FIELD-NOTES) and then the
generated models; a malformed object is dropped with a warning.

Notifications: the configured preference is tried first, then the other push channel,
then polling every ``poll_interval_s`` of injected time. ``busy``/``drain()`` count
requests in flight and notifications received but not yet applied.
"""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from controllers.exchange import ExchangeHook, ExchangeTap
from controllers.site_io.common import InFlight
from controllers.ven.auth import TokenManager
from controllers.ven.config import NotificationMode, VenConfig
from controllers.ven.notify import MqttListener, MqttSettings, WebhookServer
from controllers.ven.oadr3_models import (
    Event,
    Notification,
    NotifiersResponse,
    NotifierTopicsResponse,
    Program,
    Report,
    Resource1,
    Subscription,
    SubscriptionRequest,
    ValuesMap,
    VenResourceRequest,
    VenVenRequest,
)
from controllers.ven.oadr3_models import Ven as VenObject
from controllers.ven.recording import RecordingAsyncClient
from controllers.ven.reports import Measurements, build_report
from controllers.ven.tolerant import MalformedObjectError, normalise

EventSink = Callable[[str, dict[str, Any]], None]
"""``(kind, payload)`` sink for run-folder events."""

M = TypeVar("M", bound=BaseModel)

_PAGE = 50
_MAX_PAGES = 40


class VtnError(Exception):
    """The VTN answered with an unexpected status."""


class Ven:
    """An OpenADR 3.1 VEN following the configured programs of one VTN.

    ``on_exchange`` (optional) is called with a :class:`controllers.exchange.Exchange`
    (protocol ``openadr``) for every HTTP request the VEN makes (token requests included)
    and every notification it receives (webhook requests, MQTT messages);
    ``perf_counter`` times them.
    """

    def __init__(
        self,
        config: VenConfig,
        *,
        on_event: EventSink | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_exchange: ExchangeHook | None = None,
        perf_counter: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._tap = ExchangeTap(
            on_exchange, "openadr", config.vtn_url.rstrip("/"), lambda: self._now, perf_counter
        )
        self._on_event = on_event
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._auth: TokenManager | None = None
        self._inflight = InFlight()
        self._pending = 0
        self._now: datetime | None = None
        self._programs: dict[str, Program] = {}
        self._events: dict[str, Event] = {}
        self.warnings: list[str] = []
        self.ven_id: str | None = None
        self.resource_ids: dict[str, str] = {}
        self.subscription_id: str | None = None
        self.notification_mode: NotificationMode | None = None
        self.notifications_received = 0
        self.notifications_applied = 0
        self.last_poll: datetime | None = None
        self._webhook: WebhookServer | None = None
        self._mqtt: MqttListener | None = None
        self._ready = False

    # ------------------------------------------------------------------ public state
    @property
    def programs(self) -> dict[str, Program]:
        """Held programs by id, filtered to the configured program names."""
        return dict(self._programs)

    @property
    def events(self) -> dict[str, Event]:
        """Held events by id, filtered to the held programs."""
        return dict(self._events)

    @property
    def busy(self) -> int:
        """Requests in flight plus notifications received and not yet applied."""
        return self._inflight.busy + self._pending

    async def drain(self) -> None:
        """Return when nothing of the VEN's is in flight."""
        await self._inflight.drain()

    @property
    def auth(self) -> TokenManager | None:
        """The token manager (after ``start``)."""
        return self._auth

    # ------------------------------------------------------------------ lifecycle
    async def start(self, now: datetime) -> None:
        """Open the HTTP client and try to authenticate, register, read and subscribe."""
        self._now = now
        if self._http is None:
            options: dict[str, Any] = {
                "verify": self._tls(),
                "timeout": self.config.request_timeout_s,
                "transport": self._transport,
                "follow_redirects": False,
            }
            self._http = (
                RecordingAsyncClient(self._tap, self.config.vtn_url, **options)
                if self._tap.on
                else httpx.AsyncClient(**options)
            )
            self._auth = TokenManager(self.config, self._http)
        await self._safe(self._bring_up(now), "start")

    async def step(self, now: datetime) -> None:
        """Refresh the token, finish start-up if needed, poll when due; never raises."""
        self._now = now
        if self._http is None:
            await self.start(now)
            return
        await self._safe(self._step(now), "step")

    async def close(self) -> None:
        """Delete the subscription (best effort), stop receivers, close the client."""
        if self.subscription_id and self._http is not None and self._now is not None:
            try:
                await self._request("DELETE", f"subscriptions/{self.subscription_id}", self._now)
            except Exception as exc:
                self._warn(f"DELETE subscription failed: {exc!r}")
            self.subscription_id = None
        if self._mqtt is not None:
            await self._mqtt.close()
            self._mqtt = None
        if self._webhook is not None:
            await self._webhook.close()
            self._webhook = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def report(
        self,
        event: Event | str,
        measurements: Measurements,
        now: datetime,
        *,
        report_name: str | None = None,
    ) -> Report | None:
        """Build the report ``event`` asks for from ``measurements`` and POST it."""
        self._now = now
        ev = self._events.get(event) if isinstance(event, str) else event
        if ev is None:
            self._warn(f"report: unknown event {event!r}")
            return None
        request, warnings = build_report(
            ev, measurements, client_name=self.config.ven_name, report_name=report_name
        )
        for w in warnings:
            self._warn(f"report for event {ev.id.root}: {w}")
        if not request.resources:
            return None
        body = request.model_dump(mode="json", exclude_none=True)
        try:
            resp = await self._request("POST", "reports", now, json=body)
            self._expect(resp, 200, 201)
            raw = self._decode(resp)
            created = self._validate(Report, raw, "report") if isinstance(raw, dict) else None
        except Exception as exc:
            self._warn(f"POST /reports failed: {exc!r}")
            return None
        self._emit(
            "ven.report_sent",
            {
                "event_id": ev.id.root,
                "report_id": created.id.root if created else None,
                "payload_types": [p.payloadType for p in (request.payloadDescriptors or [])],
                "resources": [r.resourceName.root for r in request.resources],
            },
        )
        return created

    # ------------------------------------------------------------------ internals
    def _tls(self) -> ssl.SSLContext | bool:
        if not self.config.verify_tls:
            return False
        cafile = str(self.config.ca_file) if self.config.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    async def _safe(self, coro: Any, where: str) -> None:
        try:
            await coro
        except Exception as exc:
            self._warn(f"{where}: {exc!r}")

    async def _bring_up(self, now: datetime) -> None:
        assert self._auth is not None
        if self._auth.needs_refresh(now):
            await self._refresh(now)
        if self.ven_id is None:
            await self._register(now)
        if not self._ready:
            await self.refresh_state(now)
            await self._setup_notifications(now)
            self._ready = True

    async def _step(self, now: datetime) -> None:
        await self._bring_up(now)
        if self._mqtt is not None and self._mqtt.failed:
            self._warn(f"MQTT listener stopped ({self._mqtt.error!r}); polling")
            await self._mqtt.close()
            self._mqtt = None
            self._set_mode("poll")
        if self.notification_mode == "poll" and (
            self.last_poll is None
            or now - self.last_poll >= timedelta(seconds=self.config.poll_interval_s)
        ):
            await self.refresh_state(now)

    async def _refresh(self, now: datetime) -> None:
        assert self._auth is not None
        await self._auth.fetch(now)
        token = self._auth.token
        self._emit(
            "ven.auth",
            {
                "method": self._auth.auth_method,
                "expires_at": token.expires_at.isoformat() if token and token.expires_at else None,
            },
        )

    async def _request(
        self,
        method: str,
        path: str,
        now: datetime,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        assert self._http is not None and self._auth is not None
        url = self.config.vtn_url + "/" + path.lstrip("/")
        async with self._inflight.track():
            for attempt in range(2):
                if self._auth.needs_refresh(now):
                    await self._refresh(now)
                assert self._auth.token is not None
                headers = {"Authorization": f"Bearer {self._auth.token.access_token}"}
                resp = await self._http.request(
                    method, url, json=json, params=params, headers=headers
                )
                if resp.status_code == 401 and attempt == 0:
                    self._emit("ven.auth", {"reason": "401", "path": path})
                    self._auth.invalidate()
                    continue
                return resp
        raise AssertionError("unreachable")

    @staticmethod
    def _expect(resp: httpx.Response, *codes: int) -> None:
        if resp.status_code not in codes:
            raise VtnError(
                f"{resp.request.method} {resp.request.url.path}: "
                f"{resp.status_code} {resp.text[:200]}"
            )

    @staticmethod
    def _decode(resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError as exc:
            raise VtnError(f"non-JSON answer to {resp.request.url.path}") from exc

    def _validate(self, model: type[M], raw: Any, what: str) -> M | None:
        """``normalise`` then validate; on failure warn and return None."""
        try:
            data, notes = normalise(raw)
        except MalformedObjectError as exc:
            self._warn(f"malformed {what} dropped: {exc}")
            return None
        for note in notes:
            self._warn(f"{what}: {note}")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
            )
            self._warn(f"malformed {what} dropped: {errors}")
            return None

    # ------------------------------------------------------------------ registration
    async def _register(self, now: datetime) -> None:
        attributes = None
        body = VenVenRequest(
            objectType="VEN_VEN_REQUEST", venName=self.config.ven_name, attributes=attributes
        )
        resp = await self._request(
            "POST", "vens", now, json=body.model_dump(mode="json", exclude_none=True)
        )
        ven: VenObject | None = None
        if resp.status_code in (200, 201):
            ven = self._validate(VenObject, self._decode(resp), "ven")
        elif resp.status_code in (400, 403, 409):
            self._emit("ven.registration", {"status": resp.status_code, "lookup": True})
        else:
            self._expect(resp, 201)
        if ven is None:
            ven = await self._find_ven(now)
        if ven is None:
            raise VtnError(f"ven {self.config.ven_name!r} neither created nor found")
        self.ven_id = ven.id.root
        self._emit("ven.registered", {"ven_id": self.ven_id, "ven_name": self.config.ven_name})
        await self._register_resources(now)

    async def _find_ven(self, now: datetime) -> VenObject | None:
        resp = await self._request("GET", "vens", now, params={"venName": self.config.ven_name})
        self._expect(resp, 200)
        for raw in self._as_list(self._decode(resp), "vens"):
            ven = self._validate(VenObject, raw, "ven")
            if ven is not None and ven.venName.root == self.config.ven_name:
                return ven
        return None

    async def _register_resources(self, now: datetime) -> None:
        assert self.ven_id is not None
        for res in self.config.resources:
            if res.name in self.resource_ids:
                continue
            body = VenResourceRequest(
                objectType="VEN_RESOURCE_REQUEST",
                resourceName=res.name,
                venID=self.ven_id,
                attributes=[ValuesMap(type=k, values=list(v)) for k, v in res.attributes.items()]
                or None,
            )
            resp = await self._request(
                "POST", "resources", now, json=body.model_dump(mode="json", exclude_none=True)
            )
            found: Resource1 | None = None
            if resp.status_code in (200, 201):
                found = self._validate(Resource1, self._decode(resp), "resource")
            if found is None:
                resp = await self._request(
                    "GET",
                    "resources",
                    now,
                    params={"venID": self.ven_id, "resourceName": res.name},
                )
                if resp.status_code == 200:
                    for raw in self._as_list(self._decode(resp), "resources"):
                        r = self._validate(Resource1, raw, "resource")
                        if r is not None and r.resourceName.root == res.name:
                            found = r
                            break
            if found is None:
                self._warn(f"resource {res.name!r} not registered")
                continue
            self.resource_ids[res.name] = found.id.root

    # ------------------------------------------------------------------ reads
    def _as_list(self, raw: Any, what: str) -> list[Any]:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                pass
        if not isinstance(raw, list):
            raise VtnError(f"{what}: expected a JSON array, got {type(raw).__name__}")
        return raw

    async def _read_all(
        self, path: str, now: datetime, params: dict[str, Any] | None = None
    ) -> list[Any]:
        out: list[Any] = []
        seen: set[str] = set()
        for page in range(_MAX_PAGES):
            query = dict(params or {}) | {"skip": page * _PAGE, "limit": _PAGE}
            resp = await self._request("GET", path, now, params=query)
            self._expect(resp, 200)
            items = self._as_list(self._decode(resp), path)
            fresh = [i for i in items if not (isinstance(i, dict) and str(i.get("id")) in seen)]
            seen |= {str(i.get("id")) for i in items if isinstance(i, dict)}
            out += fresh
            if len(items) < _PAGE or not fresh:
                break
        return out

    def _wanted_program(self, program: Program) -> bool:
        names = self.config.program_names
        return not names or program.programName in names

    def _wanted_event(self, event: Event) -> bool:
        if not self.config.program_names:
            return True
        return event.programID.root in self._programs

    def _merge(
        self,
        model: type[M],
        raws: Iterable[Any],
        held: dict[str, M],
        what: str,
        keep: Callable[[M], bool],
    ) -> dict[str, M]:
        """A new id -> object map; a malformed object keeps its previous valid version."""
        out: dict[str, M] = {}
        for raw in raws:
            obj = self._validate(model, raw, what)
            if obj is None:
                rid = raw.get("id") if isinstance(raw, dict) else None
                if isinstance(rid, str) and rid in held:
                    out[rid] = held[rid]
                continue
            oid = getattr(obj, "id").root  # noqa: B009 - M is bound to BaseModel
            if keep(obj):
                out[oid] = obj
        return out

    async def refresh_state(self, now: datetime) -> None:
        """Read programs and events (a poll); keep the last valid state on failure."""
        raws = await self._read_all("programs", now)
        self._programs = self._merge(Program, raws, self._programs, "program", self._wanted_program)
        events_raw: list[Any] = []
        if self.config.program_names:
            for pid in sorted(self._programs):
                events_raw += await self._read_all("events", now, {"programID": pid})
        else:
            events_raw = await self._read_all("events", now)
        before = set(self._events)
        self._events = self._merge(Event, events_raw, self._events, "event", self._wanted_event)
        for eid in sorted(set(self._events) - before):
            self._emit(
                "ven.event_received",
                {"event_id": eid, "program_id": self._events[eid].programID.root, "via": "poll"},
            )
        self.last_poll = now

    # ------------------------------------------------------------------ notifications
    def _set_mode(self, mode: NotificationMode) -> None:
        self.notification_mode = mode
        self._emit("ven.notification_mode", {"mode": mode})

    async def _setup_notifications(self, now: datetime) -> None:
        pref = self.config.notification
        order: list[NotificationMode] = (
            ["webhook", "mqtt"]
            if pref == "webhook"
            else ["mqtt", "webhook"]
            if pref == "mqtt"
            else []
        )
        for mode in order:
            try:
                ok = await (
                    self._setup_webhook(now) if mode == "webhook" else self._setup_mqtt(now)
                )
            except Exception as exc:
                self._warn(f"{mode} notifications unavailable: {exc!r}")
                ok = False
            if ok:
                self._set_mode(mode)
                return
        self._set_mode("poll")

    async def _setup_webhook(self, now: datetime) -> bool:
        if self._webhook is None:
            self._webhook = WebhookServer(
                self._on_notification,
                host=self.config.callback_host,
                port=self.config.callback_port,
                public_url=self.config.callback_public_url,
                tap=self._tap if self._tap.on else None,
            )
            await self._webhook.start()
        bearer = secrets.token_urlsafe(24)
        self._webhook.bearer_token = bearer
        request = SubscriptionRequest.model_validate(
            {
                "clientName": self.config.ven_name,
                "objectOperations": [
                    {
                        "objects": ["PROGRAM", "EVENT"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "callbackUrl": self._webhook.callback_url,
                        "bearerToken": bearer,
                    }
                ],
            }
        )
        resp = await self._request(
            "POST", "subscriptions", now, json=request.model_dump(mode="json", exclude_none=True)
        )
        if resp.status_code not in (200, 201):
            self._warn(f"POST /subscriptions answered {resp.status_code}: {resp.text[:200]}")
            await self._webhook.close()
            self._webhook = None
            return False
        sub = self._validate(Subscription, self._decode(resp), "subscription")
        self.subscription_id = sub.id.root if sub else None
        return True

    async def _topics(self, path: str, now: datetime) -> list[str]:
        resp = await self._request("GET", path, now)
        if resp.status_code != 200:
            return []
        parsed = self._validate(NotifierTopicsResponse, self._decode(resp), "topics")
        if parsed is None:
            return []
        t = parsed.topics
        if t.ALL:
            return [t.ALL]
        return [x for x in (t.CREATE, t.UPDATE, t.DELETE) if x]

    async def _setup_mqtt(self, now: datetime) -> bool:
        resp = await self._request("GET", "notifiers", now)
        self._expect(resp, 200)
        notifiers = self._validate(NotifiersResponse, self._decode(resp), "notifiers")
        if notifiers is None or notifiers.MQTT is None or not notifiers.MQTT.URIS:
            self._warn("VTN offers no MQTT notifier")
            return False
        topics = await self._topics("notifiers/mqtt/topics/programs", now)
        event_topics: list[str] = []
        if self.config.program_names:
            for pid in sorted(self._programs):
                event_topics += await self._topics(
                    f"notifiers/mqtt/topics/programs/{pid}/events", now
                )
        if not event_topics and self.ven_id:
            event_topics = await self._topics(
                f"notifiers/mqtt/topics/vens/{self.ven_id}/events", now
            )
        if not event_topics:
            event_topics = await self._topics("notifiers/mqtt/topics/events", now)
        topics = sorted(set(topics + event_topics))
        if not event_topics:
            self._warn("VTN names no MQTT topic for events")
            return False
        auth = notifiers.MQTT.authentication
        username = password = None
        method = auth.method
        if method == "OAUTH2_BEARER_TOKEN":
            assert self._auth is not None
            name = getattr(auth, "username", "{clientID}")
            username = self.config.client_id if name == "{clientID}" else name
            password = await self._auth.bearer(now)
        elif method == "CERTIFICATE":
            self._warn("MQTT certificate authentication not supported")
            return False
        settings = MqttSettings(
            uri=str(notifiers.MQTT.URIS[0]),
            topics=topics,
            username=username,
            password=password,
            identifier=f"ven-{self.config.ven_name}-{secrets.token_hex(4)}",
            verify_tls=self.config.verify_tls,
            ca_file=str(self.config.ca_file) if self.config.ca_file else None,
        )
        listener = MqttListener(
            settings, self._on_notification, tap=self._tap if self._tap.on else None
        )
        await listener.start()
        self._mqtt = listener
        self._emit("ven.mqtt", {"uri": settings.uri, "topics": topics})
        return True

    def _on_notification(self, body: bytes, channel: str) -> None:
        """Apply one notification at once (webhook handler or MQTT loop)."""
        self.notifications_received += 1
        self._pending += 1
        try:
            self._apply_notification(body, channel)
        except Exception as exc:
            self._warn(f"{channel} notification dropped: {exc!r}")
        finally:
            self._pending -= 1
            self.notifications_applied += 1

    def _apply_notification(self, body: bytes, channel: str) -> None:
        raw: Any
        try:
            raw = json.loads(body)
        except ValueError:
            raw = body.decode("utf-8", "replace")
        note = self._validate(Notification, raw, f"{channel} notification")
        if note is None:
            return
        obj = note.object
        op = note.operation
        self._emit(
            "ven.notification",
            {
                "channel": channel,
                "operation": op,
                "object_type": obj.objectType,
                "object_id": obj.id.root,
            },
        )
        if isinstance(obj, Program):
            if op == "DELETE" or not self._wanted_program(obj):
                self._programs.pop(obj.id.root, None)
            else:
                self._programs[obj.id.root] = obj
        elif isinstance(obj, Event):
            if op == "DELETE" or not self._wanted_event(obj):
                self._events.pop(obj.id.root, None)
            else:
                new = obj.id.root not in self._events
                self._events[obj.id.root] = obj
                self._emit(
                    "ven.event_received",
                    {
                        "event_id": obj.id.root,
                        "program_id": obj.programID.root,
                        "via": channel,
                        "new": new,
                    },
                )

    # ------------------------------------------------------------------ events
    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self._on_event is not None:
            if self._now is not None:
                payload = {"time": self._now.isoformat(), **payload}
            self._on_event(kind, payload)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self._emit("ven.warning", {"message": message})
