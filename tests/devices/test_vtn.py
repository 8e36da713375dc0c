"""The emulated VTN over real HTTP (uvicorn on 127.0.0.1:0) and a real MQTT broker.

Every response is validated against the OpenADR 3.1.0 OpenAPI document with openapi-core.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import httpx
import jwt
import pytest
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from devices.vtn import oadr3_models as m
from devices.vtn.config import ClientConfig, VtnConfig
from devices.vtn.replay import GridEventFile, load_grid_event_file, shift_file
from devices.vtn.serve import load_config, serve
from devices.vtn.server import VtnServer
from twin.openadr_conformance import check_response, check_schema

MQTT_URL = os.environ.get("MIGRID_MQTT_URL", "mqtt://127.0.0.1:1883")
T0 = datetime(2021, 7, 1, 12, 0, tzinfo=UTC)

CLIENTS = [
    ClientConfig(id="bl", secret="bl-secret", role="BL"),
    ClientConfig(id="ven-1", secret="ven-1-secret", role="VEN"),
    ClientConfig(id="ven-2", secret="ven-2-secret", role="VEN"),
]

check = check_response  # every VTN answer is validated against the spec


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"]
    m.Problem.model_validate(body)
    return body


# --- fixtures -------------------------------------------------------------------------


class Api:
    """A client of the VTN that fetches a token and validates every response."""

    def __init__(self, http: httpx.AsyncClient, client_id: str, secret: str) -> None:
        self.http = http
        self.client_id = client_id
        self.secret = secret
        self.token = ""

    async def login(self) -> Api:
        r = check(await self.http.post("/auth/token", data={
            "grant_type": "client_credentials", "client_id": self.client_id,
            "client_secret": self.secret}))
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]
        return self

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return check(await self.http.request(method, path, headers=headers, **kw))

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.request("POST", path, json=body)

    async def put(self, path: str, body: Any) -> httpx.Response:
        return await self.request("PUT", path, json=body)

    async def delete(self, path: str) -> httpx.Response:
        return await self.request("DELETE", path)


async def _broker_ok() -> bool:
    u = urlsplit(MQTT_URL)
    try:
        _, w = await asyncio.wait_for(
            asyncio.open_connection(u.hostname or "127.0.0.1", u.port or 1883), 2)
    except (OSError, TimeoutError):
        return False
    w.close()
    return True


@contextlib.asynccontextmanager
async def running_vtn(**overrides: Any) -> AsyncIterator[VtnServer]:
    cfg = VtnConfig(clients=CLIENTS, **overrides)
    vtn = VtnServer(cfg, T0)
    await vtn.start()
    try:
        yield vtn
    finally:
        await vtn.stop()


@pytest.fixture
async def vtn() -> AsyncIterator[VtnServer]:
    async with running_vtn() as v:
        yield v


@pytest.fixture
async def http(vtn: VtnServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=vtn.base_url, timeout=5) as c:
        yield c


async def _apis(http: httpx.AsyncClient) -> tuple[Api, Api, Api]:
    bl = await Api(http, "bl", "bl-secret").login()
    v1 = await Api(http, "ven-1", "ven-1-secret").login()
    v2 = await Api(http, "ven-2", "ven-2-secret").login()
    return bl, v1, v2


PROGRAM = {"programName": "DR-1", "payloadDescriptors": [
    {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT",
     "units": "KW"}]}


def event_body(program_id: str, name: str = "peak", **kw: Any) -> dict[str, Any]:
    return {"programID": program_id, "eventName": name,
            "intervalPeriod": {"start": "2021-07-01T16:00:00Z", "duration": "PT1H"},
            "intervals": [{"id": 0, "payloads": [
                {"type": "IMPORT_CAPACITY_LIMIT", "values": [50]}]}], **kw}


# --- auth -----------------------------------------------------------------------------


async def test_token_by_form_body_and_by_basic(vtn: VtnServer, http: httpx.AsyncClient) -> None:
    info = check(await http.get("/auth/server"))
    assert info.json()["tokenURL"] == f"{vtn.base_url}/auth/token"

    r = check(await http.post("/auth/token", data={
        "grant_type": "client_credentials", "client_id": "ven-1",
        "client_secret": "ven-1-secret"}))
    assert r.status_code == 200
    body = m.ClientCredentialResponse.model_validate(r.json())
    assert body.token_type == "Bearer" and body.expires_in == 3600
    claims = jwt.decode(body.access_token, options={"verify_signature": False})
    assert claims["sub"] == "ven-1"
    assert claims["exp"] == int((T0 + timedelta(hours=1)).timestamp())  # injected time
    assert set(claims["scope"].split()) >= {"read_targets", "write_reports", "write_vens"}

    basic = base64.b64encode(b"ven-1:ven-1-secret").decode()
    r = check(await http.post("/auth/token", data={"grant_type": "client_credentials",
                                                    "scope": "read_all write_reports"},
                              headers={"Authorization": f"Basic {basic}"}))
    assert r.status_code == 200
    assert r.json()["scope"] == "read_all write_reports"

    bad = base64.b64encode(b"ven-1:wrong").decode()
    r = check(await http.post("/auth/token", data={"grant_type": "client_credentials"},
                              headers={"Authorization": f"Basic {bad}"}))
    assert assert_problem(r, 401)["error"] == "invalid_client"
    r = check(await http.post("/auth/token", data={
        "grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"}))
    assert assert_problem(r, 401)["error"] == "invalid_client"
    r = check(await http.post("/auth/token", data={
        "grant_type": "password", "client_id": "ven-1", "client_secret": "ven-1-secret"}))
    assert assert_problem(r, 400)["error"] == "unsupported_grant_type"
    r = check(await http.post("/auth/token", data={
        "grant_type": "client_credentials", "client_id": "ven-1",
        "client_secret": "ven-1-secret", "scope": "write_programs"}))
    assert assert_problem(r, 400)["error"] == "invalid_scope"


async def test_401_and_403_are_problems(vtn: VtnServer, http: httpx.AsyncClient) -> None:
    bl, v1, _ = await _apis(http)
    anon = Api(http, "", "")
    assert_problem(await anon.get("/programs"), 401)
    anon.token = "not.a.jwt"
    assert_problem(await anon.get("/events"), 401)
    forged = jwt.encode({"sub": "bl", "scope": "read_all", "exp": 2**40},
                        "a-guessed-key-of-at-least-32-bytes!", "HS256")
    anon.token = forged
    assert_problem(await anon.get("/programs"), 401)

    assert_problem(await v1.post("/programs", PROGRAM), 403)  # write_programs: BL only
    assert_problem(await v1.get("/notifiers/mqtt/topics/events"), 403)  # read_bl
    assert_problem(await bl.post("/reports", {}), 403)  # write_reports: VENs only

    vtn.set_now(T0 + timedelta(hours=1, seconds=1))  # past the tokens' exp
    assert_problem(await bl.get("/programs"), 401)
    await bl.login()
    assert (await bl.get("/programs")).status_code == 200


async def test_malformed_bodies_are_400(http: httpx.AsyncClient) -> None:
    bl, v1, _ = await _apis(http)
    assert_problem(await bl.request("POST", "/programs", content=b"{not json"), 400)
    assert_problem(await bl.post("/programs", {"programName": ""}), 400)
    assert_problem(await bl.post("/events", {"eventName": "no program"}), 400)
    assert_problem(await v1.post("/vens", {"objectType": "VEN_VEN_REQUEST"}), 400)
    assert_problem(await v1.post("/subscriptions", {"clientName": "x",
                                                     "objectOperations": [{}]}), 400)


# --- programs and events ----------------------------------------------------------------


async def test_program_and_event_crud_and_filters(
    vtn: VtnServer, http: httpx.AsyncClient
) -> None:
    bl, v1, _ = await _apis(http)
    r = await bl.post("/programs", PROGRAM)
    assert r.status_code == 201
    prog = r.json()
    assert prog["objectType"] == "PROGRAM" and prog["id"] == "program-1"
    assert prog["createdDateTime"] == "2021-07-01T12:00:00Z"
    assert_problem(await bl.post("/programs", PROGRAM), 409)
    p2 = (await bl.post("/programs", {"programName": "DR-2"})).json()

    ids = []
    for i in range(3):
        r = await bl.post("/events", event_body(prog["id"], f"e{i}"))
        assert r.status_code == 201
        ids.append(r.json()["id"])
    await bl.post("/events", event_body(p2["id"], "other"))
    assert_problem(await bl.post("/events", event_body("nope")), 409)

    evs = (await v1.get("/events", params={"programID": prog["id"]})).json()
    assert [e["id"] for e in evs] == ids
    assert len((await v1.get("/events")).json()) == 4
    page = (await v1.get("/events", params={"programID": prog["id"], "skip": 1,
                                            "limit": 1})).json()
    assert [e["id"] for e in page] == ids[1:2]
    assert_problem(await v1.get("/events", params={"limit": 51}), 400)
    assert_problem(await v1.get("/events", params={"skip": -1}), 400)
    vtn.set_now(T0 + timedelta(hours=5))  # events ended at 17:00
    late = await Api(v1.http, "ven-1", "ven-1-secret").login()
    assert (await late.get("/events", params={"active": "true"})).json() == []
    assert len((await late.get("/events", params={"active": "false"})).json()) == 4

    vtn.set_now(T0 + timedelta(minutes=5))
    r = await bl.put(f"/events/{ids[0]}", event_body(prog["id"], "renamed"))
    assert r.status_code == 200
    assert r.json()["eventName"] == "renamed"
    assert r.json()["createdDateTime"] == "2021-07-01T12:00:00Z"
    assert r.json()["modificationDateTime"] == "2021-07-01T12:05:00Z"
    assert (await v1.get(f"/events/{ids[0]}")).json()["eventName"] == "renamed"

    assert (await bl.delete(f"/events/{ids[1]}")).json()["id"] == ids[1]
    assert_problem(await v1.get(f"/events/{ids[1]}"), 404)
    assert (await v1.get(f"/programs/{prog['id']}")).json()["programName"] == "DR-1"
    r = await bl.put(f"/programs/{p2['id']}", {"programName": "DR-2b"})
    assert r.json()["programName"] == "DR-2b"
    assert_problem(await bl.put(f"/programs/{p2['id']}", {"programName": "DR-1"}), 409)
    await bl.delete(f"/programs/{p2['id']}")  # takes its event along
    assert len((await bl.get("/events")).json()) == 2
    assert_problem(await bl.get(f"/programs/{p2['id']}"), 404)


async def test_ven_registration_resources_reports_and_targeting(
    vtn: VtnServer, http: httpx.AsyncClient,
) -> None:
    bl, v1, v2 = await _apis(http)
    r = await v1.post("/vens", {"objectType": "VEN_VEN_REQUEST", "venName": "depot-1"})
    assert r.status_code == 201
    ven1 = r.json()
    assert ven1["clientID"] == "ven-1" and ven1["objectType"] == "VEN"
    assert_problem(await v2.post("/vens", {"objectType": "VEN_VEN_REQUEST",
                                           "venName": "depot-1"}), 400)  # name taken
    assert_problem(await v2.post("/vens", {"objectType": "BL_VEN_REQUEST", "clientID": "x",
                                           "venName": "sneaky"}), 403)
    ven2 = (await v2.post("/vens", {"objectType": "VEN_VEN_REQUEST",
                                    "venName": "depot-2"})).json()

    assert [v["id"] for v in (await v1.get("/vens")).json()] == [ven1["id"]]
    assert len((await bl.get("/vens")).json()) == 2
    assert (await v1.get("/vens", params={"venName": "depot-1"})).json()[0]["id"] == ven1["id"]
    assert_problem(await v1.get(f"/vens/{ven2['id']}"), 404)

    res = {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "charger-1",
           "venID": ven1["id"]}
    r = await v1.post("/resources", res)
    assert r.status_code == 201 and r.json()["clientID"] == "ven-1"
    res_id = r.json()["id"]
    assert_problem(await v2.post("/resources", res), 403)
    assert [x["id"] for x in (await v1.get("/resources")).json()] == [res_id]
    assert (await v2.get("/resources")).json() == []
    assert_problem(await v2.get(f"/resources/{res_id}"), 404)
    r = await v1.put(f"/resources/{res_id}", {**res, "resourceName": "charger-1a"})
    assert r.json()["resourceName"] == "charger-1a"

    # BL grants a target to depot-1; a targeted program is then visible to ven-1 only
    r = await bl.put(f"/vens/{ven1['id']}", {"objectType": "BL_VEN_REQUEST",
                                            "clientID": "ven-1", "venName": "depot-1",
                                            "targets": ["feeder-7", "group-a"]})
    assert r.json()["targets"] == ["feeder-7", "group-a"]
    prog = (await bl.post("/programs", {"programName": "FLEX",
                                        "targets": ["feeder-7", "secret-t"]})).json()
    assert (await v1.get("/programs")).json() == []  # targets must be requested
    got = (await v1.get("/programs", params={"targets": "feeder-7"})).json()
    assert [p["id"] for p in got] == [prog["id"]]
    assert got[0]["targets"] == ["feeder-7"]  # target hiding
    assert (await v2.get("/programs", params={"targets": "feeder-7"})).json() == []
    assert len((await bl.get("/programs", params={"targets": "secret-t"})).json()) == 1

    one = await v1.get(f"/programs/{prog['id']}", params={"targets": "feeder-7"})
    assert one.json()["targets"] == ["feeder-7"]
    assert_problem(await v1.get(f"/programs/{prog['id']}"), 404)

    async with Receiver() as rx1, Receiver() as rx2:
        for api, rx, targets in ((v1, rx1, ["feeder-7"]), (v2, rx2, ["feeder-7"])):
            r = await api.post("/subscriptions", {
                "clientName": api.client_id, "targets": targets, "objectOperations": [
                    {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": rx.url}]})
            assert r.status_code == 201
        ev = (await bl.post("/events", event_body(prog["id"], targets=["feeder-7", "x"]))).json()
        await vtn.drain()
    posts = [e for e in rx1.log if e[0] == "POST"]
    assert len(posts) == 1 and posts[0][3]["object"]["id"] == ev["id"]
    assert posts[0][3]["object"]["targets"] == ["feeder-7"]  # target hiding
    assert posts[0][3]["targets"] == ["feeder-7"]
    assert rx2.log == []  # ven-2 holds no feeder-7 grant
    report = {"eventID": ev["id"], "clientName": "depot-1", "resources": [
        {"resourceName": "charger-1a", "intervals": [
            {"id": 0, "payloads": [{"type": "USAGE", "values": [12.5]}]}]}]}
    r = await v1.post("/reports", report)
    assert r.status_code == 201
    rep = r.json()
    assert rep["clientID"] == "ven-1" and rep["objectType"] == "REPORT"
    assert_problem(await v1.post("/reports", {**report, "eventID": "nope"}), 409)
    assert (await v2.get("/reports")).json() == []
    assert [x["id"] for x in (await bl.get("/reports", params={
        "programID": prog["id"]})).json()] == [rep["id"]]
    assert (await v1.get(f"/reports/{rep['id']}")).json()["clientName"] == "depot-1"

    assert (await v1.delete(f"/vens/{ven1['id']}")).status_code == 200
    assert (await bl.get("/resources")).json() == []  # deleted with its ven


# --- notifications ----------------------------------------------------------------------


class Receiver:
    """A tiny webhook receiver (uvicorn on 127.0.0.1:0) answering the echo check."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, dict[str, str], Any]] = []
        self.got = asyncio.Event()

        async def echo(request: Request) -> Response:
            self.log.append(("GET", request.url.path, dict(request.headers),
                             request.query_params.get("challenge")))
            return PlainTextResponse(request.query_params.get("challenge", ""))

        async def callback(request: Request) -> Response:
            self.log.append(("POST", request.url.path, dict(request.headers),
                             await request.json()))
            self.got.set()
            return Response(status_code=200)

        app = Starlette(routes=[Route("/cb/echo", echo, methods=["GET"]),
                                Route("/cb", callback, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="off"))
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Receiver:
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(2000):
            if self.server.started:
                break
            await asyncio.sleep(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/cb"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task


GRID_FILE = {
    "programs": [{"id": "dr-2021", "programName": "DR-2021"}],
    "events": [
        {"publish_at": "2021-07-01T13:00:00Z", "id": "ev-1", "programID": "dr-2021",
         "eventName": "peak-1",
         "intervalPeriod": {"start": "2021-07-01T16:00:00Z", "duration": "PT1H"},
         "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT",
                                               "values": [40]}]}]},
        {"publish_at": "2021-07-01T14:00:00Z", "program": "DR-2021", "eventName": "peak-2",
         "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}]},
    ],
}


async def test_webhook_notification_after_advance(
    vtn: VtnServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(GRID_FILE), encoding="utf-8")
    vtn.load_grid_events(load_grid_event_file(path))
    _, v1, _ = await _apis(http)
    async with Receiver() as rx:
        r = await v1.post("/subscriptions", {
            "clientName": "depot-1", "programID": "dr-2021",
            "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE", "UPDATE"],
                                  "callbackUrl": rx.url, "bearerToken": "cb-token"}]})
        assert r.status_code == 201 and r.json()["clientID"] == "ven-1"
        sub_id = r.json()["id"]
        assert (await v1.get(f"/subscriptions/{sub_id}")).json()["clientName"] == "depot-1"
        assert len((await v1.get("/subscriptions", params={"objects": "EVENT"})).json()) == 1

        assert await vtn.advance(T0 + timedelta(minutes=59)) == []
        assert not vtn.busy
        published = await vtn.advance(T0 + timedelta(hours=1))
        assert [e.id.root for e in published] == ["ev-1"]
        assert vtn.busy  # the delivery is in flight until drained
        await vtn.drain()
        assert not vtn.busy
        assert vtn.notifier.webhooks_sent == 1

        (m1, p1, h1, challenge), (m2, p2, h2, note) = rx.log
        assert (m1, p1, m2, p2) == ("GET", "/cb/echo", "POST", "/cb")
        assert challenge and h1["authorization"] == "Bearer cb-token"
        assert h2["authorization"] == "Bearer cb-token"
        check_schema("notification", note)
        assert note["objectType"] == "EVENT" and note["operation"] == "CREATE"
        assert note["object"]["id"] == "ev-1"
        assert note["object"]["createdDateTime"] == "2021-07-01T13:00:00Z"

        await vtn.advance(T0 + timedelta(hours=3))
        await vtn.drain()
        assert len(rx.log) == 3  # no second echo check; the second event
        assert rx.log[2][3]["object"]["eventName"] == "peak-2"

        await v1.login()  # the clock passed the first token's exp
        assert (await v1.delete(f"/subscriptions/{sub_id}")).status_code == 200


async def test_mqtt_notification(tmp_path: Path) -> None:
    if not await _broker_ok():
        pytest.skip(f"no MQTT broker at {MQTT_URL}")
    prefix = f"test-{secrets.token_hex(4)}/"
    async with running_vtn(mqtt_url=MQTT_URL, topic_prefix=prefix) as vtn, \
            httpx.AsyncClient(base_url=vtn.base_url, timeout=5) as http:
        bl, v1, _ = await _apis(http)
        notifiers = (await v1.get("/notifiers")).json()
        assert notifiers["WEBHOOK"] is True
        assert notifiers["MQTT"]["URIS"] == [MQTT_URL]
        prog = (await bl.post("/programs", PROGRAM)).json()
        topics = (await v1.get(f"/notifiers/mqtt/topics/programs/{prog['id']}/events")).json()
        create_topic = topics["topics"]["CREATE"]
        assert create_topic == f"{prefix}programs/{prog['id']}/events/create"
        own = (await v1.get(f"/notifiers/mqtt/topics/programs/{prog['id']}")).json()
        assert "CREATE" not in own["topics"]
        all_topics = (await bl.get("/notifiers/mqtt/topics/events")).json()["topics"]
        assert all_topics["ALL"] == f"{prefix}events/+"

        u = urlsplit(MQTT_URL)
        async with aiomqtt.Client(u.hostname or "127.0.0.1", u.port or 1883) as mq:
            await mq.subscribe(create_topic, qos=1)
            await mq.subscribe(all_topics["ALL"], qos=1)
            ev = (await bl.post("/events", event_body(prog["id"]))).json()
            await vtn.drain()
            assert vtn.notifier.mqtt_published >= 2
            got: dict[str, Any] = {}
            async with asyncio.timeout(5):
                async for msg in mq.messages:
                    got[str(msg.topic)] = json.loads(msg.payload)  # type: ignore[arg-type]
                    if len(got) == 2:
                        break
        assert set(got) == {create_topic, f"{prefix}events/create"}
        for note in got.values():
            check_schema("notification", note)
            assert note["operation"] == "CREATE" and note["object"]["id"] == ev["id"]


# --- replay file and standalone serve ---------------------------------------------------


def test_grid_event_file_rejects_bad_content() -> None:
    bad = {"programs": [{"programName": "A"}],
           "events": [{"publish_at": "2021-07-01T13:00:00Z", "program": "B"}]}
    with pytest.raises(ValueError, match=r"events\[0\]: no program named 'B'"):
        GridEventFile.model_validate(bad)
    with pytest.raises(ValueError, match="publish_at"):
        GridEventFile.model_validate({"events": [{"programID": "x"}]})
    shifted = shift_file(GridEventFile.model_validate(GRID_FILE), "auto",
                         datetime(2026, 1, 1, tzinfo=UTC))
    assert shifted.events[0].publish_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert shifted.events[0].body()["intervalPeriod"]["start"].startswith(
        "2026-01-01T03:00:00")


async def test_serve_standalone_replays_a_2021_file_now(tmp_path: Path) -> None:
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID_FILE), encoding="utf-8")
    settings = {"clients": [{"id": "ven-1", "secret": "s"}], "grid_events": "grid.yaml",
                "time_offset": "auto", "token_ttl_s": 10**7}
    cfg = load_config(settings, tmp_path)
    start = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    ticks = iter(start + timedelta(minutes=30 * i) for i in range(10_000))
    ready: asyncio.Future[VtnServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(0, cfg, step_s=0.01, clock=lambda: next(ticks),
                                     started=ready.set_result))
    try:
        vtn = await asyncio.wait_for(ready, 10)
        async with httpx.AsyncClient(base_url=vtn.base_url, timeout=5) as http:
            v1 = await Api(http, "ven-1", "s").login()
            for _ in range(200):
                evs = (await v1.get("/events")).json()
                if len(evs) == 2:
                    break
                await asyncio.sleep(0.01)
            assert [e["eventName"] for e in evs] == ["peak-1", "peak-2"]
            assert evs[0]["intervalPeriod"]["start"] == "2026-11-22T11:00:00Z"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_cli_device_serve_vtn(tmp_path: Path) -> None:
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID_FILE), encoding="utf-8")
    cfg = tmp_path / "vtn.yaml"
    cfg.write_text(yaml.safe_dump({"clients": [{"id": "ven-1", "secret": "s"}],
                                   "grid_events": "grid.yaml", "time_offset": "auto"}),
                   encoding="utf-8")
    exe = Path(sys.executable).with_name("migrid")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "device", "serve", "vtn", "--port", "0", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "300"})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        base = re.search(r"http://[\d.]+:\d+", line)
        assert base, line
        async with httpx.AsyncClient(base_url=base.group(0), timeout=5) as http:
            v1 = await Api(http, "ven-1", "s").login()
            evs = (await v1.get("/events")).json()
            assert [e["eventName"] for e in evs] == ["peak-1"]  # the first is due at start
    finally:
        proc.terminate()
        await proc.wait()
