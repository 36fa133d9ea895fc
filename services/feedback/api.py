"""Feedback's routes: the survey template and store hours (setup), the survey link (public: the token
is the key), kiosk and staff answers, complaint cases, and NPS reads."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.feedback import cases, reads, surveys, templates
from services.feedback.business_hours import StoreHours
from services.feedback.templates import Template
from shared.auth import CallerAdmin, CallerAny, CallerBooking, CallerOps, CallerRead, CallerStaff
from shared.errors import Invalid
from shared.events.base import Slug, utcnow
from shared.http import Instant, in_transaction

setup = APIRouter(tags=["setup"])
links = APIRouter(prefix="/v1/surveys", tags=["surveys"])
responses = APIRouter(prefix="/v1/responses", tags=["surveys"])
case_routes = APIRouter(prefix="/v1/cases", tags=["cases"])
scores = APIRouter(prefix="/v1/nps", tags=["nps"])
LINK_ERRORS = {404: {"description": "Unknown link"}, 410: {"description": "The link expired"},
               409: {"description": "Already answered with other answers"},
               422: {"description": "An answer out of range or an unknown question"}}
Answers = Annotated[dict[Slug, Any], Field(max_length=20, description="{question id: score or comment text}")]


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answers: Answers


class EnteredAnswerIn(AnswerIn):
    source: Literal["kiosk", "staff"]
    store_id: Slug
    customer_id: UUID | None = Field(None, description="When the customer was looked up in the hub.")
    staff_id: Slug | None = None
    service_id: Slug | None = None
    appointment_id: Slug | None = None
    response_id: UUID | None = Field(None, description="Your id: a retried entry is stored once.")


class ComplaintIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store_id: Slug
    customer_id: UUID | None = None
    category: Literal["service_quality", "waiting_time", "staff", "price", "cleanliness", "injury", "damage", "other"]
    severity: Literal["low", "medium", "high"] = "medium"
    note: str | None = Field(None, max_length=2000)
    complaint_id: UUID | None = Field(None, description="Your id: a retried complaint opens one case.")


class CasePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["open", "in_progress", "resolved", "closed"] | None = None
    owner: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    priority: Literal["low", "medium", "high"] | None = None
    root_cause: Slug | None = Field(None, description="e.g. staff_training, equipment, scheduling, product.")
    service_step: Slug | None = Field(None, description="The service step that caused it (reception, result …).")
    note: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class Period(BaseModel):
    store_id: Slug | None = None
    staff_id: Slug | None = None
    service_id: Slug | None = None
    start: Instant | None = Field(None, alias="from")
    end: Instant | None = Field(None, alias="to")

    def bounds(self) -> tuple[datetime, datetime]:
        end = self.end or utcnow()
        start = self.start or end - timedelta(days=90)
        if start >= end:
            raise Invalid("`from` must be before `to`")
        return start, end

    def filters(self) -> dict:
        return {"store_id": self.store_id, "staff_id": self.staff_id, "service_id": self.service_id}


@setup.get("/v1/survey-template", summary="The tenant's survey (defaults until one is saved)")
async def get_template(request: Request, caller: CallerAny) -> Template:
    return await in_transaction(request, templates.load, caller.tenant_id)


@setup.put("/v1/survey-template", summary="Replace the survey: questions (8 at most, zh and en), dispatch rules")
async def put_template(body: Template, request: Request, caller: CallerAdmin) -> Template:
    await in_transaction(request, templates.save, caller.tenant_id, body)
    return body


@setup.get("/v1/stores/{store_id}/hours", summary="A store's business hours and case owner")
async def get_hours(store_id: Slug, request: Request, caller: CallerAny) -> StoreHours:
    return await in_transaction(request, cases.store_hours, caller.tenant_id, store_id)


@setup.put("/v1/stores/{store_id}/hours", summary="Set a store's zone, business hours, holidays and manager")
async def put_hours(store_id: Slug, body: StoreHours, request: Request, caller: CallerOps) -> StoreHours:
    return await in_transaction(request, cases.save_store_hours, caller.tenant_id, store_id, body)


@links.get("/{token}", responses=LINK_ERRORS, summary="The survey behind a link (no API key: the token is it)")
async def survey(token: Annotated[str, Field(max_length=64)], request: Request,
                 lang: Literal["zh", "en"] | None = None):
    return await in_transaction(request, surveys.questions, token, lang, utcnow())


@links.post("/{token}/responses", status_code=201, responses=LINK_ERRORS,
            summary="Answer a survey once (the same answer again is accepted and counted once)")
async def answer(token: Annotated[str, Field(max_length=64)], body: AnswerIn, request: Request):
    return await in_transaction(request, surveys.answer_link, token, body.answers, utcnow())


@responses.post("", status_code=201, responses={409: {"description": "The response id exists with other answers"},
                                                 422: {"description": "An answer out of range"}},
                summary="An answer entered at a kiosk or by staff")
async def enter_answer(body: EnteredAnswerIn, request: Request, caller: CallerBooking):
    return await in_transaction(request, surveys.record_entered, caller.tenant_id, body, caller.key_id, utcnow())


class QueuedAnswerIn(EnteredAnswerIn):
    response_id: UUID = Field(description="Your id, required here: a retried batch stores each answer once.")


class EnteredAnswersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    responses: list[QueuedAnswerIn] = Field(min_length=1, max_length=500)


class EnteredResult(BaseModel):
    index: int
    status: Literal["stored", "rejected"]
    response_id: UUID | None = None
    reason: str | None = None


class EnteredAnswersOut(BaseModel):
    stored: int
    rejected: int
    results: list[EnteredResult]


@responses.post("/batch", response_model=EnteredAnswersOut, summary="A kiosk's queued answers, up to 500 at once",
                description="Each answer is checked and stored on its own, once per response_id (a retried "
                            "batch stores nothing twice); a rejected one carries its reason and holds back none "
                            "of the others.")
async def enter_answers(body: EnteredAnswersIn, request: Request, caller: CallerBooking):
    return await in_transaction(request, surveys.record_entered_many, caller.tenant_id, body.responses,
                                caller.key_id, utcnow())


@case_routes.post("", status_code=201, summary="Open a case for a complaint taken by phone, at the desk …")
async def complain(body: ComplaintIn, request: Request, caller: CallerBooking):
    def run(cur):
        ref = f"complaint:{body.complaint_id}" if body.complaint_id else f"complaint:desk:{utcnow().isoformat()}"
        opened = cases.open_for_complaint(cur, caller.tenant_id, store_id=body.store_id, customer_id=body.customer_id,
                                          category=body.category, severity=body.severity, source_ref=ref,
                                          now=utcnow(), note=body.note)
        if opened is None:  # a retry of the same complaint
            cur.execute("select case_id from cases where tenant_id = %s and source_ref = %s", (caller.tenant_id, ref))
            opened = cases.get(cur, caller.tenant_id, cur.fetchone()[0])
        return opened

    return await in_transaction(request, run)


@case_routes.get("", summary="Cases, newest first, by store, state and SLA breach")
async def list_cases(request: Request, caller: CallerStaff, store_id: Slug | None = None,
                     state: Literal["open", "in_progress", "resolved", "closed"] | None = None,
                     breached: bool | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     before: Instant | None = Query(None, description="next_before of the previous page")):
    found = await in_transaction(request, cases.listing, caller.tenant_id, store_id=store_id, state=state,
                                 breached=breached, limit=limit, before=before, now=utcnow())
    # Rows of plain columns: orjson writes them directly (FastAPI's generic encoder was most of the time).
    return Response(orjson.dumps(found), media_type="application/json")


@case_routes.get("/{case_id}", responses={404: {"description": "Unknown case"}})
async def get_case(case_id: UUID, request: Request, caller: CallerStaff):
    return await in_transaction(request, cases.get, caller.tenant_id, case_id)


@case_routes.patch("/{case_id}", responses={404: {"description": "Unknown case"},
                                            422: {"description": "A state skipped, or resolving without a cause"}},
                   summary="Take up, resolve, close or reopen a case; reassign; add a note")
async def patch_case(case_id: UUID, body: CasePatch, request: Request, caller: CallerStaff):
    return await in_transaction(request, cases.update, caller.tenant_id, case_id, body, caller.key_id, utcnow())


@scores.get("", summary="NPS (promoters, passives, detractors, score) and CSAT for a store, staff or service")
async def nps(request: Request, caller: CallerRead, period: Annotated[Period, Query()]):
    start, end = period.bounds()
    return await in_transaction(request, reads.score, caller.tenant_id, period.filters(), start, end)


@scores.get("/steps", summary="Which service steps the low scores came from")
async def nps_steps(request: Request, caller: CallerRead, period: Annotated[Period, Query()]):
    start, end = period.bounds()
    return await in_transaction(request, reads.steps, caller.tenant_id, period.filters(), start, end)


ROUTERS = (setup, links, responses, case_routes, scores)
