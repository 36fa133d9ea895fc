"""The spine in one process over the real engines: HTTP ingest -> touchpoints.raw -> identity
resolution -> touchpoints.resolved -> faust agent -> ClickHouse -> insights API, as one trace."""
from __future__ import annotations

import uuid

from kafka import KafkaProducer

from services.insights.warehouse import Warehouse
from shared.events import encode, from_document

from .conftest import DEMO
from .helpers import read_all, touchpoint_doc, wait_until


def stored(insights, event_id):
    r = insights.get(f"/v1/touchpoints/{event_id}", headers=DEMO)
    return r.json() if r.status_code == 200 else None


def test_a_posted_touchpoint_reaches_clickhouse_with_its_customer_in_one_trace(identity, insights, spans):
    doc = touchpoint_doc(type="service.performed", phone="13912340000", payload={
        "service_ids": ["groom-full"], "amount_minor": 38000, "staff_id": "sh-jingan-staff-2"})
    assert insights.get(f"/v1/touchpoints/{doc['event_id']}", headers=DEMO).status_code == 404
    assert identity.post("/v1/touchpoints", json={"events": [doc]}, headers=DEMO).json()["accepted"] == 1

    row = wait_until(lambda: stored(insights, doc["event_id"]), 30, message="row in ClickHouse")
    customer = identity.get("/v1/customers/lookup", params={"type": "phone", "value": "13912340000"},
                            headers=DEMO).json()
    assert row["customer_id"] == customer["customer_id"]
    assert row["payload"]["amount_minor"] == 38000 and row["identifier_types"] == ["phone"]

    by_name = {s.name: s for s in spans.get_finished_spans() if s.attributes.get("event.id") == doc["event_id"]}
    assert {"touchpoint.ingest", "touchpoint.resolve", "touchpoint.store"} <= set(by_name)
    trace_ids = {s.context.trace_id for s in by_name.values()}
    assert len(trace_ids) == 1, "one trace per touchpoint"
    request = [s for s in spans.get_finished_spans() if s.name == "POST /v1/touchpoints"
               and s.context.trace_id in trace_ids]
    assert request and by_name["touchpoint.ingest"].parent.span_id == request[0].context.span_id
    assert row["trace_id"] == format(trace_ids.pop(), "032x")


def test_another_tenant_cannot_read_a_stored_touchpoint(identity, insights, other_tenant_headers):
    doc = touchpoint_doc(phone="13912340001")
    identity.post("/v1/touchpoints", json={"events": [doc]}, headers=DEMO)
    wait_until(lambda: stored(insights, doc["event_id"]), 30, message="row in ClickHouse")
    assert insights.get(f"/v1/touchpoints/{doc['event_id']}", headers=other_tenant_headers).status_code == 404


def test_the_sink_stores_each_event_once_and_dead_letters_what_it_cannot_read(
        insights, service_env, kafka_bootstrap, topic_prefix, clickhouse_target, clickhouse_database):
    customer = str(uuid.uuid4())
    events = [from_document({**touchpoint_doc(), "tenant_id": "demo", "source": "test", "customer_id": customer,
                             "recorded_at": "2026-11-23T00:00:00Z"}) for _ in range(20)]
    unresolved = from_document({**touchpoint_doc(), "tenant_id": "demo", "source": "test",
                                "recorded_at": "2026-11-23T00:00:00Z"})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    topic = f"{topic_prefix}touchpoints.resolved"
    for e in events + events[:5]:  # five redeliveries
        producer.send(topic, key=customer.encode(), value=encode(e))
    producer.send(topic, key=b"x", value=b"\xff\xfe garbage")
    producer.send(topic, key=b"x", value=encode(unresolved))
    producer.flush()
    producer.close()

    warehouse = Warehouse(url=clickhouse_target["url"], path=clickhouse_target["path"], database=clickhouse_database)
    def rows_inserted():  # redeliveries included: the sink reports what it inserted
        detail = insights.get("/readyz").json()["checks"]["processors"]["detail"]
        return int(detail.split("stored=")[1].split()[0]) >= 25

    wait_until(rows_inserted, 40, message="25 rows inserted")
    dead = read_all(kafka_bootstrap, f"{topic}.dlq", 2)
    assert warehouse.count_touchpoints("demo") == 20
    assert len(dead) == 2
    reasons = {dict(r.headers)["dlq.reason"].decode() for r in dead}
    assert any("not JSON" in r for r in reasons) and any("customer_id" in r for r in reasons)


def test_the_summary_counts_stored_touchpoints_by_type_channel_and_store(identity, insights):
    docs = [touchpoint_doc(phone="13912340002"), touchpoint_doc(phone="13912340003", channel="pos",
                                                                store_id="sh-pudong")]
    identity.post("/v1/touchpoints", json={"events": docs}, headers=DEMO)
    wait_until(lambda: insights.get("/v1/touchpoints/summary", headers=DEMO).json()["total"] == 2, 30)
    summary = insights.get("/v1/touchpoints/summary", headers=DEMO).json()
    assert summary["by_channel"] == {"walk_in": 1, "pos": 1}
    assert summary["by_store"] == {"sh-jingan": 1, "sh-pudong": 1}
    assert summary["customers"] == 2
