"""The consumer loop: poll a batch, decode, hand it to a plain handler, commit only after the handler
returned (its work is durable), dead-letter what cannot be processed.

- A message that does not decode, or whose handling raises a non-transient error, goes to
  `<topic>.dlq` with the error in its headers and is counted; the batch's other messages proceed.
- A transient error (database or broker unreachable) retries the whole batch with backoff and
  commits nothing, so no message is skipped while a dependency is down.
Handlers must be idempotent on event_id: after a crash the uncommitted tail is delivered again.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from psycopg2.extensions import TransactionRollbackError

from shared.bus.worker import BackgroundWorker
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import DecodeError, Event, decode
from shared.metrics import BATCH_SECONDS, HANDLER_RETRIES, MESSAGES_DEAD_LETTERED, MESSAGES_PROCESSED
from shared.telemetry import carrier_from_kafka_headers
from shared.topics import TopicSpec

log = logging.getLogger(__name__)

# A deadlock or serialisation failure rolled the whole transaction back: running it again is safe.
TRANSIENT_ERRORS = TRANSIENT_DB_ERRORS + (TransactionRollbackError, KafkaError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class Delivery:
    """A decoded event with where it came from and its trace context."""

    event: Event
    topic: str
    partition: int
    offset: int
    trace: dict[str, str]


BatchHandler = Callable[[list[Delivery]], None]


def dead_letter_headers(record, reason: str, error_class: str) -> list[tuple[str, bytes]]:
    return list(record.headers or []) + [
        ("dlq.reason", reason[:4000].encode()),
        ("dlq.error_class", error_class.encode()),
        ("dlq.source_topic", record.topic.encode()),
        ("dlq.source_partition", str(record.partition).encode()),
        ("dlq.source_offset", str(record.offset).encode()),
        ("dlq.failed_at", str(time.time()).encode()),
    ]


class ConsumerLoop(BackgroundWorker):
    def __init__(
        self,
        *,
        spec: TopicSpec,
        group_id: str,
        handler: BatchHandler,
        bootstrap_servers: str,
        dlq_producer: KafkaProducer,
        service: str,
        topic_prefix: str = "",
        max_records: int = 500,
        session_timeout_ms: int = 10_000,
        max_backoff_s: float = 10.0,
        wanted: Callable[[], bool] | None = None,
    ):
        super().__init__(name=f"consumer-{spec.name}")
        self.spec, self.group_id, self.handler = spec, group_id, handler
        self.bootstrap_servers, self.dlq_producer, self.service = bootstrap_servers, dlq_producer, service
        self.topic = f"{topic_prefix}{spec.name}"
        self.dlq_topic = f"{topic_prefix}{spec.dlq.name}"
        self.max_records, self.session_timeout_ms, self.max_backoff_s = max_records, session_timeout_ms, max_backoff_s
        self.last_poll_at = 0.0
        self.dead_lettered = 0
        # Asked before a polled batch is decoded: False means the handler would do nothing with any of it
        # (no webhook subscription exists), so the batch is committed unread. An error counts as True.
        self.wanted = wanted

    def work(self) -> None:
        consumer = KafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap_servers.split(","),
            group_id=self.group_id,
            client_id=f"{self.service}-{self.spec.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.session_timeout_ms // 6),
            max_poll_interval_ms=300_000,
        )
        try:
            self._consume(consumer)
        finally:
            consumer.close(autocommit=False)

    def _consume(self, consumer: KafkaConsumer) -> None:
        while not self._stopping.is_set():
            polled = consumer.poll(timeout_ms=200)
            self.last_poll_at = time.monotonic()
            self.last_error = None
            records = [r for batch in polled.values() for r in batch]
            if not records:
                continue
            with BATCH_SECONDS.labels(self.service, self.spec.name).time():
                if self._is_wanted() and not self._process(records):
                    return  # stopping mid-retry: commit nothing, the batch is redelivered
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                if tp not in offsets or offsets[tp].offset <= r.offset:
                    offsets[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
            consumer.commit(offsets)

    def _is_wanted(self) -> bool:
        if self.wanted is None:
            return True
        try:
            return bool(self.wanted())
        except Exception as exc:  # the handler decides, and retries if the database is away
            log.warning("could not tell whether %s is wanted, processing it: %r", self.topic, exc)
            return True

    def _process(self, records) -> bool:
        """Handle a polled batch; False when stopping before it was durable (nothing may be committed)."""
        pairs: list[tuple[Delivery, object]] = []
        for record in records:
            try:
                event = decode(record.value)
            except DecodeError as exc:
                self._dead_letter(record, exc.reason, "DecodeError")
                continue
            delivery = Delivery(event, record.topic, record.partition, record.offset,
                                carrier_from_kafka_headers(record.headers))
            pairs.append((delivery, record))
        ok = len(pairs)
        outcome = self._with_retries([d for d, _ in pairs]) if pairs else True
        if outcome is None:
            return False
        if outcome is False:
            # The batch failed for a reason that is not transient: find the poison message(s).
            for delivery, record in pairs:
                single = self._with_retries([delivery], isolate=True)
                if single is None:
                    return False
                if single is not True:
                    ok -= 1
                    self._dead_letter(record, *single)
        self.dlq_producer.flush()
        MESSAGES_PROCESSED.labels(self.service, self.spec.name).inc(ok)
        return True

    def _with_retries(self, deliveries: list[Delivery], isolate: bool = False):
        """True on success; False (batch) or (reason, class) (single) on a permanent error; None if stopping."""
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                self.handler(deliveries)
                return True
            except TRANSIENT_ERRORS as exc:
                self.last_error = repr(exc)
                HANDLER_RETRIES.labels(self.service, self.spec.name).inc()
                log.warning("transient failure on %s, retrying in %.1fs: %r", self.topic, backoff, exc)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            except Exception as exc:
                if not isolate:
                    log.warning("batch on %s failed, isolating the failing message: %r", self.topic, exc)
                    return False
                reason = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                return (reason, type(exc).__name__)
        return None

    def _dead_letter(self, record, reason: str, error_class: str) -> None:
        self.dead_lettered += 1
        MESSAGES_DEAD_LETTERED.labels(self.service, self.spec.name, error_class).inc()
        log.error("dead-lettered a message", extra={
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            # First line only: database errors put the offending values (personal data) in later lines.
            "error_class": error_class, "reason": reason.splitlines()[0][:200] if reason else ""})
        self.dlq_producer.send(
            self.dlq_topic, key=record.key, value=record.value,
            headers=dead_letter_headers(record, reason, error_class),
        ).get(timeout=30)
