"""The properties the platform relies on, checked on whichever broker the tests run against (the
embedded tansu here, Apache Kafka under testcontainers): committed offsets survive a consumer
restart, a group rebalances when a member leaves, and the fetch high watermark is right."""
from __future__ import annotations

import threading

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from shared.bus.producer import ensure_topics
from shared.topics import TopicSpec

from .helpers import wait_until


def _topic(kafka_bootstrap, name, partitions=3):
    spec = TopicSpec(name=name, partitions=partitions, key="k", producers=(), consumers=(), why="test")
    ensure_topics(kafka_bootstrap, [spec])
    return name


def _produce(kafka_bootstrap, topic, n):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=20)
    for i in range(n):
        producer.send(topic, key=f"k{i % 7}".encode(), value=str(i).encode())
    producer.flush()
    producer.close()


def _consumer(kafka_bootstrap, topic, group):
    return KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000)


def _drain(consumer, want, timeout_s=30):
    got = []

    def more():
        for batch in consumer.poll(timeout_ms=200).values():
            got.extend(batch)
        return len(got) >= want

    wait_until(more, timeout_s, message=f"{want} records")
    return got


def test_a_restarted_consumer_resumes_after_its_last_commit(kafka_bootstrap, topic_prefix):
    topic = _topic(kafka_bootstrap, f"{topic_prefix}resume")
    _produce(kafka_bootstrap, topic, 60)
    first = _consumer(kafka_bootstrap, topic, f"{topic_prefix}g")
    seen = _drain(first, 60)
    first.commit()
    first.close(autocommit=False)
    _produce(kafka_bootstrap, topic, 15)
    second = _consumer(kafka_bootstrap, topic, f"{topic_prefix}g")
    rest = _drain(second, 15)
    extra = [r for batch in second.poll(timeout_ms=1000).values() for r in batch]
    second.close(autocommit=False)
    assert sorted(int(r.value) for r in rest + extra) == list(range(15)), "no loss and no redelivery"
    assert len(seen) == 60


def test_the_fetch_high_watermark_counts_every_record(kafka_bootstrap, topic_prefix):
    topic = _topic(kafka_bootstrap, f"{topic_prefix}hw", partitions=1)
    _produce(kafka_bootstrap, topic, 50)
    consumer = _consumer(kafka_bootstrap, topic, f"{topic_prefix}hw")
    records = _drain(consumer, 50)
    assert consumer.highwater(TopicPartition(topic, 0)) == 50 == len(records)
    consumer.close()


def test_partitions_move_to_the_remaining_member_when_one_leaves(kafka_bootstrap, topic_prefix):
    topic = _topic(kafka_bootstrap, f"{topic_prefix}rebalance", partitions=4)
    group = f"{topic_prefix}rb"
    # Each member polls in its own thread, as real consumers do: polled alternately from one thread,
    # a member blocked in a rebalance keeps the other from rejoining and the group never settles.
    a, b = _Member(kafka_bootstrap, topic, group), _Member(kafka_bootstrap, topic, group)
    try:
        wait_until(lambda: len(a.assigned) + len(b.assigned) == 4 and a.assigned and b.assigned, 60,
                   message="both members assigned")
        b.leave()
        wait_until(lambda: len(a.assigned) == 4, 60, message="rebalance to the remaining member")
    finally:
        a.leave()
        b.leave()


class _Member:
    def __init__(self, kafka_bootstrap, topic, group):
        self.assigned: set = set()
        self._stop = threading.Event()
        self._consumer = _consumer(kafka_bootstrap, topic, group)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self._consumer.poll(timeout_ms=100)
            self.assigned = set(self._consumer.assignment())
        self._consumer.close()

    def leave(self):
        self._stop.set()
        self._thread.join(30)


def test_a_topic_that_exists_with_another_partition_count_is_reported(kafka_bootstrap, topic_prefix, caplog):
    """A client's metadata request can create a topic with the broker's default partition count before
    the services create it; the operator is told, since keys then spread differently than planned."""
    topic = _topic(kafka_bootstrap, f"{topic_prefix}resized", partitions=2)
    spec = TopicSpec(name=topic, partitions=5, key="k", producers=(), consumers=(), why="test")
    with caplog.at_level("WARNING", logger="shared.bus.producer"):
        ensure_topics(kafka_bootstrap, [spec])
    assert f"topic {topic} has 2 partitions, the registry says 5" in caplog.text
