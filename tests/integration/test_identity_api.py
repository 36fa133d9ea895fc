"""The ingestion API and customer lookup over real Postgres and the real broker."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from .conftest import DEMO
from .helpers import touchpoint_doc, wait_until


def post(client, events, headers=DEMO):
    return client.post("/v1/touchpoints", json={"events": events}, headers=headers)


def test_each_event_gets_its_own_result_and_a_retried_event_is_a_duplicate(identity):
    first, second = touchpoint_doc(), touchpoint_doc(phone="13800138001")
    response = post(identity, [first, second, first])
    assert response.status_code == 200
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "duplicate"]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 0)
    again = post(identity, [first]).json()
    assert again["results"][0]["status"] == "duplicate"


def test_bad_events_are_rejected_with_reasons_while_good_ones_in_the_batch_are_accepted(identity):
    good = touchpoint_doc()
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    bad = {
        "naive time": touchpoint_doc(occurred_at="2026-11-20T10:00:00"),
        "future": touchpoint_doc(occurred_at=future),
        "no identifiers": touchpoint_doc(identifiers=[]),
        "unknown type": touchpoint_doc(type="teleported"),
        "bad phone": touchpoint_doc(phone="12345"),
        "customer id": touchpoint_doc(customer_id=str(uuid.uuid4())),
        "other tenant": touchpoint_doc(tenant_id="chain-b"),
        "no event id": {k: v for k, v in touchpoint_doc().items() if k != "event_id"},
        "not an object": "store.visited",
    }
    body = post(identity, [good, *bad.values()]).json()
    results = body["results"]
    assert results[0]["status"] == "accepted"
    reasons = dict(zip(bad, (r["reason"] for r in results[1:])))
    assert all(r["status"] == "rejected" for r in results[1:])
    assert "timezone" in reasons["naive time"]
    assert "future" in reasons["future"]
    assert "identifiers" in reasons["no identifiers"]
    assert "unknown event type" in reasons["unknown type"]
    assert "phone" in reasons["bad phone"]
    assert "identity resolution" in reasons["customer id"]
    assert "tenant" in reasons["other tenant"]
    assert "event_id is required" in reasons["no event id"]
    assert "JSON object" in reasons["not an object"]


def test_a_batch_where_every_event_is_rejected_answers_422_with_the_results(identity):
    response = post(identity, [touchpoint_doc(type="teleported")])
    assert response.status_code == 422
    assert response.json()["results"][0]["status"] == "rejected"
    assert response.headers["content-type"].startswith("application/problem+json")


def test_malformed_json_is_a_400_problem(identity):
    response = identity.post("/v1/touchpoints", content=b'{"events": [', headers={**DEMO, "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["title"] == "Bad Request" and "JSON" in response.json()["detail"]


def test_more_than_a_thousand_events_is_refused_whole(identity):
    response = post(identity, [touchpoint_doc() for _ in range(1001)])
    assert response.status_code == 413
    assert "1000" in response.json()["detail"]


def test_missing_or_wrong_keys_are_401(identity):
    assert post(identity, [touchpoint_doc()], headers={}).status_code == 401
    assert post(identity, [touchpoint_doc()], headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_read_only_key_cannot_ingest(identity, read_only_headers):
    assert post(identity, [touchpoint_doc()], headers=read_only_headers).status_code == 403


def test_a_posted_touchpoint_resolves_to_a_customer_found_by_any_phone_format(identity):
    post(identity, [touchpoint_doc(phone="139 1234 5678")])

    def found():
        r = identity.get("/v1/customers/lookup", params={"type": "phone", "value": "+86 13912345678"}, headers=DEMO)
        return r if r.status_code == 200 else None

    customer = wait_until(found, 30, message="customer resolved").json()
    assert customer["identifiers"][0]["value"] == "+8613912345678"
    assert identity.get(f"/v1/customers/{customer['customer_id']}", headers=DEMO).status_code == 200


def test_one_tenant_never_sees_another_tenants_customers(identity, other_tenant_headers):
    post(identity, [touchpoint_doc(phone="13700137000")])
    params = {"type": "phone", "value": "13700137000"}
    wait_until(lambda: identity.get("/v1/customers/lookup", params=params, headers=DEMO).status_code == 200, 30)
    assert identity.get("/v1/customers/lookup", params=params, headers=other_tenant_headers).status_code == 404


def test_lookup_with_an_invalid_identifier_is_a_422_not_a_500(identity):
    response = identity.get("/v1/customers/lookup", params={"type": "phone", "value": "abc"}, headers=DEMO)
    assert response.status_code == 422 and "phone" in response.json()["detail"]


def test_readiness_reports_each_dependency(identity):
    body = identity.get("/readyz").json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"postgres", "kafka", "workers"}


def test_unknown_routes_and_methods_answer_with_a_problem_body(identity):
    missing = identity.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["title"] == "Not Found"
    wrong = identity.delete("/v1/touchpoints", headers=DEMO)
    assert wrong.status_code == 405 and wrong.headers["content-type"].startswith("application/problem+json")


def test_a_malformed_customer_id_is_a_422_naming_the_field(identity):
    response = identity.get("/v1/customers/not-a-uuid", headers=DEMO)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "path.customer_id"
