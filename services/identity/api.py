"""Identity's HTTP routes for ingestion and reads: thin translation between HTTP and the use cases."""
from __future__ import annotations

import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.identity import ingest as ingestion
from services.identity import profiles, store
from services.identity.domain import IdentifierError
from services.identity.errors import Conflict, Gone, NotFound
from services.identity.readpool import ReadPool
from shared.auth import CallerIngest, CallerRead, Principal, Role
from shared.events.base import Identifier
from shared.http import storable_instant

READ_POOL_SIZE = 8  # statements in flight on one process's loop; each takes well under a millisecond


@asynccontextmanager
async def _read_pool(app):
    """The customers router's share of the app's lifespan: connections for reads on the event loop."""
    settings = app.state.settings
    app.state.read_pool = pool = ReadPool(settings.database_url, size=READ_POOL_SIZE,
                                          application_name=f"{settings.service_name}-reads",
                                          search_path=settings.service_name)
    try:
        yield
    finally:
        pool.close()


touchpoints = APIRouter(prefix="/v1/touchpoints", tags=["touchpoints"])
customers = APIRouter(prefix="/v1/customers", tags=["customers"], lifespan=_read_pool)


async def in_transaction(request: Request, use_case, *args, **kwargs):
    """Run a use case in one transaction on a worker thread, translating domain errors to HTTP."""
    db = request.app.state.db

    def run():
        with db.transaction() as cur:
            return use_case(cur, *args, **kwargs)

    return await _translated(run_in_threadpool(run))


async def in_autocommit(request: Request, use_case, *args, **kwargs):
    """Like in_transaction, for a use case of one statement: with the connection in autocommit that
    statement is its own transaction, without the BEGIN and COMMIT round trips around it."""
    db = request.app.state.db

    def run():
        with db.connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    return use_case(cur, *args, **kwargs)
            finally:
                if not conn.closed:
                    conn.autocommit = False

    return await _translated(run_in_threadpool(run))


async def _translated(pending):
    """Await a use case, translating domain errors to HTTP."""
    try:
        return await pending
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except Gone as exc:
        raise HTTPException(410, "this customer was erased" + (f" at {exc.erased_at.isoformat()}"
                                                               if exc.erased_at else "")) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except IdentifierError as exc:
        raise HTTPException(422, str(exc)) from None


# The identifier model's own rule for a type, so a lookup refuses (422) what the model would refuse.
ID_TYPE_PATTERN = Identifier.model_json_schema()["properties"]["type"]["pattern"]
POLICY_TTL_S = 5.0  # a policy change reaches other replicas' reads within this


def cached_policy(request: Request, tenant_id: str):
    cached = request.app.state.policy_cache.get(tenant_id)
    return cached[1] if cached and cached[0] > time.monotonic() else None


def tenant_policy(cur, request: Request, tenant_id: str, fresh: bool = False):
    cache = request.app.state.policy_cache
    cached = None if fresh else cached_policy(request, tenant_id)
    if cached:
        return cached
    policy = store.tenant_policies(cur, {tenant_id}, request.app.state.settings.default_region)[tenant_id]
    cache[tenant_id] = (time.monotonic() + POLICY_TTL_S, policy)
    return policy


class IngestRequest(BaseModel):
    events: list[Any] = Field(description="Touchpoint events; see docs/events for each type's schema.")


class EventResult(BaseModel):
    index: int
    status: str = Field(description="accepted, duplicate or rejected")
    event_id: str | None = None
    reason: str | None = None
    errors: list[dict] = []


class IngestResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


@touchpoints.post(
    "", response_model=IngestResponse,
    summary="Ingest up to 1000 touchpoints; one result per event",
    responses={413: {"description": "More events than allowed in one request"},
               422: {"description": "Every event was rejected; the results say why"}},
)
async def ingest(body: IngestRequest, request: Request, caller: CallerIngest):
    settings = request.app.state.settings
    if not body.events:
        raise HTTPException(422, "events is empty: send at least one event")
    if len(body.events) > settings.max_batch:
        raise HTTPException(413, f"at most {settings.max_batch} events per request, got {len(body.events)}")
    results = await run_in_threadpool(ingestion.ingest_touchpoints, body.events, caller, request.app.state.db,
                                      settings)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("accepted", "duplicate", "rejected")}
    payload = {"accepted": counts["accepted"], "duplicates": counts["duplicate"], "rejected": counts["rejected"],
               "results": [r.__dict__ for r in results]}
    if counts["rejected"] == len(results):
        return JSONResponse(
            {"type": "https://errors.customer-hub.dev/422", "title": "Unprocessable Content", "status": 422,
             "detail": "every event was rejected; see results", **payload},
            status_code=422, media_type="application/problem+json",
        )
    return payload


class Customer360(BaseModel):
    customer_id: UUID
    tenant_id: str
    status: str
    resolved_from: UUID | None = Field(None, description="Set when the id asked for was merged into this one.")
    created_at: datetime
    merged_ids: list[UUID]
    profile: dict[str, Any] = Field(description="Golden record: per attribute the surviving value and provenance.")
    identifiers: list[dict[str, Any]]
    rejected_identifiers: list[dict[str, Any]]
    household: dict[str, Any] | None
    pets: list[dict[str, Any]]
    vehicles: list[dict[str, Any]]
    consents: dict[str, Any]
    loyalty: dict[str, Any]
    next_booking: dict[str, Any] | None
    last_nps: dict[str, Any] | None
    lifecycle: dict[str, Any] | None
    churn_risk: dict[str, Any] | None
    touchpoints: dict[str, Any]


def _masked_for(caller: Principal) -> bool:
    return caller.role == Role.marketing


async def _customer(request: Request, caller: Principal, customer_id: UUID) -> dict:
    def view(cur):
        policy = tenant_policy(cur, request, caller.tenant_id)
        return profiles.customer_360(cur, request.app.state.vault, policy, caller.tenant_id, customer_id,
                                     masked=_masked_for(caller))

    policy = cached_policy(request, caller.tenant_id)
    if policy is not None:  # the usual case: the view is one statement, its own snapshot, read on the loop
        found = await _translated(profiles.customer_360_on_loop(
            request.app.state.read_pool, request.app.state.vault, policy, caller.tenant_id, customer_id,
            masked=_masked_for(caller)))
    else:  # loading the policy may register the tenant: that and the read commit together
        found = await in_transaction(request, view)
    if found is None:
        raise HTTPException(404, "no such customer")
    return found


async def _with_policy(request: Request, tenant_id: str, lookup, *args):
    """`lookup(cur, vault, policy, tenant_id, *args)`: usually the one statement, in autocommit; when the
    tenant's policy is not cached, loading it may register the tenant, so that and the lookup commit
    together."""
    vault = request.app.state.vault
    if (policy := cached_policy(request, tenant_id)) is not None:
        return await in_autocommit(request, lookup, vault, policy, tenant_id, *args)

    def with_fresh_policy(cur):
        return lookup(cur, vault, tenant_policy(cur, request, tenant_id), tenant_id, *args)

    return await in_transaction(request, with_fresh_policy)


class IdentifierQuery(BaseModel):
    type: str = Field(description="phone, email, wechat_openid, …, or custom:<name>", max_length=48,
                      pattern=ID_TYPE_PATTERN)
    value: str = Field(min_length=1, max_length=256)
    scope: str | None = Field(None, description="App id (wechat_openid) or store id (pos_customer_id)",
                              max_length=128)


@customers.get("/lookup", response_model=Customer360, summary="Find the customer holding an identifier",
               responses={404: {"description": "No customer holds it"}, 422: {"description": "Not a valid identifier"}})
async def lookup(request: Request, caller: CallerRead, wanted: Annotated[IdentifierQuery, Query()]):
    customer_id = await _with_policy(request, caller.tenant_id, profiles.lookup, wanted.type, wanted.value,
                                     wanted.scope)
    if customer_id is None:
        raise HTTPException(404, "no customer holds this identifier")
    return await _customer(request, caller, customer_id)


MAX_LOOKUPS = 1000


class LookupsRequest(BaseModel):
    identifiers: list[IdentifierQuery] = Field(min_length=1, max_length=MAX_LOOKUPS)


class LookupResult(BaseModel):
    customer_id: UUID | None = Field(description="Who holds the identifier (a merged profile's survivor); null "
                                                 "when nobody does or it is not valid.")
    error: str | None = Field(None, description="Why the identifier is not valid, e.g. not a phone number.")


class LookupsResponse(BaseModel):
    results: list[LookupResult] = Field(description="One per identifier asked, in the same order.")


@customers.post("/lookups", response_model=LookupsResponse,
                summary=f"Find who holds each of up to {MAX_LOOKUPS} identifiers, in one call",
                description="For matching a list (an audience, a migration, a partner's file) against the "
                            "customers: the rule of `GET /v1/customers/lookup` per identifier, answered with "
                            "customer ids only. An invalid identifier gets its reason and stops no other.")
async def lookups(request: Request, caller: CallerRead, body: LookupsRequest):
    found = await _with_policy(request, caller.tenant_id, profiles.lookup_many,
                               [(i.type, i.value, i.scope) for i in body.identifiers])
    return {"results": [{"customer_id": customer_id, "error": error} for customer_id, error in found]}


@customers.get("/{customer_id}", response_model=Customer360, summary="The customer 360",
               responses={404: {"description": "Unknown customer"}, 410: {"description": "Erased"}})
async def get_customer(customer_id: UUID, request: Request, caller: CallerRead):
    return await _customer(request, caller, customer_id)


class TimelineItem(BaseModel):
    event_id: UUID
    type: str
    channel: str
    store_id: str | None
    occurred_at: datetime
    summary: dict[str, Any]


class TimelinePage(BaseModel):
    customer_id: UUID
    items: list[TimelineItem]
    next_before: str | None = Field(None, description="Pass as `before` to get the next (older) page.")


@customers.get("/{customer_id}/timeline", response_model=TimelinePage, summary="Touchpoints, newest first",
               responses={404: {"description": "Unknown customer"}, 410: {"description": "Erased"}})
async def timeline(
    customer_id: UUID, request: Request, caller: CallerRead,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(description="Cursor from the previous page's next_before",
                                        max_length=100)] = None,
):
    cursor = None
    if before:
        try:
            at, _, event_id = before.partition("~")
            cursor = (storable_instant(datetime.fromisoformat(at)), UUID(event_id))
        except ValueError:
            raise HTTPException(422, "before is not a cursor returned by this endpoint") from None
    page = await in_transaction(request, profiles.timeline, caller.tenant_id, customer_id, limit, cursor)
    if page is None:
        raise HTTPException(404, "no such customer")
    nxt = page.pop("next")
    return {**page, "next_before": f"{nxt[0].isoformat()}~{nxt[1]}" if nxt else None}
