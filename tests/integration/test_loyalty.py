"""Loyalty against real Postgres: earning from touchpoints, tiers on points earned, reversals (even of
spent points), redemption holds, adjustments, expiry, reviews and the liability report."""
from __future__ import annotations

import uuid
from datetime import timedelta

from services.loyalty import clock, program as programs, redemptions
from shared.auth import Role
from shared.events import utcnow
from tests.integration.helpers import run_together
from tests.integration.loyalty_setup import (
    DEMO, announced, deliver, key, ledger_is_exact, member, ok, purchase, refund, resolved, sql,
)


def test_points_are_earned_from_services_purchases_surveys_and_referrals(loyalty):
    cid = uuid.uuid4()
    completed = resolved(cid, "booking.completed", {
        "appointment_id": str(uuid.uuid4()), "service_id": "full-groom", "starts_at": utcnow().isoformat(),
        "ends_at": utcnow().isoformat(), "local_start": utcnow().isoformat(), "amount_minor": 25_000,
        "services_performed": ["full-groom"], "performed_by": "g1"})
    deliver(loyalty, completed, purchase(cid, 9_999), resolved(cid, "survey.answered", {"nps": 9}),
            resolved(cid, "referral.converted", {"referral_id": "r-1"}),
            resolved(cid, "store.visited", {}))
    view = member(loyalty, cid)
    assert view["balance"] == 250 + 99 + 50 + 500
    assert view["tier"]["name"] == "silver" and view["next_tier"] == {
        "name": "gold", "threshold": 2000, "points_needed": 2000 - 899}
    earned = [p for t, p in announced(loyalty, cid) if t == "loyalty.points_earned"]
    assert [p["balance_after"] for p in earned] == [250, 349, 399, 899]
    ledger_is_exact(loyalty)


def test_an_answer_to_a_feedback_survey_earns_like_a_touchpoint(loyalty):
    from shared.events.feedback import SurveyAnswered, SurveyAnsweredPayload
    from tests.integration.loyalty_setup import envelope

    cid = uuid.uuid4()
    answered = SurveyAnswered(**{**envelope(cid), "source": "feedback"}, payload=SurveyAnsweredPayload(
        response_id=uuid.uuid4(), source="link", store_id="s-survey", nps=9))
    deliver(loyalty, answered)
    deliver(loyalty, answered)
    entries = ok(loyalty.get(f"/v1/members/{cid}/ledger", headers=DEMO))["items"]
    assert [(e["kind"], e["points"], e["store_id"], e["source_type"]) for e in entries] == [
        ("earn", 50, "s-survey", "feedback.survey_answered")]


def test_every_source_event_redelivered_leaves_the_same_ledger(loyalty):
    cid = uuid.uuid4()
    bought = purchase(cid, 300_000, order_id="o-redeliver")
    batch = [bought, resolved(cid, "survey.answered", {"nps": 3}), refund(cid, "o-redeliver", 100_000)]
    deliver(loyalty, *batch)
    before = sql(loyalty, "select kind, points from loyalty.entries where customer_id = %s order by seq", cid)
    deliver(loyalty, *batch)
    for event in batch:
        deliver(loyalty, event)
    assert sql(loyalty, "select kind, points from loyalty.entries where customer_id = %s order by seq", cid) == before
    assert member(loyalty, cid)["balance"] == 3000 + 50 - 1000


def test_the_tier_follows_points_earned_not_the_balance(loyalty):
    cid = uuid.uuid4()
    deliver(loyalty, purchase(cid, 250_000))
    held = ok(loyalty.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(cid), "points": 2_400}), 201)
    ok(loyalty.post(f"/v1/redemptions/{held['redemption_id']}/commit", headers=DEMO))
    view = member(loyalty, cid)
    assert (view["tier"]["name"], view["balance"], view["earned_in_window"]) == ("gold", 100, 2_500)
    assert view["tier"]["discount_pct"] == 5
    deliver(loyalty, purchase(cid, 10_000))
    assert member(loyalty, cid)["balance"] == 100 + 120  # gold earns 1.2 points per yuan
    changes = [p for t, p in announced(loyalty, cid) if t == "loyalty.tier_changed"]
    assert [(c.get("from_tier"), c["to_tier"]) for c in changes] == [(None, "silver"), ("silver", "gold")]


def test_a_refund_reverses_its_share_and_spent_points_leave_a_negative_balance(loyalty):
    cid = uuid.uuid4()
    deliver(loyalty, purchase(cid, 100_000, order_id="o-refund", store_id="s-north"))
    deliver(loyalty, refund(cid, "o-refund", 25_000))
    assert member(loyalty, cid)["balance"] == 750
    held = ok(loyalty.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(cid), "points": 700}), 201)
    ok(loyalty.post(f"/v1/redemptions/{held['redemption_id']}/commit", headers=DEMO))
    deliver(loyalty, refund(cid, "o-refund", 75_000))
    view = member(loyalty, cid)
    assert (view["balance"], view["debt"], view["available"]) == (-700, 700, 0)
    report = ok(loyalty.get("/v1/liability", headers=DEMO, params={"store_id": "s-north"}))
    assert report["stores"] == [{"store_id": "s-north", "outstanding_points": 0, "members_holding": 0,
                                 "negative_points": 700, "members_negative": 1, "net_points": -700,
                                 "value_minor": -700}]
    deliver(loyalty, refund(cid, "o-refund", 75_000))  # more refunds than the order: nothing more to reverse
    assert member(loyalty, cid)["balance"] == -700
    ledger_is_exact(loyalty)


def test_a_no_show_or_cancellation_after_earning_reverses_and_a_reversal_may_arrive_first(loyalty):
    cid, appointment = uuid.uuid4(), str(uuid.uuid4())
    fields = {"appointment_id": appointment, "service_id": "wash", "starts_at": utcnow().isoformat(),
              "ends_at": utcnow().isoformat(), "local_start": utcnow().isoformat()}
    deliver(loyalty, resolved(cid, "booking.no_show", fields))  # before the earn (out of order)
    deliver(loyalty, resolved(cid, "booking.completed", {**fields, "amount_minor": 50_000,
                                                         "services_performed": ["wash"], "performed_by": "g1"}))
    assert member(loyalty, cid)["balance"] == 0
    kinds = sql(loyalty, "select kind, points from loyalty.entries where customer_id = %s order by seq", cid)
    assert kinds == [("earn", 500), ("reverse", -500)]


def test_redemption_holds_commit_release_and_refuse_with_reasons(loyalty):
    cid = uuid.uuid4()
    deliver(loyalty, purchase(cid, 100_000))
    body = {"customer_id": str(cid), "points": 600}
    first = ok(loyalty.post("/v1/redemptions", headers=DEMO, json=body), 201)
    refused = loyalty.post("/v1/redemptions", headers=DEMO, json=body)
    assert refused.status_code == 409 and refused.json()["available"] == 400
    assert member(loyalty, cid)["held"] == 600
    ok(loyalty.post(f"/v1/redemptions/{first['redemption_id']}/release", headers=DEMO))
    again = loyalty.post(f"/v1/redemptions/{first['redemption_id']}/commit", headers=DEMO)
    assert again.status_code == 409 and "released" in again.json()["detail"]
    second = ok(loyalty.post("/v1/redemptions", headers=DEMO, json=body), 201)
    committed = ok(loyalty.post(f"/v1/redemptions/{second['redemption_id']}/commit", headers=DEMO))
    assert committed["status"] == "committed"
    ok(loyalty.post(f"/v1/redemptions/{second['redemption_id']}/commit", headers=DEMO))  # a retry: still once
    assert member(loyalty, cid)["balance"] == 400

    assert loyalty.post("/v1/redemptions", headers=DEMO,
                        json={"customer_id": str(uuid.uuid4()), "points": 1}).status_code == 404
    negative = loyalty.post("/v1/redemptions", headers=DEMO, json={**body, "points": -5})
    assert negative.status_code == 422 and "points" in negative.text
    assert loyalty.post(f"/v1/redemptions/{uuid.uuid4()}/commit", headers=DEMO).status_code == 404
    assert loyalty.get(f"/v1/members/{uuid.uuid4()}", headers=DEMO).status_code == 404


def test_an_expired_hold_cannot_be_committed(loyalty):
    cid = uuid.uuid4()
    deliver(loyalty, purchase(cid, 10_000))
    held = ok(loyalty.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(cid), "points": 50}), 201)
    later = utcnow() + timedelta(minutes=16)
    clock.tick(loyalty.app.state.db, later)
    with loyalty.app.state.db.transaction() as cur:
        assert redemptions.get(cur, "demo", held["redemption_id"])["status"] == "expired"
    refused = loyalty.post(f"/v1/redemptions/{held['redemption_id']}/commit", headers=DEMO)
    assert refused.status_code == 409 and "expired" in refused.json()["detail"]


def test_parallel_redemptions_never_overdraw(loyalty):
    cid = uuid.uuid4()
    deliver(loyalty, purchase(cid, 100_000))  # 1,000 points

    def redeem():
        held = loyalty.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(cid), "points": 150})
        if held.status_code != 201:
            return held.status_code
        return loyalty.post(f"/v1/redemptions/{held.json()['redemption_id']}/commit", headers=DEMO).status_code

    results, errors = run_together(*[redeem] * 12)
    assert errors == []
    assert sorted(results) == [200] * 6 + [409] * 6
    assert member(loyalty, cid)["balance"] == 100
    ledger_is_exact(loyalty)


def test_adjustments_need_an_admin_a_reason_and_keep_the_balance_non_negative(loyalty):
    cid = uuid.uuid4()
    body = {"customer_id": str(cid), "points": 300, "reason": "goodwill: groomer was late"}
    assert loyalty.post("/v1/adjustments", headers=key(Role.store_staff), json=body).status_code == 403
    missing = loyalty.post("/v1/adjustments", headers=DEMO, json={**body, "reason": ""})
    assert missing.status_code == 422 and "reason" in missing.text
    adjustment_id = str(uuid.uuid4())
    ok(loyalty.post("/v1/adjustments", headers=DEMO, json={**body, "adjustment_id": adjustment_id}), 201)
    ok(loyalty.post("/v1/adjustments", headers=DEMO, json={**body, "adjustment_id": adjustment_id}), 201)
    assert member(loyalty, cid)["balance"] == 300
    too_much = loyalty.post("/v1/adjustments", headers=DEMO, json={**body, "points": -301})
    assert too_much.status_code == 409 and too_much.json()["balance"] == 300
    assert loyalty.post("/v1/adjustments", headers=DEMO, json={**body, "points": 0}).status_code == 422
    entries = ok(loyalty.get(f"/v1/members/{cid}/ledger", headers=DEMO))["items"]
    assert [(e["kind"], e["points"], e["reason"]) for e in entries] == [("adjust", 300, body["reason"])]


def test_points_expire_oldest_first_and_the_member_sees_what_expires_soon(loyalty):
    cid = uuid.uuid4()
    deliver(loyalty, purchase(cid, 10_000, days_ago=340), purchase(cid, 20_000, days_ago=300),
            purchase(cid, 40_000, days_ago=10))
    held = ok(loyalty.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(cid), "points": 150}), 201)
    ok(loyalty.post(f"/v1/redemptions/{held['redemption_id']}/commit", headers=DEMO))
    view = member(loyalty, cid)
    # the redemption took the 100 expiring first, then 50 of the 200
    assert view["expiring"] == {"next_30_days": 0, "next_60_days": 0, "next_90_days": 150}
    clock.tick(loyalty.app.state.db, utcnow() + timedelta(days=70))
    clock.tick(loyalty.app.state.db, utcnow() + timedelta(days=70))  # a second pass finds nothing more
    assert member(loyalty, cid)["balance"] == 400
    expired = [p["points"] for t, p in announced(loyalty, cid) if t == "loyalty.points_expired"]
    assert expired == [150]
    ledger_is_exact(loyalty)


def test_reviews_downgrade_one_tier_or_to_what_the_window_earns(loyalty):
    one, window = uuid.uuid4(), uuid.uuid4()
    deliver(loyalty, purchase(one, 2_000_000, days_ago=200), purchase(window, 2_000_000, days_ago=200))
    assert member(loyalty, one)["tier"]["name"] == "vip"
    in_three_months = utcnow() + timedelta(days=90)
    clock.tick(loyalty.app.state.db, in_three_months)
    assert member(loyalty, one)["tier"]["name"] == "vip"  # still earned within 12 months
    clock.tick(loyalty.app.state.db, utcnow() + timedelta(days=200))  # earned 400 days before
    assert member(loyalty, one)["tier"]["name"] == "diamond"

    with loyalty.app.state.db.transaction() as cur:
        programs.save(cur, "demo", programs.Program(downgrade="window"))
    try:
        sql(loyalty, "update loyalty.members set tier = 'vip', next_review_at = now() where customer_id = %s "
                     "returning 1", window)
        clock.tick(loyalty.app.state.db, utcnow() + timedelta(days=200))
        assert member(loyalty, window)["tier"]["name"] == "silver"
    finally:
        with loyalty.app.state.db.transaction() as cur:
            cur.execute("delete from loyalty.programs where tenant_id = 'demo'")


def test_liability_per_store_in_money_and_the_program_is_per_tenant(loyalty, other_tenant_headers):
    a, b = uuid.uuid4(), uuid.uuid4()
    deliver(loyalty, purchase(a, 50_000, store_id="liab-1"), purchase(b, 30_000, store_id="liab-2"),
            purchase(a, 10_000, store_id="liab-2"))
    report = ok(loyalty.get("/v1/liability", headers=DEMO))
    lines = {line["store_id"]: line for line in report["stores"] if line["store_id"] in ("liab-1", "liab-2")}
    assert lines["liab-1"]["outstanding_points"] == 500 and lines["liab-2"]["outstanding_points"] == 400
    assert lines["liab-2"]["members_holding"] == 2 and lines["liab-2"]["value_minor"] == 400
    assert report["currency"] == "CNY"
    assert loyalty.get("/v1/liability", headers=key(Role.marketing)).status_code == 403
    assert loyalty.get(f"/v1/members/{a}", headers=other_tenant_headers).status_code == 404

    program = ok(loyalty.get("/v1/program", headers=other_tenant_headers))
    program["tiers"][1]["threshold"] = 500
    program["point_value_minor"] = 2
    ok(loyalty.put("/v1/program", headers=other_tenant_headers, json=program))
    assert ok(loyalty.get("/v1/program", headers=DEMO))["tiers"][1]["threshold"] == 2000
    bad = loyalty.put("/v1/program", headers=other_tenant_headers, json={**program, "tiers": []})
    assert bad.status_code == 422
    assert loyalty.put("/v1/program", headers=key(Role.ops, "chain-b"), json=program).status_code == 403
