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

from services.insights import faust_fixes
from services.insights.customers import Changes, CustomerBook, coalesced
from services.insights.profile import Profile
from services.insights.schema import CASE_EVENTS, SURVEY_ANSWERS, TOUCHPOINTS
from services.insights.settings import InsightsSettings
from services.insights.warehouse import Warehouse, touchpoint_row
from shared.bus.consumer import dead_letter_headers
from shared.erasure import customer_change, erasure_confirmed
from shared.events import CustomerErased, CustomerMerged, CustomerSplit, DecodeError, Touchpoint, decode, encode
from shared.events.feedback import CaseOpened, CaseResolved, CaseSlaBreached, SurveyAnswered
from shared.events.loyalty import TierChanged
from shared.metrics import MESSAGES_DEAD_LETTERED, MESSAGES_PROCESSED
from shared.telemetry import carrier_from_kafka_headers, context_from_carrier, tracer
from shared.topics import (
    CUSTOMERS_CHANGES, CUSTOMERS_SCORES, ERASURE_CONFIRMATIONS, FEEDBACK_CHANGES, LOYALTY_CHANGES, TOUCHPOINTS_RESOLVED,
    TopicSpec,
)

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


def faust_app(settings: InsightsSettings, app_id: str = "insights", with_tables: bool = False) -> faust.App:
    """A faust app configured for the platform's brokers (every insights processor uses this). The
    processors keep their state in ClickHouse, not in faust tables; an app with tables must say so."""
    faust_fixes.apply()
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
        producer_max_batch_size=1 if with_tables else 16_384,
    )


async def rescore_everyone(book: CustomerBook, warehouse: Warehouse, publish_and_store) -> int:
    """Re-score every stored customer at the book's clock, a page at a time under the book's lock (an
    agent's batch waits for at most one page). Returns how many were scored."""
    await asyncio.to_thread(book.refresh_reference)
    scored = 0
    pages = warehouse.state_pages()
    while (rows := await asyncio.to_thread(next, pages, None)) is not None:
        async with book.lock:
            changes = Changes()
            for tenant_id, customer_id, state in rows:
                customer_id = str(customer_id)
                try:
                    profile = book.cached(tenant_id, customer_id) or Profile.loads(tenant_id, customer_id, state)
                    book.rescore(profile, changes)
                except Exception:  # one customer's bad digest must not stop everyone else's tick
                    log.exception("re-scoring %s/%s failed", tenant_id, customer_id)
            await publish_and_store(changes)
        scored += len(rows)
    return scored


def build_processor(settings: InsightsSettings, warehouse: Warehouse, book: CustomerBook | None = None) -> faust.App:
    """Built inside the running event loop (the API process's), never at import time."""
    app = faust_app(settings)
    book = book or CustomerBook(warehouse, config=settings.scoring, default_zone=settings.default_timezone)
    app.hub_book = book

    def raw_topic(spec: TopicSpec):
        return app.topic(settings.topic(spec.name), value_serializer="raw", key_serializer="raw")

    source, changes, confirmations = raw_topic(TOUCHPOINTS_RESOLVED), raw_topic(CUSTOMERS_CHANGES), \
        raw_topic(ERASURE_CONFIRMATIONS)
    loyalty_topic, feedback_topic, scores_topic = raw_topic(LOYALTY_CHANGES), raw_topic(FEEDBACK_CHANGES), \
        raw_topic(CUSTOMERS_SCORES)
    dead_letter_topics = {spec.name: raw_topic(spec.dlq) for spec in (
        TOUCHPOINTS_RESOLVED, CUSTOMERS_CHANGES, LOYALTY_CHANGES, FEEDBACK_CHANGES)}
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

    async def dead_letter(message, error: Exception, spec: TopicSpec = TOUCHPOINTS_RESOLVED) -> None:
        """Park a message that can never be applied, with the reason, durably before its offset moves."""
        reason = error.reason if isinstance(error, DecodeError) else repr(error)
        error_class = type(error).__name__

        async def send():
            headers = dead_letter_headers(_Record(message), reason, error_class)
            sent = await dead_letter_topics[spec.name].send(key=message.key, value=message.value, headers=headers)
            await sent  # durable in the DLQ before the source offset may be committed

        await until_done(send, "dead-letter publish")
        MESSAGES_DEAD_LETTERED.labels("insights", spec.name, error_class).inc()
        app.hub_stats["dead_lettered"] += 1

    async def load(tenant_id: str, customer_ids: set[str]) -> dict[str, Profile]:
        """Digests, retried while ClickHouse is away: only a failure of the change itself is parked."""
        found = {}

        async def step():
            found.update(await book.profiles(tenant_id, customer_ids))

        await until_done(step, "ClickHouse state load")
        return found

    async def publish_and_store(changes: Changes) -> None:
        """Score events first, then the rows: a crash in between re-derives the same events (same ids) from
        the redelivered batch, while rows written first would mark it applied and lose the events."""
        async def publish():
            sent = [await scores_topic.send(key=str(e.customer_id).encode(), value=encode(e)) for e in changes.events]
            await asyncio.gather(*sent)  # acknowledged by the broker

        if changes.events:
            await until_done(publish, "score event publish")
        for tenant_id, moves, event_ids in coalesced(changes.moves):
            await until_done(lambda: asyncio.to_thread(warehouse.reattribute, tenant_id, moves, event_ids),
                             "ClickHouse re-attribution")
        await until_done(lambda: asyncio.to_thread(warehouse.insert_many, changes.rows), "ClickHouse insert")

    @app.agent(source, name="touchpoint-sink")
    async def touchpoint_sink(stream):
        storing = None
        async for batch in stream.noack().noack_take(settings.flush_max_rows, within=settings.flush_interval_s):
            changes, spans, by_customer = Changes(), [], {}
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
                    changes.rows[TOUCHPOINTS].append(
                        touchpoint_row(touchpoint, format_trace_id(span.get_span_context().trace_id)))
                    by_customer.setdefault((touchpoint.tenant_id, str(touchpoint.customer_id)), []).append(
                        (touchpoint, message))
                except Exception as exc:  # this message can never be stored: park it with the reason
                    if len(spans) > len(changes.rows[TOUCHPOINTS]):
                        spans.pop().end()
                    await dead_letter(message, exc)
            async with book.lock:
                await apply_touchpoints(by_customer, changes)
            # One batch in flight: this batch's rows go to ClickHouse while the next one is decoded and
            # scored. Batches are stored and acknowledged in order, each only once it is durable.
            if storing is not None:
                await storing
            storing = asyncio.ensure_future(store_and_ack(stream, batch, changes, spans))
        if storing is not None:
            await storing

    async def store_and_ack(stream, batch, changes: Changes, spans) -> None:
        await publish_and_store(changes)
        for span in spans:
            span.end()
        for event in batch:
            await stream.ack(event)
        stored = len(changes.rows[TOUCHPOINTS])
        app.hub_stats["stored"] += stored
        app.hub_stats["last_batch_at"] = time.monotonic()
        MESSAGES_PROCESSED.labels("insights", TOUCHPOINTS_RESOLVED.name).inc(stored)

    async def apply_touchpoints(by_customer: dict, changes: Changes) -> None:
        """Fold each customer's touchpoints into their digest and re-score it. The touchpoint rows are
        stored regardless; if a customer's update fails, their messages also go to the dead-letter topic
        with the reason, to be replayed once fixed (a replayed touchpoint is deduplicated by event id)."""
        for tenant_id in {t for t, _ in by_customer}:
            profiles = await load(tenant_id, {c for t, c in by_customer if t == tenant_id})
            for customer_id, profile in profiles.items():
                received = by_customer[(tenant_id, customer_id)]
                try:
                    changed = False
                    for touchpoint, _ in received:
                        if touchpoint.type == "survey.answered":  # a redelivered answer collapses in ClickHouse
                            changes.rows[SURVEY_ANSWERS].append(book.answer_row(touchpoint, "touchpoint"))
                        changed |= profile.apply_touchpoint(touchpoint)
                    if changed or not profile.stage:
                        book.rescore(profile, changes)
                except Exception as exc:
                    log.exception("updating customer %s/%s failed", tenant_id, customer_id)
                    book.forget(tenant_id, [customer_id])  # reloaded as stored, without the parked events
                    for _, message in received:
                        await dead_letter(message, exc)

    async def consume_batches(stream, spec: TopicSpec, apply, decoder=decode, alone=None, needs=None) -> None:
        """Decode a batch (parking what cannot be), apply it in order under the book's lock, publish and
        store what it produced, and only then acknowledge it. `alone` = (event type, handler): such an event
        (an erasure) is handled on its own once everything before it is stored, so it covers that too.
        `needs(event)`: the customers whose digests applying it reads, loaded for the whole batch at once
        (a ClickHouse read per event cost more than the rest of the event's work)."""
        async for batch in stream.noack().noack_take(settings.flush_max_rows, within=settings.flush_interval_s):
            events = []
            for event in batch:
                try:
                    events.append((decoder(event.message.value), event.message))
                except Exception as exc:
                    await dead_letter(event.message, exc, spec)
            async with book.lock:
                if needs:
                    await prefetch(needs, [e for e, _ in events])
                changes = Changes()
                for decoded_event, message in events:
                    if alone and isinstance(decoded_event, alone[0]):
                        if changes:
                            await publish_and_store(changes)
                            changes = Changes()
                        await alone[1](decoded_event)
                    else:
                        await apply_or_park(apply, decoded_event, message, changes, spec)
                if changes:
                    await publish_and_store(changes)
            for event in batch:
                await stream.ack(event)
            MESSAGES_PROCESSED.labels("insights", spec.name).inc(len(events))

    async def prefetch(needs, events: list) -> None:
        wanted: dict[str, set[str]] = {}
        for event in events:
            if ids := needs(event):
                wanted.setdefault(event.tenant_id, set()).update(ids)
        for tenant_id, customer_ids in wanted.items():
            await load(tenant_id, customer_ids)

    async def apply_or_park(apply, event, message, changes: Changes, spec: TopicSpec) -> None:
        """Apply one event; if that fails (transient failures are retried inside), park it with the reason
        and drop whatever it half-produced, so an agent never crashes past uncommitted offsets."""
        applied = Changes()
        try:
            await apply(event, applied)
        except Exception as exc:
            log.exception("applying %s %s failed", event.type, event.event_id)
            book.forget_everyone()  # digests it touched may be half-changed: reload them as stored
            await dead_letter(message, exc, spec)
            return
        for table, rows in applied.rows.items():
            changes.rows[table].extend(rows)
        changes.events.extend(applied.events)
        changes.moves.extend(applied.moves)

    def loyalty_needs(event) -> set[str]:
        return {str(event.customer_id)} if isinstance(event, TierChanged) else set()

    async def apply_loyalty(event, changes: Changes) -> None:
        if isinstance(event, TierChanged):
            profile = (await load(event.tenant_id, {str(event.customer_id)}))[str(event.customer_id)]
            if profile.apply_tier(event):
                book.rescore(profile, changes)

    def feedback_needs(event) -> set[str]:
        applies = isinstance(event, (SurveyAnswered, CaseOpened, CaseResolved)) and event.customer_id is not None
        return {str(event.customer_id)} if applies else set()

    async def apply_feedback(event, changes: Changes) -> None:
        """Answers and case events become rows (deduplicated by event id in ClickHouse); a known customer's
        answers and opened or resolved cases also feed their risk."""
        if isinstance(event, SurveyAnswered):
            changes.rows[SURVEY_ANSWERS].append(book.answer_row(event, event.payload.source))
        elif isinstance(event, (CaseOpened, CaseSlaBreached, CaseResolved)):
            changes.rows[CASE_EVENTS].append(book.case_row(event))
        if event.customer_id is None or not isinstance(event, (SurveyAnswered, CaseOpened, CaseResolved)):
            return
        profile = (await load(event.tenant_id, {str(event.customer_id)}))[str(event.customer_id)]
        changed = profile.apply_answer(event) if isinstance(event, SurveyAnswered) else profile.apply_case(event)
        if changed:
            book.rescore(profile, changes)

    def identity_needs(event) -> set[str]:
        if isinstance(event, CustomerMerged):
            return {str(event.customer_id), *map(str, event.payload.merged_customer_ids)}
        if isinstance(event, CustomerSplit):
            return {str(event.customer_id), str(event.payload.new_customer_id)}
        return set()

    async def apply_identity(event, changes: Changes) -> None:
        """Merges and splits move a customer's digest and touchpoints; erasures are handled one by one."""
        tenant_id = event.tenant_id
        if isinstance(event, CustomerMerged):
            survivor_id = str(event.customer_id)
            merged_ids = [str(c) for c in event.payload.merged_customer_ids if str(c) != survivor_id]
            profiles = await load(tenant_id, {survivor_id, *merged_ids})
            survivor = profiles[survivor_id]
            for merged_id in merged_ids:
                survivor.absorb(profiles[merged_id])
                book.drop(tenant_id, merged_id, changes)
            changes.moves.append((tenant_id, {merged_id: survivor_id for merged_id in merged_ids}, None))
            book.rescore(survivor, changes)
        elif isinstance(event, CustomerSplit):
            source_id, new_id = str(event.customer_id), str(event.payload.new_customer_id)
            moved_ids = {str(e) for e in event.payload.moved_event_ids}
            profiles = await load(tenant_id, {source_id, new_id})
            profiles[new_id].absorb(profiles[source_id].split_off(new_id, moved_ids))
            if moved_ids:
                changes.moves.append((tenant_id, {source_id: new_id}, tuple(sorted(moved_ids))))
            book.rescore(profiles[source_id], changes)
            book.rescore(profiles[new_id], changes)

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

    async def forget_and_erase(erased: CustomerErased) -> None:
        book.forget(erased.tenant_id, erased.payload.customer_ids)
        await erase(erased)

    @app.agent(changes, name="customer-changes")
    async def customer_changes(stream):
        """In batches like the other agents (one slow change at a time filled this agent's buffer, and faust
        then held every other topic's messages behind it), in order: a change sees the ones before it."""
        await consume_batches(stream, CUSTOMERS_CHANGES, apply_identity,
                              decoder=lambda value: customer_change(decode(value)),
                              alone=(CustomerErased, forget_and_erase), needs=identity_needs)

    @app.agent(loyalty_topic, name="loyalty-tiers")
    async def loyalty_tiers(stream):
        await consume_batches(stream, LOYALTY_CHANGES, apply_loyalty, needs=loyalty_needs)

    @app.agent(feedback_topic, name="feedback-answers")
    async def feedback_answers(stream):
        await consume_batches(stream, FEEDBACK_CHANGES, apply_feedback, needs=feedback_needs)

    @app.task
    async def load_reference():
        await asyncio.to_thread(book.refresh_reference)

    @app.timer(settings.zones_refresh_s, on_leader=False)
    async def refresh_zones():
        await asyncio.to_thread(book.refresh_zones)

    async def rescore_all() -> int:
        """The daily tick: risk rises and stages move to at_risk or churned while nothing happens."""
        return await rescore_everyone(book, warehouse, publish_and_store)

    app.timer(settings.rescore_every_s, on_leader=False)(rescore_all)
    app.hub_rescore_all = rescore_all

    return app
