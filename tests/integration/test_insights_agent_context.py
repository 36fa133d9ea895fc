"""The touchpoint agent in faust's test context: events put straight into the agent's channel (no
consumer group, no offsets), scored and stored in real ClickHouse, its score events sent to the real
broker; a message that does not decode goes to the dead-letter topic."""
from __future__ import annotations

import asyncio
import threading

from services.insights.customers import CustomerBook
from services.insights.processors import build_processor
from services.insights.settings import InsightsSettings
from services.insights.warehouse import Warehouse
from shared.bus.producer import ensure_topics
from shared.events import decode, encode
from shared.topics import all_topics
from tests.timelines import CUSTOMER, OTHER, ad, day, visit

from .conftest import settings_for
from .helpers import read_available


def run_in_thread(coroutine_factory):
    result = {}

    def target():
        result["value"] = asyncio.run(coroutine_factory())

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(120)
    return result.get("value")


def test_the_touchpoint_agent_scores_what_is_put_into_its_channel(service_env, kafka_bootstrap):
    settings = settings_for(InsightsSettings, service_env, flush_interval_s=0.1)
    ensure_topics(kafka_bootstrap, all_topics(), prefix=settings.topic_prefix)
    warehouse = Warehouse.open(settings)
    book = CustomerBook(warehouse, clock=lambda: day(5))
    events = [ad(0), visit(2)]

    async def scenario():
        app = build_processor(settings, warehouse, book)
        sink = app.agents["touchpoint-sink"]
        async with sink.test_context() as agent:
            for event in events:
                await agent.put(encode(event), key=str(CUSTOMER).encode())
            await agent.put(b"not an event", key=b"x")
            for _ in range(100):
                if warehouse.count_touchpoints("demo") == 2 and book.cached("demo", str(CUSTOMER)).stage:
                    break
                await asyncio.sleep(0.1)
        await app.producer.stop()
        return book.cached("demo", str(CUSTOMER)).stage

    assert run_in_thread(scenario) == "purchase"
    assert warehouse.count_touchpoints("demo") == 2
    _, [(stage, risk_band)] = warehouse.query("SELECT stage, band FROM {db}.customer_scores FINAL")
    assert (stage, risk_band) == ("purchase", "low")

    def drain(topic):
        return read_available(kafka_bootstrap, settings.topic(topic))

    assert [decode(m.value).payload.to_stage for m in drain("customers.scores")
            if decode(m.value).type == "customer.lifecycle_changed"] == ["purchase"]
    [parked] = drain("touchpoints.resolved.dlq")
    assert parked.value == b"not an event" and dict(parked.headers)["dlq.reason"]


class BookThatCannotScore(CustomerBook):
    """A stand-in for a scoring bug hit by one customer's history."""

    def rescore(self, profile, changes, now=None):
        if profile.customer_id == str(OTHER):
            raise ValueError("no median for empty data")
        return super().rescore(profile, changes, now)


def test_a_customer_whose_scoring_fails_is_parked_and_the_agent_goes_on(service_env, kafka_bootstrap):
    settings = settings_for(InsightsSettings, service_env, flush_interval_s=0.1)
    ensure_topics(kafka_bootstrap, all_topics(), prefix=settings.topic_prefix)
    warehouse = Warehouse.open(settings)
    book = BookThatCannotScore(warehouse, clock=lambda: day(5))
    doomed = visit(1, customer=OTHER)

    async def scenario():
        app = build_processor(settings, warehouse, book)
        async with app.agents["touchpoint-sink"].test_context() as agent:
            await agent.put(encode(doomed), key=str(OTHER).encode())
            for _ in range(30):  # separate batches: the failure must not end the agent
                if warehouse.count_touchpoints("demo") == 1:
                    break
                await asyncio.sleep(0.1)
            await agent.put(encode(visit(2)), key=str(CUSTOMER).encode())
            for _ in range(100):
                if warehouse.count_touchpoints("demo") == 2 and book.cached("demo", str(CUSTOMER)):
                    break
                await asyncio.sleep(0.1)
        await app.producer.stop()
        return book.cached("demo", str(CUSTOMER)), book.cached("demo", str(OTHER))

    scored, failed = run_in_thread(scenario)
    assert scored.stage == "purchase" and failed is None  # the failed digest is dropped, reloaded as stored
    assert warehouse.count_touchpoints("demo") == 2  # the fact row is kept either way
    [parked] = read_available(kafka_bootstrap, settings.topic("touchpoints.resolved.dlq"))
    assert decode(parked.value).event_id == doomed.event_id
    assert "no median for empty data" in dict(parked.headers)["dlq.reason"].decode()
