"""faust-streaming processors of insights. The touchpoint sink takes resolved touchpoints in batches
(at most `flush_max_rows`, at most `flush_interval_s` old), inserts them into ClickHouse in one insert,
and only then acknowledges them, so faust commits offsets of durable rows only. The erasure agent
anonymises an erased customer's rows, then publishes the confirmation and waits for the broker's
acknowledgement before acknowledging the `customer.erased` message. A message that does not decode
goes to its topic's dead-letter topic with its reason; ClickHouse or the broker being down stalls the
stream (backing off) instead of dropping anything."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import faust
from opentelemetry.trace import format_trace_id

from services.insights.settings import InsightsSettings
from services.insights.warehouse import Warehouse, touchpoint_row
from shared.bus.consumer import dead_letter_headers
from shared.erasure import customer_change, erasure_confirmed
from shared.events import CustomerErased, DecodeError, Touchpoint, decode, encode
from shared.metrics import MESSAGES_DEAD_LETTERED, MESSAGES_PROCESSED
from shared.telemetry import carrier_from_kafka_headers, context_from_carrier, tracer
from shared.topics import CUSTOMERS_CHANGES, ERASURE_CONFIRMATIONS, TOUCHPOINTS_RESOLVED, TopicSpec

log = logging.getLogger(__name__)
_tracer = tracer("insights")


def _headers(message) -> list[tuple[str, bytes]]:
    headers = message.headers or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


class _Record:
    """The view of a faust message that dead_letter_headers expects."""

    def __init__(self, message):
        self.topic, self.partition, self.offset = message.topic, message.partition, message.offset
        self.headers = _headers(message)


def faust_app(settings: InsightsSettings, app_id: str = "insights") -> faust.App:
    """A faust app configured for the platform's brokers (every insights processor uses this)."""
    brokers = ";".join(f"kafka://{b}" for b in settings.kafka_bootstrap_servers.split(","))
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        f"{settings.topic_prefix}{app_id}",
        broker=brokers,
        datadir=str(data_dir),
        web_enabled=False,
        autodiscover=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        # Short group timeouts: a join takes about half the session timeout on the embedded broker.
        broker_session_timeout=6,
        broker_heartbeat_interval=2,
        broker_commit_interval=1.0,
        # Table changelogs recover completely only with one record per produce on the embedded broker.
        producer_max_batch_size=1,
    )


def build_processor(settings: InsightsSettings, warehouse: Warehouse) -> faust.App:
    """Built inside the running event loop (the API process's), never at import time."""
    app = faust_app(settings)

    def raw_topic(spec: TopicSpec):
        return app.topic(settings.topic(spec.name), value_serializer="raw", key_serializer="raw")

    source, changes, confirmations = raw_topic(TOUCHPOINTS_RESOLVED), raw_topic(CUSTOMERS_CHANGES), \
        raw_topic(ERASURE_CONFIRMATIONS)
    dead_letter_topics = {spec.name: raw_topic(spec.dlq) for spec in (TOUCHPOINTS_RESOLVED, CUSTOMERS_CHANGES)}
    app.hub_stats = {"stored": 0, "erased": 0, "dead_lettered": 0, "last_error": None, "last_batch_at": 0.0}

    async def until_done(step, what: str) -> None:
        """Retry with backoff until `step` succeeds: an exception escaping a faust agent restarts it and
        can skip uncommitted offsets, so nothing may escape."""
        backoff = 0.5
        while True:
            try:
                await step()
                app.hub_stats["last_error"] = None
                return
            except Exception as exc:  # ClickHouse or broker unavailable: hold the batch, commit nothing
                app.hub_stats["last_error"] = f"{what}: {exc!r}"
                log.warning("%s failed, retrying in %.1fs: %r", what, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def insert_until_durable(rows: list[list]) -> None:
        await until_done(lambda: asyncio.to_thread(warehouse.insert_touchpoints, rows), "ClickHouse insert")

    async def dead_letter(message, reason: str, error_class: str,
                          spec: TopicSpec = TOUCHPOINTS_RESOLVED) -> None:
        async def send():
            headers = dead_letter_headers(_Record(message), reason, error_class)
            sent = await dead_letter_topics[spec.name].send(key=message.key, value=message.value, headers=headers)
            await sent  # durable in the DLQ before the source offset may be committed

        await until_done(send, "dead-letter publish")
        MESSAGES_DEAD_LETTERED.labels("insights", spec.name, error_class).inc()
        app.hub_stats["dead_lettered"] += 1

    @app.agent(source, name="touchpoint-sink")
    async def touchpoint_sink(stream):
        async for batch in stream.noack().noack_take(settings.flush_max_rows, within=settings.flush_interval_s):
            rows, spans = [], []
            for event in batch:
                message = event.message
                try:
                    touchpoint = decode(message.value)
                    if not isinstance(touchpoint, Touchpoint) or touchpoint.customer_id is None:
                        raise DecodeError("touchpoints.resolved must carry a touchpoint with its customer_id")
                    span = _tracer.start_span(
                        "touchpoint.store",
                        context=context_from_carrier(carrier_from_kafka_headers(_headers(message))),
                        attributes={"event.id": str(touchpoint.event_id), "event.type": touchpoint.type},
                    )
                    spans.append(span)  # ended after the insert, or right away if the row fails
                    rows.append(touchpoint_row(touchpoint, format_trace_id(span.get_span_context().trace_id)))
                except Exception as exc:  # this message can never be stored: park it with the reason
                    if len(spans) > len(rows):
                        spans.pop().end()
                    reason = exc.reason if isinstance(exc, DecodeError) else repr(exc)
                    await dead_letter(message, reason, type(exc).__name__)
            await insert_until_durable(rows)
            for span in spans:
                span.end()
            for event in batch:
                await stream.ack(event)
            app.hub_stats["stored"] += len(rows)
            app.hub_stats["last_batch_at"] = time.monotonic()
            MESSAGES_PROCESSED.labels("insights", TOUCHPOINTS_RESOLVED.name).inc(len(rows))

    async def erase(erased: CustomerErased) -> None:
        """Anonymise, then publish the confirmation and wait for the broker's acknowledgement. Separate
        retried steps: a failed publish does not re-run the mutation (whose count would then be 0). A
        crash between the two re-runs both on redelivery: at least once, identity keeps the first."""
        anonymised = 0

        async def anonymise():
            nonlocal anonymised
            anonymised = await asyncio.to_thread(warehouse.anonymise_customers, erased.tenant_id,
                                                 erased.payload.customer_ids)

        await until_done(anonymise, "ClickHouse erasure")
        confirmation = erasure_confirmed(erased, "insights", anonymised=anonymised)  # one event_id across retries

        async def confirm():
            sent = await confirmations.send(key=str(confirmation.customer_id).encode(), value=encode(confirmation))
            await sent  # acknowledged by the broker (acks=all) before the erasure's offset may be committed

        await until_done(confirm, "erasure confirmation publish")
        log.info("erased customer", extra={
            "service": "insights", "tenant_id": erased.tenant_id, "customer_id": str(erased.customer_id),
            "event_id": str(erased.event_id), "erasure_request_id": str(erased.payload.erasure_request_id),
            "records_anonymised": anonymised})
        app.hub_stats["erased"] += 1

    @app.agent(changes, name="customer-erasure")
    async def customer_erasure(stream):
        """One event at a time: erasures are rare, and every other profile change is only acknowledged
        (merges and splits re-attribute rows with their own issue)."""
        async for event in stream.noack().events():
            message = event.message
            try:
                change = customer_change(decode(message.value))
            except Exception as exc:  # can never be applied: park it with the reason
                reason = exc.reason if isinstance(exc, DecodeError) else repr(exc)
                await dead_letter(message, reason, type(exc).__name__, CUSTOMERS_CHANGES)
                await stream.ack(event)
                continue
            if isinstance(change, CustomerErased):
                await erase(change)
            await stream.ack(event)
            MESSAGES_PROCESSED.labels("insights", CUSTOMERS_CHANGES.name).inc()

    return app
