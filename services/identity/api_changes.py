"""Identity's HTTP routes that change profiles: split, merge review, consent, erasure and the tenant's
identity policy. Every route is tenant-scoped by the caller's key and limited by its role."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import phonenumbers
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from services.identity import privacy, profiles, splits, store, suggestions
from services.identity.api import in_transaction, tenant_policy
from services.identity.errors import NotFound
from services.identity.policy import TenantPolicy
from shared.auth import CallerAdmin, CallerConsent, CallerOps, CallerRead
from shared.events.base import Identifier
from shared.events.customers import Purpose
from shared.http import Instant

changes = APIRouter(prefix="/v1/customers", tags=["customers"])
review = APIRouter(prefix="/v1/match-suggestions", tags=["merge review"])
erasures = APIRouter(prefix="/v1/erasure-requests", tags=["privacy"])
policy_routes = APIRouter(prefix="/v1/identity/policy", tags=["identity policy"])


class SplitRequest(BaseModel):
    identifiers: list[Identifier] = Field(min_length=1, max_length=100,
                                          description="Identifiers to move, as the customer holds them.")
    target_customer_id: UUID | None = Field(None, description="Move to this existing profile instead of a new one.")
    reason: str = Field("", max_length=500)


class SplitResult(BaseModel):
    customer_id: UUID
    new_customer_id: UUID
    decision_id: UUID
    moved_identifiers: int
    moved_events: int


@changes.post("/{customer_id}/split", response_model=SplitResult, status_code=201,
              summary="Move identifiers, and the touchpoints that carried them, to a new or named profile",
              responses={404: {"description": "Unknown customer"}, 410: {"description": "Erased"},
                         409: {"description": "The customer does not hold an identifier, or was merged"}})
async def split(customer_id: UUID, body: SplitRequest, request: Request, caller: CallerOps):
    def run(cur):
        policy = tenant_policy(cur, request, caller.tenant_id)
        return splits.split_customer(
            cur, request.app.state.vault, policy, caller.tenant_id, customer_id,
            [(i.type, i.value, i.scope) for i in body.identifiers], body.target_customer_id, body.reason,
            decided_by=f"key:{caller.key_id}")

    return await in_transaction(request, run)


class ConsentRequest(BaseModel):
    purpose: Purpose
    granted: bool
    source: str = Field("api", max_length=64, description="Where the customer said so: store, app, call centre …")
    evidence: str | None = Field(None, max_length=500, description="Form version, call reference …")
    effective_at: Instant | None = Field(None, description="When the customer said so (default: now).")


@changes.post("/{customer_id}/consents", status_code=201, summary="Record consent given or withdrawn",
              responses={404: {"description": "Unknown customer"}, 410: {"description": "Erased"}})
async def give_consent(customer_id: UUID, body: ConsentRequest, request: Request, caller: CallerConsent):
    cid = await in_transaction(request, privacy.record_consent, caller.tenant_id, customer_id, body.purpose,
                               body.granted, body.source, body.evidence, body.effective_at)
    return await in_transaction(request, _consents, cid)


def _consents(cur, customer_id: UUID) -> dict:
    return {"customer_id": customer_id, "current": profiles.current_consents(cur, customer_id),
            "history": profiles.consent_history(cur, customer_id)}


@changes.get("/{customer_id}/consents", summary="Current consent per purpose and the full history",
             responses={404: {"description": "Unknown customer"}, 410: {"description": "Erased"}})
async def get_consents(customer_id: UUID, request: Request, caller: CallerRead):
    def run(cur):
        return _consents(cur, privacy.active_customer(cur, caller.tenant_id, customer_id))

    return await in_transaction(request, run)


@changes.get("/{customer_id}/decisions", summary="Every merge, split and household decision about this customer",
             responses={404: {"description": "Unknown customer"}})
async def decisions(customer_id: UUID, request: Request, caller: CallerOps):
    def run(cur):
        found = store.canonical_id(cur, caller.tenant_id, customer_id)
        if found is None:
            raise NotFound("no such customer")
        cur.execute("select decision_id, kind, rule, customer_id, other_customer_ids, evidence, triggering_event_ids, "
                    "decided_by, decided_at from identity.decisions where tenant_id = %s and "
                    "(customer_id = %s or %s = any(other_customer_ids)) order by decided_at desc limit 200",
                    (caller.tenant_id, found[0], found[0]))
        keys = ("decision_id", "kind", "rule", "customer_id", "other_customer_ids", "evidence",
                "triggering_event_ids", "decided_by", "decided_at")
        return {"customer_id": found[0], "decisions": [dict(zip(keys, row)) for row in cur.fetchall()]}

    return await in_transaction(request, run)


class ErasureStatus(BaseModel):
    request_id: UUID
    customer_id: UUID
    customer_ids: list[UUID]
    requested_by: str
    requested_at: datetime
    status: str = Field(description="pending until every service confirmed, then completed")
    completed_at: datetime | None
    services: list[dict[str, Any]]


@changes.post("/{customer_id}/erasure", response_model=ErasureStatus, status_code=202,
              summary="Erase a customer everywhere; follow progress at /v1/erasure-requests/{id}",
              responses={404: {"description": "Unknown customer"}})
async def erase(customer_id: UUID, request: Request, caller: CallerAdmin):
    settings = request.app.state.settings

    def run(cur):
        request_id = privacy.request_erasure(cur, request.app.state.vault, caller.tenant_id, customer_id,
                                             f"key:{caller.key_id}", settings.erasure_services)
        return privacy.erasure_status(cur, caller.tenant_id, request_id)

    return await in_transaction(request, run)


@erasures.get("/{request_id}", response_model=ErasureStatus, summary="Each service's confirmation and completion",
              responses={404: {"description": "Unknown request"}})
async def erasure_status(request_id: UUID, request: Request, caller: CallerOps):
    found = await in_transaction(request, privacy.erasure_status, caller.tenant_id, request_id)
    if found is None:
        raise HTTPException(404, "no such erasure request")
    return found


class Suggestion(BaseModel):
    suggestion_id: UUID
    customer_ids: list[UUID]
    score: float
    reasons: list[str]
    fields: dict[str, float]
    created_at: datetime


@review.get("", response_model=list[Suggestion], summary="Open match suggestions, best first")
async def list_suggestions(request: Request, caller: CallerOps, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                           min_score: Annotated[float, Query(ge=0, le=1)] = 0):
    return await in_transaction(request, suggestions.list_open, caller.tenant_id, limit, min_score)


class Decision(BaseModel):
    suggestion_id: UUID
    status: str
    customer_id: UUID | None = Field(None, description="The surviving customer when accepted.")


@review.post("/{suggestion_id}/accept", response_model=Decision, summary="Merge the pair",
             responses={404: {"description": "Unknown suggestion"}, 409: {"description": "Already decided"}})
async def accept(suggestion_id: UUID, request: Request, caller: CallerOps):
    return await in_transaction(request, suggestions.decide, request.app.state.vault, caller.tenant_id,
                                suggestion_id, True, f"key:{caller.key_id}")


@review.post("/{suggestion_id}/reject", response_model=Decision, summary="Never suggest this pair again",
             responses={404: {"description": "Unknown suggestion"}, 409: {"description": "Already decided"}})
async def reject(suggestion_id: UUID, request: Request, caller: CallerOps):
    return await in_transaction(request, suggestions.decide, request.app.state.vault, caller.tenant_id,
                                suggestion_id, False, f"key:{caller.key_id}")


@policy_routes.get("", response_model=TenantPolicy, summary="This tenant's identity policy (defaults filled in)")
async def get_policy(request: Request, caller: CallerOps):
    return await in_transaction(request, tenant_policy, request, caller.tenant_id, fresh=True)


@policy_routes.put("", response_model=TenantPolicy, summary="Replace this tenant's identity policy")
async def put_policy(body: TenantPolicy, request: Request, caller: CallerAdmin):
    if body.default_region not in phonenumbers.SUPPORTED_REGIONS:  # else every phone number would be refused
        raise HTTPException(422, f"default_region {body.default_region!r} is not a region phone numbers know "
                                 "(ISO 3166 alpha-2, e.g. CN, GB, US)")
    def run(cur):
        store.save_policy(cur, caller.tenant_id, body)
        return tenant_policy(cur, request, caller.tenant_id, fresh=True)

    return await in_transaction(request, run)
