"""Loyalty follows identity: ledgers combine on a merge, move with their touchpoints on a split, are
written off and anonymised on erasure; end to end over the broker the hub's 360 shows tier and balance,
and a source event loyalty cannot apply goes to the dead-letter topic whole."""
from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from services.identity.app import create_app as create_identity
from services.identity.settings import IdentitySettings
from services.loyalty.app import create_app as create_loyalty
from services.loyalty.settings import LoyaltySettings
from shared.events import CustomerErased, CustomerMerged, CustomerSplit
from shared.events.customers import CustomerErasedPayload, CustomerMergedPayload, CustomerSplitPayload
from tests.integration.conftest import settings_for
from tests.integration.helpers import read_all, start_until_it_waits_on_a_row, touchpoint_doc, wait_until
from tests.integration.loyalty_setup import (
    DEMO, announced, deliver, envelope, ledger_is_exact, member, ok, purchase, refund, sql,
)


def merged(survivor, *losers) -> CustomerMerged:
    return CustomerMerged(**envelope(survivor), payload=CustomerMergedPayload(
        merged_customer_ids=losers, rule="shared_strong_identifier"))


def test_a_merge_combines_ledgers_keeps_history_and_re_evaluates_the_tier(loyalty):
    survivor, loser = uuid.uuid4(), uuid.uuid4()
    deliver(loyalty, purchase(survivor, 120_000), purchase(loser, 100_000, order_id="o-merge", days_ago=30))
    held = ok(loyalty.post("/v1/redemptions", headers=DEMO, json={"customer_id": str(loser), "points": 300}), 201)
    event = merged(survivor, loser)
    deliver(loyalty, event)
    deliver(loyalty, event)  # redelivered: nothing moves twice
    view = member(loyalty, survivor)
    assert (view["balance"], view["earned_in_window"], view["tier"]["name"]) == (2_200, 2_200, "gold")
    assert view["merged_from"] == [str(loser)] and view["held"] == 300
    assert member(loyalty, loser)["customer_id"] == str(survivor)  # the merged id answers with the survivor
    ok(loyalty.post(f"/v1/redemptions/{held['redemption_id']}/commit", headers=DEMO))
    # a late touchpoint of the merged id, and a refund of its purchase, land on the survivor
    deliver(loyalty, purchase(loser, 10_000), refund(loser, "o-merge", 100_000))
    assert member(loyalty, survivor)["balance"] == 2_200 - 300 + 120 - 1_000
    history = ok(loyalty.get(f"/v1/members/{survivor}/ledger", headers=DEMO, params={"include_merged": True}))
    assert {e["kind"] for e in history["items"]} >= {"earn", "transfer_in", "transfer_out", "redeem", "reverse"}
    assert sum(e["points"] for e in history["items"]) == history["balance"]
    tiers = [p["to_tier"] for t, p in announced(loyalty, survivor) if t == "loyalty.tier_changed"]
    assert tiers == ["silver", "gold"]  # enrolled, then the merge's combined points
    ledger_is_exact(loyalty)


def test_a_merge_keeps_the_higher_tier_of_the_merged_profiles(loyalty):
    survivor, diamond = uuid.uuid4(), uuid.uuid4()
    deliver(loyalty, purchase(survivor, 1_000), purchase(diamond, 900_000))
    sql(loyalty, "update loyalty.entries set qualifies_at = qualifies_at - interval '13 months' "
                 "where customer_id = %s returning 1", diamond)  # earned long ago: the window no longer has it
    deliver(loyalty, merged(survivor, diamond))
    assert member(loyalty, survivor)["tier"]["name"] == "diamond"


def test_a_split_moves_the_points_of_the_moved_touchpoints(loyalty):
    old, new = uuid.uuid4(), uuid.uuid4()
    moving, staying = purchase(old, 50_000), purchase(old, 20_000)
    deliver(loyalty, moving, staying)
    split = CustomerSplit(**envelope(old), payload=CustomerSplitPayload(
        new_customer_id=new, moved_identifier_types=("phone",), moved_event_ids=(moving.event_id,),
        decision_id=uuid.uuid4()))
    deliver(loyalty, split)
    assert member(loyalty, old)["balance"] == 200 and member(loyalty, new)["balance"] == 500
    assert member(loyalty, new)["earned_in_window"] == 500
    # the moved touchpoint redelivered with its old customer id still belongs to the new profile
    late = purchase(old, 30_000)
    deliver(loyalty, CustomerSplit(**envelope(old), payload=CustomerSplitPayload(
        new_customer_id=new, moved_identifier_types=("phone",), moved_event_ids=(late.event_id,),
        decision_id=uuid.uuid4())))
    deliver(loyalty, late)
    assert member(loyalty, new)["balance"] == 800
    ledger_is_exact(loyalty)


def test_a_batch_of_merges_locks_their_members_in_one_order_so_batches_never_deadlock(loyalty):
    """Locked merge by merge, a batch holds the first merge's members while it waits for the second's, and
    a batch from another partition can hold those while waiting for the first's. Here another
    transaction holds the lowest member; the batch must wait for it before locking any other member, so
    that transaction can still take the highest one."""
    lowest, a, b, highest = sorted((uuid.uuid4() for _ in range(4)), key=str)
    deliver(loyalty, *(purchase(c, 10_000) for c in (lowest, a, b, highest)))
    with loyalty.app.state.db.transaction() as cur:
        cur.execute("select 1 from members where customer_id = %s for update", (lowest,))
        # the first merge has the highest id
        worker, failures = start_until_it_waits_on_a_row(
            cur, lambda: deliver(loyalty, merged(a, highest), merged(b, lowest)))
        cur.execute("select 1 from members where customer_id = %s for update", (highest,))
    worker.join(30)
    assert not failures, failures
    assert [member(loyalty, c)["balance"] for c in (a, b)] == [200, 200]


def test_erasure_writes_off_the_points_keeps_liability_exact_and_forgets_free_text(loyalty):
    cid = uuid.uuid4()
    deliver(loyalty, purchase(cid, 70_000, store_id="erase-1"))
    ok(loyalty.post("/v1/adjustments", headers=DEMO, json={"customer_id": str(cid), "points": 30,
                                                          "reason": "Mrs Wang's dog bit the groomer"}), 201)
    before = ok(loyalty.get("/v1/liability", headers=DEMO, params={"store_id": "erase-1"}))
    assert before["total"]["outstanding_points"] == 700
    erased = CustomerErased(**envelope(cid), payload=CustomerErasedPayload(
        erasure_request_id=uuid.uuid4(), customer_ids=(cid,)))
    deliver(loyalty, erased)
    assert loyalty.get(f"/v1/members/{cid}", headers=DEMO).status_code == 404
    after = ok(loyalty.get("/v1/liability", headers=DEMO, params={"store_id": "erase-1"}))
    assert after["total"]["outstanding_points"] == 0
    assert sql(loyalty, "select count(*) from loyalty.entries where customer_id = %s and reason is not null", cid) \
        == [(0,)]
    assert sql(loyalty, "select sum(points) from loyalty.entries where customer_id = %s", cid) == [(0,)]
    deliver(loyalty, purchase(cid, 10_000))  # resolved before the erasure, delivered after: not credited
    assert sql(loyalty, "select sum(points) from loyalty.entries where customer_id = %s", cid) == [(0,)]
    confirmed = sql(loyalty, "select count(*) from loyalty.outbox where event_type = 'customer.erasure_confirmed' "
                             "and msg_key = %s", str(cid).encode())
    assert confirmed == [(1,)]
    ledger_is_exact(loyalty)


def test_end_to_end_points_reach_the_customer_360_and_a_bad_event_is_dead_lettered(service_env):
    with TestClient(create_identity(settings_for(IdentitySettings, service_env))) as identity, \
            TestClient(create_loyalty(settings_for(LoyaltySettings, service_env, clock_interval_s=3600))) as loyalty:
        phone = "13912348800"
        good = touchpoint_doc(phone=phone, type="purchase.completed", channel="pos",
                              payload={"order_id": "e2e-1", "amount_minor": 260_000})
        foreign = touchpoint_doc(phone=phone, type="purchase.completed", channel="pos",
                                 payload={"order_id": "e2e-2", "amount_minor": 5_000, "currency": "USD"})
        ok(identity.post("/v1/touchpoints", headers=DEMO, json={"events": [good, foreign]}))
        customer = wait_until(lambda: identity.get("/v1/customers/lookup", headers=DEMO,
                                                   params={"type": "phone", "value": phone}).json().get("customer_id"),
                              timeout_s=60, message="identity resolves the purchase")
        view = wait_until(lambda: (lambda v: v if v["loyalty"]["points_balance"] == 2_600 else None)(
            ok(identity.get(f"/v1/customers/{customer}", headers=DEMO))), timeout_s=60,
            message="the 360 shows the points loyalty announced")
        assert view["loyalty"] == {"tier": "gold", "points_balance": 2_600}
        assert member(loyalty, customer)["balance"] == 2_600

        parked = read_all(service_env["kafka_bootstrap_servers"],
                          f"{service_env['topic_prefix']}touchpoints.resolved.dlq", 1, timeout_s=60)
        assert [foreign["event_id"].encode() in r.value for r in parked] == [True]
        headers = dict(parked[0].headers)
        assert b"USD" in headers["dlq.reason"]
        assert sql(loyalty, "select count(*) from loyalty.entries where source_ref = 'order:e2e-2'") == [(0,)]
