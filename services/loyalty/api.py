"""Loyalty's routes: the program, members and their ledger, redemptions (hold → commit | release),
admin adjustments and the liability report."""
from __future__ import annotations

import time
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.loyalty import program as programs
from services.loyalty import reads, redemptions
from services.loyalty.program import Program
from shared.auth import CallerAdmin, CallerAny, CallerBooking, CallerOps, CallerRead
from shared.events.base import Slug, utcnow
from shared.http import BIGINT_MAX, in_transaction

program = APIRouter(prefix="/v1/program", tags=["program"])
member_routes = APIRouter(prefix="/v1/members", tags=["members"])
redemption_routes = APIRouter(prefix="/v1/redemptions", tags=["redemptions"])
adjustments = APIRouter(prefix="/v1/adjustments", tags=["adjustments"])
liability = APIRouter(prefix="/v1/liability", tags=["liability"])
NOT_FOUND = {404: {"description": "Unknown (or erased) member or redemption"}}
REFUSED = {**NOT_FOUND, 409: {"description": "Not enough points, or the hold is no longer open"}}
Points = Annotated[int, Field(ge=1, le=100_000_000)]


class RedemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: UUID
    points: Points
    store_id: Slug | None = None
    note: str | None = Field(None, max_length=500)
    redemption_id: UUID | None = Field(None, description="Your id for the hold: a retried request returns it.")


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: UUID
    points: Annotated[int, Field(ge=-100_000_000, le=100_000_000, description="Signed; not 0.")]
    reason: Annotated[str, Field(min_length=3, max_length=500)]
    adjustment_id: UUID | None = Field(None, description="Your id: a retried request posts once.")


PROGRAM_TTL_S = 5.0  # a program change reaches other replicas' member reads within this


async def cached_program(request: Request, tenant_id: str) -> Program:
    cache = request.app.state.__dict__.setdefault("loyalty_programs", {})
    hit = cache.get(tenant_id)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    found = await in_transaction(request, programs.load, tenant_id)
    cache[tenant_id] = (time.monotonic() + PROGRAM_TTL_S, found)
    return found


@program.get("", summary="The tenant's loyalty program (defaults until one is saved)")
async def get_program(request: Request, caller: CallerAny) -> Program:
    return await in_transaction(request, programs.load, caller.tenant_id)


@program.put("", summary="Replace the program: tiers, earn rules, expiry, reviews")
async def put_program(body: Program, request: Request, caller: CallerAdmin) -> Program:
    await in_transaction(request, programs.save, caller.tenant_id, body)
    request.app.state.__dict__.get("loyalty_programs", {}).pop(caller.tenant_id, None)
    return body


@member_routes.get("/{customer_id}", responses=NOT_FOUND,
                   summary="Tier, balance, points expiring in 30/60/90 days, progress to the next tier")
async def get_member(customer_id: UUID, request: Request, caller: CallerRead):
    found = await cached_program(request, caller.tenant_id)
    return await in_transaction(request, reads.member, caller.tenant_id, customer_id, utcnow(), found)


@member_routes.get("/{customer_id}/ledger", responses=NOT_FOUND, summary="Ledger entries, newest first")
async def get_ledger(customer_id: UUID, request: Request, caller: CallerRead,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX,
                                                         description="next_before of the previous page")] = None,
                     include_merged: bool = False):
    return await in_transaction(request, reads.entries, caller.tenant_id, customer_id, limit, before, include_merged)


@redemption_routes.post("", status_code=201, responses={**REFUSED, 422: {"description": "Invalid points"}},
                        summary="Hold points for a redemption (commit or release it; holds expire)")
async def hold(body: RedemptionIn, request: Request, caller: CallerBooking):
    return await in_transaction(request, redemptions.hold, caller.tenant_id, body.customer_id, body.points,
                                body.store_id, body.note, body.redemption_id, utcnow())


@redemption_routes.get("/{redemption_id}", responses=NOT_FOUND)
async def get_redemption(redemption_id: UUID, request: Request, caller: CallerBooking):
    return await in_transaction(request, redemptions.get, caller.tenant_id, redemption_id)


@redemption_routes.post("/{redemption_id}/commit", responses=REFUSED, summary="Redeem the held points")
async def commit(redemption_id: UUID, request: Request, caller: CallerBooking):
    return await in_transaction(request, redemptions.commit, caller.tenant_id, redemption_id, utcnow())


@redemption_routes.post("/{redemption_id}/release", responses=REFUSED, summary="Give the held points back")
async def release(redemption_id: UUID, request: Request, caller: CallerBooking):
    return await in_transaction(request, redemptions.release, caller.tenant_id, redemption_id, utcnow())


@adjustments.post("", status_code=201, responses=REFUSED, summary="Add or remove points by hand, with a reason")
async def adjust(body: AdjustmentIn, request: Request, caller: CallerAdmin):
    return await in_transaction(request, redemptions.adjust, caller.tenant_id, body.customer_id, body.points,
                                body.reason, caller.key_id, body.adjustment_id, utcnow())


@liability.get("", summary="Outstanding points and their money value per store")
async def get_liability(request: Request, caller: CallerOps, store_id: Annotated[Slug | None, Query()] = None):
    return await in_transaction(request, reads.liability, caller.tenant_id, store_id)


ROUTERS = (program, member_routes, redemption_routes, adjustments, liability)
