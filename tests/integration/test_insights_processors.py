"""The insights processors against the real broker and the real ClickHouse engine: touchpoints, tier
changes and survey answers in, scores, transitions and score events out — late, duplicated, merged,
split and erased customers included. The clock is the test's."""
from __future__ import annotations

import asyncio
import threading
import uuid

from kafka import KafkaProducer

from services.insights.customers import CustomerBook
from services.insights.processors import build_processor
from services.insights.settings import InsightsSettings
from services.insights.warehouse import Warehouse
from shared.bus.producer import ensure_topics
from shared.events import CustomerErased, CustomerMerged, CustomerSplit, decode, encode
from shared.events.customers import CustomerErasedPayload, CustomerMergedPayload, CustomerSplitPayload
from shared.events.feedback import SurveyAnswered as FeedbackAnswer
from shared.events.feedback import SurveyAnsweredPayload
from shared.topics import all_topics
from tests.timelines import answer, case_opened, complaint, day, tier, visit

from .conftest import settings_for
from .helpers import read_available, wait_until

A, B, C, D = (uuid.UUID(f"00000000-0000-4000-8000-00000000000{n}") for n in (1, 2, 3, 4))


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def feedback_answer(n, nps, customer):
    return FeedbackAnswer(event_id=uuid.uuid4(), occurred_at=day(n), recorded_at=day(n), tenant_id="demo",
                          source="feedback", customer_id=customer, payload=SurveyAnsweredPayload(
                              response_id=uuid.uuid4(), source="link", store_id="s1", staff_id="amy", nps=nps))


def identity_event(cls, customer, payload):
    return cls(event_id=uuid.uuid4(), occurred_at=day(300), recorded_at=day(300), tenant_id="demo",
               source="identity", customer_id=customer, payload=payload)


class Harness:
    """The processors running in their own event loop, as in the API process."""

    def __init__(self, settings, warehouse, book, producer):
        self.settings, self.warehouse, self.book, self.producer = settings, warehouse, book, producer
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.app = build_processor(self.settings, self.warehouse, self.book)
        self.loop.run_until_complete(self.app.start())
        self.started.set()
        self.loop.run_forever()

    def __enter__(self):
        self.thread.start()
        self.started.wait(60)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    def send(self, topic, *events):
        for event in events:
            self.producer.send(self.settings.topic(topic), key=str(event.customer_id).encode(), value=encode(event))
        self.producer.flush()

    def rescore_all(self):
        return asyncio.run_coroutine_threadsafe(self.app.hub_rescore_all(), self.loop).result(60)


def scores(warehouse, customer) -> dict | None:
    columns, rows = warehouse.query(
        "SELECT * FROM {db}.customer_scores FINAL WHERE tenant_id = 'demo' AND customer_id = {c:UUID} AND deleted = 0",
        {"c": str(customer)})
    return dict(zip(columns, rows[0])) if rows else None


def test_processors_score_customers_follow_merges_splits_and_erasures(service_env, kafka_bootstrap):
    settings = settings_for(InsightsSettings, service_env, flush_interval_s=0.2)
    ensure_topics(kafka_bootstrap, all_topics(), prefix=settings.topic_prefix)
    warehouse = Warehouse.open(settings)
    clock = Clock(day(130))
    book = CustomerBook(warehouse, clock=clock)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    a_visits = [visit(0, A), visit(42, A), visit(84, A), visit(126, A)]
    late = visit(20, A, amount=12_000)   # arrives last, days late
    b_events = [visit(5, B, store="s2"), complaint(40, B), answer(41, 3, B)]
    with Harness(settings, warehouse, book, producer) as run:
        run.send("touchpoints.resolved", *a_visits[2:], *a_visits[:2], a_visits[0], *b_events)  # out of order, a duplicate
        run.send("loyalty.changes", tier(100, "silver", "gold", A))
        run.send("feedback.changes", feedback_answer(127, 10, A), case_opened(41, uuid.uuid4(), B))
        wait_until(lambda: (s := scores(warehouse, A)) and s["tier"] == "gold" and s["visits"] == 4)
        run.send("touchpoints.resolved", late)
        a = wait_until(lambda: (s := scores(warehouse, A)) and s["visits"] == 5 and s)
        assert a["stage"] == "loyal" and a["band"] == "low" and a["frequency"] == 5
        assert a["monetary_minor"] == 4 * 30_000 + 12_000
        b = wait_until(lambda: scores(warehouse, B))
        assert b["home_store_id"] == "s2"
        assert {"complaint 90 days ago", "detractor score 3", "open complaint case"} & set(b["reasons"])
        assert warehouse.count_touchpoints("demo") == 8
        answers = wait_until(lambda: (rows := warehouse.query(
            "SELECT source, nps FROM {db}.survey_answers FINAL ORDER BY nps")[1]) and len(rows) >= 2 and rows)
        assert answers == [("touchpoint", 3), ("link", 10)]

        # A tier change that overtakes the customer's first touchpoint is kept, but nobody is scored
        # (or announced as "awareness") before a touchpoint arrives.
        run.send("loyalty.changes", tier(129, None, "silver", D))
        wait_until(lambda: warehouse.query("SELECT count() FROM {db}.customer_state WHERE customer_id = {c:UUID}",
                                         {"c": str(D)})[1][0][0])
        assert scores(warehouse, D) is None
        run.send("touchpoints.resolved", visit(129.5, D))
        d = wait_until(lambda: scores(warehouse, D))
        assert (d["stage"], d["tier"]) == ("purchase", "silver")

        # The daily tick: 60 days later with nothing new, A (visiting about every 32 days) is overdue.
        clock.now = day(126 + 60)
        assert run.rescore_all() == 3
        a = scores(warehouse, A)
        assert a["stage"] == "at_risk" and "overdue" in a["reasons"][0]

        # B merges into A: one customer with every visit; B's touchpoints now read as A's.
        run.send("customers.changes", identity_event(CustomerMerged, A, CustomerMergedPayload(
            merged_customer_ids=(B,), rule="shared_strong_identifier")))
        merged = wait_until(lambda: (s := scores(warehouse, A)) and s["visits"] == 6 and s)
        assert scores(warehouse, B) is None
        assert wait_until(lambda: warehouse.query(
            "SELECT count() FROM {db}.touchpoints FINAL WHERE customer_id = {c:UUID}", {"c": str(A)})[1][0][0] == 8)
        assert merged["home_store_id"] == "s1"

        # Split B's visit back out to a new profile C.
        run.send("customers.changes", identity_event(CustomerSplit, A, CustomerSplitPayload(
            new_customer_id=C, moved_identifier_types=("phone",), moved_event_ids=tuple(e.event_id for e in b_events),
            decision_id=uuid.uuid4())))
        c = wait_until(lambda: scores(warehouse, C))
        assert c["visits"] == 1 and c["home_store_id"] == "s2"
        assert wait_until(lambda: (s := scores(warehouse, A)) and s["visits"] == 5)

        # Erasure: the person's state, scores and transitions are gone.
        run.send("customers.changes", identity_event(CustomerErased, C, CustomerErasedPayload(
            erasure_request_id=uuid.uuid4(), customer_ids=(C,))))
        wait_until(lambda: scores(warehouse, C) is None)
        for table in ("customer_state", "lifecycle_transitions"):
            assert warehouse.query(f"SELECT count() FROM {{db}}.{table} WHERE customer_id = {{c:UUID}}",
                                   {"c": str(C)})[1][0][0] == 0
    producer.close()

    events = [decode(m.value) for m in read_available(kafka_bootstrap, settings.topic("customers.scores"))]
    a_stages = [(e.payload.from_stage, e.payload.to_stage) for e in events
                if e.type == "customer.lifecycle_changed" and e.customer_id == A]
    assert a_stages[0][0] is None and ("loyal", "at_risk") in a_stages
    assert len({e.event_id for e in events}) == len(events)
    _, transitions = warehouse.query(
        "SELECT from_stage, to_stage FROM {db}.lifecycle_transitions FINAL WHERE customer_id = {c:UUID} ORDER BY at",
        {"c": str(A)})
    assert ("loyal", "at_risk") in transitions
