"""The closed loop over the real broker and Postgres: a walk-in completed at the booking POS is resolved
by identity, feedback invites the customer (who consented to SMS), the detractor answer opens a case,
the case is taken up and resolved, the follow-up survey goes out and its answer is linked to the case —
and the hub's 360 shows the last NPS."""
from __future__ import annotations

import orjson
from fastapi.testclient import TestClient

from services.booking.app import create_app as create_booking
from services.booking.settings import BookingSettings
from services.feedback import clock
from services.feedback.app import create_app as create_feedback
from services.feedback.settings import FeedbackSettings
from services.identity.app import create_app as create_identity
from services.identity.settings import IdentitySettings
from tests.integration.booking_setup import customer, setup_store
from tests.integration.conftest import settings_for
from tests.integration.helpers import touchpoint_doc, wait_until
from tests.integration.loyalty_setup import DEMO, ok, sql

PHONE = "+8613912347700"
# Each wait spans several hops (outbox relay, broker, consumer groups joining); beside the fault drill on
# the other test worker they took over a minute in CI. A liveness bound, not a speed target.
HOPS_S = 180


def survey_links(feedback) -> list[dict]:
    rows = sql(feedback, "select body from feedback.outbox where event_type = 'feedback.survey_sent' order by id")
    return [orjson.loads(bytes(b))["payload"] for (b,) in rows]


def test_from_a_completed_visit_to_a_resolved_case_and_its_follow_up(service_env):
    with TestClient(create_identity(settings_for(IdentitySettings, service_env))) as identity, \
            TestClient(create_booking(settings_for(BookingSettings, service_env, clock_interval_s=3600))) as booking, \
            TestClient(create_feedback(settings_for(FeedbackSettings, service_env,
                                                    clock_interval_s=3600))) as feedback:
        template = ok(feedback.get("/v1/survey-template", headers=DEMO))
        ok(feedback.put("/v1/survey-template", headers=DEMO, json={**template, "delay_minutes": 0}))
        ok(identity.post("/v1/touchpoints", headers=DEMO, json={"events": [touchpoint_doc(
            phone=PHONE, type="consent.changed", channel="app",
            payload={"purpose": "marketing_sms", "granted": True, "evidence": "app settings"})]}))
        setup_store(booking, hours=("00:00", "24:00"), breaks=())
        ok(booking.post("/v1/walk-ins", headers=DEMO, json={
            "store_id": "s1", "service_id": "full-groom", "staff_id": "g1", "customer": customer(PHONE),
            "amount_minor": 20000}), 201)

        def invited():
            clock.tick(feedback.app.state.db)
            return survey_links(feedback)

        (link,) = wait_until(invited, timeout_s=HOPS_S, message="feedback invites after the walk-in")
        assert link["channel"] == "sms" and link["store_id"] == "s1"
        ok(feedback.post(f"/v1/surveys/{link['token']}/responses",
                         json={"answers": {"nps": 3, "csat": 2, "service_quality": 1}}), 201)
        (case,) = ok(feedback.get("/v1/cases", headers=DEMO, params={"store_id": "s1", "state": "open"}))["items"]
        assert (case["reason"], case["priority"]) == ("detractor", "high")
        path = f"/v1/cases/{case['case_id']}"
        ok(feedback.patch(path, headers=DEMO, json={"state": "in_progress", "note": "called, offered a redo"}))
        ok(feedback.patch(path, headers=DEMO, json={"state": "resolved", "root_cause": "staff_training",
                                                    "service_step": "service_quality"}))

        follow_up = wait_until(lambda: (clock.tick(feedback.app.state.db), survey_links(feedback))[1][1:],
                               timeout_s=HOPS_S, message="the follow-up survey goes out")[0]
        assert follow_up["case_id"] == case["case_id"]  # not throttled: it belongs to the case
        ok(feedback.post(f"/v1/surveys/{follow_up['token']}/responses", json={"answers": {"nps": 9}}), 201)
        closed_loop = ok(feedback.get(path, headers=DEMO))
        assert (closed_loop["state"], closed_loop["follow_up_nps"]) == ("resolved", 9)
        assert ok(feedback.get("/v1/nps", headers=DEMO, params={"store_id": "s1"}))["responses"] == 1  # not the follow-up

        def last_nps():
            found = identity.get("/v1/customers/lookup", headers=DEMO, params={"type": "phone", "value": PHONE})
            view = found.json() if found.status_code == 200 else {}
            return view if (view.get("last_nps") or {}).get("nps") == 9 else None

        assert wait_until(last_nps, timeout_s=HOPS_S, message="the 360 shows the follow-up's NPS")
