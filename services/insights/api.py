"""Insights' HTTP routes."""
from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from shared.auth import CallerRead
from shared.http import Instant

touchpoints = APIRouter(prefix="/v1/touchpoints", tags=["touchpoints"])


class TouchpointSummary(BaseModel):
    total: int
    customers: int
    newest_occurred_at: Any
    by_type: dict[str, int]
    by_channel: dict[str, int]
    by_store: dict[str, int]


@touchpoints.get("/summary", response_model=TouchpointSummary,
                 summary="How many touchpoints are stored, by type, channel and store")
async def summary(request: Request, caller: CallerRead):
    return await run_in_threadpool(request.app.state.warehouse.touchpoint_summary, caller.tenant_id)


class Freshness(BaseModel):
    count: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    max_s: float | None


@touchpoints.get("/freshness", response_model=Freshness,
                 summary="Seconds from acceptance by identity to ClickHouse for touchpoints recorded since a time")
async def freshness(since: Instant, request: Request, caller: CallerRead):
    return await run_in_threadpool(request.app.state.warehouse.freshness, caller.tenant_id, since)


class StoredTouchpoint(BaseModel):
    event_id: UUID
    tenant_id: str
    store_id: str
    customer_id: UUID
    type: str
    schema_version: int
    channel: str
    source: str
    occurred_at: Any
    recorded_at: Any
    stored_at: Any
    identifier_types: list[str]
    payload: dict
    trace_id: str
    attribution_version: int


@touchpoints.get("/{event_id}", response_model=StoredTouchpoint,
                 summary="A touchpoint as stored in ClickHouse (404 until it has arrived)",
                 responses={404: {"description": "Not stored yet, or another tenant's"}})
async def get_touchpoint(event_id: UUID, request: Request, caller: CallerRead):
    row = await run_in_threadpool(request.app.state.warehouse.get_touchpoint, caller.tenant_id, event_id)
    if row is None:
        raise HTTPException(404, "not stored yet (or not yours): touchpoints arrive within seconds of ingestion")
    return row
