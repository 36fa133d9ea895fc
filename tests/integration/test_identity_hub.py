"""The hub's customer view end to end over the real broker and Postgres: 360 with survivorship, merged
ids, split with re-attribution, consent history, verifiable erasure, merge review and roles."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.identity.pii import Vault
from shared.auth import KeyVerifier, Role
from shared.bus.producer import make_producer
from shared.events import ErasureConfirmed, encode
from shared.events.customers import ErasureConfirmedPayload
from shared.topics import ERASURE_CONFIRMATIONS

from .conftest import DEMO
from .helpers import touchpoint_doc, wait_until


def key(role: Role, tenant: str = "demo") -> dict:
    return {"Authorization": f"Bearer {KeyVerifier('test-secret').issue(tenant, role)}"}


def ago(**kw) -> str:
    return (datetime.now(UTC) - timedelta(**kw)).isoformat()


def send(identity, *docs):
    response = identity.post("/v1/touchpoints", json={"events": list(docs)}, headers=DEMO)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(docs), response.json()
    return docs


def resolved(identity, *docs):
    """Wait until identity resolved these touchpoints; returns the customer of the last one."""
    def all_in_timeline():
        found = None
        for doc in docs:
            ident = doc["identifiers"][0]
            r = identity.get("/v1/customers/lookup", params={"type": ident["type"], "value": ident["value"],
                                                             **({"scope": ident["scope"]} if "scope" in ident else {})},
                             headers=DEMO)
            if r.status_code != 200:
                return None
            page = identity.get(f"/v1/customers/{r.json()['customer_id']}/timeline", headers=DEMO,
                                params={"limit": 500}).json()
            if doc["event_id"] not in {i["event_id"] for i in page["items"]}:
                return None
            found = r.json()
        return found

    return wait_until(all_in_timeline, timeout_s=30, message="touchpoints resolved")


def profile(phone: str, **payload) -> dict:
    return touchpoint_doc(phone=phone, type="profile.updated", payload=payload, occurred_at=payload.pop("at", ago()),
                          channel=payload.pop("channel", "app"))


def test_the_360_shows_the_golden_record_subjects_facts_and_counts(identity):
    phone = "13912340001"
    send(identity,
         profile(phone, name="Wang Li", at=ago(days=3), channel="web",
                 pets=[{"name": "Mochi", "species": "dog", "breed": "poodle", "size": "s", "coat": "curly"}]),
         profile(phone, name="王丽", at=ago(days=2), channel="pos", verified=True, birth_date="1990-04-01"),
         profile(phone, name="Lily Wang", at=ago(days=1), channel="web",
                 vehicles=[{"plate": "沪A12345", "make": "Tesla", "model": "Model 3"}]))
    starts = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    last = send(identity,
                touchpoint_doc(phone=phone, type="booking.created", channel="wechat_miniprogram",
                               payload={"appointment_id": "a-1", "service_id": "groom-s", "starts_at": starts}),
                touchpoint_doc(phone=phone, type="survey.answered", payload={"nps": 9, "csat": 5}))
    view = resolved(identity, *last)
    assert view["profile"]["name"]["value"] == "王丽"  # verified beats newer unverified
    assert view["profile"]["birth_date"]["value"] == "1990-04-01"
    assert view["profile"]["phone"]["value"] == "+8613912340001"
    assert [p["name"] for p in view["pets"]] == ["Mochi"]
    assert view["vehicles"][0]["plate"] == "沪A12345" and view["vehicles"][0]["make"] == "Tesla"
    assert view["next_booking"]["appointment_id"] == "a-1"
    assert view["last_nps"]["nps"] == 9
    assert view["touchpoints"]["total"] == 5
    assert view["touchpoints"]["by_channel"]["web"] == 2

    masked = identity.get(f"/v1/customers/{view['customer_id']}", headers=key(Role.marketing)).json()
    assert "13912340001" not in str(masked) and "王丽" not in str(masked)


def test_a_merged_id_answers_with_the_survivor_and_says_so(identity):
    first = resolved(identity, *send(identity, touchpoint_doc(phone="13912340002")))
    second = resolved(identity, *send(identity, touchpoint_doc(identifiers=[{"type": "email", "value": "m@x.cn"}])))
    link = send(identity, touchpoint_doc(identifiers=[{"type": "phone", "value": "13912340002"},
                                                      {"type": "email", "value": "m@x.cn"}]))
    resolved(identity, *link)
    view = identity.get(f"/v1/customers/{second['customer_id']}", headers=DEMO).json()
    assert view["customer_id"] == first["customer_id"]
    assert view["resolved_from"] == second["customer_id"]
    assert second["customer_id"] in view["merged_ids"]


def test_a_list_of_identifiers_is_looked_up_in_one_call_each_answered_in_its_place(identity, other_tenant_headers):
    first = resolved(identity, *send(identity, touchpoint_doc(phone="13912340021")))
    resolved(identity, *send(identity, touchpoint_doc(identifiers=[{"type": "email", "value": "list@x.cn"}])))
    resolved(identity, *send(identity, touchpoint_doc(identifiers=[{"type": "phone", "value": "13912340021"},
                                                                   {"type": "email", "value": "list@x.cn"}])))
    asked = [{"type": "email", "value": " List@X.cn "}, {"type": "phone", "value": "abc"},
             {"type": "phone", "value": "13912340029"}, {"type": "phone", "value": "+86 139 1234 0021"}]
    response = identity.post("/v1/customers/lookups", json={"identifiers": asked}, headers=DEMO)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    # the merged profile's email answers with the survivor; a bad phone says why and stops nothing
    assert [r["customer_id"] for r in results] == [first["customer_id"], None, None, first["customer_id"]]
    assert "phone" in results[1]["error"] and [r["error"] for r in results[2:]] == [None, None]
    elsewhere = identity.post("/v1/customers/lookups", json={"identifiers": asked}, headers=other_tenant_headers)
    assert [r["customer_id"] for r in elsewhere.json()["results"]] == [None] * 4
    too_many = identity.post("/v1/customers/lookups", json={"identifiers": asked * 251}, headers=DEMO)
    assert too_many.status_code == 422 and "identifiers" in too_many.text


def test_a_split_moves_identifiers_and_their_past_touchpoints_and_is_not_undone_by_the_next_event(identity):
    mom_phone, dad_card = "13912340003", "CARD-77"
    docs = send(identity,
                touchpoint_doc(phone=mom_phone),
                touchpoint_doc(identifiers=[{"type": "phone", "value": mom_phone},
                                            {"type": "member_card", "value": dad_card}]),
                touchpoint_doc(identifiers=[{"type": "member_card", "value": dad_card}], channel="pos"))
    merged = resolved(identity, *docs)
    refused = identity.post(f"/v1/customers/{merged['customer_id']}/split", headers=DEMO,
                            json={"identifiers": [{"type": "email", "value": "nobody@x.cn"}]})
    assert refused.status_code == 409 and "does not hold" in refused.json()["detail"]

    response = identity.post(f"/v1/customers/{merged['customer_id']}/split", headers=DEMO,
                             json={"identifiers": [{"type": "member_card", "value": dad_card}],
                                   "reason": "card belongs to her husband"})
    assert response.status_code == 201, response.text
    split = response.json()
    assert split["moved_events"] == 2
    dad = identity.get(f"/v1/customers/{split['new_customer_id']}/timeline", headers=DEMO).json()
    assert {i["event_id"] for i in dad["items"]} == {docs[1]["event_id"], docs[2]["event_id"]}

    again = send(identity, touchpoint_doc(identifiers=[{"type": "phone", "value": mom_phone},
                                                       {"type": "member_card", "value": dad_card}]))
    wait_until(lambda: identity.get(f"/v1/customers/{split['new_customer_id']}/timeline", headers=DEMO)
               .json()["items"][0]["event_id"] == again[0]["event_id"], message="next event resolved")
    mom = identity.get(f"/v1/customers/{merged['customer_id']}", headers=DEMO).json()
    assert mom["resolved_from"] is None and mom["household"]["members"] == [split["new_customer_id"]]
    kinds = [d["kind"] for d in identity.get(f"/v1/customers/{merged['customer_id']}/decisions",
                                             headers=DEMO).json()["decisions"]]
    assert "split" in kinds and "household" in kinds  # a merge happened only if the card arrived first


def test_consent_has_a_history_and_channel_withdrawals_count(identity):
    customer = resolved(identity, *send(identity, touchpoint_doc(phone="13912340004")))
    cid = customer["customer_id"]
    r = identity.post(f"/v1/customers/{cid}/consents", headers=key(Role.store_staff),
                      json={"purpose": "marketing_sms", "granted": True, "source": "store:sh-jingan",
                            "effective_at": ago(days=1)})
    assert r.status_code == 201 and r.json()["current"]["marketing_sms"]["granted"] is True
    stop = send(identity, touchpoint_doc(phone="13912340004", type="consent.changed", channel="phone",
                                         payload={"purpose": "marketing_sms", "granted": False, "evidence": "STOP"}))
    resolved(identity, *stop)
    consents = identity.get(f"/v1/customers/{cid}/consents", headers=DEMO).json()
    assert consents["current"]["marketing_sms"]["granted"] is False
    assert [h["granted"] for h in consents["history"]] == [False, True]
    bad = identity.post(f"/v1/customers/{cid}/consents", headers=DEMO, json={"purpose": "telepathy", "granted": True})
    assert bad.status_code == 422


def test_erasure_destroys_the_data_and_completes_when_every_service_confirms(identity, service_env):
    customer = resolved(identity, *send(identity, profile("13912340005", name="Zhao Min")))
    cid = customer["customer_id"]
    db = identity.app.state.db
    with db.transaction() as cur:
        cur.execute("select value_enc, key_id from identity.identifiers where customer_id = %s", (cid,))
        backup = cur.fetchall()  # what an old backup of the data tables would hold

    r = identity.post(f"/v1/customers/{cid}/erasure", headers=DEMO)
    assert r.status_code == 202, r.text
    request = r.json()
    assert request["status"] == "pending"
    assert {s["service"]: s["confirmed"] for s in request["services"]}["identity"] is True
    assert identity.get(f"/v1/customers/{cid}", headers=DEMO).status_code == 410
    assert identity.get("/v1/customers/lookup", params={"type": "phone", "value": "13912340005"},
                        headers=DEMO).status_code == 404
    fresh_vault = Vault(identity.app.state.settings.pii_master_key.get_secret_value())
    with db.transaction() as cur:
        from services.identity import store
        assert store.load_keys(cur, fresh_vault, [k for _, k in backup]) == set()

    producer = make_producer(service_env["kafka_bootstrap_servers"], client_id="test")
    for service in ("booking", "loyalty", "feedback", "insights"):
        now = datetime.now(UTC)
        confirmation = ErasureConfirmed(
            event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id="demo", source=service,
            customer_id=cid, payload=ErasureConfirmedPayload(erasure_request_id=request["request_id"], service=service))
        producer.send(service_env["topic_prefix"] + ERASURE_CONFIRMATIONS.name, key=cid.encode(),
                      value=encode(confirmation)).get(timeout=10)
    producer.close()
    done = wait_until(lambda: (s := identity.get(f"/v1/erasure-requests/{request['request_id']}",
                                                 headers=DEMO).json())["status"] == "completed" and s,
                      message="erasure completed")
    assert all(s["confirmed"] for s in done["services"]) and done["completed_at"]


def test_similar_profiles_are_suggested_for_review_and_a_rejected_pair_is_never_suggested_again(identity):
    a = send(identity, profile("13912340006", name="Chen Jing", birth_date="1988-07-15", address="上海市静安区南京西路100号"))
    b = send(identity, touchpoint_doc(identifiers=[{"type": "email", "value": "cj88@x.cn"}], type="profile.updated",
                                      payload={"name": "陈静", "birth_date": "1988-07-15",
                                               "address": "上海市静安区南京西路100号"}))
    one, two = resolved(identity, *a), resolved(identity, *b)
    pair = sorted([one["customer_id"], two["customer_id"]])
    suggestion = wait_until(lambda: next((s for s in identity.get("/v1/match-suggestions", headers=DEMO).json()
                                          if sorted(s["customer_ids"]) == pair), None), message="suggestion")
    assert suggestion["score"] >= 0.75 and suggestion["reasons"]
    assert identity.post(f"/v1/match-suggestions/{suggestion['suggestion_id']}/reject", headers=DEMO).status_code == 200
    assert identity.post(f"/v1/match-suggestions/{suggestion['suggestion_id']}/accept",
                         headers=DEMO).status_code == 409
    resolved(identity, *send(identity, profile("13912340006", name="Chen Jing", birth_date="1988-07-15")))
    assert not [s for s in identity.get("/v1/match-suggestions", headers=DEMO).json()
                if sorted(s["customer_ids"]) == pair]


def test_accepting_a_suggestion_merges_the_pair(identity):
    one = resolved(identity, *send(identity, profile("13912340007", name="Sarah O'Connor", birth_date="1979-02-03",
                                                     address="12 King St Sydney 2000")))
    two = resolved(identity, *send(identity, touchpoint_doc(
        identifiers=[{"type": "email", "value": "sarah.oc@x.au"}], type="profile.updated",
        payload={"name": "Sara O'Conner", "birth_date": "1979-02-03", "address": "12 King Street, Sydney 2000"})))
    pair = sorted([one["customer_id"], two["customer_id"]])
    suggestion = wait_until(lambda: next((s for s in identity.get("/v1/match-suggestions", headers=DEMO).json()
                                          if sorted(s["customer_ids"]) == pair), None), message="suggestion")
    accepted = identity.post(f"/v1/match-suggestions/{suggestion['suggestion_id']}/accept", headers=DEMO).json()
    assert accepted["customer_id"] == one["customer_id"]  # the older profile survives
    view = identity.get(f"/v1/customers/{two['customer_id']}", headers=DEMO).json()
    assert view["customer_id"] == one["customer_id"] and view["resolved_from"] == two["customer_id"]


@pytest.mark.parametrize(("role", "method", "path", "allowed"), [
    (Role.store_staff, "post", "/v1/customers/{cid}/split", False),
    (Role.marketing, "post", "/v1/customers/{cid}/erasure", False),
    (Role.ops, "post", "/v1/customers/{cid}/erasure", False),
    (Role.ingest, "get", "/v1/customers/{cid}", False),
    (Role.store_staff, "get", "/v1/customers/{cid}", True),
    (Role.marketing, "get", "/v1/match-suggestions", False),
    (Role.ops, "put", "/v1/identity/policy", False),
])
def test_a_key_cannot_act_outside_its_role(identity, role, method, path, allowed):
    customer = resolved(identity, *send(identity, touchpoint_doc(phone="13912340008")))
    body = {"identifiers": [{"type": "phone", "value": "13912340008"}]} if "split" in path else {}
    if "policy" in path:
        body = {}
    response = identity.request(method, path.format(cid=customer["customer_id"]), headers=key(role),
                                json=body or None)
    assert (response.status_code != 403) is allowed, response.text


def test_another_tenant_cannot_see_or_change_a_customer(identity, other_tenant_headers):
    cid = resolved(identity, *send(identity, touchpoint_doc(phone="13912340009")))["customer_id"]
    assert identity.get(f"/v1/customers/{cid}", headers=other_tenant_headers).status_code == 404
    assert identity.post(f"/v1/customers/{cid}/erasure", headers=other_tenant_headers).status_code == 404
    assert identity.get("/v1/customers/lookup", params={"type": "phone", "value": "13912340009"},
                        headers=other_tenant_headers).status_code == 404


def test_the_policy_is_per_tenant_and_refuses_unknown_types(identity):
    policy = identity.get("/v1/identity/policy", headers=DEMO).json()
    assert policy["default_region"] == "CN" and policy["auto_merge_threshold"] is None
    bad = identity.put("/v1/identity/policy", headers=DEMO, json={"types": {"fax": {"strength": "weak"}}})
    assert bad.status_code == 422 and "fax" in str(bad.json())
    ok = identity.put("/v1/identity/policy", headers=DEMO,
                      json={"types": {"phone": {"blocklist": ["13912340010"]}}, "junk_after_links": 4})
    assert ok.status_code == 200 and ok.json()["junk_after_links"] == 4
    view = resolved(identity, *send(identity, touchpoint_doc(identifiers=[{"type": "email", "value": "junk-test@x.cn"},
                                                                      {"type": "phone", "value": "13912340010"}])))
    assert [r["reason"] for r in view["rejected_identifiers"]] == ["phone: blocklisted value"]


def test_timeline_pages_newest_first(identity):
    docs = [touchpoint_doc(phone="13912340011", occurred_at=ago(hours=h)) for h in range(5)]
    cid = resolved(identity, *send(identity, *docs))["customer_id"]
    first = identity.get(f"/v1/customers/{cid}/timeline", params={"limit": 3}, headers=DEMO).json()
    second = identity.get(f"/v1/customers/{cid}/timeline", params={"limit": 3, "before": first["next_before"]},
                          headers=DEMO).json()
    ids = [i["event_id"] for i in first["items"] + second["items"]]
    assert ids == [d["event_id"] for d in docs] and second["next_before"] is None


def test_lifecycle_and_churn_risk_from_insights_show_in_the_360_and_a_late_score_does_not_win(identity, service_env):
    from shared.events.scores import (
        ChurnRiskChangedPayload, CustomerChurnRiskChanged, CustomerLifecycleChanged, LifecycleChangedPayload,
    )
    from shared.topics import CUSTOMERS_SCORES

    cid = resolved(identity, *send(identity, touchpoint_doc(phone="13912340012")))["customer_id"]
    now = datetime.now(UTC)

    def envelope(at):
        return {"event_id": uuid.uuid4(), "occurred_at": at, "recorded_at": now, "tenant_id": "demo",
                "source": "insights", "customer_id": cid}

    producer = make_producer(service_env["kafka_bootstrap_servers"], client_id="test")
    topic = service_env["topic_prefix"] + CUSTOMERS_SCORES.name
    for event in (
        CustomerLifecycleChanged(**envelope(now), payload=LifecycleChangedPayload(
            from_stage="repeat", to_stage="at_risk", reason="overdue by 20 days vs 42-day groom interval")),
        CustomerLifecycleChanged(**envelope(now - timedelta(days=3)), payload=LifecycleChangedPayload(
            from_stage="purchase", to_stage="repeat", reason="second visit")),
        CustomerChurnRiskChanged(**envelope(now), payload=ChurnRiskChangedPayload(
            risk=0.72, band="high", reasons=("overdue", "detractor score"))),
    ):
        producer.send(topic, key=cid.encode(), value=encode(event)).get(timeout=10)
    producer.close()
    view = wait_until(lambda: (v := identity.get(f"/v1/customers/{cid}", headers=DEMO).json())["churn_risk"] and v,
                      message="scores projected")
    assert view["lifecycle"]["stage"] == "at_risk"
    assert view["churn_risk"]["risk"] == 0.72 and view["churn_risk"]["reasons"] == ["overdue", "detractor score"]
