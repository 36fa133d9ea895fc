"""Transactional outbox: an event is inserted in the same Postgres transaction as the state change
that caused it; the relay publishes committed rows to Kafka in order and marks them published.

A row is marked only after the broker acknowledged it (acks=all), so a crash re-publishes rather than
loses; every consumer is idempotent on event_id. Published rows are kept for a retention window so a
relay can replay them into a broker that lost its data (the embedded, in-memory broker).
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta

import psycopg2.extras
from kafka import KafkaProducer

from shared.bus.worker import BackgroundWorker
from shared.db import Database
from shared.events import Event, encode
from shared.metrics import OUTBOX_PUBLISHED
from shared.telemetry import kafka_headers
from shared.topics import TopicSpec

log = logging.getLogger(__name__)

OUTBOX_MIGRATION = (
    "0000_outbox",
    """
    create table outbox (
        id           bigserial primary key,
        topic        text not null,
        msg_key      bytea not null,
        event_id     uuid not null,
        event_type   text not null,
        body         bytea not null,
        trace        jsonb not null default '{}'::jsonb,
        created_at   timestamptz not null default now(),
        published_at timestamptz
    );
    create index outbox_unpublished on outbox (id) where published_at is null;
    create index outbox_published_at on outbox (published_at) where published_at is not null;
    """,
)


def enqueue(cur, schema: str, items: list[tuple[TopicSpec, str, Event]], trace: dict[str, str] | None = None) -> None:
    """Insert (topic, key, event) rows inside the caller's transaction."""
    if not items:
        return
    rows = [
        (spec.name, key.encode(), event.event_id, event.type, encode(event),
         psycopg2.extras.Json(trace or (event.trace.model_dump(exclude_none=True) if event.trace else {})))
        for spec, key, event in items
    ]
    psycopg2.extras.execute_values(
        cur,
        f'insert into "{schema}".outbox (topic, msg_key, event_id, event_type, body, trace) values %s',
        rows,
        page_size=1000,
    )


def _relay_lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"outbox-relay:{schema}".encode()).digest()[:8], "big", signed=True)


class OutboxRelay(BackgroundWorker):
    """Publishes one schema's outbox. One relay per schema is active at a time (advisory lock), which
    keeps per-key order even when several replicas of a service run."""

    def __init__(
        self,
        db: Database,
        schema: str,
        producer: KafkaProducer,
        *,
        topic_prefix: str = "",
        batch_size: int = 2000,
        idle_sleep_s: float = 0.05,
        retention: timedelta = timedelta(hours=1),
        replay_since: datetime | None = None,
        service: str = "",
    ):
        super().__init__(name=f"outbox-relay-{schema}")
        self.db, self.schema, self.producer = db, schema, producer
        self.topic_prefix, self.batch_size, self.idle_sleep_s = topic_prefix, batch_size, idle_sleep_s
        self.retention, self.replay_since = retention, replay_since
        self.service = service or schema
        self.is_leader = False
        self.published = 0

    def work(self) -> None:
        """Lead this schema's relay while holding its lock. A failure (broker or database down)
        marks nothing published, so the restart re-sends rather than loses."""
        with self.db.connection() as conn:
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute("select pg_try_advisory_lock(%s)", (_relay_lock_key(self.schema),))
                self.is_leader = cur.fetchone()[0]
                conn.commit()
                if not self.is_leader:
                    self._stopping.wait(2.0)  # another replica relays this schema
                    return
                try:
                    self._replay(cur, conn)
                    last_purge = 0.0
                    while not self._stopping.is_set():
                        sent = self.publish_batch(cur, conn)
                        self.last_error = None
                        if time.monotonic() - last_purge > 60:
                            self._purge(cur, conn)
                            last_purge = time.monotonic()
                        if sent < self.batch_size:
                            self._stopping.wait(self.idle_sleep_s)
                finally:
                    self.is_leader = False
                    if conn.closed == 0:
                        conn.rollback()
                        cur.execute("select pg_advisory_unlock(%s)", (_relay_lock_key(self.schema),))
                        conn.commit()

    def _replay(self, cur, conn) -> None:
        if self.replay_since is None:
            return
        cur.execute(
            f'update "{self.schema}".outbox set published_at = null where published_at >= %s',
            (self.replay_since,),
        )
        log.info("outbox %s: replaying %d rows published since %s", self.schema, cur.rowcount, self.replay_since)
        conn.commit()
        self.replay_since = None

    def publish_batch(self, cur, conn) -> int:
        cur.execute(
            f'select id, topic, msg_key, body, trace from "{self.schema}".outbox '
            "where published_at is null order by id limit %s",
            (self.batch_size,),
        )
        rows = cur.fetchall()
        conn.commit()
        if not rows:
            return 0
        futures = [
            self.producer.send(f"{self.topic_prefix}{topic}", key=bytes(key), value=bytes(body),
                               headers=kafka_headers(trace))
            for _id, topic, key, body, trace in rows
        ]
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)  # raises if any send failed: nothing is marked, all is retried
        cur.execute(
            f'update "{self.schema}".outbox set published_at = now() where id = any(%s)',
            ([r[0] for r in rows],),
        )
        conn.commit()
        self.published += len(rows)
        OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)

    def _purge(self, cur, conn) -> None:
        cur.execute(
            f'delete from "{self.schema}".outbox where published_at < now() - %s', (self.retention,)
        )
        conn.commit()


def pending_count(db: Database, schema: str) -> int:
    with db.transaction() as cur:
        cur.execute(f'select count(*) from "{schema}".outbox where published_at is null')
        return cur.fetchone()[0]

