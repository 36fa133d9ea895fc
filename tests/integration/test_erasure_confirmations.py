"""Every service that consumes customers.changes honours customer.erased and proves it with exactly one
customer.erasure_confirmed per erasure (insights: at least one, after its ClickHouse rows are anonymised)."""
from __future__ import annotations

import contextlib
import time
import uuid
from datetime import UTC, datetime

import psycopg2
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer

from services.booking.app import create_app as create_booking
from services.booking.settings import BookingSettings
from services.feedback.app import create_app as create_feedback
from services.feedback.settings import FeedbackSettings
from services.insights.warehouse import touchpoint_row
from services.loyalty.app import create_app as create_loyalty
from services.loyalty.settings import LoyaltySettings
from shared.erasure import NIL_CUSTOMER_ID
from shared.events import CustomerCreated, CustomerErased, ErasureConfirmed, decode, encode, from_document, utcnow
from shared.events.customers import CustomerCreatedPayload, CustomerErasedPayload

from .conftest import settings_for
from .helpers import read_all, touchpoint_doc

POSTGRES_SERVICES = {"booking": (create_booking, BookingSettings), "loyalty": (create_loyalty, LoyaltySettings),
                     "feedback": (create_feedback, FeedbackSettings)}


def erased(customer_id: uuid.UUID, *merged: uuid.UUID, tenant: str = "demo") -> CustomerErased:
    now = utcnow()
    return CustomerErased(
        event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=tenant, source="identity",
        customer_id=customer_id,
        payload=CustomerErasedPayload(erasure_request_id=uuid.uuid4(), customer_ids=(customer_id, *merged)))


def created(customer_id: uuid.UUID) -> CustomerCreated:
    now = utcnow()
    return CustomerCreated(event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id="demo",
                           source="identity", customer_id=customer_id,
                           payload=CustomerCreatedPayload(identifier_types=("phone",)))


class Confirmations:
    """Reads erasure.confirmations from the beginning, keeping what it has read."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                      auto_offset_reset="earliest", enable_auto_commit=False)
        self.records: list = []

    def until(self, predicate, timeout_s: float = 30) -> list[tuple[bytes, ErasureConfirmed]]:
        deadline = time.monotonic() + timeout_s
        while True:
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.records.extend(batch)
            events = [(r.key, decode(r.value)) for r in self.records]
            if predicate([e for _, e in events]):
                return events
            assert time.monotonic() < deadline, f"confirmations not reached in {timeout_s}s: " + str(
                [(e.payload.service, str(e.payload.erasure_request_id)) for _, e in events])

    def close(self):
        self.consumer.close()


def confirmed_by(events: list[ErasureConfirmed], erasure: CustomerErased) -> list[str]:
    request = erasure.payload.erasure_request_id
    return sorted(e.payload.service for e in events if e.payload.erasure_request_id == request)


def publish(bootstrap: str, topic: str, *items: CustomerErased | CustomerCreated | bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for item in items:
        key = b"garbage" if isinstance(item, bytes) else str(item.customer_id).encode()
        producer.send(topic, key=key, value=item if isinstance(item, bytes) else encode(item))
    producer.flush()
    producer.close()


def test_booking_loyalty_and_feedback_confirm_an_erasure_once_even_when_it_is_delivered_again(
        service_env, kafka_bootstrap, topic_prefix, database_url):
    customer, merged_id = uuid.uuid4(), uuid.uuid4()
    erasure, later = erased(customer, merged_id), erased(customer)
    changes = f"{topic_prefix}customers.changes"
    confirmations = Confirmations(kafka_bootstrap, f"{topic_prefix}erasure.confirmations")
    with contextlib.ExitStack() as stack:
        for create, settings_cls in POSTGRES_SERVICES.values():
            stack.enter_context(TestClient(create(settings_for(settings_cls, service_env))))
        # Before the consumers joined: the erasure arrives twice in one batch, after a profile change.
        publish(kafka_bootstrap, changes, created(customer), erasure, erasure)
        confirmations.until(lambda events: len(set(confirmed_by(events, erasure))) == 3)
        # Delivered again in a later batch, then a second erasure of the same customer (same key, same
        # partition, so it is handled after the redelivery and its confirmations come after any duplicate).
        publish(kafka_bootstrap, changes, erasure, later)
        events = confirmations.until(lambda events: len(set(confirmed_by(events, later))) == 3)
    confirmations.close()

    assert confirmed_by([e for _, e in events], erasure) == ["booking", "feedback", "loyalty"]
    assert len(events) == 6, "one confirmation per service per erasure; nothing for customer.created"
    for key, event in events:
        assert isinstance(event, ErasureConfirmed) and event.type == "customer.erasure_confirmed"
        assert key == str(customer).encode() and event.customer_id == customer
        assert event.tenant_id == "demo" and event.source == event.payload.service
        assert (event.payload.records_deleted, event.payload.records_anonymised) == (0, 0)  # nothing held yet
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        for service in POSTGRES_SERVICES:
            cur.execute(f"select event_id::text from {service}.processed_events")
            assert {r[0] for r in cur.fetchall()} == {str(erasure.event_id), str(later.event_id)}, service


def _touchpoint(customer_id: uuid.UUID, tenant: str = "demo"):
    return from_document({**touchpoint_doc(type="service.performed", payload={
        "service_ids": ["groom-full"], "amount_minor": 38000, "staff_id": "sh-jingan-staff-2"}),
        "tenant_id": tenant, "source": "test", "customer_id": str(customer_id),
        "recorded_at": datetime.now(UTC).isoformat()})


def test_insights_anonymises_the_customers_rows_then_confirms_with_their_count(
        insights, kafka_bootstrap, topic_prefix):
    customer, merged_id, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    theirs = [_touchpoint(customer) for _ in range(3)] + [_touchpoint(merged_id)]
    kept = [_touchpoint(other), _touchpoint(customer, tenant="chain-b")]  # another customer; another tenant
    warehouse = insights.app.state.warehouse
    warehouse.insert_touchpoints([touchpoint_row(t, "") for t in theirs[:2]])  # two parts: the mutation
    warehouse.insert_touchpoints([touchpoint_row(t, "") for t in theirs[2:] + kept])  # rewrites both
    erasure = erased(customer, merged_id)

    changes = f"{topic_prefix}customers.changes"
    publish(kafka_bootstrap, changes, b"\xff not an event", created(customer), erasure)
    confirmations = Confirmations(kafka_bootstrap, f"{topic_prefix}erasure.confirmations")
    try:
        events = confirmations.until(lambda events: confirmed_by(events, erasure), timeout_s=40)
    finally:
        confirmations.close()

    [(key, confirmation)] = events
    assert key == str(customer).encode() and confirmation.customer_id == customer
    assert confirmation.source == confirmation.payload.service == "insights" and confirmation.tenant_id == "demo"
    assert (confirmation.payload.records_anonymised, confirmation.payload.records_deleted) == (4, 0)
    for t in theirs:  # the confirmation came after the rows were rewritten
        row = warehouse.get_touchpoint("demo", t.event_id)
        assert (row["customer_id"], row["payload"]) == (NIL_CUSTOMER_ID, {}), t.event_id
    for t in kept:
        row = warehouse.get_touchpoint(t.tenant_id, t.event_id)
        assert row["customer_id"] == t.customer_id and row["payload"]["amount_minor"] == 38000
    with warehouse._lock:
        left = warehouse.client.query(
            f"SELECT count() FROM {warehouse.database}.touchpoints WHERE tenant_id = 'demo' "
            "AND (customer_id IN {ids:Array(UUID)} OR positionCaseInsensitive(payload, 'groom') > 0) "
            "AND customer_id != {other:UUID}",
            parameters={"ids": [str(customer), str(merged_id)], "other": str(other)}).result_rows[0][0]
    assert left == 0
    dead = read_all(kafka_bootstrap, f"{changes}.dlq", 1)
    assert [r.value for r in dead] == [b"\xff not an event"]
