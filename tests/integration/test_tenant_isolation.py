"""Tenant isolation in the hub, route by route: tenant A has a customer (with a phone and consent), an
erasure request and a webhook subscription; an admin key of tenant B then calls every identity route
with A's ids in the path and valid bodies (so validation cannot hide a missing tenant check). Nothing of
A comes back, and nothing of A changes."""
from __future__ import annotations

import uuid

from shared.auth import KeyVerifier, Role

from .conftest import DEMO
from .helpers import resolved_customer, walk_as_another_tenant

PHONE = "+8613900000555"
OTHER_TENANT = {"Authorization": f"Bearer {KeyVerifier('test-secret').issue('chain-b', Role.admin)}"}


def test_a_key_of_another_tenant_reads_and_changes_nothing_of_this_tenant_on_any_identity_route(identity):
    customer_id = resolved_customer(identity, PHONE, DEMO)
    assert identity.post(f"/v1/customers/{customer_id}/consents", json={"purpose": "marketing_sms", "granted": True},
                         headers=DEMO).status_code == 201
    erased = resolved_customer(identity, "+8613900000556", DEMO)
    request_id = identity.post(f"/v1/customers/{erased}/erasure", headers=DEMO).json()["request_id"]
    subscription = identity.post("/v1/subscriptions", headers=DEMO, json={
        "url": "https://crm.example.com/hook", "event_types": ["customer.lifecycle_changed"],
        "purpose": "marketing_sms"}).json()
    before = identity.get(f"/v1/customers/{customer_id}", headers=DEMO).json()

    ids = {"customer_id": customer_id, "request_id": request_id, "subscription_id": subscription["subscription_id"],
           "suggestion_id": str(uuid.uuid4()), "event_type": "customer.created"}
    bodies = {
        "/v1/customers/{customer_id}/split": {"identifiers": [{"type": "phone", "value": PHONE}]},
        "/v1/customers/{customer_id}/consents": {"purpose": "marketing_sms", "granted": False},
        "/v1/subscriptions/{subscription_id}/replay": {"dead_letters": True},
    }
    secrets_of_a = {customer_id, request_id, subscription["subscription_id"], PHONE, PHONE[3:], erased}
    walked = walk_as_another_tenant(identity, OTHER_TENANT, ids, secrets_of_a, bodies=bodies,
                                    params={"/v1/customers/lookup": {"type": "phone", "value": PHONE}})
    assert walked >= 20

    after = identity.get(f"/v1/customers/{customer_id}", headers=DEMO).json()
    assert after["consents"] == before["consents"] and after["identifiers"] == before["identifiers"]
    mine = identity.get(f"/v1/subscriptions/{subscription['subscription_id']}", headers=DEMO).json()
    assert mine["state"] == "active" and mine["previous_secret_until"] is None  # not paused, deleted or rotated
    assert identity.get(f"/v1/erasure-requests/{request_id}", headers=DEMO).status_code == 200


def test_a_key_of_another_tenant_reads_and_changes_nothing_of_this_tenant_on_any_loyalty_route(loyalty):
    from tests.integration.loyalty_setup import deliver, member, purchase

    customer_id = uuid.uuid4()
    deliver(loyalty, purchase(customer_id, 250_000))
    held = loyalty.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(customer_id), "points": 100})
    assert held.status_code == 201, held.text
    before = member(loyalty, customer_id)
    ids = {"customer_id": str(customer_id), "redemption_id": held.json()["redemption_id"]}
    bodies = {"/v1/redemptions": {"customer_id": str(customer_id), "points": 10},
              "/v1/adjustments": {"customer_id": str(customer_id), "points": -50, "reason": "probe"}}
    walked = walk_as_another_tenant(loyalty, OTHER_TENANT, ids, {ids["redemption_id"], str(before["balance"])},
                                    bodies=bodies)
    assert walked >= 9
    after = member(loyalty, customer_id)
    assert (after["balance"], after["tier"]) == (before["balance"], before["tier"])
    status = loyalty.get(f"/v1/redemptions/{ids['redemption_id']}", headers=DEMO).json()
    assert status["status"] == "held"  # neither committed nor released by the other tenant


def test_a_key_of_another_tenant_reads_and_changes_nothing_of_this_tenant_on_any_feedback_route(service_env):
    from fastapi.testclient import TestClient

    from services.feedback.app import create_app as create_feedback
    from services.feedback.settings import FeedbackSettings
    from tests.integration.conftest import settings_for
    from tests.integration.test_feedback import complaint, deliver

    with TestClient(create_feedback(settings_for(FeedbackSettings, service_env, clock_interval_s=3600))) as feedback:
        customer_id = uuid.uuid4()
        deliver(feedback, complaint(customer_id, store_id="fb-iso"))
        [case] = feedback.get("/v1/cases", headers=DEMO, params={"store_id": "fb-iso"}).json()["items"]
        ids = {"case_id": str(case["case_id"]), "store_id": "fb-iso", "token": "no-such-token"}
        bodies = {"/v1/cases/{case_id}": {"state": "in_progress"},
                  "/v1/cases": {"store_id": "fb-iso", "customer_id": str(customer_id), "category": "staff"}}
        walked = walk_as_another_tenant(feedback, OTHER_TENANT, ids, {ids["case_id"], str(customer_id)},
                                        bodies=bodies, shared_names=frozenset({"store_id", "token"}))
        assert walked >= 10
        [still] = feedback.get("/v1/cases", headers=DEMO, params={"store_id": "fb-iso"}).json()["items"]
        assert still["state"] == "open" and still["case_id"] == case["case_id"]


def test_a_key_of_another_tenant_reads_and_changes_nothing_of_this_tenant_on_any_booking_route(service_env):
    from fastapi.testclient import TestClient

    from services.booking.app import create_app as create_booking
    from services.booking.settings import BookingSettings
    from tests.integration.booking_setup import hold, local_day, setup_store
    from tests.integration.conftest import settings_for

    with TestClient(create_booking(settings_for(BookingSettings, service_env, clock_interval_s=3600))) as booking:
        setup_store(booking)
        day = local_day("Asia/Shanghai")
        held = hold(booking, day, "10:00")
        assert held.status_code == 201, held.text
        appointment = held.json()
        ids = {"appointment_id": appointment["appointment_id"], "store_id": "s1", "staff_id": "g1",
               "resource_id": "table-1", "service_id": "full-groom", "time_off_id": str(uuid.uuid4()),
               "waitlist_id": str(uuid.uuid4()), "offer_id": str(uuid.uuid4())}
        bodies = {"/v1/appointments/{appointment_id}/reschedule": {"local_start": f"{day.isoformat()}T11:00"},
                  "/v1/appointments/{appointment_id}/cancel": {"reason": "probe"},
                  "/v1/appointments/{appointment_id}/complete": {"amount_minor": 1}}
        walked = walk_as_another_tenant(
            booking, OTHER_TENANT, ids, {ids["appointment_id"]}, bodies=bodies,
            shared_names=frozenset({"store_id", "staff_id", "resource_id", "service_id"}))
        assert walked >= 20
        after = booking.get(f"/v1/appointments/{ids['appointment_id']}", headers=DEMO).json()
        assert (after["status"], after["starts_at"]) == (appointment["status"], appointment["starts_at"])


def test_a_key_of_another_tenant_sees_nothing_of_this_tenant_on_any_insights_route(service_env):
    from fastapi.testclient import TestClient

    from services.insights.app import create_app as create_insights
    from services.insights.settings import InsightsSettings
    from tests.integration.conftest import settings_for
    from tests.integration.insights_data import seed_dashboard

    with TestClient(create_insights(settings_for(InsightsSettings, service_env, run_processors=False))) as insights:
        seeded = seed_dashboard(insights.app.state.warehouse)
        _, [(event_id,)] = insights.app.state.warehouse.query("SELECT any(event_id) FROM {db}.touchpoints")
        customers = {str(c) for c in seeded["customers"].values()}
        assert insights.get(f"/v1/dashboard/customers/{seeded['at_risk_customer_id']}", headers=DEMO).status_code \
            == 200
        ids = {"event_id": str(event_id), "customer_id": str(seeded["at_risk_customer_id"]), "store_id": "sh-jingan"}
        walked = walk_as_another_tenant(insights, OTHER_TENANT, ids, customers | {str(event_id), "Jing'an", "SoHo"},
                                        bodies={"/v1/stores/{store_id}": {"name": "B's own", "timezone": "UTC"}})
        assert walked >= 10
        mine = insights.get("/v1/dashboard/stores", headers=DEMO).json()["stores"]
        assert {"store_id": "sh-jingan", "name": "Jing'an", "timezone": "Asia/Shanghai"} in mine
