"""The ClickHouse sink while ClickHouse is away for a minute and touchpoints keep coming: nothing is
acknowledged, nothing is lost, and when it comes back every row is stored exactly once.

In the embedded mode ClickHouse runs inside the insights process, so it cannot go away alone (killing
insights is in the e2e fault drill); against a ClickHouse server this is what an outage looks like."""
from __future__ import annotations

import asyncio
import threading
import time
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


OUTAGE_S = 60


class RefusingWarehouse:
    """Fault injection in front of the real engine: every insert fails as if the server were down
    until `outage_s` after the first attempt; afterwards every call reaches real ClickHouse."""

    def __init__(self, real: Warehouse, outage_s: float):
        self.real, self.outage_s, self.refused = real, outage_s, 0
        self.down_until: float | None = None

    def __getattr__(self, name):
        return getattr(self.real, name)

    def insert_many(self, rows_by_table):
        if self.down_until is None:
            self.down_until = time.monotonic() + self.outage_s
        if time.monotonic() < self.down_until:
            self.refused += 1
            raise ConnectionError("ClickHouse is unavailable")
        self.real.insert_many(rows_by_table)


def test_rows_wait_for_clickhouse_and_arrive_once_when_it_returns(service_env, kafka_bootstrap, topic_prefix):
    settings = settings_for(InsightsSettings, service_env, flush_interval_s=0.3)
    real = Warehouse.open(settings)
    flaky = RefusingWarehouse(real, OUTAGE_S)
    ensure_topics(kafka_bootstrap, all_topics(), prefix=topic_prefix)
    customers = [str(uuid.uuid4()) for _ in range(6)]
    sent: list = []

    def produce():  # touchpoints keep arriving through the outage and after it
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        until = time.monotonic() + OUTAGE_S + 10
        while time.monotonic() < until:
            customer = customers[len(sent) % len(customers)]
            event = from_document({**touchpoint_doc(), "tenant_id": "demo", "source": "test",
                                   "customer_id": customer, "recorded_at": "2026-11-23T00:00:00Z"})
            producer.send(f"{topic_prefix}touchpoints.resolved", key=customer.encode(), value=encode(event))
            producer.flush()
            sent.append(event.event_id)
            time.sleep(0.25)
        producer.close()

    observed = {}

    async def scenario():
        app = build_processor(settings, flaky)
        await app.start()
        producing = threading.Thread(target=produce)
        producing.start()
        try:
            give_up = time.monotonic() + OUTAGE_S + 120
            while time.monotonic() < give_up and (producing.is_alive() or real.count_touchpoints("demo") < len(sent)):
                if flaky.down_until and time.monotonic() < flaky.down_until - 1:
                    observed["error_while_down"] = app.hub_stats["last_error"]
                    observed["stored_while_down"] = real.count_touchpoints("demo")
                await asyncio.sleep(0.5)
        finally:
            producing.join()
            await app.stop()

    runner = threading.Thread(target=lambda: asyncio.run(scenario()))
    runner.start()
    runner.join(OUTAGE_S + 180)
    assert "ClickHouse is unavailable" in observed["error_while_down"]
    assert observed["stored_while_down"] == 0, "nothing is stored while ClickHouse is away"
    assert flaky.refused > 1, "the sink kept retrying through the outage"
    assert len(sent) > 200 and real.count_touchpoints("demo") == len(sent), "every row once, none lost"
