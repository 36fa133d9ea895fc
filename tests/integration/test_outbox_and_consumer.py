"""Outbox relay and consumer loop against real Postgres and the real broker."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from kafka import KafkaAdminClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bus.consumer import ConsumerLoop
from shared.bus.outbox import OUTBOX_MIGRATION, OutboxRelay, enqueue, pending_count
from shared.bus.producer import ensure_topics, make_producer
from shared.db import Database, migrate
from shared.events import DecodeError, decode, encode, from_document
from shared.topics import TopicSpec

from .helpers import read_all, touchpoint_doc, wait_until


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    migrate(database, "svc", [OUTBOX_MIGRATION, ("0001_things", "create table things (id int primary key)")])
    yield database
    database.close()


@pytest.fixture
def spec(kafka_bootstrap, topic_prefix):
    s = TopicSpec(name="events", partitions=3, key="k", producers=("identity",), consumers=("identity",), why="test")
    ensure_topics(kafka_bootstrap, [s, s.dlq], prefix=topic_prefix)
    return s


@pytest.fixture
def producer(kafka_bootstrap):
    p = make_producer(kafka_bootstrap, "test")
    yield p
    p.close()


def event(**overrides):
    doc = touchpoint_doc(**overrides)
    return from_document({**doc, "tenant_id": "demo", "source": "test", "recorded_at": datetime.now(UTC).isoformat()})


def test_a_committed_write_is_published_with_its_key_and_trace(db, spec, producer, kafka_bootstrap, topic_prefix):
    e = event()
    with db.transaction() as cur:
        cur.execute("insert into svc.things values (1)")
        enqueue(cur, "svc", [(spec, "customer-1", e)],
                trace={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    relay = OutboxRelay(db, "svc", producer, topic_prefix=topic_prefix)
    relay.start()
    try:
        records = read_all(kafka_bootstrap, f"{topic_prefix}events", 1)
    finally:
        relay.stop()
    assert len(records) == 1
    assert records[0].key == b"customer-1"
    assert decode(records[0].value).event_id == e.event_id
    assert dict(records[0].headers)["traceparent"].startswith(b"00-0af7651916cd43dd")
    assert pending_count(db, "svc") == 0


def test_a_rolled_back_write_publishes_nothing(db, spec):
    with pytest.raises(psycopg2.errors.UniqueViolation):
        with db.transaction() as cur:
            cur.execute("insert into svc.things values (1)")
            enqueue(cur, "svc", [(spec, "k", event())])
            cur.execute("insert into svc.things values (1)")  # fails: the outbox row goes with it
    assert pending_count(db, "svc") == 0


def test_only_one_relay_publishes_a_schema_at_a_time(db, producer, topic_prefix):
    a = OutboxRelay(db, "svc", producer, topic_prefix=topic_prefix)
    b = OutboxRelay(db, "svc", producer, topic_prefix=topic_prefix)
    a.start()
    wait_until(lambda: a.is_leader, 10, message="first relay leads")
    b.start()
    try:
        threading.Event().wait(1.0)
        assert a.is_leader and not b.is_leader
    finally:
        a.stop()
        b.stop()


def test_rows_published_since_a_lost_broker_are_replayed(db, spec, producer, kafka_bootstrap, topic_prefix):
    with db.transaction() as cur:
        enqueue(cur, "svc", [(spec, "k", event()) for _ in range(5)])
    started = datetime.now(UTC) - timedelta(seconds=1)
    relay = OutboxRelay(db, "svc", producer, topic_prefix=topic_prefix)
    relay.start()
    wait_until(lambda: relay.published == 5, 20, message="first publication")
    relay.stop()
    again = OutboxRelay(db, "svc", producer, topic_prefix=topic_prefix, replay_since=started)
    again.start()
    wait_until(lambda: again.published == 5, 20, message="replay")
    again.stop()
    assert len(read_all(kafka_bootstrap, f"{topic_prefix}events", 10)) == 10


def _loop(spec, handler, kafka_bootstrap, producer, topic_prefix, group="g", wanted=None):
    return ConsumerLoop(spec=spec, group_id=f"{topic_prefix}{group}", handler=handler,
                        bootstrap_servers=kafka_bootstrap, dlq_producer=producer, service="test",
                        topic_prefix=topic_prefix, session_timeout_ms=6000, wanted=wanted)


def _publish(producer, topic, values):
    for v in values:
        producer.send(topic, key=b"k", value=v)
    producer.flush()


def test_a_message_that_cannot_be_decoded_goes_to_the_dead_letter_topic_with_the_reason(
        spec, producer, kafka_bootstrap, topic_prefix):
    good = [event() for _ in range(3)]
    _publish(producer, f"{topic_prefix}events",
             [encode(good[0]), b"{not json", encode(good[1]), b'{"type": "teleported"}', encode(good[2])])
    handled = []
    loop = _loop(spec, lambda ds: handled.extend(d.event.event_id for d in ds), kafka_bootstrap, producer, topic_prefix)
    loop.start()
    try:
        wait_until(lambda: len(handled) == 3 and loop.dead_lettered == 2, 30, message="processing")
    finally:
        loop.stop()
    assert handled == [e.event_id for e in good]
    dead = read_all(kafka_bootstrap, f"{topic_prefix}events.dlq", 2)
    reasons = sorted(dict(r.headers)["dlq.reason"].decode() for r in dead)
    assert reasons[0].startswith("not JSON") and "unknown event type 'teleported'" in reasons[1]
    assert {dict(r.headers)["dlq.source_topic"] for r in dead} == {f"{topic_prefix}events".encode()}


def test_a_handler_error_on_one_event_dead_letters_only_that_event(spec, producer, kafka_bootstrap, topic_prefix):
    events = [event() for _ in range(4)]
    poison = events[2].event_id
    handled = []

    def handler(deliveries):
        if any(d.event.event_id == poison for d in deliveries):
            raise ValueError("store 'sh-jingan' has no such service")
        handled.extend(d.event.event_id for d in deliveries)

    _publish(producer, f"{topic_prefix}events", [encode(e) for e in events])
    loop = _loop(spec, handler, kafka_bootstrap, producer, topic_prefix)
    loop.start()
    try:
        wait_until(lambda: len(handled) == 3 and loop.dead_lettered == 1, 30, message="isolation")
    finally:
        loop.stop()
    assert poison not in handled
    dead = read_all(kafka_bootstrap, f"{topic_prefix}events.dlq", 1)
    assert b"no such service" in dict(dead[0].headers)["dlq.reason"]


def test_a_transient_failure_is_retried_and_never_dead_lettered(spec, producer, kafka_bootstrap, topic_prefix):
    failures = {"left": 3}
    handled = []

    def handler(deliveries):
        if failures["left"]:
            failures["left"] -= 1
            raise psycopg2.OperationalError("database is restarting")
        handled.extend(d.event.event_id for d in deliveries)

    e = event()
    _publish(producer, f"{topic_prefix}events", [encode(e)])
    loop = _loop(spec, handler, kafka_bootstrap, producer, topic_prefix)
    loop.start()
    try:
        wait_until(lambda: handled, 30, message="success after retries")
    finally:
        loop.stop()
    assert handled == [e.event_id] and loop.dead_lettered == 0


def test_offsets_are_committed_only_after_the_handler_returned(spec, producer, kafka_bootstrap, topic_prefix):
    events = [event() for _ in range(5)]
    _publish(producer, f"{topic_prefix}events", [encode(e) for e in events])
    release = threading.Event()
    seen_first = []

    def stuck(deliveries):
        seen_first.extend(deliveries)
        release.wait(30)
        raise psycopg2.OperationalError("never durable")

    first = _loop(spec, stuck, kafka_bootstrap, producer, topic_prefix)
    first.start()
    wait_until(lambda: seen_first, 30, message="first delivery")
    first._stopping.set()
    release.set()
    first.join(20)

    handled = []
    second = _loop(spec, lambda ds: handled.extend(d.event.event_id for d in ds), kafka_bootstrap, producer,
                   topic_prefix)
    second.start()
    try:
        wait_until(lambda: len(handled) == 5, 40, message="redelivery to the next member")
    finally:
        second.stop()
    assert sorted(map(str, handled)) == sorted(str(e.event_id) for e in events)


def _committed(kafka_bootstrap: str, group: str, topic: str) -> int:
    """Messages of `topic` the group has committed, over all partitions."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        return sum(o.offset for tp, o in admin.list_group_offsets(group)[group].items() if tp.topic == topic)
    finally:
        admin.close()


def _run_until(loop: ConsumerLoop, predicate, message: str) -> None:
    loop.start()
    try:
        wait_until(predicate, 30, message=message)
    finally:
        loop.stop()


def test_a_batch_nobody_wants_is_committed_unread_and_a_failing_check_processes_it(
        spec, producer, kafka_bootstrap, topic_prefix):
    """The webhook fan-out with no subscription: its batches are committed without being decoded or
    handled; if the check itself fails, the batch is processed as usual."""
    topic, handled = f"{topic_prefix}events", []
    _publish(producer, topic, [encode(event()) for _ in range(3)])
    _run_until(_loop(spec, handled.extend, kafka_bootstrap, producer, topic_prefix, wanted=lambda: False),
               lambda: _committed(kafka_bootstrap, f"{topic_prefix}g", topic) == 3, "the skipped batch committed")
    assert not handled

    def broken():
        raise psycopg2.OperationalError("database is restarting")

    later = event()
    _publish(producer, topic, [encode(later)])
    _run_until(_loop(spec, handled.extend, kafka_bootstrap, producer, topic_prefix, wanted=broken),
               lambda: handled, "processed despite the failing check")
    assert [d.event.event_id for d in handled] == [later.event_id]


def _mangled_document(fields: dict) -> bytes:
    # json, not orjson: another producer may well send integers past 64 bits, which orjson cannot write.
    return json.dumps({**touchpoint_doc(), "tenant_id": "demo", "source": "test",
                       "recorded_at": datetime.now(UTC).isoformat(), **fields}).encode()


PAYLOADS = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["type", "event_id", "occurred_at", "channel", "identifiers", "payload",
                                     "version", "tenant_id"]),
                    st.none() | st.integers() | st.text(max_size=12)).map(_mangled_document),
    st.builds(lambda _: encode(event()), st.none()),
)


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(PAYLOADS, min_size=1, max_size=30))
def test_any_bytes_on_a_topic_are_handled_or_dead_lettered_with_a_reason(
        spec, producer, kafka_bootstrap, topic_prefix, payloads):
    prefix = f"{topic_prefix}{uuid.uuid4().hex[:8]}."  # a fresh topic and group per example
    ensure_topics(kafka_bootstrap, [spec, spec.dlq], prefix=prefix)
    _publish(producer, f"{prefix}events", payloads)
    handled = []
    loop = _loop(spec, lambda ds: handled.extend(ds), kafka_bootstrap, producer, prefix)
    loop.start()
    try:
        wait_until(lambda: len(handled) + loop.dead_lettered == len(payloads), 30, message="every message settled")
    finally:
        loop.stop()
    decodable = sum(1 for p in payloads if _decodes(p))
    assert len(handled) == decodable
    dead = read_all(kafka_bootstrap, f"{prefix}events.dlq", len(payloads) - decodable)
    assert len(dead) == len(payloads) - decodable
    assert all(dict(r.headers)["dlq.reason"].strip() for r in dead), "every dead letter says why"
    assert sorted(r.value for r in dead) == sorted(p for p in payloads if not _decodes(p)), "the original bytes"


def _decodes(payload: bytes) -> bool:
    try:
        decode(payload)
        return True
    except DecodeError:
        return False
