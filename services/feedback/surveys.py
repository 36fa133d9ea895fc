"""Survey invitations and responses. A visit schedules one invitation (delay after the visit); the clock
sends it when due — unless the customer was asked recently or has no channel they consented to — as
`feedback.survey_sent` carrying the link token. The link shows the questions and takes one answer;
kiosks and staff enter answers too. A low answer opens a case; a case's follow-up answer closes the loop."""
from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from uuid import UUID

import orjson

from services.feedback import cases, nps, templates
from services.feedback.events import announce, envelope
from shared.db import savepoint
from shared.errors import Conflict, DomainError, Gone, Invalid, NotFound
from shared.events import Touchpoint
from shared.events.feedback import SurveyAnswered, SurveyAnsweredPayload, SurveySent, SurveySentPayload

INVITATION_COLUMNS = ("invitation_id, tenant_id, customer_id, visit_ref, store_id, staff_id, service_id, "
                      "appointment_id, case_id, status, send_at, sent_at, expires_at, channel, language")
VISIT_FIELDS = {"booking.completed": "appointment_id", "purchase.completed": "order_id"}
# Consents and channels reach feedback on the profile topic, visits on the touchpoint topic: a consent
# given just before a visit can arrive after it. So a due invitation with no consented channel is
# retried for a while before it is skipped.
CONSENT_GRACE = timedelta(minutes=10)
CONSENT_RETRY = timedelta(seconds=30)


def token_hash(token: str) -> bytes:
    """Only a hash is stored: the database alone cannot answer anyone's survey."""
    return hashlib.sha256(token.encode()).digest()


def schedule(cur, template: templates.Template, event: Touchpoint, customer_id: UUID) -> None:
    """One invitation per visit (a redelivered or repeated visit event schedules nothing more)."""
    field = VISIT_FIELDS[event.type]
    kind = "appointment" if field == "appointment_id" else "order"
    payload = event.payload
    cur.execute(
        "insert into invitations (invitation_id, tenant_id, customer_id, visit_ref, source_event_id, store_id, "
        "staff_id, service_id, appointment_id, status, send_at, language) values "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, 'scheduled', %s, %s) on conflict (tenant_id, visit_ref) do nothing",
        (uuid.uuid4(), event.tenant_id, customer_id, f"{kind}:{getattr(payload, field)}", event.event_id,
         event.store_id, getattr(payload, "performed_by", None) or getattr(payload, "staff_id", None),
         getattr(payload, "service_id", None), getattr(payload, "appointment_id", None),
         event.occurred_at + timedelta(minutes=template.delay_minutes), template.language))


def schedule_follow_up(cur, case: dict, now: datetime) -> UUID:
    invitation_id = uuid.uuid4()
    cur.execute(
        "insert into invitations (invitation_id, tenant_id, customer_id, visit_ref, store_id, case_id, status, "
        "send_at) values (%s, %s, %s, %s, %s, %s, 'scheduled', %s) on conflict (tenant_id, visit_ref) do update "
        "set status = 'scheduled', send_at = excluded.send_at returning invitation_id",
        (invitation_id, case["tenant_id"], case["customer_id"], f"case:{case['case_id']}:{now.isoformat()}",
         case["store_id"], case["case_id"], now))
    return cur.fetchone()[0]


def send_due(cur, now: datetime, limit: int = 200) -> int:
    cur.execute(f"select {INVITATION_COLUMNS} from invitations where status = 'scheduled' and send_at <= %s "
                "and (retry_at is null or retry_at <= %s) order by send_at limit %s for update skip locked",
                (now, now, limit))
    due = [dict(zip(INVITATION_COLUMNS.split(", "), row)) for row in cur.fetchall()]
    for invitation in due:
        template = templates.load(cur, invitation["tenant_id"])
        skip, channel = _skip_reason(cur, template, invitation, now)
        if skip == "no_consented_channel" and now < invitation["send_at"] + CONSENT_GRACE:
            cur.execute("update invitations set retry_at = %s where invitation_id = %s",
                        (now + CONSENT_RETRY, invitation["invitation_id"]))
            continue
        if skip:
            cur.execute("update invitations set status = 'skipped', skip_reason = %s where invitation_id = %s",
                        (skip, invitation["invitation_id"]))
            continue
        token = secrets.token_urlsafe(18)
        expires_at = now + timedelta(days=template.expires_days)
        cur.execute("update invitations set status = 'sent', sent_at = %s, expires_at = %s, channel = %s, "
                    "language = %s, token_hash = %s where invitation_id = %s",
                    (now, expires_at, channel, template.language, token_hash(token), invitation["invitation_id"]))
        announce(cur, invitation["customer_id"], SurveySent(**envelope(invitation["tenant_id"],
                                                                       invitation["customer_id"], now),
                                                            payload=SurveySentPayload(
            invitation_id=invitation["invitation_id"], token=token, channel=channel, language=template.language,
            store_id=invitation["store_id"], expires_at=expires_at, case_id=invitation["case_id"])))
    return len(due)


def _skip_reason(cur, template, invitation: dict, now: datetime) -> tuple:
    """(reason, None) to skip, or (None, channel) to send on."""
    cid = invitation["customer_id"]
    if cid is None:
        return ("erased", None)
    if invitation["case_id"] is None and template.throttle_days:
        cur.execute("select exists (select 1 from invitations where customer_id = %s and sent_at > %s "
                    "and case_id is null)", (cid, now - timedelta(days=template.throttle_days)))
        if cur.fetchone()[0]:
            return ("throttled", None)
    cur.execute("select c.channel from customer_channels c join consents k on k.customer_id = c.customer_id "
                "and k.purpose = case c.channel when 'wechat' then 'marketing_wechat' when 'sms' then "
                "'marketing_sms' else 'marketing_email' end and k.granted where c.customer_id = %s", (cid,))
    allowed = {r[0] for r in cur.fetchall()}
    channel = next((c for c in template.channels if c in allowed), None)
    return (None, channel) if channel else ("no_consented_channel", None)


def expire(cur, now: datetime) -> int:
    cur.execute("update invitations set status = 'expired' where status = 'sent' and expires_at <= %s", (now,))
    return cur.rowcount


def _by_token(cur, token: str, now: datetime, lock: bool = False) -> dict:
    cur.execute(f"select {INVITATION_COLUMNS} from invitations where token_hash = %s" + (" for update" if lock else ""),
                (token_hash(token),))
    row = cur.fetchone()
    if row is None:
        raise NotFound("unknown survey link")
    invitation = dict(zip(INVITATION_COLUMNS.split(", "), row))
    if invitation["status"] == "expired" or (invitation["status"] == "sent" and invitation["expires_at"] <= now):
        raise Gone(f"this survey link expired at {invitation['expires_at'].isoformat()}")
    return invitation


def questions(cur, token: str, language: str | None, now: datetime) -> dict:
    invitation = _by_token(cur, token, now)
    template = templates.load(cur, invitation["tenant_id"])
    lang = language or invitation["language"]
    return {"store_id": invitation["store_id"], "language": lang, "expires_at": invitation["expires_at"],
            "answered": invitation["status"] == "answered", "questions": template.public(lang)}


def answer_link(cur, token: str, answers: dict, now: datetime) -> dict:
    invitation = _by_token(cur, token, now, lock=True)
    if invitation["status"] == "answered":
        cur.execute(f"select {RESPONSE_COLUMNS} from responses where invitation_id = %s",
                    (invitation["invitation_id"],))
        existing = _response(cur.fetchone())
        if existing["answers"] != answers:
            raise Conflict("this survey was already answered", response_id=existing["response_id"])
        return existing  # the same answer again (a double tap, a retry): counted once
    cur.execute("update invitations set status = 'answered' where invitation_id = %s", (invitation["invitation_id"],))
    return record(cur, invitation["tenant_id"], answers, now, source="link", invitation=invitation)


RESPONSE_COLUMNS = ("response_id, tenant_id, invitation_id, customer_id, source, store_id, staff_id, service_id, "
                    "appointment_id, case_id, nps, csat, step_ratings, comment, answers, answered_at")


def _response(row) -> dict:
    found = dict(zip(RESPONSE_COLUMNS.split(", "), row))
    found.pop("tenant_id")
    return found


def record(cur, tenant_id: str, answers: dict, now: datetime, *, source: str, invitation: dict | None = None,
           visit: dict | None = None, response_id: UUID | None = None, entered_by: str | None = None) -> dict:
    """Store an answer, announce it, and open a case if it is low (or link it to the case it follows up)."""
    template = templates.load(cur, tenant_id)
    scores = template.read(answers)
    visit = invitation or visit or {}
    response_id = response_id or uuid.uuid4()
    cur.execute(
        f"insert into responses (response_id, tenant_id, invitation_id, customer_id, source, store_id, staff_id, "
        f"service_id, appointment_id, case_id, nps, csat, step_ratings, comment, answers, answered_at, entered_by) "
        f"values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        f"on conflict (response_id) do nothing returning {RESPONSE_COLUMNS}",
        (response_id, tenant_id, visit.get("invitation_id"), visit.get("customer_id"), source, visit.get("store_id"),
         visit.get("staff_id"), visit.get("service_id"), visit.get("appointment_id"), visit.get("case_id"),
         scores["nps"], scores["csat"], orjson.dumps(scores["step_ratings"]).decode(), scores["comment"],
         orjson.dumps(answers).decode(), now, entered_by))
    row = cur.fetchone()
    if row is None:  # a retried kiosk entry with the same response id
        cur.execute(f"select {RESPONSE_COLUMNS} from responses where response_id = %s and tenant_id = %s",
                    (response_id, tenant_id))
        existing = cur.fetchone()
        if existing is None or _response(existing)["answers"] != answers:
            raise Conflict(f"response {response_id} exists with other answers")
        return _response(existing)
    response = _response(row)
    announce(cur, response["customer_id"] or response_id, SurveyAnswered(
        **envelope(tenant_id, response["customer_id"], now), payload=SurveyAnsweredPayload(
            response_id=response_id, invitation_id=response["invitation_id"], source=source,
            store_id=response["store_id"], staff_id=response["staff_id"], service_id=response["service_id"],
            appointment_id=response["appointment_id"], nps=scores["nps"], csat=scores["csat"],
            step_ratings=scores["step_ratings"], has_comment=scores["comment"] is not None,
            case_id=response["case_id"])))
    if response["case_id"]:
        cases.link_follow_up(cur, response["case_id"], response_id, scores["nps"])
    elif nps.is_low(scores["nps"], scores["csat"]):
        cases.open_for_response(cur, tenant_id, response, scores, now)
    return response


def record_entered_many(cur, tenant_id: str, bodies: list, entered_by: str, now: datetime) -> dict:
    """A kiosk's queued answers in one transaction. Each is checked and stored on its own (once per
    response id), so a bad one is reported with its reason and holds back none of the others."""
    results = []
    for index, body in enumerate(bodies):
        try:
            with savepoint(cur):
                response = record_entered(cur, tenant_id, body, entered_by, now)
        except DomainError as exc:
            results.append({"index": index, "status": "rejected", "reason": exc.detail,
                            "response_id": body.response_id})
        else:
            results.append({"index": index, "status": "stored", "response_id": response["response_id"]})
    stored = sum(r["status"] == "stored" for r in results)
    return {"stored": stored, "rejected": len(results) - stored, "results": results}


def record_entered(cur, tenant_id: str, body, entered_by: str, now: datetime) -> dict:
    """A kiosk or staff-entered answer: no invitation, the visit described by the caller."""
    if body.source not in ("kiosk", "staff"):
        raise Invalid("source is kiosk or staff")
    visit = {"customer_id": body.customer_id, "store_id": body.store_id, "staff_id": body.staff_id,
             "service_id": body.service_id, "appointment_id": body.appointment_id}
    return record(cur, tenant_id, body.answers, now, source=body.source, visit=visit, response_id=body.response_id,
                  entered_by=entered_by)
