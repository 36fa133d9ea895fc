"""Feedback against real Postgres: invitations after visits (one per visit, throttled, only with consent,
expiring), answers by link and at the kiosk (counted once), cases with business-hour SLAs and their
states, NPS reads, and following identity's merges, splits and erasures."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from services.feedback import clock, handlers
from services.feedback.app import create_app as create_feedback
from services.feedback.settings import FeedbackSettings
from shared.auth import Role
from shared.bus.consumer import Delivery
from shared.events import CustomerConsentChanged, CustomerErased, CustomerMerged, CustomerSplit, from_document, utcnow
from shared.events.customers import (
    CustomerConsentChangedPayload, CustomerErasedPayload, CustomerMergedPayload, CustomerSplitPayload,
)
from tests.integration.conftest import settings_for
from tests.integration.helpers import start_until_it_waits_on_a_row
from tests.integration.loyalty_setup import DEMO, envelope, key, ok, sql

NOW = datetime.now(UTC)


@pytest.fixture
def feedback(service_env):
    with TestClient(create_feedback(settings_for(FeedbackSettings, service_env, clock_interval_s=3600))) as client:
        yield client


def visit(customer_id, *, appointment_id=None, days_ago: float = 0, store_id="fb-1", channels=("phone",),
          type_="booking.completed", event_id=None):
    at = NOW - timedelta(days=days_ago)
    identifiers = [{"type": {"phone": "phone", "wechat": "wechat_openid", "email": "email"}.get(c, c),
                    "value": f"tok:{c}-{customer_id}"} for c in channels]
    payload = ({"appointment_id": appointment_id or str(uuid.uuid4()), "service_id": "full-groom",
                "starts_at": at.isoformat(), "ends_at": at.isoformat(), "local_start": at.isoformat(),
                "amount_minor": 20000, "services_performed": ["full-groom"], "performed_by": "g1"}
               if type_ == "booking.completed" else {"order_id": f"o-{uuid.uuid4().hex[:8]}", "amount_minor": 900})
    return from_document({"event_id": str(event_id or uuid.uuid4()), "type": type_, "occurred_at": at.isoformat(),
                          "recorded_at": at.isoformat(), "source": "booking", "channel": "pos", "store_id": store_id,
                          "tenant_id": "demo", "customer_id": str(customer_id), "identifiers": identifiers,
                          "payload": payload})


def complaint(customer_id, severity="high", store_id="fb-1"):
    return from_document({"event_id": str(uuid.uuid4()), "type": "complaint.filed", "occurred_at": NOW.isoformat(),
                          "recorded_at": NOW.isoformat(), "source": "pos", "channel": "phone", "store_id": store_id,
                          "tenant_id": "demo", "customer_id": str(customer_id),
                          "identifiers": [{"type": "phone", "value": "tok:x"}],
                          "payload": {"category": "injury", "severity": severity, "comment": "nicked ear"}})


def consent(customer_id, purpose="marketing_sms", granted=True):
    return CustomerConsentChanged(**envelope(customer_id), payload=CustomerConsentChangedPayload(
        purpose=purpose, granted=granted, source="app", effective_at=utcnow()))


def deliver(client, *events) -> None:
    deliveries = [Delivery(e, "t", 0, i, {}) for i, e in enumerate(events)]
    if events[0].topic_kind == "touchpoint":
        handlers.apply_touchpoints(deliveries, db=client.app.state.db)
    else:
        handlers.apply_customer_changes(deliveries, db=client.app.state.db, settings=client.app.state.settings)


def tick(client, after=timedelta(hours=3)):
    return clock.tick(client.app.state.db, utcnow() + after)


def sent(client, customer_id) -> list[dict]:
    rows = sql(client, "select body from feedback.outbox where event_type = 'feedback.survey_sent' and msg_key = %s "
                       "order by id", str(customer_id).encode())
    return [orjson.loads(bytes(b))["payload"] for (b,) in rows]


def invitations(client, customer_id) -> list[tuple]:
    return sql(client, "select status, skip_reason, channel from feedback.invitations where customer_id = %s "
                       "order by created_at", customer_id)


def test_one_invitation_per_visit_sent_after_the_delay_on_a_consented_channel(feedback):
    cid, appointment = uuid.uuid4(), str(uuid.uuid4())
    deliver(feedback, consent(cid, "marketing_sms"), consent(cid, "marketing_wechat"))
    first = visit(cid, appointment_id=appointment, channels=("phone", "wechat"))
    deliver(feedback, first, first, visit(cid, appointment_id=appointment, channels=("phone",)))
    assert tick(feedback, timedelta(0))["invitations_sent"] == 0  # the delay (2 hours) has not passed
    tick(feedback)
    assert invitations(feedback, cid) == [("sent", None, "wechat")]  # wechat first among the consented
    (message,) = sent(feedback, cid)
    assert message["channel"] == "wechat" and message["language"] == "zh" and len(message["token"]) >= 20
    page = ok(feedback.get(f"/v1/surveys/{message['token']}", params={"lang": "en"}))
    assert page["questions"][0] == {"id": "nps", "kind": "nps", "step": None, "required": True, "min": 0,
                                    "max": 10, "text": "How likely are you to recommend us to a friend?"}


def test_no_invitation_without_consent_and_at_most_one_per_30_days(feedback):
    silent, busy = uuid.uuid4(), uuid.uuid4()
    deliver(feedback, consent(busy), consent(silent, granted=False))
    deliver(feedback, visit(silent), visit(busy, days_ago=1), visit(busy))
    tick(feedback)
    assert invitations(feedback, silent) == [("skipped", "no_consented_channel", None)]
    assert sorted(invitations(feedback, busy)) == [("sent", None, "sms"), ("skipped", "throttled", None)]
    purchase = visit(busy, type_="purchase.completed")
    deliver(feedback, purchase)
    assert len(invitations(feedback, busy)) == 2  # POS purchases invite only when the template says so
    template = ok(feedback.get("/v1/survey-template", headers=DEMO))
    ok(feedback.put("/v1/survey-template", headers=DEMO,
                    json={**template, "triggers": ["booking.completed", "purchase.completed"]}))
    try:
        shopper = uuid.uuid4()
        deliver(feedback, visit(shopper, type_="purchase.completed"))
        assert invitations(feedback, shopper) == [("scheduled", None, None)]
    finally:
        ok(feedback.put("/v1/survey-template", headers=DEMO, json=template))


def test_a_consent_that_arrives_after_the_visit_is_waited_for_a_few_minutes(feedback):
    late, never = uuid.uuid4(), uuid.uuid4()
    deliver(feedback, visit(late), visit(never))  # due two hours after the visit
    tick(feedback, timedelta(hours=2, minutes=1))
    assert invitations(feedback, late) == [("scheduled", None, None)]  # not skipped: consents may lag
    deliver(feedback, consent(late))
    tick(feedback, timedelta(hours=2, minutes=2))
    assert invitations(feedback, late) == [("sent", None, "sms")]
    assert invitations(feedback, never) == [("scheduled", None, None)]
    tick(feedback, timedelta(hours=2, minutes=11))
    assert invitations(feedback, never) == [("skipped", "no_consented_channel", None)]


def test_an_answer_counts_once_and_bad_answers_are_refused_with_the_reason(feedback):
    cid = uuid.uuid4()
    deliver(feedback, consent(cid))
    deliver(feedback, visit(cid))
    tick(feedback)
    token = sent(feedback, cid)[0]["token"]
    answers = {"nps": 10, "csat": 5, "reception": 5}
    assert feedback.post(f"/v1/surveys/{token}/responses", json={"answers": {"nps": 11}}).status_code == 422
    unknown_q = feedback.post(f"/v1/surveys/{token}/responses", json={"answers": {"nps": 9, "vibe": 2}})
    assert unknown_q.status_code == 422 and "vibe" in unknown_q.json()["detail"]
    first = ok(feedback.post(f"/v1/surveys/{token}/responses", json={"answers": answers}), 201)
    again = ok(feedback.post(f"/v1/surveys/{token}/responses", json={"answers": answers}), 201)
    assert again["response_id"] == first["response_id"]
    other = feedback.post(f"/v1/surveys/{token}/responses", json={"answers": {"nps": 2}})
    assert other.status_code == 409 and "already answered" in other.json()["detail"]
    assert feedback.get("/v1/surveys/not-a-token").status_code == 404
    assert sql(feedback, "select count(*) from feedback.responses where customer_id = %s", cid) == [(1,)]


def test_an_unanswered_link_expires(feedback):
    cid = uuid.uuid4()
    deliver(feedback, consent(cid))
    deliver(feedback, visit(cid))
    tick(feedback)
    token = sent(feedback, cid)[0]["token"]
    tick(feedback, timedelta(days=8))
    gone = feedback.post(f"/v1/surveys/{token}/responses", json={"answers": {"nps": 9}})
    assert gone.status_code == 410 and "expired" in gone.json()["detail"]


def test_kiosk_answers_are_idempotent_and_a_low_one_opens_a_case(feedback):
    body = {"source": "kiosk", "store_id": "fb-kiosk", "staff_id": "g7", "service_id": "bath",
            "answers": {"nps": 5, "waiting_time": 1}, "response_id": str(uuid.uuid4())}
    ok(feedback.post("/v1/responses", headers=DEMO, json=body), 201)
    ok(feedback.post("/v1/responses", headers=DEMO, json=body), 201)
    changed = feedback.post("/v1/responses", headers=DEMO, json={**body, "answers": {"nps": 9}})
    assert changed.status_code == 409
    assert feedback.post("/v1/responses", json=body).status_code == 401
    cases = ok(feedback.get("/v1/cases", headers=DEMO, params={"store_id": "fb-kiosk"}))["items"]
    assert [(c["reason"], c["priority"], c["state"], c["owner"]) for c in cases] == [
        ("detractor", "medium", "open", "manager:fb-kiosk")]
    assert ok(feedback.get("/v1/nps", headers=DEMO, params={"store_id": "fb-kiosk"}))["responses"] == 1


def test_a_kiosks_queued_answers_are_stored_once_each_and_a_bad_one_holds_back_none(feedback):
    def entry(nps, **extra):
        return {"source": "kiosk", "store_id": "fb-sync", "service_id": "bath", "answers": {"nps": nps},
                "response_id": str(uuid.uuid4()), **extra}

    queued = [entry(9), entry(3), entry(11), entry(10)]
    first = ok(feedback.post("/v1/responses/batch", headers=DEMO, json={"responses": queued}))
    assert (first["stored"], first["rejected"]) == (3, 1)
    assert [r["status"] for r in first["results"]] == ["stored", "stored", "rejected", "stored"]
    assert first["results"][2]["reason"] == "question nps: a score from 0 to 10, not 11"
    again = ok(feedback.post("/v1/responses/batch", headers=DEMO, json={"responses": queued}))  # the kiosk retries
    assert (again["stored"], again["rejected"]) == (3, 1)
    assert [r["response_id"] for r in again["results"]] == [r["response_id"] for r in first["results"]]
    changed = ok(feedback.post("/v1/responses/batch", headers=DEMO,
                               json={"responses": [{**queued[0], "answers": {"nps": 0}}]}))
    assert changed["results"][0]["status"] == "rejected" and "other answers" in changed["results"][0]["reason"]
    assert ok(feedback.get("/v1/nps", headers=DEMO, params={"store_id": "fb-sync"}))["responses"] == 3
    assert len(ok(feedback.get("/v1/cases", headers=DEMO, params={"store_id": "fb-sync"}))["items"]) == 1, \
        "the 3 opened one case, its retry none"
    assert feedback.post("/v1/responses/batch", headers=DEMO, json={"responses": []}).status_code == 422
    no_id = {k: v for k, v in entry(9).items() if k != "response_id"}
    assert feedback.post("/v1/responses/batch", headers=DEMO, json={"responses": [no_id]}).status_code == 422
    too_many = {"responses": [entry(9) for _ in range(501)]}
    assert feedback.post("/v1/responses/batch", headers=DEMO, json=too_many).status_code == 422


def test_case_states_move_one_step_and_resolving_needs_a_cause(feedback):
    cid = uuid.uuid4()
    ok(feedback.put("/v1/stores/fb-case/hours", headers=DEMO, json={
        "timezone": "Australia/Sydney", "manager": "mgr-lee", "hours": {d: [{"start": "08:00", "end": "20:00"}]
                                                                      for d in ("mon", "tue", "wed", "thu", "fri")}}))
    deliver(feedback, complaint(cid, "high", store_id="fb-case"))
    (case,) = ok(feedback.get("/v1/cases", headers=DEMO, params={"store_id": "fb-case"}))["items"]
    assert (case["priority"], case["owner"], case["reason"]) == ("high", "mgr-lee", "complaint:injury")
    path = f"/v1/cases/{case['case_id']}"
    skip = feedback.patch(path, headers=DEMO, json={"state": "resolved"})
    assert skip.status_code == 422 and "open to in_progress" in skip.json()["detail"]
    ok(feedback.patch(path, headers=DEMO, json={"state": "in_progress", "note": "called the owner"}))
    no_cause = feedback.patch(path, headers=DEMO, json={"state": "resolved"})
    assert no_cause.status_code == 422 and no_cause.json()["missing"] == ["root_cause", "service_step"]
    done = ok(feedback.patch(path, headers=DEMO, json={"state": "resolved", "root_cause": "staff_training",
                                                       "service_step": "service_quality"}))
    assert done["follow_up_invitation_id"] and done["first_response_at"]
    assert feedback.patch(path, headers=key(Role.marketing), json={"state": "closed"}).status_code == 403
    assert ok(feedback.patch(path, headers=DEMO, json={"state": "closed"}))["state"] == "closed"
    assert feedback.patch(path, headers=DEMO, json={"state": "open"}).status_code == 422


def test_missed_deadlines_are_flagged_once_and_listed_as_breached(feedback):
    cid = uuid.uuid4()
    deliver(feedback, complaint(cid, "medium", store_id="fb-sla"))
    assert ok(feedback.get("/v1/cases", headers=DEMO, params={"store_id": "fb-sla", "breached": True}))["items"] == []
    tick(feedback, timedelta(days=10))
    tick(feedback, timedelta(days=10))
    breaches = sql(feedback, "select body from feedback.outbox where event_type = 'feedback.case_sla_breached' "
                             "and msg_key = %s", str(cid).encode())
    assert sorted(orjson.loads(bytes(b))["payload"]["sla"] for (b,) in breaches) == ["first_response", "resolution"]
    listed = ok(feedback.get("/v1/cases", headers=DEMO, params={"store_id": "fb-sla", "breached": True}))["items"]
    assert len(listed) == 1 and listed[0]["first_response_breached"]


def test_nps_per_store_staff_and_service_and_the_steps_behind_low_scores(feedback):
    store = f"fb-nps-{uuid.uuid4().hex[:6]}"
    for score, staff, waiting in ((10, "a", 5), (9, "a", 4), (8, "b", 4), (3, "b", 1), (6, "b", 2)):
        ok(feedback.post("/v1/responses", headers=DEMO, json={
            "source": "staff", "store_id": store, "staff_id": staff, "service_id": "wash",
            "answers": {"nps": score, "waiting_time": waiting, "reception": 4}}), 201)
    whole = ok(feedback.get("/v1/nps", headers=DEMO, params={"store_id": store}))
    assert (whole["promoters"], whole["passives"], whole["detractors"], whole["nps"]) == (2, 1, 2, 0.0)
    staff_b = ok(feedback.get("/v1/nps", headers=DEMO, params={"store_id": store, "staff_id": "b"}))
    assert staff_b["nps"] == -66.7
    steps = ok(feedback.get("/v1/nps/steps", headers=DEMO, params={"store_id": store}))
    assert steps["low_answers"] == 2
    assert steps["steps"][0] == {"step": "waiting_time", "ratings": 5, "average": 3.2, "ratings_in_low_answers": 2,
                                 "average_in_low_answers": 1.5, "rated_low_in_low_answers": 2}
    later = (NOW + timedelta(days=1)).isoformat()
    assert ok(feedback.get("/v1/nps", headers=DEMO, params={"store_id": store, "from": later,
                                                            "to": (NOW + timedelta(days=2)).isoformat()}))["nps"] is None
    assert feedback.get("/v1/nps", headers=DEMO, params={"from": later, "to": NOW.isoformat()}).status_code == 422


def test_merges_splits_and_erasure_move_or_remove_what_feedback_holds(feedback):
    survivor, loser, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    deliver(feedback, consent(loser))
    moving = visit(loser)
    deliver(feedback, moving)
    deliver(feedback, CustomerMerged(**envelope(survivor), payload=CustomerMergedPayload(
        merged_customer_ids=(loser,), rule="shared_strong_identifier")))
    tick(feedback)
    assert invitations(feedback, survivor) == [("sent", None, "sms")]  # the loser's consent came along
    token = sent(feedback, survivor)[0]["token"]
    ok(feedback.post(f"/v1/surveys/{token}/responses", json={"answers": {"nps": 2, "comment": "Rude, ask for Wang"}}),
       201)
    deliver(feedback, CustomerSplit(**envelope(survivor), payload=CustomerSplitPayload(
        new_customer_id=new, moved_identifier_types=("phone",), moved_event_ids=(moving.event_id,),
        decision_id=uuid.uuid4())))
    assert sql(feedback, "select count(*) from feedback.responses where customer_id = %s", new) == [(1,)]
    assert sql(feedback, "select count(*) from feedback.cases where customer_id = %s", new) == [(1,)]
    deliver(feedback, CustomerErased(**envelope(new), payload=CustomerErasedPayload(
        erasure_request_id=uuid.uuid4(), customer_ids=(new,))))
    rows = sql(feedback, "select comment, answers from feedback.responses where invitation_id in "
                         "(select invitation_id from feedback.invitations where source_event_id = %s)",
               moving.event_id)
    assert rows == [(None, {"nps": 2})]
    assert sql(feedback, "select count(*) from feedback.cases where customer_id = %s", new) == [(0,)]
    deliver(feedback, visit(new))  # resolved before the erasure, delivered after: no invitation
    assert invitations(feedback, new) == []


def test_batches_take_a_customers_channel_rows_in_one_order_so_they_never_deadlock(feedback):
    """Batches from two partitions (merged customers) insert the same channel rows: unordered, each could
    hold a row the other waits for. Here another transaction holds the lowest row; the batch must wait for
    it before taking any other, so that transaction can still take the highest one."""
    customer = uuid.uuid4()
    event = visit(customer, channels=("phone", "wechat", "email"))
    keys = sorted({handlers.IDENTIFIER_CHANNEL[i.type] for i in event.identifiers})
    with feedback.app.state.db.transaction() as cur:
        cur.execute("insert into customer_channels values (%s, %s)", (customer, keys[0]))
        worker, failures = start_until_it_waits_on_a_row(cur, lambda: deliver(feedback, event))
        cur.execute("insert into customer_channels values (%s, %s)", (customer, keys[-1]))
    worker.join(30)
    assert not failures, failures
    assert sorted(r[0] for r in sql(feedback, "select channel from customer_channels where customer_id = %s",
                                    customer)) == keys
