"""FastAPI app of the billing records and the token ledger (issue 8, item 6).

:func:`create_app` serves, from one ledger database (run folder, SQLite file or
PostgreSQL URL, see :func:`controllers.ledger.open_ledger`):

- reads: ``GET /sessions``, ``/sessions/{id}``, ``/sessions/{id}/audit``,
  ``/sessions/{id}/cdr``, ``/invoices``, ``/invoices/{session_id}``,
  ``/wallets/{driver}``, ``/ledger/entries`` (paginated), ``/site-bills/{run_id}``,
  ``/tariffs``, ``/tariffs/{id}``, ``/reward-rules``;
- writes (operator only): ``PUT /tariffs/{id}`` (an OCPI 2.2.1 Tariff object, module
  *Tariffs*), ``PUT /reward-rules/{id}``.

Authorization: ``Authorization: Bearer <token>``, tokens from a YAML file of SHA-256
hashes (:mod:`controllers.billing_api.auth`). Missing or unknown token: 401 with
``WWW-Authenticate: Bearer``. Roles:

- ``operator``: everything;
- ``driver`` (subject = the driver's id_token): only their own sessions, audits, CDRs,
  invoices, wallet and ledger entries. Another driver's single resource answers **404**,
  exactly like a missing one (existence is not leaked); a list filter naming another
  driver (``?id_token=``, ``?owner=``) answers **403**; operator-only endpoints
  (writes, site bills) answer **403**. Drivers may read tariffs and reward rules (prices
  are public).

Bodies of the PUTs are parsed with numbers as exact ``Decimal`` (never float), checked
against the JSON schema published in ``/openapi.json`` and then by the pydantic model;
a bad body answers 422 with the path of each bad field and the reason. Time is injected:
``clock`` gives the time recorded for a write.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import jsonschema
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from controllers.billing.store import BillingStore
from controllers.billing.tariffs.ocpi import Tariff
from controllers.billing_api.auth import Principal, TokenConfig, load_tokens
from controllers.billing_api.schemas import (
    AuditOut,
    CdrOut,
    EntriesPage,
    EntryOut,
    ErrorOut,
    InvoiceOut,
    PostingOut,
    RewardRuleOut,
    SessionOut,
    SiteBillOut,
    TariffOut,
    TokenBalanceOut,
    WalletOut,
)
from controllers.ledger.db import LedgerDb, open_ledger
from controllers.ledger.ledger import SYSTEM, AccountKind
from controllers.ledger.models import Account, JournalTxn, PostingRow
from controllers.ledger.rewards import RewardRule

#: Ids in paths and filters: no NUL (PostgreSQL text cannot hold it), at most 200 chars.
ID_PATTERN = r"^[^\x00]+$"
MAX_PAGE = 500

_bearer = HTTPBearer(auto_error=False, description="Bearer token (see the tokens file)")
Responses = dict[int | str, dict[str, Any]]


def _err(code: int, why: str) -> Responses:
    return {code: {"model": ErrorOut, "description": why}}


_E401 = _err(401, "missing or unknown bearer token")
_E403 = _err(403, "the role may not do this")
_E404 = _err(404, "not found (or not the caller's)")

Key = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=200)]
OptKey = Annotated[str | None, Query(pattern=ID_PATTERN, max_length=200)]


def _schema_errors(validator: jsonschema.Draft202012Validator, doc: Any) -> list[dict[str, Any]]:
    return [{"loc": ["body", *e.absolute_path], "msg": e.message, "type": "schema"}
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))]


def _pydantic_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)]


def _parse_body(raw: bytes) -> Any:
    """JSON with numbers as exact Decimal; 422 when not JSON."""
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestValidationError(
            [{"loc": ["body"], "msg": f"body is not JSON: {exc}", "type": "json_invalid"}]
        ) from exc


_M = TypeVar("_M", bound=BaseModel)


def _document(raw: bytes, check: jsonschema.Draft202012Validator, model: type[_M],
              key_field: str, key: str) -> _M:
    """A PUT body as ``model``, or 422 with the field and the reason.

    JSON (numbers exact), its JSON schema, the model's own validation, and its
    ``key_field`` equal to the path's ``key``.
    """
    doc = _parse_body(raw)
    errors = _schema_errors(check, doc)
    if errors:
        raise RequestValidationError(errors)
    try:
        obj = model.model_validate(doc)
    except ValidationError as exc:
        raise RequestValidationError(_pydantic_errors(exc)) from exc
    if getattr(obj, key_field) != key:
        raise RequestValidationError([{
            "loc": ["body", key_field], "type": "value_error",
            "msg": f"{key_field} {getattr(obj, key_field)!r} differs from the path's {key!r}"}])
    return obj


def _components(models: list[type[BaseModel]]) -> dict[str, Any]:
    """Request-body JSON schemas (validation mode) of ``models`` and their $defs.

    Every name gets the suffix ``In`` (``TariffIn``, ``PriceComponentIn``) so that they
    never replace the response (serialization-mode) schemas FastAPI generates.
    """
    out: dict[str, Any] = {}
    for m in models:
        s = m.model_json_schema(ref_template="#/components/schemas/{model}In")
        out.update({f"{k}In": v for k, v in s.pop("$defs", {}).items()})
        out[m.__name__ + "In"] = s
    return out


def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of ``request`` (401 with ``WWW-Authenticate: Bearer`` if unknown)."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    config: TokenConfig = request.app.state.tokens
    who = config.lookup(creds.credentials)
    if who is None:
        raise HTTPException(401, "unknown bearer token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return who


Who = Annotated[Principal, Depends(principal)]


def operator(who: Who) -> Principal:
    """The caller, who must be an operator (403 otherwise)."""
    if not who.is_operator:
        raise HTTPException(403, "operator role required")
    return who


Operator = Annotated[Principal, Depends(operator)]


def _entry_out(txn: JournalTxn, visible_owner: str | None) -> EntryOut:
    """A journal row as :class:`EntryOut`; other drivers' owners hidden from a driver."""
    def owner(o: str) -> str:
        return o if visible_owner is None or o in (visible_owner, SYSTEM) else "(other)"
    legs = sorted(txn.postings, key=lambda p: (p.account.kind, p.account.owner,
                                               p.account.code))
    return EntryOut(txn_id=txn.id, event_id=txn.event_id, kind=txn.kind,
                    session_id=txn.session_id, rule_id=txn.rule_id, actor=txn.actor,
                    memo=txn.memo, created_at=txn.created_at,
                    postings=[PostingOut(account_kind=p.account.kind,
                                         owner=owner(p.account.owner), code=p.account.code,
                                         amount=p.amount) for p in legs])


def _validator(components: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator of the published schema ``name`` (refs into the components)."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": {"schemas": components}})


def create_app(db_target: str | Path, tokens: TokenConfig | str | Path, *,
               clock: Callable[[], datetime]) -> FastAPI:
    """The billing API on the ledger database at ``db_target``.

    Args:
        db_target: run folder, SQLite file or PostgreSQL URL (opened and migrated now,
            closed at application shutdown).
        tokens: a :class:`TokenConfig` or the path of a tokens YAML file.
        clock: returns the current aware UTC time, recorded with tariff and reward-rule
            writes (time is injected: nothing here reads the wall clock).

    Raises:
        TokenFileError: bad tokens file. Errors of :func:`open_ledger` for the database.
    """
    config = tokens if isinstance(tokens, TokenConfig) else load_tokens(tokens)
    db: LedgerDb = open_ledger(db_target)
    store = BillingStore(db)
    components = _components([Tariff, RewardRule])
    tariff_check = _validator(components, "TariffIn")
    rule_check = _validator(components, "RewardRuleIn")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        db.close()

    app = FastAPI(
        title="MiGrid billing API",
        version="1.0.0",
        description=(
            "Charging sessions, physics audits, CDRs, invoices, site bills, OCPI 2.2.1 "
            "tariffs, reward rules and the token ledger. Exact numbers are decimal "
            "strings. Roles: operator (all), driver (own records only; others' records "
            "answer 404)."),
        lifespan=lifespan,
    )
    app.state.tokens = config

    def own(who: Principal, owner: str | None, what: str) -> None:
        """404 unless the caller is an operator or ``owner`` is the calling driver."""
        if not who.is_operator and owner != who.subject:
            raise HTTPException(404, f"{what} not found")

    def driver_filter(who: Principal, value: str | None, name: str) -> str | None:
        """The driver filter to apply: the caller's own for a driver (403 for another)."""
        if who.is_operator:
            return value
        if value is not None and value != who.subject:
            raise HTTPException(403, f"drivers may only filter on their own {name}")
        return who.subject

    # -- sessions ----------------------------------------------------------------------

    @app.get("/sessions", response_model=list[SessionOut], tags=["sessions"],
             responses={**_E401, **_E403})
    def list_sessions(who: Who, id_token: OptKey = None,
                      run_id: OptKey = None) -> list[SessionOut]:
        """Sessions by start time; a driver sees only their own."""
        tok = driver_filter(who, id_token, "id_token")
        return [SessionOut.of(r) for r in store.sessions(id_token=tok, run_id=run_id)]

    @app.get("/sessions/{session_id}", response_model=SessionOut, tags=["sessions"],
             responses={**_E401, **_E404})
    def get_session(who: Who, session_id: Key) -> SessionOut:
        """One session (404 if missing or another driver's)."""
        rec = store.session(session_id)
        own(who, None if rec is None else rec.id_token, "session")
        if rec is None:
            raise HTTPException(404, "session not found")
        return SessionOut.of(rec)

    @app.get("/sessions/{session_id}/audit", response_model=AuditOut, tags=["sessions"],
             responses={**_E401, **_E404})
    def get_audit(who: Who, session_id: Key) -> AuditOut:
        """The physics audit of a session (404 if none or another driver's)."""
        own(who, store.owner_of(session_id), "audit")
        rec = store.audit_record(session_id)
        if rec is None:
            raise HTTPException(404, "audit not found")
        return AuditOut.of(rec)

    @app.get("/sessions/{session_id}/cdr", response_model=CdrOut, tags=["sessions"],
             responses={**_E401, **_E404})
    def get_cdr(who: Who, session_id: Key) -> CdrOut:
        """The CDR of a session (404 if none or another driver's)."""
        cdr = store.cdr(session_id)
        own(who, None if cdr is None else cdr.id_token, "CDR")
        if cdr is None:
            raise HTTPException(404, "CDR not found")
        return CdrOut.of(cdr)

    # -- invoices ----------------------------------------------------------------------

    @app.get("/invoices", response_model=list[InvoiceOut], tags=["invoices"],
             responses={**_E401, **_E403})
    def list_invoices(who: Who, id_token: OptKey = None) -> list[InvoiceOut]:
        """Invoices by session id; a driver sees only those of their own sessions."""
        tok = driver_filter(who, id_token, "id_token")
        return [InvoiceOut.of(i) for i in store.invoices(id_token=tok)]

    @app.get("/invoices/{session_id}", response_model=InvoiceOut, tags=["invoices"],
             responses={**_E401, **_E404})
    def get_invoice(who: Who, session_id: Key) -> InvoiceOut:
        """The invoice of a session (404 if none or another driver's)."""
        own(who, store.owner_of(session_id), "invoice")
        inv = store.invoice(session_id)
        if inv is None:
            raise HTTPException(404, "invoice not found")
        return InvoiceOut.of(inv)

    # -- ledger ------------------------------------------------------------------------

    @app.get("/wallets/{driver}", response_model=WalletOut, tags=["ledger"],
             responses={**_E401, **_E404})
    def get_wallet(who: Who, driver: Key) -> WalletOut:
        """Wallet and escrow balances of a driver per token code (404: another driver's)."""
        own(who, driver, "wallet")
        zero = Decimal(0).quantize(Decimal("0.000001"))
        per: dict[str, dict[str, Decimal]] = {}
        with db.sessions() as s, s.begin():
            rows = s.scalars(select(Account).where(
                Account.owner == driver,
                Account.kind.in_([AccountKind.WALLET.value, AccountKind.ESCROW.value]))
                .order_by(Account.code))
            for a in rows:
                per.setdefault(a.code, {"wallet": zero, "escrow": zero})[a.kind] = a.balance
        return WalletOut(driver=driver, balances=[
            TokenBalanceOut(code=c, wallet=b["wallet"], escrow=b["escrow"])
            for c, b in sorted(per.items())])

    @app.get("/ledger/entries", response_model=EntriesPage, tags=["ledger"],
             responses={**_E401, **_E403})
    def list_entries(
        who: Who,
        owner: OptKey = None,
        session_id: OptKey = None,
        after: Annotated[int, Query(ge=0, le=2**62,
                                    description="return entries with txn_id > after")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> EntriesPage:
        """Journal entries in posting order, by owner and/or session, paginated.

        ``owner``: entries touching that owner's accounts; a driver sees only entries
        touching their own accounts.
        """
        own_filter = driver_filter(who, owner, "owner")
        q = select(JournalTxn).where(JournalTxn.id > after).order_by(JournalTxn.id) \
            .limit(limit)
        if session_id is not None:
            q = q.where(JournalTxn.session_id == session_id)
        if own_filter is not None:
            q = q.where(JournalTxn.id.in_(
                select(PostingRow.transaction_id).join(Account,
                                                       PostingRow.account_id == Account.id)
                .where(Account.owner == own_filter)))
        visible = None if who.is_operator else who.subject
        with db.sessions() as s, s.begin():
            entries = [_entry_out(t, visible) for t in s.scalars(q)]
        return EntriesPage(
            entries=entries,
            next_after=entries[-1].txn_id if len(entries) == limit else None)

    # -- site bills --------------------------------------------------------------------

    @app.get("/site-bills/{run_id}", response_model=SiteBillOut, tags=["site"],
             responses={**_E401, **_E403, **_E404})
    def get_site_bill(_: Operator, run_id: Key) -> SiteBillOut:
        """The site's utility bill of a run (operator only)."""
        b = store.site_bill(run_id)
        if b is None:
            raise HTTPException(404, "site bill not found")
        return SiteBillOut.of(b)

    # -- tariffs and reward rules ------------------------------------------------------

    @app.get("/tariffs", response_model=list[TariffOut], tags=["tariffs"],
             responses={**_E401}, response_model_exclude_none=True)
    def list_tariffs(_: Who) -> list[TariffOut]:
        """Current version of every OCPI tariff, by id."""
        return [TariffOut(version=r.version, updated_at=r.updated_at, tariff=r.tariff)
                for r in store.tariff_records()]

    @app.get("/tariffs/{tariff_id}", response_model=TariffOut, tags=["tariffs"],
             responses={**_E401, **_E404}, response_model_exclude_none=True)
    def get_tariff(_: Who, tariff_id: Annotated[str, PathParam(pattern=ID_PATTERN,
                                                                 max_length=36)]) -> TariffOut:
        """One OCPI tariff (current version)."""
        r = store.tariff_record(tariff_id)
        if r is None:
            raise HTTPException(404, "tariff not found")
        return TariffOut(version=r.version, updated_at=r.updated_at, tariff=r.tariff)

    @app.put("/tariffs/{tariff_id}", response_model=TariffOut, tags=["tariffs"],
             responses={**_E401, **_E403}, response_model_exclude_none=True,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/TariffIn"}}}}})
    async def put_tariff(_: Operator, request: Request,
                         tariff_id: Annotated[str, PathParam(pattern=ID_PATTERN,
                                                             max_length=36)]) -> TariffOut:
        """Create or update an OCPI 2.2.1 Tariff (module Tariffs); ``id`` must match.

        An identical document keeps its version; a different one is the next version.
        """
        tariff = _document(await request.body(), tariff_check, Tariff, "id", tariff_id)
        r = await run_in_threadpool(store.put_tariff, tariff, at=clock())
        return TariffOut(version=r.version, updated_at=r.updated_at, tariff=r.tariff)

    @app.get("/reward-rules", response_model=list[RewardRuleOut], tags=["rewards"],
             responses={**_E401})
    def list_reward_rules(_: Who) -> list[RewardRuleOut]:
        """Every reward rule (current version), by rule id."""
        return [RewardRuleOut(version=r.version, updated_at=r.updated_at, rule=r.rule)
                for r in store.reward_rule_records()]

    @app.put("/reward-rules/{rule_id}", response_model=RewardRuleOut, tags=["rewards"],
             responses={**_E401, **_E403},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {
                     "schema": {"$ref": "#/components/schemas/RewardRuleIn"}}}}})
    async def put_reward_rule(_: Operator, request: Request,
                              rule_id: Key) -> RewardRuleOut:
        """Create or update a reward rule; ``rule_id`` must match the path."""
        rule = _document(await request.body(), rule_check, RewardRule, "rule_id", rule_id)
        r = await run_in_threadpool(store.put_reward_rule, rule, at=clock())
        return RewardRuleOut(version=r.version, updated_at=r.updated_at, rule=r.rule)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
