"""Tenant isolation in the hub, route by route: tenant A has a customer (with a phone and consent), an
erasure request and a webhook subscription; an admin key of tenant B then calls every identity route
with A's ids in the path and valid bodies (so validation cannot hide a missing tenant check). Nothing of
A comes back, and nothing of A changes."""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from shared.auth import KeyVerifier, Role
from tests.unit.test_every_route_checks_its_caller import routes

from .conftest import DEMO
from .helpers import wait_until

PHONE = "+8613900000555"
OTHER_TENANT = {"Authorization": f"Bearer {KeyVerifier('test-secret').issue('chain-b', Role.admin)}"}


def resolve(identity, phone: str) -> str:
    event = {"event_id": str(uuid.uuid4()), "type": "store.visited", "occurred_at": datetime.now(UTC).isoformat(),
             "channel": "walk_in", "store_id": "s1", "identifiers": [{"type": "phone", "value": phone}]}
    assert identity.post("/v1/touchpoints", json={"events": [event]}, headers=DEMO).json()["accepted"] == 1

    def found():
        r = identity.get("/v1/customers/lookup", params={"type": "phone", "value": phone}, headers=DEMO)
        return r.json()["customer_id"] if r.status_code == 200 else None

    return wait_until(found, 30, message="resolved")


def test_a_key_of_another_tenant_reads_and_changes_nothing_of_this_tenant_on_any_identity_route(identity):
    customer_id = resolve(identity, PHONE)
    assert identity.post(f"/v1/customers/{customer_id}/consents", json={"purpose": "marketing_sms", "granted": True},
                         headers=DEMO).status_code == 201
    erased = resolve(identity, "+8613900000556")
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
    walked = 0
    for method, path, _ in routes(identity.app):
        if "{" not in path and method != "GET" or path in ("/metrics",):
            continue  # creating things in B's own tenant is B's business
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        params = {"type": "phone", "value": PHONE} if path == "/v1/customers/lookup" else None
        response = identity.request(method, url, headers=OTHER_TENANT, json=bodies.get(path), params=params)
        walked += 1
        leaked = [s for s in secrets_of_a if s in response.text]
        assert not leaked, f"{method} {path} showed tenant A's {leaked}"
        if "{" in path and "{event_type}" not in path:
            assert response.status_code in (403, 404), f"{method} {path} answered {response.status_code}"
    assert walked >= 20

    after = identity.get(f"/v1/customers/{customer_id}", headers=DEMO).json()
    assert after["consents"] == before["consents"] and after["identifiers"] == before["identifiers"]
    mine = identity.get(f"/v1/subscriptions/{subscription['subscription_id']}", headers=DEMO).json()
    assert mine["state"] == "active" and mine["previous_secret_until"] is None  # not paused, deleted or rotated
    assert identity.get(f"/v1/erasure-requests/{request_id}", headers=DEMO).status_code == 200
