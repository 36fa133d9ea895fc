"""Webhook subscriptions against a real local HTTP receiver, real Postgres and the real broker: signed
requests, retries on a clock the test controls, per-customer order, dead letters and replay, consent and
erasure, a hanging receiver, a dispatcher restart, and the 4xx a bad subscription gets."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from services.identity.app import create_app
from services.identity.settings import IdentitySettings
from services.identity.webhooks.dispatcher import Dispatcher, DispatchPolicy
from services.identity.webhooks.fanout import enqueue_deliveries
from services.identity.webhooks.signing import verify
from shared.auth import KeyVerifier, Role
from shared.bus.consumer import Delivery
from shared.events import utcnow
from shared.events.scores import CustomerLifecycleChanged, LifecycleChangedPayload

from .conftest import DEMO, settings_for
from .helpers import resolved_customer, wait_until
from .webhook_receiver import Receiver

POLICY = DispatchPolicy(retry_delays_s=(60, 600, 3600), jitter=0.1, timeout_s=3.0, concurrency=8)


class FakeClock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def hub(service_env):
    """Identity without its own dispatcher: each test runs one on the clock it controls."""
    app = create_app(settings_for(IdentitySettings, service_env, webhook_dispatcher=False))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def dispatch(hub):
    started = []

    def start(clock=None, policy=POLICY) -> Dispatcher:
        dispatcher = Dispatcher(hub.app.state.db, hub.app.state.vault, policy, clock=clock or utcnow,
                                refresh_s=0.1)
        dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        dispatcher.stop()


def settled(count, quiet_s: float = 1.0, timeout_s: float = 15.0) -> int:
    """The count once it stopped changing for quiet_s (requests still in flight have landed)."""
    deadline, last, since = time.monotonic() + timeout_s, count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError("the count kept changing")


def customer(hub, phone: str, purposes=("marketing_sms",)) -> uuid.UUID:
    customer_id = uuid.UUID(resolved_customer(hub, phone, DEMO))
    for purpose in purposes:
        consent(hub, customer_id, purpose, True)
    return customer_id


def consent(hub, customer_id, purpose: str, granted: bool) -> None:
    r = hub.post(f"/v1/customers/{customer_id}/consents", json={"purpose": purpose, "granted": granted}, headers=DEMO)
    assert r.status_code == 201, r.text


def subscribe(hub, url: str, **overrides) -> dict:
    body = {"url": url, "event_types": ["customer.lifecycle_changed"], "purpose": "marketing_sms", **overrides}
    r = hub.post("/v1/subscriptions", json=body, headers=DEMO)
    assert r.status_code == 201, r.text
    return r.json()


def stage_changed(customer_id, to_stage="at_risk", store="s1"):
    now = datetime.now(UTC)
    return CustomerLifecycleChanged(event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id="demo",
                                    source="insights", customer_id=customer_id,
                                    payload=LifecycleChangedPayload(to_stage=to_stage, reason=f"at {store}"))


def fan_out(hub, *events) -> int:
    return enqueue_deliveries([Delivery(e, "customers.scores", 0, i, {}) for i, e in enumerate(events)],
                              hub.app.state.db)


def log(hub, subscription, **params) -> list[dict]:
    return hub.get(f"/v1/subscriptions/{subscription['subscription_id']}/deliveries", params=params,
                   headers=DEMO).json()


def test_a_touchpoint_reaches_the_subscriber_signed_with_an_idempotency_key_and_no_identifiers(service_env, receiver):
    app = create_app(settings_for(IdentitySettings, service_env))  # the whole path: ingest, resolve, fan out, send
    with TestClient(app) as hub:
        someone = customer(hub, "+8613900000101")
        subscription = subscribe(hub, receiver.url, event_types=["purchase.completed"])
        assert subscription["secret"].startswith("whsec_") and subscription["state"] == "active"
        event_id = str(uuid.uuid4())
        purchase = {"event_id": event_id, "type": "purchase.completed", "occurred_at": datetime.now(UTC).isoformat(),
                    "channel": "pos", "store_id": "s1", "identifiers": [{"type": "phone", "value": "+8613900000101"}],
                    "payload": {"order_id": "o-1", "amount_minor": 12_000}}
        assert hub.post("/v1/touchpoints", json={"events": [purchase]}, headers=DEMO).json()["accepted"] == 1
        [request] = wait_until(lambda: receiver.received, 60, message="the webhook arrived")
        headers = request["headers"]
        assert verify(headers["Hub-Signature"], subscription["secret"], request["body"], time.time())
        assert not verify(headers["Hub-Signature"], subscription["secret"], request["body"] + b" ", time.time())
        assert headers["Idempotency-Key"] == headers["Hub-Event-Id"] == event_id
        assert (headers["Hub-Event-Type"], headers["Hub-Attempt"]) == ("purchase.completed", "1")
        body = request["json"]
        assert body["customer_id"] == str(someone) and body["payload"]["amount_minor"] == 12_000
        assert "identifiers" not in body and "+8613900000101" not in request["body"].decode()  # pii_level none
        [delivered] = wait_until(lambda: log(hub, subscription, state="delivered"), 10, message="logged")
        assert delivered["last_status"] == 204 and delivered["attempt_log"][0]["latency_ms"] > 0


def test_failures_are_retried_on_the_backoff_schedule_then_dead_lettered_and_replayed(hub, receiver, dispatch):
    someone = customer(hub, "+8613900000102")
    subscription = subscribe(hub, receiver.url)
    receiver.mode = "fail"
    event = stage_changed(someone)
    assert fan_out(hub, event) == 1
    clock = FakeClock()  # after the fan-out: its deliveries are due now
    dispatch(clock)
    wait_until(lambda: len(receiver.received) == 1, 10, message="first attempt")
    time.sleep(0.5)
    assert len(receiver.received) == 1  # nothing before the first retry is due
    for delay in POLICY.retry_delays_s:
        clock.advance(delay * 0.85)
        time.sleep(0.4)
        assert len(receiver.received) == 1 + POLICY.retry_delays_s.index(delay), "retried before its delay"
        clock.advance(delay * 0.3)  # past the delay plus the most jitter
        wait_until(lambda: len(receiver.received) == 2 + POLICY.retry_delays_s.index(delay), 10, message="retry")
    assert [r["headers"]["Hub-Attempt"] for r in receiver.received] == ["1", "2", "3", "4"]
    assert {r["headers"]["Idempotency-Key"] for r in receiver.received} == {str(event.event_id)}
    [dead] = wait_until(lambda: hub.get(f"/v1/subscriptions/{subscription['subscription_id']}/dead-letters",
                                        headers=DEMO).json(), 10, message="dead letter")
    assert dead["attempts"] == 4 and "gave up after 4 attempts; last: 503" == dead["reason"]
    assert [a["status_code"] for a in dead["attempt_log"]] == [503, 503, 503, 503]

    receiver.mode = "ok"
    replayed = hub.post(f"/v1/subscriptions/{subscription['subscription_id']}/replay", json={"dead_letters": True},
                        headers=DEMO)
    assert replayed.json() == {"queued": 1}
    wait_until(lambda: len(receiver.received) == 5, 10, message="the replay")
    assert receiver.received[-1]["headers"]["Idempotency-Key"] == str(event.event_id)
    assert hub.get(f"/v1/subscriptions/{subscription['subscription_id']}/dead-letters", headers=DEMO).json() == []


def test_one_customers_events_arrive_in_order_while_a_failing_one_holds_only_its_own_lane(hub, receiver, dispatch):
    first, second = customer(hub, "+8613900000103"), customer(hub, "+8613900000104")
    subscribe(hub, receiver.url)
    firsts = [stage_changed(first, stage) for stage in ("purchase", "repeat", "loyal")]
    seconds = [stage_changed(second, stage) for stage in ("purchase", "repeat")]
    receiver.fail_first[str(firsts[0].event_id)] = 1
    fan_out(hub, firsts[0], seconds[0], firsts[1], seconds[1], firsts[2])
    clock = FakeClock()  # after the fan-out: its deliveries are due now
    dispatch(clock)
    wait_until(lambda: len(receiver.received) == 3, 10, message="the first attempts")
    time.sleep(0.5)
    ids = receiver.event_ids()  # the second customer's lane is not held up by the first one's failure
    assert sorted(ids) == sorted([str(firsts[0].event_id), str(seconds[0].event_id), str(seconds[1].event_id)])
    assert ids.index(str(seconds[0].event_id)) < ids.index(str(seconds[1].event_id))
    clock.advance(POLICY.retry_delays_s[0] * 1.2)
    wait_until(lambda: len(receiver.received) == 6, 10, message="the first customer's lane after its retry")
    mine = [i for i in receiver.event_ids() if i in {str(e.event_id) for e in firsts}]
    assert mine == [str(firsts[0].event_id)] + [str(e.event_id) for e in firsts]  # refused once, then in order


def test_a_receiver_that_is_down_gets_one_probe_at_a_time_and_everything_once_it_is_back(hub, receiver, dispatch):
    phones = [f"+86139000002{i:02d}" for i in range(25)]
    events = [{"event_id": str(uuid.uuid4()), "type": "store.visited", "occurred_at": datetime.now(UTC).isoformat(),
               "channel": "walk_in", "store_id": "s1", "identifiers": [{"type": "phone", "value": p}]} for p in phones]
    assert hub.post("/v1/touchpoints", json={"events": events}, headers=DEMO).json()["accepted"] == 25
    people = [customer(hub, phone) for phone in phones]  # resolved already: only the lookup and consent
    subscribe(hub, receiver.url)
    queued = [stage_changed(p, "at_risk") for p in people] + [stage_changed(p, "churned") for p in people]
    fan_out(hub, *queued)
    receiver.mode = "fail"
    clock = FakeClock()
    dispatch(clock)
    wait_until(lambda: len(receiver.received) >= 20, 10, message="the first failures")
    first_wave = settled(lambda: len(receiver.received))
    assert first_wave <= 20 + POLICY.concurrency  # then the breaker holds every other lane back
    clock.advance(POLICY.retry_delays_s[0] * 1.2)  # every lane's retry is due now
    for _ in range(3):  # probes 1 s, then 2 s apart: at most two in these 3 s (every lane would be 25)
        settled(lambda: len(receiver.received))
        clock.advance(1.0)
    assert settled(lambda: len(receiver.received)) - first_wave <= 3, "more than one probe per interval"
    receiver.mode = "ok"
    clock.advance(60)  # the next probe gets through, and every lane waiting for its retry goes at once
    wait_until(lambda: {str(e.event_id) for e in queued} <= set(receiver.event_ids()), 20, message="all delivered")
    sent = receiver.event_ids()  # every attempt, failed ones too
    for at_risk, churned in zip(queued[:25], queued[25:]):  # per customer: at_risk got through before churned went
        assert len(sent) - 1 - sent[::-1].index(str(at_risk.event_id)) < sent.index(str(churned.event_id))


def test_no_consent_means_no_delivery_and_a_withdrawal_drops_what_was_queued(hub, receiver, dispatch):
    consenting, silent = customer(hub, "+8613900000105"), customer(hub, "+8613900000106", purposes=())
    wechat_only = customer(hub, "+8613900000107", purposes=("marketing_wechat",))
    subscription = subscribe(hub, receiver.url)
    assert fan_out(hub, stage_changed(consenting), stage_changed(silent), stage_changed(wechat_only)) == 1
    receiver.mode = "fail"
    clock = FakeClock()  # after the fan-out: its deliveries are due now
    dispatch(clock)
    wait_until(lambda: len(receiver.received) == 1, 10, message="the consenting customer's delivery")
    consent(hub, consenting, "marketing_sms", False)  # withdrawn while the retry waits
    fan_out(hub, stage_changed(consenting, "churned"))  # queued no more
    receiver.mode = "ok"
    clock.advance(POLICY.retry_delays_s[0] * 1.2)
    [dropped] = wait_until(lambda: log(hub, subscription, state="dropped"), 10, message="dropped")
    assert dropped["reason"] == "no consent for marketing_sms" and len(receiver.received) == 1
    assert [r["json"]["customer_id"] for r in receiver.received] == [str(consenting)]


def test_an_erased_customers_queued_deliveries_are_dropped_and_never_sent(hub, receiver, dispatch):
    someone = customer(hub, "+8613900000108")
    subscription = subscribe(hub, receiver.url, event_types=["customer.lifecycle_changed", "customer.erased"])
    hub.post(f"/v1/subscriptions/{subscription['subscription_id']}/pause", headers=DEMO)
    fan_out(hub, stage_changed(someone), stage_changed(someone, "churned"))
    assert hub.post(f"/v1/customers/{someone}/erasure", headers=DEMO).status_code == 202
    dropped = log(hub, subscription, state="dropped")
    assert [d["reason"] for d in dropped] == ["customer erased", "customer erased"]
    assert hub.post(f"/v1/subscriptions/{subscription['subscription_id']}/resume", headers=DEMO).json()["state"] \
        == "active"
    dispatch()
    fan_out(hub, stage_changed(someone, "win_back"))  # a late score for the erased customer
    # Only the erasure notice itself goes out, so the tool deletes its copy; it carries ids only.
    [notice] = wait_until(lambda: receiver.received, 30, message="the erasure notice")
    time.sleep(1.0)
    assert [r["headers"]["Hub-Event-Type"] for r in receiver.received] == ["customer.erased"]
    assert notice["json"]["customer_id"] == str(someone) and "+8613900000108" not in notice["body"].decode()
    wait_until(lambda: log(hub, subscription, state="delivered"), 10, message="logged")
    assert hub.post(f"/v1/subscriptions/{subscription['subscription_id']}/replay",
                    json={"since": "2020-01-01T00:00:00Z"}, headers=DEMO).json() == {"queued": 1}  # the notice only


def test_a_hanging_receiver_delays_no_other_subscriber(hub, receiver, dispatch):
    hanging = Receiver()
    hanging.mode = "hang"
    try:
        someone = customer(hub, "+8613900000109")
        slow = subscribe(hub, hanging.url)
        subscribe(hub, receiver.url)
        events = [stage_changed(someone, stage) for stage in ("purchase", "repeat", "loyal", "at_risk")]
        fan_out(hub, *events)
        started = time.monotonic()
        dispatch()
        wait_until(lambda: len(receiver.received) == 4, 10, message="the healthy subscriber's deliveries")
        assert time.monotonic() - started < POLICY.timeout_s * 4  # not queued behind the hanging one's timeouts
        [waiting] = wait_until(lambda: [d for d in log(hub, slow, state="pending") if d["attempts"]], 10,
                               message="the timed-out attempt")
        assert "Timeout" in waiting["last_error"] and waiting["last_status"] is None
    finally:
        hanging.close()


def test_a_restarted_dispatcher_sends_nothing_twice(hub, receiver, dispatch):
    someone = customer(hub, "+8613900000110")
    subscription = subscribe(hub, receiver.url)
    first = dispatch()
    fan_out(hub, *[stage_changed(someone, "repeat") for _ in range(30)])
    wait_until(lambda: len(log(hub, subscription, state="delivered", limit=1000)) == 30, 10, message="delivered")
    first.stop()
    dispatch()
    fan_out(hub, *[stage_changed(someone, "loyal") for _ in range(5)])
    wait_until(lambda: len(receiver.received) == 35, 10, message="the new ones")
    time.sleep(0.5)
    assert len(receiver.received) == len(set(receiver.event_ids())) == 35


def test_rotation_signs_with_both_secrets_for_the_grace_period_and_contact_level_carries_the_phone(
        hub, receiver, dispatch):
    someone = customer(hub, "+8613900000111")
    subscription = subscribe(hub, receiver.url, pii_level="contact")
    rotated = hub.post(f"/v1/subscriptions/{subscription['subscription_id']}/rotate-secret", headers=DEMO).json()
    assert rotated["secret"] != subscription["secret"] and rotated["previous_secret_until"]
    dispatch()
    fan_out(hub, stage_changed(someone))
    [request] = wait_until(lambda: receiver.received, 10, message="delivered")
    for secret in (subscription["secret"], rotated["secret"]):
        assert verify(request["headers"]["Hub-Signature"], secret, request["body"], time.time())
    assert request["json"]["contact"] == {"phone": ["+8613900000111"]}


def test_filters_choose_by_store_stage_and_risk(hub, receiver, dispatch):
    someone = customer(hub, "+8613900000112")
    subscription = subscribe(hub, receiver.url, filter={"stages": ["at_risk", "churned"]})
    dispatch()
    assert fan_out(hub, stage_changed(someone, "loyal"), stage_changed(someone, "churned")) == 1
    [request] = wait_until(lambda: receiver.received, 10, message="delivered")
    assert request["json"]["payload"]["to_stage"] == "churned"
    wait_until(lambda: log(hub, subscription, state="delivered"), 10, message="logged")  # replay takes finished ones
    replayed = hub.post(f"/v1/subscriptions/{subscription['subscription_id']}/replay",
                        json={"since": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}, headers=DEMO)
    assert replayed.json() == {"queued": 1}
    wait_until(lambda: len(receiver.received) == 2, 10, message="the replay")
    assert receiver.received[1]["headers"]["Idempotency-Key"] == request["headers"]["Idempotency-Key"]


def test_bad_subscriptions_get_a_4xx_with_the_reason(hub, service_env):
    def refused(**body):
        r = hub.post("/v1/subscriptions", json={"url": "https://crm.example.com/hook", "event_types":
                                                ["customer.lifecycle_changed"], "purpose": "marketing_sms", **body},
                     headers=DEMO)
        assert r.status_code == 422, r.text
        return r.text

    assert "http or https" in refused(url="ftp://crm.example.com/hook")
    assert "public event catalogue: booking.nonsense" in refused(event_types=["booking.nonsense"])
    assert "customer.erasure_confirmed" in refused(event_types=["customer.erasure_confirmed"])  # not public
    assert "favourite_colour" in refused(filter={"favourite_colour": "red"})
    assert "min_churn_risk" in refused(filter={"min_churn_risk": 2})
    strict = create_app(settings_for(IdentitySettings, service_env, webhook_allow_private_urls=False,
                                     webhook_dispatcher=False, run_workers=False))
    with TestClient(strict) as production_like:
        for url in ("http://127.0.0.1:9000/hook", "http://10.1.2.3/hook", "http://localhost/hook"):
            r = production_like.post("/v1/subscriptions", json={"url": url, "event_types": ["customer.created"],
                                                                 "purpose": "analytics"}, headers=DEMO)
            assert r.status_code == 422 and "private or loopback" in r.text, (url, r.text)


def test_subscriptions_belong_to_their_tenant_and_need_a_marketing_or_admin_key(hub, receiver):
    subscription = subscribe(hub, receiver.url)
    path = f"/v1/subscriptions/{subscription['subscription_id']}"
    other = {"Authorization": f"Bearer {KeyVerifier('test-secret').issue('chain-b', Role.admin)}"}
    assert hub.get(path, headers=other).status_code == 404
    assert hub.post(path + "/pause", headers=other).status_code == 404
    assert hub.get("/v1/subscriptions", headers=other).json() == []
    staff = {"Authorization": f"Bearer {KeyVerifier('test-secret').issue('demo', Role.store_staff)}"}
    assert hub.get("/v1/subscriptions", headers=staff).status_code == 403
    marketing = {"Authorization": f"Bearer {KeyVerifier('test-secret').issue('demo', Role.marketing)}"}
    assert hub.get(path, headers=marketing).json()["url"] == receiver.url
    assert "secret" not in hub.get(path, headers=DEMO).json()
    assert hub.delete(path, headers=DEMO).json()["state"] == "deleted"
    assert hub.get(path, headers=DEMO).status_code == 404


def test_the_default_retry_schedule_keeps_trying_for_more_than_a_day_even_with_the_least_jitter():
    settings = IdentitySettings()
    assert sum(settings.webhook_retry_delays_s) * (1 - settings.webhook_jitter) >= 24 * 3600


def test_a_receiver_that_closes_the_connection_is_retried(hub, receiver, dispatch):
    someone = customer(hub, "+8613900000113")
    subscription = subscribe(hub, receiver.url)
    receiver.mode = "close"
    dispatch()
    fan_out(hub, stage_changed(someone))
    [waiting] = wait_until(lambda: [d for d in log(hub, subscription, state="pending") if d["attempts"]], 10,
                           message="the failed attempt")
    assert waiting["last_status"] is None and waiting["last_error"]
    assert httpx.get(receiver.url.replace("/hooks", "/")).status_code == 501  # the receiver itself is still up


def test_the_log_keeps_finished_deliveries_for_the_retention_period_and_dead_letters_until_replayed(
        hub, receiver, dispatch):
    someone = customer(hub, "+8613900000114")
    subscription = subscribe(hub, receiver.url)
    policy = DispatchPolicy(retry_delays_s=(), jitter=0, timeout_s=3.0, concurrency=8)  # one attempt only
    fan_out(hub, stage_changed(someone, "repeat"))
    clock = FakeClock()
    dispatcher = dispatch(clock, policy)
    wait_until(lambda: log(hub, subscription, state="delivered"), 10, message="delivered")
    receiver.mode = "fail"
    fan_out(hub, stage_changed(someone, "churned"))
    clock.advance(60)
    wait_until(lambda: log(hub, subscription, state="dead"), 10, message="dead letter")
    clock.advance(13 * 86_400)
    assert dispatcher.prune() == 0 and len(log(hub, subscription)) == 2
    clock.advance(2 * 86_400)
    assert dispatcher.prune() == 1
    assert [d["state"] for d in log(hub, subscription)] == ["dead"]
