"""VEN client against a minimal VTN stand-in over real HTTP (and the real Mosquitto)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from controllers.ven.client import Ven
from controllers.ven.config import ResourceConfig, VenConfig
from controllers.ven.oadr3_models import (
    AuthServerInfo,
    ClientCredentialResponse,
    Event,
    Notification,
    NotifiersResponse,
    NotifierTopicsResponse,
    Program,
    ReportRequest,
    Resource1,
    Subscription,
    SubscriptionRequest,
)
from controllers.ven.oadr3_models import Ven as VenObject
from controllers.ven.reports import IntervalReading

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TS = "2026-03-01T11:00:00Z"
CLIENT_ID, CLIENT_SECRET = "ven-client", "s3cret"


def program(pid: str, name: str) -> dict[str, Any]:
    obj = {
        "id": pid,
        "createdDateTime": TS,
        "modificationDateTime": TS,
        "objectType": "PROGRAM",
        "programName": name,
    }
    Program.model_validate(obj)
    return obj


def event(
    eid: str,
    pid: str,
    *,
    prices: tuple[float, ...] = (0.2, 0.3),
    descriptors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": eid,
        "createdDateTime": TS,
        "modificationDateTime": TS,
        "objectType": "EVENT",
        "programID": pid,
        "eventName": f"ev-{eid}",
        "intervalPeriod": {"start": "2026-03-01T12:00:00Z", "duration": "PT1H"},
        "intervals": [
            {"id": i, "payloads": [{"type": "PRICE", "values": [p]}]} for i, p in enumerate(prices)
        ],
    }
    if descriptors is not None:
        obj["reportDescriptors"] = descriptors
    Event.model_validate(obj)
    return obj


class StandInVtn:
    """Just enough of a VTN: auth, programs, events, vens, resources, subscriptions,
    notifiers (MQTT on the real Mosquitto), reports. Answers are validated against the
    generated models before they are sent."""

    def __init__(
        self,
        *,
        auth_mode: str = "body",
        expires_in: int | None = 3600,
        webhooks_work: bool = True,
        mqtt: bool = False,
    ) -> None:
        self.auth_mode = auth_mode
        self.expires_in = expires_in
        self.webhooks_work = webhooks_work
        self.mqtt = mqtt
        self.topic_prefix = f"test-vtn-{uuid.uuid4().hex[:8]}"
        self.tokens: set[str] = set()
        self.token_requests: list[str] = []
        self.programs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.raw_events: dict[str, Any] = {}  # served instead of events[id] (malformed)
        self.vens: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.reports: list[dict[str, Any]] = []
        self.echo_ok: list[bool] = []
        self.event_queries: list[dict[str, str]] = []
        self.app = self._build()

    # ---------------------------------------------------------------- helpers
    def _meta(self, oid: str, kind: str) -> dict[str, Any]:
        return {"id": oid, "createdDateTime": TS, "modificationDateTime": TS, "objectType": kind}

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.tokens

    async def notify(self, kind: str, operation: str, obj: Any) -> None:
        """POST the notification to every subscriber and publish it on MQTT."""
        body = {"objectType": kind, "operation": operation, "object": obj}
        if isinstance(obj, dict):
            Notification.model_validate(body)
        async with httpx.AsyncClient() as client:
            for sub in self.subscriptions.values():
                for oo in sub["objectOperations"]:
                    if kind in oo["objects"] and operation in oo["operations"]:
                        await client.post(
                            oo["callbackUrl"],
                            json=body,
                            headers={"Authorization": f"Bearer {oo.get('bearerToken')}"},
                        )
        if self.mqtt:
            async with aiomqtt.Client("127.0.0.1", 1883) as mq:
                topic = f"{self.topic_prefix}/{kind.lower()}s/{operation.lower()}"
                await mq.publish(topic, json.dumps(body), qos=1)

    async def create_event(self, obj: dict[str, Any]) -> None:
        self.events[obj["id"]] = obj
        await self.notify("EVENT", "CREATE", obj)

    def topics(self, kind: str) -> dict[str, Any]:
        base = f"{self.topic_prefix}/{kind}"
        body = {
            "topics": {
                "CREATE": f"{base}/create",
                "UPDATE": f"{base}/update",
                "DELETE": f"{base}/delete",
                "ALL": f"{base}/+",
            }
        }
        NotifierTopicsResponse.model_validate(body)
        return body

    # ---------------------------------------------------------------- app
    def _build(self) -> FastAPI:
        app = FastAPI()
        vtn = self

        @app.middleware("http")
        async def auth(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
            if not request.url.path.startswith("/auth") and not vtn._authorised(request):
                return JSONResponse({"title": "Unauthorized", "status": 401}, status_code=401)
            return await call_next(request)

        @app.get("/auth/server")
        async def auth_server() -> dict[str, Any]:
            body = {"tokenURL": "http://127.0.0.1/auth/token"}
            AuthServerInfo.model_validate(body)
            return {"tokenURL": "/auth/token"}  # relative: resolved against the VTN URL

        @app.post("/auth/token")
        async def token(request: Request) -> Any:
            form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
            basic = request.headers.get("authorization", "")
            method = None
            if "client_id" in form:
                if (form.get("client_id"), form.get("client_secret")) == (CLIENT_ID, CLIENT_SECRET):
                    method = "body"
            elif basic.startswith("Basic "):
                user, _, pw = base64.b64decode(basic[6:]).decode().partition(":")
                if (user, pw) == (CLIENT_ID, CLIENT_SECRET):
                    method = "basic"
            vtn.token_requests.append(str(method))
            if method is None or method != vtn.auth_mode:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            tok = uuid.uuid4().hex
            vtn.tokens.add(tok)
            body: dict[str, Any] = {"access_token": tok, "token_type": "Bearer"}
            if vtn.expires_in is not None:
                body["expires_in"] = vtn.expires_in
            ClientCredentialResponse.model_validate(body)
            return body

        @app.get("/programs")
        async def programs() -> list[Any]:
            return list(vtn.programs.values())

        @app.get("/events")
        async def events(request: Request) -> list[Any]:
            vtn.event_queries.append(dict(request.query_params))
            # like some real VTNs: the programID filter is ignored
            return [vtn.raw_events.get(k, v) for k, v in vtn.events.items()]

        @app.post("/vens")
        async def create_ven(request: Request) -> Any:
            body = await request.json()
            for v in vtn.vens.values():
                if v["venName"] == body["venName"]:
                    return JSONResponse({"title": "Conflict", "status": 409}, status_code=409)
            vid = f"ven-{len(vtn.vens) + 1}"
            obj = vtn._meta(vid, "VEN") | {"clientID": CLIENT_ID, "venName": body["venName"]}
            VenObject.model_validate(obj)
            vtn.vens[vid] = obj
            return JSONResponse(obj, status_code=201)

        @app.get("/vens")
        async def search_vens(venName: str | None = None) -> list[Any]:  # noqa: N803
            return [v for v in vtn.vens.values() if venName in (None, v["venName"])]

        @app.post("/resources")
        async def create_resource(request: Request) -> Any:
            body = await request.json()
            rid = f"res-{len(vtn.resources) + 1}"
            obj = vtn._meta(rid, "RESOURCE") | {
                "clientID": CLIENT_ID,
                "resourceName": body["resourceName"],
                "venID": body["venID"],
            }
            if body.get("attributes"):
                obj["attributes"] = body["attributes"]
            Resource1.model_validate(obj)
            vtn.resources[rid] = obj
            return JSONResponse(obj, status_code=201)

        @app.post("/subscriptions")
        async def subscribe(request: Request) -> Any:
            body = await request.json()
            SubscriptionRequest.model_validate(body)
            if not vtn.webhooks_work:
                return JSONResponse({"title": "webhooks disabled", "status": 500}, status_code=500)
            challenge = uuid.uuid4().hex
            async with httpx.AsyncClient() as client:
                for oo in body["objectOperations"]:
                    r = await client.get(oo["callbackUrl"], params={"echo": challenge})
                    ok = r.status_code == 200 and r.text == challenge
                    r2 = await client.get(oo["callbackUrl"] + "/echo", params={"echo": challenge})
                    vtn.echo_ok.append(ok and r2.text == challenge)
                    if not ok:
                        return JSONResponse(
                            {"title": "echo failed", "status": 400}, status_code=400
                        )
            sid = f"sub-{len(vtn.subscriptions) + 1}"
            obj = vtn._meta(sid, "SUBSCRIPTION") | {"clientID": CLIENT_ID} | body
            Subscription.model_validate(obj)
            vtn.subscriptions[sid] = obj
            return JSONResponse(obj, status_code=201)

        @app.delete("/subscriptions/{sid}")
        async def unsubscribe(sid: str) -> Any:
            return vtn.subscriptions.pop(sid, {})

        @app.get("/notifiers")
        async def notifiers() -> dict[str, Any]:
            body: dict[str, Any] = {"WEBHOOK": True}
            if vtn.mqtt:
                body["MQTT"] = {
                    "URIS": ["mqtt://127.0.0.1:1883"],
                    "serialization": "JSON",
                    "authentication": {"method": "ANONYMOUS"},
                }
            NotifiersResponse.model_validate(body)
            return body

        @app.get("/notifiers/mqtt/topics/programs")
        async def program_topics() -> Any:
            if not vtn.mqtt:
                return JSONResponse({"status": 404}, status_code=404)
            return vtn.topics("programs")

        @app.get("/notifiers/mqtt/topics/programs/{pid}/events")
        async def event_topics(pid: str) -> Any:
            if not vtn.mqtt:
                return JSONResponse({"status": 404}, status_code=404)
            return vtn.topics("events")

        @app.post("/reports")
        async def report(request: Request) -> Any:
            body = await request.json()
            ReportRequest.model_validate(body)
            vtn.reports.append(body)
            obj = vtn._meta(f"rep-{len(vtn.reports)}", "REPORT") | {"clientID": CLIENT_ID} | body
            return JSONResponse(obj, status_code=201)

        return app


class Served:
    def __init__(
        self, vtn: StandInVtn, server: uvicorn.Server, sock: socket.socket, url: str
    ) -> None:
        self.vtn, self.server, self.sock, self.url = vtn, server, sock, url


async def serve(app: FastAPI, **ssl: Any) -> tuple[uvicorn.Server, socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", **ssl)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    return server, sock, sock.getsockname()[1]


MakeVtn = Callable[..., Awaitable[Served]]


@pytest.fixture
async def make_vtn() -> AsyncIterator[MakeVtn]:
    made: list[Served] = []

    async def make(**kw: Any) -> Served:
        vtn = StandInVtn(**kw)
        server, sock, port = await serve(vtn.app)
        s = Served(vtn, server, sock, f"http://127.0.0.1:{port}")
        made.append(s)
        return s

    yield make
    for s in made:
        await s.server.shutdown(sockets=[s.sock])
        s.sock.close()


@pytest.fixture
async def vens() -> AsyncIterator[list[Ven]]:
    made: list[Ven] = []
    yield made
    for v in made:
        await v.close()


def config(url: str, **kw: Any) -> VenConfig:
    base: dict[str, Any] = {
        "vtn_url": url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "ven_name": "depot-1",
        "resources": [ResourceConfig(name="site-meter")],
        "program_names": ["DEPOT-TOU"],
        "notification": "poll",
        "poll_interval_s": 60,
    }
    return VenConfig.model_validate(base | kw)


def seed(vtn: StandInVtn) -> None:
    vtn.programs = {"p1": program("p1", "DEPOT-TOU"), "p2": program("p2", "OTHER")}
    vtn.events = {"e1": event("e1", "p1"), "e2": event("e2", "p2")}


async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("server_mode", ["body", "basic"])
async def test_token_auto_tries_body_then_basic(
    make_vtn: MakeVtn, vens: list[Ven], server_mode: str
) -> None:
    s = await make_vtn(auth_mode=server_mode)
    seen: list[tuple[str, dict[str, Any]]] = []
    ven = Ven(config(s.url, client_auth="auto"), on_event=lambda k, p: seen.append((k, p)))
    vens.append(ven)
    await ven.start(NOW)
    assert ven.auth is not None and ven.auth.auth_method == server_mode
    assert ven.ven_id is not None, ven.warnings
    expected = ["body"] if server_mode == "body" else ["body", "basic"]
    assert s.vtn.token_requests == expected
    assert any(k == "ven.auth" and p["method"] == server_mode for k, p in seen)


async def test_token_fixed_method_refused_is_a_warning(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn(auth_mode="basic")
    ven = Ven(config(s.url, client_auth="body"))
    vens.append(ven)
    await ven.start(NOW)
    await ven.step(NOW + dt.timedelta(seconds=1))
    assert ven.ven_id is None
    assert any("token request refused" in w for w in ven.warnings)


async def test_token_refreshed_before_expiry_and_on_401(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn(expires_in=100)
    seed(s.vtn)
    ven = Ven(config(s.url, token_refresh_margin_s=30, poll_interval_s=10))
    vens.append(ven)
    await ven.start(NOW)
    assert ven.auth is not None and ven.auth.fetches == 1
    await ven.step(NOW + dt.timedelta(seconds=50))
    assert ven.auth.fetches == 1
    await ven.step(NOW + dt.timedelta(seconds=75))  # within 30 s of expiry (100 s)
    assert ven.auth.fetches == 2
    s.vtn.tokens.clear()  # the VTN forgets every token: next request answers 401
    await ven.step(NOW + dt.timedelta(seconds=90))
    assert ven.auth.fetches == 3
    assert ven.last_poll == NOW + dt.timedelta(seconds=90)
    assert not ven.warnings


async def test_registration_creates_ven_and_resources(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn()
    ven = Ven(
        config(
            s.url,
            resources=[
                {"name": "site-meter"},
                {"name": "bess", "attributes": {"MAX_POWER": [250.0]}},
            ],
        )
    )
    vens.append(ven)
    await ven.start(NOW)
    assert ven.ven_id == "ven-1"
    assert set(ven.resource_ids) == {"site-meter", "bess"}
    assert {r["venID"] for r in s.vtn.resources.values()} == {"ven-1"}


async def test_registration_409_finds_existing_ven(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn()
    existing = s.vtn._meta("ven-enrolled", "VEN") | {"clientID": CLIENT_ID, "venName": "depot-1"}
    s.vtn.vens["ven-enrolled"] = existing
    seen: list[tuple[str, dict[str, Any]]] = []
    ven = Ven(config(s.url), on_event=lambda k, p: seen.append((k, p)))
    vens.append(ven)
    await ven.start(NOW)
    assert ven.ven_id == "ven-enrolled"
    assert any(k == "ven.registration" and p["status"] == 409 for k, p in seen)
    assert ven.resource_ids == {"site-meter": "res-1"}


async def test_events_filtered_by_program_on_our_side(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn()
    seed(s.vtn)
    ven = Ven(config(s.url))
    vens.append(ven)
    await ven.start(NOW)
    assert set(ven.programs) == {"p1"}
    assert set(ven.events) == {"e1"}  # the VTN ignored ?programID and sent e2 as well
    assert {"programID": "p1", "skip": "0", "limit": "50"} in s.vtn.event_queries
    assert isinstance(ven.events["e1"], Event)


async def test_webhook_notification_applied(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn()
    seed(s.vtn)
    ven = Ven(config(s.url, notification="webhook"))
    vens.append(ven)
    await ven.start(NOW)
    assert ven.notification_mode == "webhook", ven.warnings
    assert s.vtn.echo_ok == [True]
    await s.vtn.create_event(event("e3", "p1", prices=(0.5,)))
    await s.vtn.create_event(event("e4", "p2"))  # another program: ignored
    # the VTN awaited our 200: applied already, without any step
    assert set(ven.events) == {"e1", "e3"}
    assert ven.busy == 0
    # a forged notification (wrong bearer token) is refused
    async with httpx.AsyncClient() as client:
        body = {"objectType": "EVENT", "operation": "DELETE", "object": s.vtn.events["e3"]}
        cb = next(iter(s.vtn.subscriptions.values()))["objectOperations"][0]["callbackUrl"]
        r = await client.post(cb, json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert "e3" in ven.events
    await s.vtn.notify("EVENT", "DELETE", s.vtn.events["e3"])
    assert set(ven.events) == {"e1"}


async def test_webhook_double_encoded_snake_case_body(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn()
    seed(s.vtn)
    ven = Ven(config(s.url, notification="webhook"))
    vens.append(ven)
    await ven.start(NOW)
    ev = event("e5", "p1")
    snake = {
        "object_type": "EVENT",
        "operation": "CREATE",
        "object": {
            "id": ev["id"],
            "created_date_time": "2026-03-01 11:00:00",
            "modification_date_time": "2026-03-01 11:00:00",
            "object_type": "EVENT",
            "program_id": "p1",
            "intervals": ev["intervals"],
        },
    }
    sub = next(iter(s.vtn.subscriptions.values()))["objectOperations"][0]
    async with httpx.AsyncClient() as client:
        r = await client.post(
            sub["callbackUrl"],
            content=json.dumps(json.dumps(snake)),
            headers={
                "Authorization": f"Bearer {sub['bearerToken']}",
                "Content-Type": "application/json",
            },
        )
    assert r.status_code == 200
    assert "e5" in ven.events, ven.warnings


async def test_mqtt_notification_applied(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn(mqtt=True)
    seed(s.vtn)
    ven = Ven(config(s.url, notification="mqtt"))
    vens.append(ven)
    await ven.start(NOW)
    assert ven.notification_mode == "mqtt", ven.warnings
    await s.vtn.create_event(event("e6", "p1"))
    await until(lambda: "e6" in ven.events, "the MQTT notification")
    assert ven.notifications_received >= 1
    updated = event("e6", "p1", prices=(0.9,))
    s.vtn.events["e6"] = updated
    await s.vtn.notify("EVENT", "UPDATE", updated)
    await until(lambda: len(ven.events["e6"].intervals or []) == 1, "the MQTT update")


async def test_polling_fallback_when_no_push_channel(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn(webhooks_work=False, mqtt=False)
    seed(s.vtn)
    ven = Ven(config(s.url, notification="webhook", poll_interval_s=60))
    vens.append(ven)
    await ven.start(NOW)
    assert ven.notification_mode == "poll"
    assert any("webhook" in w or "subscriptions" in w for w in ven.warnings)
    assert any("no MQTT" in w for w in ven.warnings)
    s.vtn.events["e7"] = event("e7", "p1")
    await ven.step(NOW + dt.timedelta(seconds=30))
    assert "e7" not in ven.events  # not due yet on injected time
    await ven.step(NOW + dt.timedelta(seconds=60))
    assert "e7" in ven.events
    assert ven.busy == 0


async def test_malformed_event_dropped_last_valid_state_kept(
    make_vtn: MakeVtn, vens: list[Ven]
) -> None:
    s = await make_vtn()
    seed(s.vtn)
    seen: list[tuple[str, dict[str, Any]]] = []
    ven = Ven(config(s.url, poll_interval_s=10), on_event=lambda k, p: seen.append((k, p)))
    vens.append(ven)
    await ven.start(NOW)
    before = ven.events["e1"]
    bad = dict(s.vtn.events["e1"]) | {"intervals": "not a list", "programID": "p1"}
    s.vtn.raw_events["e1"] = bad
    await ven.step(NOW + dt.timedelta(seconds=10))
    assert ven.events["e1"] == before
    assert any("malformed event" in w for w in ven.warnings)
    assert any(k == "ven.warning" for k, _ in seen)
    # a whole answer that is not a list keeps everything too
    s.vtn.raw_events.clear()
    s.vtn.events = {"e1": s.vtn.events["e1"]}
    s.vtn.programs = {"p1": s.vtn.programs["p1"]}
    await ven.step(NOW + dt.timedelta(seconds=20))
    assert set(ven.events) == {"e1"}


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509", reason="cryptography not installed")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "vtn.pem", tmp / "vtn.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_verified_by_default(tmp_path: Path, vens: list[Ven]) -> None:
    cert, key = _self_signed(tmp_path)
    vtn = StandInVtn()
    seed(vtn)
    server, sock, port = await serve(vtn.app, ssl_certfile=str(cert), ssl_keyfile=str(key))
    try:
        url = f"https://127.0.0.1:{port}"
        assert VenConfig.model_fields["verify_tls"].default is True
        strict = Ven(config(url))
        vens.append(strict)
        await strict.start(NOW)
        assert strict.ven_id is None
        assert any("CERTIFICATE_VERIFY_FAILED" in w for w in strict.warnings), strict.warnings
        assert vtn.token_requests == []
        trusting = Ven(config(url, ca_file=cert))
        vens.append(trusting)
        await trusting.start(NOW)
        assert trusting.ven_id is not None, trusting.warnings
        lax = Ven(config(url, verify_tls=False, ven_name="depot-2"))
        vens.append(lax)
        await lax.start(NOW)
        assert lax.ven_id is not None and set(lax.events) == {"e1"}
        for v in vens:
            await v.close()
        vens.clear()
    finally:
        await server.shutdown(sockets=[sock])
        sock.close()


async def test_report_sent_with_usage_and_demand(make_vtn: MakeVtn, vens: list[Ven]) -> None:
    s = await make_vtn()
    seed(s.vtn)
    s.vtn.events["e1"] = event(
        "e1",
        "p1",
        descriptors=[
            {"payloadType": "USAGE", "readingType": "DIRECT_READ", "units": "KWH"},
            {"payloadType": "DEMAND", "units": "KW", "aggregate": True},
        ],
    )
    seen: list[tuple[str, dict[str, Any]]] = []
    ven = Ven(config(s.url), on_event=lambda k, p: seen.append((k, p)))
    vens.append(ven)
    await ven.start(NOW)
    readings = {
        "site-meter": {
            0: IntervalReading(usage_kwh=40.0, demand_kw=40.0),
            1: IntervalReading(usage_kwh=55.5, demand_kw=55.5),
        },
        "bess": {0: IntervalReading(usage_kwh=-5.0, demand_kw=-5.0, soc=0.5)},
    }
    created = await ven.report("e1", readings, NOW + dt.timedelta(hours=2))
    assert created is not None and created.id.root == "rep-1"
    body = s.vtn.reports[0]
    ReportRequest.model_validate(body)
    assert body["eventID"] == "e1" and body["clientName"] == "depot-1"
    assert [d["payloadType"] for d in body["payloadDescriptors"]] == ["USAGE", "DEMAND"]
    by_res = {r["resourceName"]: r for r in body["resources"]}
    assert set(by_res) == {"site-meter", "bess", "AGGREGATED_REPORT"}
    meter = {i["id"]: i["payloads"] for i in by_res["site-meter"]["intervals"]}
    assert meter[1] == [{"type": "USAGE", "values": [55.5]}]
    agg = {i["id"]: i["payloads"] for i in by_res["AGGREGATED_REPORT"]["intervals"]}
    assert agg[0] == [{"type": "DEMAND", "values": [35.0]}]
    assert any(k == "ven.report_sent" for k, _ in seen)


async def test_report_defaults_include_storage_charge_level(
    make_vtn: MakeVtn, vens: list[Ven]
) -> None:
    s = await make_vtn()
    seed(s.vtn)
    ven = Ven(config(s.url))
    vens.append(ven)
    await ven.start(NOW)
    await ven.report("e1", {"bess": {0: IntervalReading(1.0, 4.0, soc=0.8)}}, NOW)
    body = s.vtn.reports[0]
    types = [d["payloadType"] for d in body["payloadDescriptors"]]
    assert types == ["USAGE", "DEMAND", "STORAGE_CHARGE_LEVEL"]
    payloads = body["resources"][0]["intervals"][0]["payloads"]
    assert {"type": "STORAGE_CHARGE_LEVEL", "values": [80.0]} in payloads
