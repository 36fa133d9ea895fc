"""The whole platform started by the same launcher as `make run` (embedded Postgres, embedded broker,
embedded ClickHouse, five services, simulator), driven over HTTP like a user would.

Tests run in file order: they share one stack, and the last ones stop it and start it again."""
from __future__ import annotations

import json
import re
import signal
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from hub.embedded import port_open
from tests.e2e.stack import SERVICES, Stack, temporary_home, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack():
    with temporary_home("hub-home-") as home:
        s = Stack(home)
        s.start()
        yield s
        if s.process and s.process.poll() is None:
            s.stop()


def test_all_five_services_are_ready_with_their_api_docs(stack):
    for name in SERVICES:
        assert httpx.get(stack.url(name) + "/healthz").json() == {"status": "ok"}
        assert httpx.get(stack.url(name) + "/docs").status_code == 200
        assert httpx.get(stack.url(name) + "/openapi.json").json()["info"]["title"].endswith(name)


def test_the_demo_key_is_generated_and_printed(stack):
    assert stack.key.startswith("demo_")
    # The services answer ready a moment before the launcher, polling them too, prints its banner.
    assert wait_for(lambda: stack.key in (stack.home / "launcher.out").read_text(), 30)
    stack.first_key = stack.key


def test_the_simulated_chain_reaches_clickhouse(stack):
    def summary():
        body = httpx.get(stack.url("insights") + "/v1/touchpoints/summary", headers=stack.headers).json()
        return body if body["total"] > 50 and len(body["by_channel"]) >= 4 else None

    body = wait_for(summary, 60)
    assert body, "simulated touchpoints did not reach ClickHouse"
    assert body["customers"] > 5


def test_the_front_desk_books_through_the_booking_service_and_its_touchpoints_reach_clickhouse(stack):
    def booked():
        by_type = httpx.get(stack.url("insights") + "/v1/touchpoints/summary", headers=stack.headers).json()["by_type"]
        return by_type if by_type.get("booking.confirmed") else None

    by_type = wait_for(booked, 90)
    assert by_type, "no booking.confirmed touchpoint reached ClickHouse"
    stores = httpx.get(stack.url("booking") + "/v1/stores", headers=stack.headers).json()
    assert {s["timezone"] for s in stores} >= {"Asia/Shanghai", "Australia/Sydney"}


def test_a_purchase_earns_points_at_the_simulated_chains_rate_and_the_360_shows_them(stack):
    """Stores may be closed at this hour in every zone, so the purchase is posted by hand."""
    event = {"event_id": str(uuid.uuid4()), "type": "purchase.completed",
             "occurred_at": datetime.now(UTC).isoformat(), "channel": "pos", "store_id": "syd-surryhills",
             "identifiers": [{"type": "phone", "value": "+61 412 555 077"}],
             "payload": {"order_id": "e2e-aud", "amount_minor": 10_000, "currency": "AUD"}}
    response = httpx.post(stack.url("identity") + "/v1/touchpoints", json={"events": [event]}, headers=stack.headers)
    assert response.json()["accepted"] == 1

    def points():
        found = httpx.get(stack.url("identity") + "/v1/customers/lookup", headers=stack.headers,
                          params={"type": "phone", "value": "+61412555077"})
        if found.status_code != 200:
            return None
        view = found.json()
        return view if view["loyalty"]["points_balance"] else None

    view = wait_for(points, 60)
    assert view, "the purchase's points did not reach the customer 360"
    assert view["loyalty"] == {"tier": "silver", "points_balance": 470}  # A$100 at the simulator's 4.7
    member = httpx.get(f"{stack.url('loyalty')}/v1/members/{view['customer_id']}", headers=stack.headers).json()
    assert member["balance"] == 470 and member["expiring"]["next_90_days"] == 0


def test_a_first_paid_service_makes_a_customer_a_purchaser_in_the_360_and_on_the_dashboard(stack):
    event = {"event_id": str(uuid.uuid4()), "type": "service.performed", "occurred_at": datetime.now(UTC).isoformat(),
             "channel": "pos", "store_id": "syd-surryhills", "identifiers": [{"type": "phone", "value": "+61 412 555 079"}],
             "payload": {"service_ids": ["full-groom"], "service_category": "full_groom", "amount_minor": 9_000,
                         "currency": "AUD"}}
    response = httpx.post(stack.url("identity") + "/v1/touchpoints", json={"events": [event]}, headers=stack.headers)
    assert response.json()["accepted"] == 1

    def staged():
        found = httpx.get(stack.url("identity") + "/v1/customers/lookup", headers=stack.headers,
                          params={"type": "phone", "value": "+61412555079"})
        lifecycle = found.json()["lifecycle"] if found.status_code == 200 else None
        return found.json() if lifecycle and lifecycle["stage"] == "purchase" else None

    view = wait_for(staged, 60)
    assert view, "the purchase stage did not reach the customer 360"
    lifecycle = view["lifecycle"]
    assert (lifecycle["stage"], lifecycle["from_stage"], lifecycle["reason"]) == ("purchase", None, "first paid service")
    assert view["churn_risk"] is None  # a first score of "low" crosses no threshold: nothing is announced
    detail = httpx.get(f"{stack.url('insights')}/v1/dashboard/customers/{view['customer_id']}",
                       headers=stack.headers).json()
    assert (detail["stage"], detail["home_store_id"], detail["first_channel"]) == ("purchase", "syd-surryhills", "pos")
    stores = httpx.get(stack.url("insights") + "/v1/dashboard/stores", headers=stack.headers).json()["stores"]
    assert {"store_id": "syd-surryhills", "name": "syd-surryhills", "timezone": "Australia/Sydney"} in stores
    assert httpx.get(stack.url("insights") + "/dashboard").status_code == 200


def test_a_complaint_opens_a_case_owned_by_the_stores_manager_on_sydney_business_hours(stack):
    event = {"event_id": str(uuid.uuid4()), "type": "complaint.filed", "occurred_at": datetime.now(UTC).isoformat(),
             "channel": "phone", "store_id": "syd-surryhills", "identifiers": [{"type": "phone", "value": "+61 412 555 078"}],
             "payload": {"category": "waiting_time", "severity": "high"}}
    response = httpx.post(stack.url("identity") + "/v1/touchpoints", json={"events": [event]}, headers=stack.headers)
    assert response.json()["accepted"] == 1

    def opened():
        cases = httpx.get(stack.url("feedback") + "/v1/cases", headers=stack.headers,
                          params={"store_id": "syd-surryhills"}).json()["items"]
        return [c for c in cases if c["reason"] == "complaint:waiting_time"]

    cases = wait_for(opened, 60)
    assert cases, "the complaint opened no case"
    assert (cases[0]["owner"], cases[0]["priority"]) == ("syd-surryhills-manager", "high")
    hours = httpx.get(stack.url("feedback") + "/v1/stores/syd-surryhills/hours", headers=stack.headers).json()
    assert hours["timezone"] == "Australia/Sydney"


def test_a_touchpoint_posted_by_hand_is_readable_from_insights_with_its_customer(stack):
    event_id = str(uuid.uuid4())
    event = {"event_id": event_id, "type": "consultation.held", "occurred_at": datetime.now(UTC).isoformat(),
             "channel": "phone", "store_id": "syd-surryhills",
             "identifiers": [{"type": "phone", "value": "+61 412 555 010"}, {"type": "email", "value": "Ann@Example.com"}],
             "payload": {"topic": "matted coat"}}
    posted = time.monotonic()
    response = httpx.post(stack.url("identity") + "/v1/touchpoints", json={"events": [event]}, headers=stack.headers)
    assert response.json()["accepted"] == 1

    def stored():
        r = httpx.get(f"{stack.url('insights')}/v1/touchpoints/{event_id}", headers=stack.headers)
        return r.json() if r.status_code == 200 else None

    row = wait_for(stored, 30)
    assert row, "not in ClickHouse within 30 s"
    print(f"\nhand-posted touchpoint readable after {time.monotonic() - posted:.2f}s")
    customer = httpx.get(stack.url("identity") + "/v1/customers/lookup", headers=stack.headers,
                         params={"type": "email", "value": "ann@example.com"}).json()
    assert row["customer_id"] == customer["customer_id"]
    stack.hand_posted = (event_id, customer["customer_id"])
    lag = httpx.get(stack.url("insights") + "/v1/touchpoints/freshness", headers=stack.headers,
                    params={"since": row["recorded_at"]}).json()  # this one and what the simulator sent since
    assert lag["count"] >= 1 and 0 <= lag["p50_s"] <= lag["p99_s"] <= lag["max_s"]


def test_the_touchpoint_is_one_trace_across_identity_and_insights(stack):
    event_id, _ = stack.hand_posted

    def trace_in(log: str):
        text = (stack.home / "logs" / log).read_text()
        for block in re.findall(r"\{\n.*?\n\}", text, flags=re.S):
            if event_id in block and '"name": "touchpoint.' in block:
                return json.loads(block)["context"]["trace_id"]
        return None

    insights_trace = wait_for(lambda: trace_in("insights.log"), 15)
    identity_trace = wait_for(lambda: trace_in("identity.log"), 15)
    assert insights_trace and insights_trace == identity_trace


def test_a_marketing_tool_subscribed_to_purchases_receives_the_simulated_chains_signed_webhooks(stack):
    from services.identity.webhooks.signing import verify
    from tests.integration.webhook_receiver import Receiver

    receiver = Receiver()
    try:
        r = httpx.post(stack.url("identity") + "/v1/subscriptions", headers=stack.headers, json={
            "url": receiver.url, "event_types": ["purchase.completed"], "purpose": "marketing_sms",
            "pii_level": "contact"})
        assert r.status_code == 201, r.text
        subscription = r.json()
        stack.webhook_secret = subscription["secret"]
        assert wait_for(lambda: len(receiver.received) >= 3, 90), "no purchase webhooks from the simulated chain"
        for request in receiver.received[:3]:
            assert verify(request["headers"]["Hub-Signature"], subscription["secret"], request["body"], time.time())
            assert request["json"]["type"] == "purchase.completed" and request["json"]["contact"]["phone"]
        log = wait_for(lambda: httpx.get(  # outcomes are written back a few ms after the receiver answered
            f"{stack.url('identity')}/v1/subscriptions/{subscription['subscription_id']}/deliveries",
            headers=stack.headers, params={"state": "delivered"}).json(), 10)
        assert log and all(d["last_status"] == 204 for d in log)
        httpx.delete(f"{stack.url('identity')}/v1/subscriptions/{subscription['subscription_id']}",
                     headers=stack.headers)
    finally:
        receiver.close()


def test_no_service_logs_a_secret(stack):
    """The keys callers sent, the key-signing secret and the webhook secret never reach a service's log
    (the launcher's banner shows the demo key to the user on purpose: it is not a service log)."""
    secrets = {"demo API key": stack.key, "auth secret": (stack.home / "auth_secret").read_text().strip(),
               "PII master key": (stack.home / "pii_master_key").read_text().strip(),
               "webhook secret": stack.webhook_secret}
    for path in (stack.home / "logs" / f"{name}.log" for name in SERVICES):
        text = path.read_text(errors="replace")
        assert text, f"{path.name} is empty: nothing was checked"
        leaked = [name for name, value in secrets.items() if value and value in text]
        assert not leaked, f"{path.name} contains the {leaked}"


def test_a_killed_service_is_restarted_and_loses_none_of_the_accepted_touchpoints(stack):
    from hub.simulate import generate

    events = [{**e, "store_id": "fault-drill"} for e in generate(2000, seed=99)]
    for i in range(0, len(events), 500):
        r = httpx.post(stack.url("identity") + "/v1/touchpoints", json={"events": events[i:i + 500]},
                       headers=stack.headers, timeout=60)
        assert r.json()["accepted"] == 500
    stack.child("identity").kill()  # kill -9 while the accepted events are still being resolved
    assert wait_for(lambda: stack.ready("identity"), 60), "identity did not come back"

    def stored():
        summary = httpx.get(stack.url("insights") + "/v1/touchpoints/summary", headers=stack.headers).json()
        return summary["by_store"].get("fault-drill", 0)

    assert wait_for(lambda: stored() >= 2000, 90), f"only {stored()} of 2000 reached ClickHouse"
    time.sleep(2)
    assert stored() == 2000, "each accepted touchpoint exactly once"


def test_ctrl_c_drains_and_stops_every_child(stack):
    assert stack.stop(signal.SIGINT) == 0
    state = json.loads((stack.home / "run_state.json").read_text())
    assert state["drained"] is True
    assert not any(port_open("127.0.0.1", p) for p in stack.ports.values())


def test_a_second_run_resumes_the_state(stack):
    event_id, customer_id = stack.hand_posted
    stack.start(rate=5)
    assert stack.key == stack.first_key, "the demo key is generated once and kept"
    r = httpx.get(f"{stack.url('insights')}/v1/touchpoints/{event_id}", headers=stack.headers)
    assert r.status_code == 200 and r.json()["customer_id"] == customer_id
    again = httpx.get(stack.url("identity") + "/v1/customers/lookup", headers=stack.headers,
                      params={"type": "phone", "value": "+61412555010"}).json()
    assert again["customer_id"] == customer_id
    assert stack.stop(signal.SIGTERM) == 0
