"""HTTP routes for webhook subscriptions: create, list, pause, resume, delete, rotate the secret, replay,
and the delivery log with its dead letters. Marketing and admin keys only, always within their tenant."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, model_validator

from services.identity.api import in_transaction
from services.identity.webhooks import subscriptions
from services.identity.webhooks.subscriptions import Filter, PiiLevel, SubscriptionRequest
from shared.auth import Principal, Role, require
from shared.events import utcnow
from shared.http import BIGINT_MAX, Instant

routes = APIRouter(prefix="/v1/subscriptions", tags=["webhook subscriptions"])
CallerMarketing = Annotated[Principal, Depends(require(Role.marketing))]
_NOT_FOUND = {404: {"description": "No such subscription in this tenant"}}


class Subscription(BaseModel):
    subscription_id: UUID
    tenant_id: str
    url: str
    event_types: list[str]
    filter: Filter
    purpose: str
    pii_level: PiiLevel
    description: str
    state: Literal["active", "paused", "deleted"]
    created_at: datetime
    updated_at: datetime
    previous_secret_until: datetime | None = Field(None, description="The old secret still signs until then.")
    pending: int = Field(0, description="Deliveries queued or waiting for a retry.")
    dead_letters: int = Field(0, description="Deliveries that failed every attempt.")


class SubscriptionWithSecret(Subscription):
    secret: str = Field(description="Shown once: keep it to verify the Hub-Signature header.")


class ReplayRequest(BaseModel):
    since: Instant | None = Field(None, description="Every delivery queued since this time, again.")
    dead_letters: bool = Field(False, description="The dead letters, again.")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.since is None) == (not self.dead_letters):
            raise ValueError("give either since (a time with its zone) or dead_letters: true")
        return self


class Delivery(BaseModel):
    delivery_id: int
    event_id: UUID
    event_type: str
    customer_id: UUID | None
    state: Literal["pending", "delivered", "dead", "dropped", "requeued"]
    attempts: int
    last_status: int | None
    last_error: str | None
    last_latency_ms: float | None
    reason: str | None
    created_at: datetime
    first_attempt_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime
    replay_of: int | None
    attempt_log: list[dict]


def _settings(request: Request):
    return request.app.state.settings


@routes.post("", response_model=SubscriptionWithSecret, status_code=201,
             summary="Subscribe a URL to public events, filtered, for one consent purpose",
             responses={422: {"description": "Not http(s), a private address in production, an unknown filter "
                                             "field or an event type not in the catalogue"}})
async def create(body: SubscriptionRequest, request: Request, caller: CallerMarketing):
    try:  # on a worker thread: in production it resolves the host, which must not stall the event loop
        await run_in_threadpool(subscriptions.check_url, body.url, _settings(request).webhook_private_urls_allowed)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    created, secret = await in_transaction(request, subscriptions.create, request.app.state.vault,
                                           caller.tenant_id, body, utcnow())
    return {**created, "secret": secret}


@routes.get("", response_model=list[Subscription], summary="This tenant's subscriptions")
async def list_subscriptions(request: Request, caller: CallerMarketing):
    return await in_transaction(request, subscriptions.list_for, caller.tenant_id)


@routes.get("/{subscription_id}", response_model=Subscription, responses=_NOT_FOUND, summary="One subscription")
async def get_subscription(subscription_id: UUID, request: Request, caller: CallerMarketing):
    return await in_transaction(request, subscriptions.get, caller.tenant_id, subscription_id)


async def _set_state(request: Request, caller: Principal, subscription_id: UUID, state: str):
    return await in_transaction(request, subscriptions.set_state, caller.tenant_id, subscription_id, state, utcnow())


@routes.post("/{subscription_id}/pause", response_model=Subscription, responses=_NOT_FOUND,
             summary="Stop sending; events keep queueing and go out in order on resume")
async def pause(subscription_id: UUID, request: Request, caller: CallerMarketing):
    return await _set_state(request, caller, subscription_id, "paused")


@routes.post("/{subscription_id}/resume", response_model=Subscription, responses=_NOT_FOUND,
             summary="Send again, starting with what queued while paused")
async def resume(subscription_id: UUID, request: Request, caller: CallerMarketing):
    return await _set_state(request, caller, subscription_id, "active")


@routes.delete("/{subscription_id}", response_model=Subscription, responses=_NOT_FOUND,
               summary="Delete; queued deliveries are dropped")
async def delete(subscription_id: UUID, request: Request, caller: CallerMarketing):
    return await _set_state(request, caller, subscription_id, "deleted")


@routes.post("/{subscription_id}/rotate-secret", response_model=SubscriptionWithSecret, responses=_NOT_FOUND,
             summary="A new signing secret; the old one keeps signing alongside it for the grace period")
async def rotate_secret(subscription_id: UUID, request: Request, caller: CallerMarketing):
    rotated, secret = await in_transaction(
        request, subscriptions.rotate_secret, request.app.state.vault, caller.tenant_id, subscription_id,
        _settings(request).webhook_secret_grace, utcnow())
    return {**rotated, "secret": secret}


@routes.post("/{subscription_id}/replay", status_code=202, responses=_NOT_FOUND,
             summary="Queue again every delivery since a time, or the dead letters (same Idempotency-Key)")
async def replay(subscription_id: UUID, body: ReplayRequest, request: Request, caller: CallerMarketing) -> dict:
    queued = await in_transaction(request, subscriptions.replay, caller.tenant_id, subscription_id, body.since,
                                  body.dead_letters, utcnow())
    return {"queued": queued}


@routes.get("/{subscription_id}/deliveries", response_model=list[Delivery], responses=_NOT_FOUND,
            summary="The delivery log, newest first, with every attempt's status code and latency")
async def deliveries(subscription_id: UUID, request: Request, caller: CallerMarketing,
                     state: Literal["pending", "delivered", "dead", "dropped", "requeued"] | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX,
                                                         description="Page: deliveries before this id")] = None):
    return await in_transaction(request, subscriptions.deliveries, caller.tenant_id, subscription_id, state, limit,
                                before)


@routes.get("/{subscription_id}/dead-letters", response_model=list[Delivery], responses=_NOT_FOUND,
            summary="Deliveries that failed every attempt; replay them with dead_letters: true")
async def dead_letters(subscription_id: UUID, request: Request, caller: CallerMarketing,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    return await in_transaction(request, subscriptions.deliveries, caller.tenant_id, subscription_id, "dead", limit,
                                None)
