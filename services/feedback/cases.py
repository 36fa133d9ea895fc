"""Closed-loop complaint cases: opened by a detractor, a low CSAT or a complaint from any channel, owned
by the store's manager, with first-response and resolution deadlines counted in the store's business
hours. States move one step at a time (open → in_progress → resolved → closed; a resolved case may be
reopened); resolving needs a root cause and the service step at fault, and sends a follow-up survey."""
from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

import orjson

from services.feedback.business_hours import StoreHours
from services.feedback.events import announce, envelope
from shared.errors import Invalid, NotFound
from shared.events.base import utcnow
from shared.events.feedback import (
    CaseOpened, CaseOpenedPayload, CaseResolved, CaseResolvedPayload, CaseSlaBreached, CaseSlaBreachedPayload,
)

FIRST_RESPONSE_MINUTES, RESOLUTION_MINUTES = 60, 24 * 60
NEXT_STATES = {"open": {"in_progress"}, "in_progress": {"resolved"}, "resolved": {"closed", "in_progress"},
               "closed": set()}
COLUMNS = ("case_id, tenant_id, store_id, customer_id, reason, source_ref, response_id, priority, owner, state, "
           "opened_at, first_response_due, resolution_due, first_response_at, resolved_at, closed_at, "
           "first_response_breached, resolution_breached, root_cause, service_step, notes, "
           "follow_up_invitation_id, follow_up_response_id, follow_up_nps, updated_at")


LIST_COLUMNS = COLUMNS.replace(" notes,", "")


def view(row) -> dict:
    return dict(zip(COLUMNS.split(", "), row))


def store_hours(cur, tenant_id: str, store_id: str | None) -> StoreHours:
    cur.execute("select config from store_hours where tenant_id = %s and store_id = %s", (tenant_id, store_id))
    row = cur.fetchone()
    return StoreHours.model_validate(row[0]) if row else StoreHours()


def save_store_hours(cur, tenant_id: str, store_id: str, hours: StoreHours) -> StoreHours:
    hours.add(utcnow(), RESOLUTION_MINUTES)  # refuse (422) hours a case opened at the store could never be due in
    cur.execute("insert into store_hours (tenant_id, store_id, config) values (%s, %s, %s) on conflict "
                "(tenant_id, store_id) do update set config = excluded.config, updated_at = now()",
                (tenant_id, store_id, orjson.dumps(hours.model_dump(mode="json")).decode()))
    return hours


def open_case(cur, tenant_id: str, *, store_id: str | None, customer_id: UUID | None, reason: str,
              source_ref: str, priority: str, now: datetime, response_id: UUID | None = None,
              source_event_id: UUID | None = None, note: str | None = None) -> dict | None:
    """Open a case once per cause; None when that cause already opened one."""
    hours = store_hours(cur, tenant_id, store_id)
    notes = [{"at": now.isoformat(), "by": "system", "text": note}] if note else []
    cur.execute(
        f"insert into cases (case_id, tenant_id, store_id, customer_id, reason, source_ref, source_event_id, "
        f"response_id, priority, owner, state, opened_at, first_response_due, resolution_due, notes) values "
        f"(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'open', %s, %s, %s, %s) on conflict (tenant_id, source_ref) "
        f"do nothing returning {COLUMNS}",
        (uuid.uuid4(), tenant_id, store_id, customer_id, reason, source_ref, source_event_id, response_id, priority,
         hours.manager or f"manager:{store_id or 'chain'}", now, hours.add(now, FIRST_RESPONSE_MINUTES),
         hours.add(now, RESOLUTION_MINUTES), orjson.dumps(notes).decode()))
    row = cur.fetchone()
    if row is None:
        return None
    case = view(row)
    announce(cur, customer_id or case["case_id"], CaseOpened(**envelope(tenant_id, customer_id, now),
                                                             payload=CaseOpenedPayload(
        **_common(case), owner=case["owner"], first_response_due=case["first_response_due"],
        resolution_due=case["resolution_due"])))
    return case


def open_for_response(cur, tenant_id: str, response: dict, scores: dict, now: datetime) -> None:
    low_nps = scores["nps"] is not None and scores["nps"] <= 6
    very_low = (scores["nps"] is not None and scores["nps"] <= 3) or scores["csat"] == 1
    open_case(cur, tenant_id, store_id=response["store_id"], customer_id=response["customer_id"],
              reason="detractor" if low_nps else "low_csat", source_ref=f"response:{response['response_id']}",
              priority="high" if very_low else "medium", now=now, response_id=response["response_id"])


def open_for_complaint(cur, tenant_id: str, *, store_id, customer_id, category: str, severity: str,
                       source_ref: str, now: datetime, source_event_id=None, note: str | None = None) -> dict | None:
    return open_case(cur, tenant_id, store_id=store_id, customer_id=customer_id, reason=f"complaint:{category}",
                     source_ref=source_ref, priority=severity, now=now, source_event_id=source_event_id, note=note)


def get(cur, tenant_id: str, case_id: UUID, lock: bool = False) -> dict:
    cur.execute(f"select {COLUMNS} from cases where tenant_id = %s and case_id = %s" + (" for update" if lock else ""),
                (tenant_id, case_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown case {case_id}")
    return view(row)


def update(cur, tenant_id: str, case_id: UUID, patch, actor: str, now: datetime) -> dict:
    """Apply a PATCH: owner, priority, root cause, service step, a note, and at most one state step."""
    from services.feedback import surveys

    case = get(cur, tenant_id, case_id, lock=True)
    changes: dict = {}
    for field in ("owner", "priority", "root_cause", "service_step"):
        value = getattr(patch, field)
        if value is not None:
            changes[field] = value
    state = patch.state
    if state is not None and state != case["state"]:
        if state not in NEXT_STATES[case["state"]]:
            allowed = sorted(NEXT_STATES[case["state"]]) or ["nothing: the case is closed"]
            raise Invalid(f"a case goes from {case['state']} to {' or '.join(allowed)}, not {state}",
                          state=case["state"], allowed=sorted(NEXT_STATES[case["state"]]))
        changes["state"] = state
        if state == "in_progress" and case["first_response_at"] is None:
            changes["first_response_at"] = now
        if state == "resolved":
            missing = [f for f in ("root_cause", "service_step") if not (changes.get(f) or case[f])]
            if missing:
                raise Invalid(f"resolving a case needs {' and '.join(missing)}", missing=missing)
            changes["resolved_at"] = now
        if state == "closed":
            changes["closed_at"] = now
    if patch.note:
        changes["notes"] = orjson.dumps(case["notes"] + [{"at": now.isoformat(), "by": actor,
                                                          "text": patch.note}]).decode()
    if not changes:
        return case
    assignments = ", ".join(f"{name} = %s" for name in changes)
    cur.execute(f"update cases set {assignments}, updated_at = %s where case_id = %s returning {COLUMNS}",
                (*changes.values(), now, case_id))
    case = view(cur.fetchone())
    if changes.get("state") == "resolved":
        invitation_id = surveys.schedule_follow_up(cur, case, now)
        cur.execute("update cases set follow_up_invitation_id = %s where case_id = %s", (invitation_id, case_id))
        case["follow_up_invitation_id"] = invitation_id
        hours = store_hours(cur, tenant_id, case["store_id"])
        announce(cur, case["customer_id"] or case_id, CaseResolved(
            **envelope(tenant_id, case["customer_id"], now), payload=CaseResolvedPayload(
                **_common(case), root_cause=case["root_cause"], service_step=case["service_step"],
                resolved_in_business_minutes=hours.between(case["opened_at"], now))))
    return case


def link_follow_up(cur, case_id: UUID, response_id: UUID, nps: int | None) -> None:
    cur.execute("update cases set follow_up_response_id = %s, follow_up_nps = %s, updated_at = now() "
                "where case_id = %s", (response_id, nps, case_id))


def listing(cur, tenant_id: str, *, store_id: str | None, state: str | None, breached: bool | None,
            limit: int, before: datetime | None, now: datetime) -> dict:
    breach = ("(first_response_breached or resolution_breached or (state = 'open' and first_response_due <= %(now)s) "
              "or (state in ('open', 'in_progress') and resolution_due <= %(now)s))")
    where = ["tenant_id = %(tenant)s"]
    if store_id:
        where.append("store_id = %(store)s")
    if state:
        where.append("state = %(state)s")
    if breached is not None:
        where.append(breach if breached else f"not {breach}")
    if before:
        where.append("opened_at < %(before)s")
    # Notes can be long: the list leaves them out (GET /v1/cases/{id} has them).
    cur.execute(f"select {LIST_COLUMNS} from cases where {' and '.join(where)} order by opened_at desc "
                "limit %(limit)s", {"tenant": tenant_id, "store": store_id, "state": state, "now": now,
                                    "before": before, "limit": limit})
    items = [dict(zip(LIST_COLUMNS.split(", "), r)) for r in cur.fetchall()]
    return {"items": items, "next_before": items[-1]["opened_at"] if len(items) == limit else None}


def flag_breaches(cur, now: datetime, limit: int = 200) -> int:
    """Announce each deadline missed, once: first response while still open, resolution until resolved."""
    done = 0
    for sla, due, flag, states in (("first_response", "first_response_due", "first_response_breached", ("open",)),
                                   ("resolution", "resolution_due", "resolution_breached", ("open", "in_progress"))):
        cur.execute(f"update cases set {flag} = true where case_id in (select case_id from cases where "
                    f"state = any(%s) and not {flag} and {due} <= %s limit %s for update skip locked) "
                    f"returning {COLUMNS}", (list(states), now, limit))
        for case in map(view, cur.fetchall()):
            announce(cur, case["customer_id"] or case["case_id"], CaseSlaBreached(
                **envelope(case["tenant_id"], case["customer_id"], now), payload=CaseSlaBreachedPayload(
                    **_common(case), sla=sla, due_at=case[due])))
            done += 1
    return done


def _common(case: dict) -> dict:
    return {"case_id": case["case_id"], "store_id": case["store_id"], "priority": case["priority"],
            "state": case["state"], "reason": case["reason"]}
