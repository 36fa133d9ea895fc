"""Identity's HTTP routes: thin translation between HTTP and the handlers."""
from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.identity import handlers
from services.identity.domain import IdentifierError
from shared.auth import CallerIngest, CallerRead

touchpoints = APIRouter(prefix="/v1/touchpoints", tags=["touchpoints"])
customers = APIRouter(prefix="/v1/customers", tags=["customers"])


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


class IdentifierOut(BaseModel):
    type: str
    scope: str | None
    value: str
    first_seen_at: Any


class CustomerOut(BaseModel):
    customer_id: UUID
    tenant_id: str
    created_at: Any
    identifiers: list[IdentifierOut]


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
    results = await run_in_threadpool(handlers.ingest_touchpoints, body.events, caller, request.app.state.db, settings)
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


@customers.get("/lookup", response_model=CustomerOut, summary="Find the customer owning an identifier")
async def lookup(
    request: Request, caller: CallerRead,
    type: Annotated[str, Query(description="phone, email, wechat_openid, …")],
    value: Annotated[str, Query(min_length=1, max_length=256)],
    scope: Annotated[str | None, Query(description="App id (wechat_openid) or store id (pos_customer_id)")] = None,
):
    try:
        found = await run_in_threadpool(handlers.lookup_customer, request.app.state.db, request.app.state.settings,
                                        caller.tenant_id, type, value, scope)
    except (IdentifierError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    if found is None:
        raise HTTPException(404, "no customer has this identifier")
    return found


@customers.get("/{customer_id}", response_model=CustomerOut, summary="A customer profile with its identifiers")
async def get_customer(customer_id: UUID, request: Request, caller: CallerRead):
    found = await run_in_threadpool(handlers.get_customer, request.app.state.db, caller.tenant_id, customer_id)
    if found is None:
        raise HTTPException(404, "no such customer")
    return found
