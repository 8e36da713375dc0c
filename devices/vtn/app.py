"""HTTP routes of the emulated VTN (FastAPI): the OpenADR 3.1.0 subset a VEN uses.

Paths, bodies and status codes follow ``controllers/ven/spec/openadr3-3.1.0.patched.yaml``
(also stored as ``/work/shared/openadr3``). Request bodies are validated with the generated
models of :mod:`devices.vtn.oadr3_models`; a body that is not JSON or fails validation is
a 400 ``problem``. Authorization: every path but ``/auth/*`` needs a bearer token (401)
holding the scope the spec declares for the operation (403); see :mod:`devices.vtn.auth`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from devices.vtn import oadr3_models as m
from devices.vtn.auth import Principal, TokenError, parse_basic, scope_satisfies
from devices.vtn.core import VtnCore, parse_duration
from devices.vtn.problems import ProblemError, problem_response
from devices.vtn.store import StoredObject, targets_of

__all__ = ["create_app"]

_OBJECT_TYPES = frozenset({"PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"})


def _json(obj: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> JSONResponse:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", exclude_none=True)
    return JSONResponse(obj, status_code=status)


def _dump(obj: StoredObject, shown_targets: list[str] | None = None) -> dict[str, Any]:
    d = obj.model_dump(mode="json", exclude_none=True)
    if shown_targets is not None and "targets" in d:
        d["targets"] = shown_targets
    return d


class _Query:
    """Query-parameter parsing with 400 problems for bad values."""

    def __init__(self, request: Request) -> None:
        self.q = request.query_params

    def get_int(self, name: str, lo: int, hi: int | None) -> int | None:
        raw = self.q.get(name)
        if raw is None:
            return None
        try:
            v = int(raw)
        except ValueError:
            raise ProblemError(400, f"{name} must be an integer") from None
        if v < lo or (hi is not None and v > hi):
            raise ProblemError(400, f"{name} out of range")
        return v

    def get_str(self, name: str, *, pattern: bool = False) -> str | None:
        raw = self.q.get(name)
        if raw is None:
            return None
        if not 1 <= len(raw) <= 128:
            raise ProblemError(400, f"{name} must be 1 to 128 characters")
        if pattern and not all(c.isascii() and (c.isalnum() or c in "_-") for c in raw):
            raise ProblemError(400, f"{name} is not an objectID")
        return raw

    def get_list(self, name: str) -> list[str] | None:
        vals = self.q.getlist(name)
        if not vals:
            return None
        out = list(vals)  # style form, explode: ?targets=a&targets=b
        if any(not 1 <= len(x) <= 128 for x in out):
            raise ProblemError(400, f"{name}: each value must be 1 to 128 characters")
        return out

    def get_bool(self, name: str) -> bool | None:
        raw = self.q.get(name)
        if raw is None:
            return None
        if raw.lower() not in ("true", "false"):
            raise ProblemError(400, f"{name} must be true or false")
        return raw.lower() == "true"

    def page(self, items: list[Any]) -> list[Any]:
        skip = self.get_int("skip", 0, 2**31 - 1) or 0
        limit = self.get_int("limit", 0, 50)
        limit = 50 if limit is None else limit
        return items[skip : skip + limit]


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, "request body is not JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ProblemError(400, f"invalid body at {loc or '<root>'}: {first['msg']}") from None


def create_app(vtn: VtnCore) -> FastAPI:
    """The FastAPI application serving ``vtn``.

    It publishes no OpenAPI document or docs of its own: the spec file is the contract.
    """
    app = FastAPI(title="MiGrid emulated VTN", openapi_url=None, docs_url=None, redoc_url=None)
    media = vtn.config.problem_content_type

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> Response:
        return problem_response(exc.status, exc.detail, media_type=media, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem_response(exc.status_code, str(exc.detail), media_type=media)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        return problem_response(500, f"{type(exc).__name__}: {exc}", media_type=media)

    def auth(request: Request, scope: str) -> Principal:
        try:
            p = vtn.issuer.verify(request.headers.get("authorization"), vtn.now)
        except TokenError as err:
            raise ProblemError(401, err.detail) from None
        if scope == "read_bl" and not (p.is_bl or "read_bl" in p.scopes):
            # read_bl is undeclared in 3.1.0: those paths are BL-only here (README)
            raise ProblemError(403, "scope read_bl required (BL clients only)")
        if not scope_satisfies(p.scopes, scope):
            raise ProblemError(403, f"scope {scope} required")
        return p

    def get_or_404(p: Principal, object_type: str, oid: str) -> StoredObject:
        obj = vtn.store.get(object_type, oid)
        if obj is None:
            raise ProblemError(404, f"no {object_type.lower()} {oid!r}")
        if object_type in ("VEN", "REPORT", "SUBSCRIPTION") and not vtn.owns(p, obj):
            raise ProblemError(404, f"no {object_type.lower()} {oid!r}")
        if object_type == "RESOURCE" and not p.is_bl and not _owns_ven(p, obj.venID.root):  # type: ignore[union-attr]
            raise ProblemError(404, f"no resource {oid!r}")
        return obj

    def _owns_ven(p: Principal, ven_id: str) -> bool:
        ven = vtn.store.get("VEN", ven_id)
        return ven is not None and vtn.owns(p, ven)

    def shown(p: Principal, obj: StoredObject, requested: list[str] | None) -> list[str] | None:
        return vtn.visible_targets(p.role, p.client_id, obj, requested)

    def filter_targets(objs: list[StoredObject], requested: list[str] | None,
                       p: Principal) -> list[dict[str, Any]]:
        out = []
        for o in objs:
            vis = shown(p, o, requested)
            if vis is None:
                continue
            if p.is_bl and requested and not set(targets_of(o)) & set(requested):
                continue
            out.append(_dump(o, vis if not p.is_bl else None))
        return out

    # --- auth -----------------------------------------------------------------------

    @app.get("/auth/server")
    async def get_auth_server_info(request: Request) -> Response:
        return _json({"tokenURL": str(request.url_for("fetch_token"))})

    @app.post("/auth/token")
    async def fetch_token(request: Request) -> Response:
        # application/x-www-form-urlencoded, parsed here (no python-multipart needed)
        raw = await request.body()
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise ProblemError(400, "body is not a form", error="invalid_request") from None
        fields: dict[str, str] = {}
        for k, v in pairs:
            if k in fields:
                raise ProblemError(400, f"{k} repeated", error="invalid_request")
            fields[k] = v
        basic = parse_basic(request.headers.get("authorization"))
        if basic is not None:
            if "client_id" in fields and fields["client_id"] != basic[0]:
                raise ProblemError(400, "client_id differs from Basic credentials",
                                   error="invalid_request")
            fields["client_id"], fields["client_secret"] = basic
        if fields.get("grant_type") is None:
            raise ProblemError(400, "grant_type missing", error="invalid_request")
        if fields["grant_type"] != "client_credentials":
            raise ProblemError(400, "only client_credentials", error="unsupported_grant_type")
        if not fields.get("client_id") or not fields.get("client_secret"):
            raise ProblemError(401, "client authentication missing", error="invalid_client")
        try:
            token, scope = vtn.issuer.issue(
                fields["client_id"], fields["client_secret"], vtn.now, fields.get("scope")
            )
        except TokenError as err:
            raise ProblemError(err.status, err.detail, error=err.error,
                               error_description=err.detail) from None
        resp = m.ClientCredentialResponse(
            access_token=token, token_type="Bearer", expires_in=vtn.issuer.ttl_s, scope=scope
        )
        return JSONResponse(resp.model_dump(mode="json", exclude_none=True),
                            headers={"Cache-Control": "no-store"})

    # --- programs ---------------------------------------------------------------------

    @app.get("/programs")
    async def search_all_programs(request: Request) -> Response:
        p = auth(request, "read_targets")
        q = _Query(request)
        targets = q.get_list("targets")
        return _json(q.page(filter_targets(vtn.store.all("PROGRAM"), targets, p)))

    @app.post("/programs")
    async def create_program(request: Request) -> Response:
        auth(request, "write_programs")
        req = await _body(request, m.ProgramRequest)
        if vtn.program_named(req.programName) is not None:
            raise ProblemError(409, f"programName {req.programName!r} exists")
        return _json(_dump(vtn.create("PROGRAM", req)), 201)

    def _program_visible(request: Request, p: Principal, oid: str
                         ) -> tuple[StoredObject, list[str]]:
        obj = get_or_404(p, "PROGRAM", oid)
        vis = shown(p, obj, _Query(request).get_list("targets"))
        if vis is None:
            raise ProblemError(404, f"no program {oid!r}")
        return obj, vis

    @app.get("/programs/{program_id}")
    async def search_program_by_id(request: Request, program_id: str) -> Response:
        p = auth(request, "read_targets")
        obj, vis = _program_visible(request, p, program_id)
        return _json(_dump(obj, None if p.is_bl else vis))

    @app.put("/programs/{program_id}")
    async def update_program(request: Request, program_id: str) -> Response:
        p = auth(request, "write_programs")
        get_or_404(p, "PROGRAM", program_id)
        req = await _body(request, m.ProgramRequest)
        other = vtn.program_named(req.programName)
        if other is not None and other.id.root != program_id:
            raise ProblemError(409, f"programName {req.programName!r} exists")
        return _json(_dump(vtn.replace("PROGRAM", program_id, req)))

    @app.delete("/programs/{program_id}")
    async def delete_program(request: Request, program_id: str) -> Response:
        p = auth(request, "write_programs")
        get_or_404(p, "PROGRAM", program_id)
        return _json(_dump(vtn.delete("PROGRAM", program_id)))

    # --- events -------------------------------------------------------------------------

    def _active(ev: Any) -> bool:
        ip = ev.intervalPeriod
        if ip is None or ip.start is None:
            return True
        dur = parse_duration(ip.duration.root if ip.duration is not None else "PT0S")
        if dur.total_seconds() <= 0:
            return True
        n = max(1, len(ev.intervals or []))
        return bool(ip.start.root + dur * n > vtn.now)

    @app.get("/events")
    async def search_all_events(request: Request) -> Response:
        p = auth(request, "read_targets")
        q = _Query(request)
        program_id = q.get_str("programID", pattern=True)
        targets = q.get_list("targets")
        active = q.get_bool("active")
        evs = [e for e in vtn.store.all("EVENT")
               if program_id is None or e.programID.root == program_id]  # type: ignore[union-attr]
        if active:
            evs = [e for e in evs if _active(e)]
        return _json(q.page(filter_targets(evs, targets, p)))

    @app.post("/events")
    async def create_event(request: Request) -> Response:
        auth(request, "write_events")
        req = await _body(request, m.EventRequest)
        vtn.require_program(req.programID.root)
        return _json(_dump(vtn.create("EVENT", req)), 201)

    @app.get("/events/{event_id}")
    async def search_event_by_id(request: Request, event_id: str) -> Response:
        p = auth(request, "read_targets")
        obj = get_or_404(p, "EVENT", event_id)
        vis = shown(p, obj, _Query(request).get_list("targets"))
        if vis is None:
            raise ProblemError(404, f"no event {event_id!r}")
        return _json(_dump(obj, None if p.is_bl else vis))

    @app.put("/events/{event_id}")
    async def update_event(request: Request, event_id: str) -> Response:
        p = auth(request, "write_events")
        get_or_404(p, "EVENT", event_id)
        req = await _body(request, m.EventRequest)
        vtn.require_program(req.programID.root)
        return _json(_dump(vtn.replace("EVENT", event_id, req)))

    @app.delete("/events/{event_id}")
    async def delete_event(request: Request, event_id: str) -> Response:
        p = auth(request, "write_events")
        get_or_404(p, "EVENT", event_id)
        return _json(_dump(vtn.delete("EVENT", event_id)))

    # --- reports ------------------------------------------------------------------------

    @app.get("/reports")
    async def search_all_reports(request: Request) -> Response:
        p = auth(request, "read_ven_objects")
        q = _Query(request)
        program_id = q.get_str("programID", pattern=True)
        event_id = q.get_str("eventID", pattern=True)
        client_name = q.get_str("clientName")
        out = []
        for r in vtn.store.all("REPORT"):
            if not vtn.owns(p, r):
                continue
            if event_id is not None and r.eventID.root != event_id:  # type: ignore[union-attr]
                continue
            if client_name is not None and r.clientName.root != client_name:  # type: ignore[union-attr]
                continue
            if program_id is not None:
                ev = vtn.store.get("EVENT", r.eventID.root)  # type: ignore[union-attr]
                if ev is None or ev.programID.root != program_id:  # type: ignore[union-attr]
                    continue
            out.append(_dump(r))
        return _json(q.page(out))

    @app.post("/reports")
    async def create_report(request: Request) -> Response:
        p = auth(request, "write_reports")
        req = await _body(request, m.ReportRequest)
        if vtn.store.get("EVENT", req.eventID.root) is None:
            raise ProblemError(409, f"no event {req.eventID.root!r}")
        return _json(_dump(vtn.create("REPORT", req, extra={"clientID": p.client_id})), 201)

    @app.get("/reports/{report_id}")
    async def search_report_by_id(request: Request, report_id: str) -> Response:
        p = auth(request, "read_ven_objects")
        return _json(_dump(get_or_404(p, "REPORT", report_id)))

    @app.put("/reports/{report_id}")
    async def update_report(request: Request, report_id: str) -> Response:
        p = auth(request, "write_reports")
        old = get_or_404(p, "REPORT", report_id)
        req = await _body(request, m.ReportRequest)
        if vtn.store.get("EVENT", req.eventID.root) is None:
            raise ProblemError(409, f"no event {req.eventID.root!r}")
        extra = {"clientID": old.clientID.root}  # type: ignore[union-attr]
        return _json(_dump(vtn.replace("REPORT", report_id, req, extra=extra)))

    @app.delete("/reports/{report_id}")
    async def delete_report(request: Request, report_id: str) -> Response:
        p = auth(request, "write_reports")
        get_or_404(p, "REPORT", report_id)
        return _json(_dump(vtn.delete("REPORT", report_id)))

    # --- subscriptions ------------------------------------------------------------------

    @app.get("/subscriptions")
    async def search_subscriptions(request: Request) -> Response:
        p = auth(request, "read_ven_objects")
        q = _Query(request)
        program_id = q.get_str("programID", pattern=True)
        client_name = q.get_str("clientName")
        objects = q.get_list("objects")
        if objects and not set(objects) <= _OBJECT_TYPES:
            raise ProblemError(400, "objects: unknown object type")
        out = []
        for s in vtn.store.all("SUBSCRIPTION"):
            sub: Any = s
            if not vtn.owns(p, s):
                continue
            if program_id is not None and (sub.programID is None
                                           or sub.programID.root != program_id):
                continue
            if client_name is not None and sub.clientName.root != client_name:
                continue
            if objects:
                have = {o.root for oo in sub.objectOperations for o in oo.objects}
                if not have & set(objects):
                    continue
            out.append(_dump(s))
        return _json(q.page(out))

    @app.post("/subscriptions")
    async def create_subscription(request: Request) -> Response:
        p = auth(request, "write_subscriptions")
        req = await _body(request, m.SubscriptionRequest)
        if req.programID is not None:
            vtn.require_program(req.programID.root)
        obj = vtn.create("SUBSCRIPTION", req, extra={"clientID": p.client_id})
        return _json(_dump(obj), 201)

    @app.get("/subscriptions/{subscription_id}")
    async def search_subscription_by_id(request: Request, subscription_id: str) -> Response:
        p = auth(request, "read_ven_objects")
        return _json(_dump(get_or_404(p, "SUBSCRIPTION", subscription_id)))

    @app.put("/subscriptions/{subscription_id}")
    async def update_subscription(request: Request, subscription_id: str) -> Response:
        p = auth(request, "write_subscriptions")
        old: Any = get_or_404(p, "SUBSCRIPTION", subscription_id)
        req = await _body(request, m.SubscriptionRequest)
        if req.programID is not None:
            vtn.require_program(req.programID.root)
        obj = vtn.replace("SUBSCRIPTION", subscription_id, req,
                          extra={"clientID": old.clientID.root})
        return _json(_dump(obj))

    @app.delete("/subscriptions/{subscription_id}")
    async def delete_subscription(request: Request, subscription_id: str) -> Response:
        p = auth(request, "write_subscriptions")
        get_or_404(p, "SUBSCRIPTION", subscription_id)
        return _json(_dump(vtn.delete("SUBSCRIPTION", subscription_id)))

    # --- vens ---------------------------------------------------------------------------

    def _ven_fields(p: Principal, req: m.VenRequest, old: Any | None) -> dict[str, Any]:
        body = req.root
        if isinstance(body, m.BlVenRequest):
            if not p.is_bl:
                raise ProblemError(403, "only BL may send BL_VEN_REQUEST")
            d = body.model_dump(mode="json", exclude_none=True)
        else:
            d = body.model_dump(mode="json", exclude_none=True)
            d["clientID"] = old.clientID.root if old is not None else p.client_id
            if old is not None and old.targets:  # VENs may not write targets
                d["targets"] = [t.root for t in old.targets]
        d["objectType"] = "VEN"
        return d

    @app.get("/vens")
    async def search_vens(request: Request) -> Response:
        p = auth(request, "read_ven_objects")
        q = _Query(request)
        name = q.get_str("venName")
        targets = q.get_list("targets")
        out = [_dump(v) for v in vtn.store.all("VEN") if vtn.owns(p, v)
               and (name is None or v.venName.root == name)  # type: ignore[union-attr]
               and (not targets or set(targets_of(v)) & set(targets))]
        return _json(q.page(out))

    @app.post("/vens")
    async def create_ven(request: Request) -> Response:
        p = auth(request, "write_vens")
        req = await _body(request, m.VenRequest)
        d = _ven_fields(p, req, None)
        if any(v.venName.root == d["venName"] for v in vtn.store.all("VEN")):  # type: ignore[union-attr]
            # createVen declares no 409 in 3.1.0 (see README)
            raise ProblemError(400, f"venName {d['venName']!r} exists")
        return _json(_dump(vtn.create("VEN", d)), 201)

    @app.get("/vens/{ven_id}")
    async def search_ven_by_id(request: Request, ven_id: str) -> Response:
        p = auth(request, "read_ven_objects")
        return _json(_dump(get_or_404(p, "VEN", ven_id)))

    @app.put("/vens/{ven_id}")
    async def update_ven(request: Request, ven_id: str) -> Response:
        p = auth(request, "write_vens")
        old = get_or_404(p, "VEN", ven_id)
        req = await _body(request, m.VenRequest)
        d = _ven_fields(p, req, old)
        if any(v.venName.root == d["venName"] and v.id.root != ven_id  # type: ignore[union-attr]
               for v in vtn.store.all("VEN")):
            raise ProblemError(409, f"venName {d['venName']!r} exists")
        return _json(_dump(vtn.replace("VEN", ven_id, d)))

    @app.delete("/vens/{ven_id}")
    async def delete_ven(request: Request, ven_id: str) -> Response:
        p = auth(request, "write_vens")
        get_or_404(p, "VEN", ven_id)
        return _json(_dump(vtn.delete("VEN", ven_id)))

    # --- resources ----------------------------------------------------------------------

    def _resource_fields(p: Principal, req: m.ResourceRequest, old: Any | None
                         ) -> dict[str, Any]:
        body = req.root
        ven: Any = vtn.store.get("VEN", body.venID.root)
        if ven is None:
            raise ProblemError(404, f"no ven {body.venID.root!r}")
        if not vtn.owns(p, ven):
            raise ProblemError(403, "not your ven")
        if isinstance(body, m.BlResourceRequest):
            if not p.is_bl:
                raise ProblemError(403, "only BL may send BL_RESOURCE_REQUEST")
            d = body.model_dump(mode="json", exclude_none=True)
        else:
            d = body.model_dump(mode="json", exclude_none=True)
            d["clientID"] = ven.clientID.root
            if old is not None and old.targets:
                d["targets"] = [t.root for t in old.targets]
        d["objectType"] = "RESOURCE"
        return d

    @app.get("/resources")
    async def search_ven_resources(request: Request) -> Response:
        p = auth(request, "read_ven_objects")
        q = _Query(request)
        name = q.get_str("resourceName")
        ven_id = q.get_str("venID", pattern=True)
        targets = q.get_list("targets")
        out = []
        for r in vtn.store.all("RESOURCE"):
            res: Any = r
            if not (p.is_bl or _owns_ven(p, res.venID.root)):
                continue
            if name is not None and res.resourceName.root != name:
                continue
            if ven_id is not None and res.venID.root != ven_id:
                continue
            if targets and not set(targets_of(r)) & set(targets):
                continue
            out.append(_dump(r))
        return _json(q.page(out))

    @app.post("/resources")
    async def create_resource(request: Request) -> Response:
        p = auth(request, "write_vens")
        req = await _body(request, m.ResourceRequest)
        d = _resource_fields(p, req, None)
        return _json(_dump(vtn.create("RESOURCE", d)), 201)

    @app.get("/resources/{resource_id}")
    async def search_ven_resource_by_id(request: Request, resource_id: str) -> Response:
        p = auth(request, "read_ven_objects")
        return _json(_dump(get_or_404(p, "RESOURCE", resource_id)))

    @app.put("/resources/{resource_id}")
    async def update_ven_resource(request: Request, resource_id: str) -> Response:
        p = auth(request, "write_vens")
        old = get_or_404(p, "RESOURCE", resource_id)
        req = await _body(request, m.ResourceRequest)
        d = _resource_fields(p, req, old)
        return _json(_dump(vtn.replace("RESOURCE", resource_id, d)))

    @app.delete("/resources/{resource_id}")
    async def delete_ven_resource(request: Request, resource_id: str) -> Response:
        p = auth(request, "write_vens")
        get_or_404(p, "RESOURCE", resource_id)
        return _json(_dump(vtn.delete("RESOURCE", resource_id)))

    # --- notifiers ----------------------------------------------------------------------

    @app.get("/notifiers")
    async def list_all_notifiers(request: Request) -> Response:
        auth(request, "read_all")
        body: dict[str, Any] = {"WEBHOOK": True}
        if vtn.config.mqtt_url:
            body["MQTT"] = {
                "URIS": [vtn.config.mqtt_url],
                "serialization": "JSON",
                "authentication": {"method": "ANONYMOUS"},
            }
        return _json(body)

    def _topics(base: str, *, with_create: bool = True) -> Response:
        if not vtn.config.mqtt_url:
            raise ProblemError(404, "no MQTT notifier on this VTN")
        from devices.vtn.notify import topic_names

        names = topic_names(vtn.config.topic_prefix + base, with_create=with_create)
        return _json({"topics": names})

    def _topic_route(path: str, scope: str, base: Callable[[Request, Principal], str],
                     with_create: bool = True) -> None:
        async def handler(request: Request) -> Response:
            p = auth(request, scope)
            return _topics(base(request, p), with_create=with_create)

        app.add_api_route(path, handler, methods=["GET"])

    def _pid(request: Request, p: Principal) -> str:
        oid = str(request.path_params["program_id"])
        _program_visible(request, p, oid)
        return f"programs/{oid}"

    def _vid(request: Request, p: Principal) -> str:
        oid = str(request.path_params["ven_id"])
        get_or_404(p, "VEN", oid)
        return f"vens/{oid}"

    _topic_route("/notifiers/mqtt/topics/programs", "read_all", lambda r, p: "programs")
    _topic_route("/notifiers/mqtt/topics/programs/{program_id}", "read_all", _pid, False)
    _topic_route("/notifiers/mqtt/topics/programs/{program_id}/events", "read_all",
                 lambda r, p: _pid(r, p) + "/events")
    _topic_route("/notifiers/mqtt/topics/events", "read_bl", lambda r, p: "events")
    _topic_route("/notifiers/mqtt/topics/reports", "read_bl", lambda r, p: "reports")
    _topic_route("/notifiers/mqtt/topics/subscriptions", "read_bl",
                 lambda r, p: "subscriptions")
    _topic_route("/notifiers/mqtt/topics/vens", "read_bl", lambda r, p: "vens")
    _topic_route("/notifiers/mqtt/topics/resources", "read_bl", lambda r, p: "resources")
    _topic_route("/notifiers/mqtt/topics/vens/{ven_id}", "read_ven_objects", _vid, False)
    for sub in ("events", "programs", "resources"):
        _topic_route(f"/notifiers/mqtt/topics/vens/{{ven_id}}/{sub}", "read_ven_objects",
                     lambda r, p, s=sub: f"{_vid(r, p)}/{s}")  # type: ignore[misc]

    return app
