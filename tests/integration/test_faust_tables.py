"""faust tables on the broker the tests run against, with the platform's faust configuration.

1. A restarted worker restores from the changelog exactly the table its predecessor ended with
   (the embedded broker's wrong end offsets drop the last updates unless each produce carries one
   record; the platform's configuration must prevent that).
2. faust is at-least-once: after a restart a few already-applied events may be delivered again, so
   table handlers skip what they applied (per key, the last source offset) and the totals stay exact.
3. No event is lost when the seek back to the committed offsets after a rebalance is slow (a loaded
   machine): faust 0.15 delivered during that seek and then dropped what it had delivered
   (services/insights/faust_fixes.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import threading

from faust.transport.drivers import aiokafka as faust_kafka
from kafka import KafkaProducer

from services.insights.processors import faust_app
from services.insights.settings import InsightsSettings
from shared.bus.producer import ensure_topics
from shared.topics import TopicSpec

from .conftest import settings_for


def _produce(bootstrap, topic, start, n):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    for i in range(start, start + n):
        producer.send(topic, key=f"customer-{i % 50}".encode(), value=str(i).encode())
    producer.flush()
    producer.close()


def _run_counter(settings, topic, until_total, timeout_s=90) -> dict:
    """Run a worker with a per-key [count, last applied offset] table until its total reaches
    `until_total`; report the table as recovered (before any event is processed) and at the end."""
    result: dict = {"skipped": 0, "seen": {}}

    async def scenario():
        app = faust_app(settings, app_id="table-probe", with_tables=True)
        counts = app.Table("counts", default=lambda: [0, -1], partitions=3)
        source = app.topic(topic, key_serializer="raw", value_serializer="raw", partitions=3)
        recovered = asyncio.Event()

        @app.agent(source)
        async def count(stream):
            await recovered.wait()  # nothing is applied before the recovered table was captured
            async for event in stream.events():
                key, offset = event.key.decode(), event.message.offset
                result["seen"][event.message.partition] = offset
                applied, last_offset = counts[key]
                if int(event.value) >= 3000:
                    result.setdefault("new", []).append((key, offset, applied, last_offset))
                if offset <= last_offset:
                    result["skipped"] += 1  # redelivered: already in the table
                    continue
                counts[key] = [applied + 1, offset]

        await app.start()
        try:
            await asyncio.wait_for(app.tables.recovery.completed.wait(), timeout_s)
            result["recovered"] = {k: list(v) for k, v in counts.items()}
            recovered.set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while loop.time() < deadline and sum(c[0] for c in counts.values()) < until_total:
                await asyncio.sleep(0.2)
            if sum(c[0] for c in counts.values()) < until_total:
                result["stuck"] = {"agent_saw": dict(result["seen"]), "skipped": result["skipped"],
                                   "new": result.get("new"), "partitions": _partition_states(app, topic)}
                print("\nstuck:", result["stuck"])
            await asyncio.sleep(3)  # let the commit timer commit what was applied
            result["final"] = {k: list(v) for k, v in counts.items()}
        finally:
            await app.stop()

    runner = threading.Thread(target=lambda: asyncio.run(scenario()))
    runner.start()
    runner.join(timeout_s + 60)
    return result


def _partition_states(app, topic: str) -> dict:
    """What faust and its Kafka client hold per source partition, to say why events stopped coming."""
    faust_consumer, client = app.consumer, app.consumer._thread._consumer
    assignment = client._subscription.subscription.assignment if client._subscription.subscription else None
    states = {}
    for tp in (t for t in (assignment.tps if assignment else ()) if t.topic == topic):
        state = assignment.state_value(tp)
        states[tp.partition] = {
            "faust_active": tp in faust_consumer._active_partitions,
            "faust_paused": tp in faust_consumer._paused_partitions,
            "faust_read": faust_consumer._read_offset.get(tp), "faust_committed": faust_consumer._committed_offset.get(tp),
            "client_paused": state.paused, "position": state._position, "highwater": state.highwater,
            "status": str(state._status)}
    return states


@contextlib.contextmanager
def slow_seek_to_committed(seconds: float):
    """The Kafka client's seek to the committed offsets takes `seconds` longer after it took effect, as
    on a loaded machine: nothing in faust changes, one interleaving only becomes likely."""
    original = faust_kafka.AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self):
        client = self._ensure_consumer()

        async def seek():
            offsets = await client.seek_to_committed()
            await asyncio.sleep(seconds)
            return offsets
        return await self.call_thread(seek)

    faust_kafka.AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    try:
        yield
    finally:
        faust_kafka.AIOKafkaConsumerThread.seek_to_committed = original


def total(table: dict) -> int:
    return sum(count for count, _ in table.values())


def test_a_restarted_worker_recovers_its_table_and_counts_each_event_once(service_env, kafka_bootstrap, topic_prefix):
    settings = settings_for(InsightsSettings, service_env)
    topic = f"{topic_prefix}table-source"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 3, "k", (), (), "test")])
    _produce(kafka_bootstrap, topic, 0, 3000)
    first = _run_counter(settings, topic, 3000)
    assert first["recovered"] == {} and total(first["final"]) == 3000

    _produce(kafka_bootstrap, topic, 3000, 100)
    second = _run_counter(settings, topic, 3100, timeout_s=180)  # a loaded machine rejoins slowly
    assert second["recovered"] == first["final"], "the changelog must restore every update"
    assert total(second["final"]) == 3100, second.get("stuck")
    print(f"\nredelivered after restart and skipped: {second['skipped']}")


def test_events_produced_while_a_worker_was_down_all_count_even_when_the_seek_back_is_slow(
        service_env, kafka_bootstrap, topic_prefix):
    settings = settings_for(InsightsSettings, service_env)
    topic = f"{topic_prefix}table-slow-seek"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 3, "k", (), (), "test")])
    _produce(kafka_bootstrap, topic, 0, 300)
    first = _run_counter(settings, topic, 300)
    assert total(first["final"]) == 300

    _produce(kafka_bootstrap, topic, 3000, 100)  # values >= 3000 are the "new" ones in the diagnostics
    with slow_seek_to_committed(2.0):
        second = _run_counter(settings, topic, 400, timeout_s=120)
    assert second["recovered"] == first["final"]
    assert total(second["final"]) == 400, second.get("stuck")
