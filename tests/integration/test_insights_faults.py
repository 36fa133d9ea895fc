"""The ClickHouse sink while ClickHouse refuses writes: nothing is acknowledged, nothing is lost, and
when it comes back every row is stored exactly once."""
from __future__ import annotations

import asyncio
import threading
import uuid

from kafka import KafkaProducer

from services.insights.processors import build_processor
from services.insights.settings import InsightsSettings
from services.insights.warehouse import Warehouse
from shared.bus.producer import ensure_topics
from shared.events import encode, from_document
from shared.topics import all_topics

from .conftest import settings_for
from .helpers import touchpoint_doc


class RefusingWarehouse:
    """Fault injection in front of the real engine: the first `failures` inserts fail as if the
    server were down; afterwards every call reaches real ClickHouse."""

    def __init__(self, real: Warehouse, failures: int):
        self.real, self.failures, self.refused = real, failures, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def insert_many(self, rows_by_table):
        if self.refused < self.failures:
            self.refused += 1
            raise ConnectionError("ClickHouse is unavailable")
        self.real.insert_many(rows_by_table)


def test_rows_wait_for_clickhouse_and_arrive_once_when_it_returns(service_env, kafka_bootstrap, topic_prefix):
    settings = settings_for(InsightsSettings, service_env, flush_interval_s=0.3)
    real = Warehouse.open(settings)
    flaky = RefusingWarehouse(real, failures=4)
    ensure_topics(kafka_bootstrap, all_topics(), prefix=topic_prefix)

    customer = str(uuid.uuid4())
    events = [from_document({**touchpoint_doc(), "tenant_id": "demo", "source": "test", "customer_id": customer,
                             "recorded_at": "2026-11-23T00:00:00Z"}) for _ in range(30)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for e in events:
        producer.send(f"{topic_prefix}touchpoints.resolved", key=customer.encode(), value=encode(e))
    producer.flush()
    producer.close()

    observed = {}

    async def scenario():
        app = build_processor(settings, flaky)
        await app.start()
        try:
            for _ in range(300):
                if flaky.refused and app.hub_stats["last_error"] and "unavailable_seen" not in observed:
                    observed["unavailable_seen"] = app.hub_stats["last_error"]
                    observed["stored_while_down"] = real.count_touchpoints("demo")
                if real.count_touchpoints("demo") >= 30:
                    break
                await asyncio.sleep(0.2)
        finally:
            await app.stop()

    runner = threading.Thread(target=lambda: asyncio.run(scenario()))
    runner.start()
    runner.join(120)
    assert "ClickHouse is unavailable" in observed["unavailable_seen"]
    assert observed["stored_while_down"] == 0
    assert flaky.refused == 4
    assert real.count_touchpoints("demo") == 30
