"""Identity's use cases as plain functions: ingest a batch from a channel, resolve consumed touchpoints."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from services.identity import store
from services.identity.domain import (
    IdentifierError, IdKey, id_keys, normalise, normalise_touchpoint, partition_key, resolve,
)
from services.identity.settings import IdentitySettings
from shared.auth import Principal
from shared.bus.consumer import Delivery
from shared.bus.outbox import enqueue
from shared.db import Database
from shared.events import (
    EVENT_TYPES, TOUCHPOINT_TYPE_NAMES, CustomerCreated, DecodeError, Identifier, Touchpoint, TraceContext, from_document,
    utcnow,
)
from shared.events.customers import CustomerCreatedPayload
from shared.telemetry import carrier_for_span, carrier_from_current, context_from_carrier, tracer
from shared.topics import CUSTOMERS_CHANGES, TOUCHPOINTS_RAW, TOUCHPOINTS_RESOLVED

_tracer = tracer("identity")


@dataclass
class IngestResult:
    index: int
    status: str  # accepted | duplicate | rejected
    event_id: str | None = None
    reason: str | None = None
    errors: list[dict] = field(default_factory=list)


def _validate(raw: Any, principal: Principal, now: datetime, settings: IdentitySettings, region: str) -> Touchpoint:
    if not isinstance(raw, dict):
        raise DecodeError("each event must be a JSON object")
    if raw.get("tenant_id") not in (None, principal.tenant_id):
        raise DecodeError("tenant_id does not match the tenant of your API key")
    if raw.get("customer_id") is not None:
        raise DecodeError("customer_id is assigned by identity resolution; send identifiers instead")
    event_type = raw.get("type")
    if isinstance(event_type, str) and event_type in EVENT_TYPES and event_type not in TOUCHPOINT_TYPE_NAMES:
        raise DecodeError(f"{event_type} is not a touchpoint: identity publishes it, nobody ingests it")
    if "event_id" not in raw:
        raise DecodeError("event_id is required (a UUID you keep, so a retried batch is not counted twice)")
    doc = {**raw, "tenant_id": principal.tenant_id, "recorded_at": now.isoformat(),
           "source": raw.get("source") or "ingest-api"}
    doc.pop("trace", None)
    event = from_document(doc)
    if event.occurred_at > now + timedelta(seconds=settings.max_future_seconds):
        raise DecodeError(f"occurred_at is more than {settings.max_future_seconds // 3600} hours in the future")
    try:
        return normalise_touchpoint(event, region)
    except IdentifierError as exc:
        raise DecodeError(f"identifiers: {exc}") from None


def ingest_touchpoints(
    raw_events: list[Any], principal: Principal, db: Database, settings: IdentitySettings
) -> list[IngestResult]:
    """Validate each event on its own; store the valid new ones and their outbox rows in one
    transaction. Answers one result per input, in order."""
    now = utcnow()
    results: list[IngestResult] = []
    valid: list[tuple[int, Touchpoint]] = []
    with db.transaction() as cur:
        region = store.tenant_regions(cur, {principal.tenant_id}, settings.default_region)[principal.tenant_id]
    for index, raw in enumerate(raw_events):  # validation holds no connection
        try:
            event = _validate(raw, principal, now, settings, region)
        except DecodeError as exc:
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            results.append(IngestResult(index, "rejected", str(event_id) if event_id else None, exc.reason, exc.errors))
            continue
        results.append(IngestResult(index, "pending", str(event.event_id)))
        valid.append((index, event))

    with db.transaction() as cur:
        fresh = store.record_ingested(cur, principal.tenant_id, [e.event_id for _, e in valid])
        outbox, claimed = [], set()
        for index, event in valid:
            if event.event_id not in fresh or event.event_id in claimed:
                results[index].status = "duplicate"
                continue
            claimed.add(event.event_id)
            results[index].status = "accepted"
            with _tracer.start_as_current_span("touchpoint.ingest", attributes={"event.id": str(event.event_id),
                                                                                "event.type": event.type}):
                carrier = carrier_from_current()
            event = event.model_copy(update={"trace": TraceContext(**carrier)})
            outbox.append((TOUCHPOINTS_RAW, partition_key(event), event))
        enqueue(cur, store.SCHEMA, outbox)
    return results


def resolve_touchpoints(deliveries: list[Delivery], db: Database, settings: IdentitySettings) -> None:
    """Resolve a consumed batch in one transaction: each touchpoint gets its customer and is
    re-published keyed by customer_id; new customers are announced. Idempotent on event_id."""
    now = utcnow()
    spans = {}
    for d in deliveries:
        spans[d.event.event_id] = _tracer.start_span(
            "touchpoint.resolve", context=context_from_carrier(d.trace),
            attributes={"event.id": str(d.event.event_id), "event.type": d.event.type},
        )
    try:
        with db.transaction() as cur:
            events = [d.event for d in deliveries if isinstance(d.event, Touchpoint)]
            if len(events) != len(deliveries):
                raise DecodeError("touchpoints.raw carries only touchpoints")
            done = store.already_resolved(cur, [(e.tenant_id, e.event_id) for e in events])
            regions = store.tenant_regions(cur, {e.tenant_id for e in events}, settings.default_region)
            todo, seen = [], set()
            for e in events:
                if (e.tenant_id, e.event_id) in done or e.event_id in seen:
                    continue  # redelivered: its outbox rows were written when it was first resolved
                seen.add(e.event_id)
                todo.append(normalise_touchpoint(e, regions[e.tenant_id]))
            if not todo:
                return
            keys = [k for e in todo for k in id_keys(e)]
            store.lock_identifiers(cur, keys)
            resolution = resolve(todo, store.load_owners(cur, keys), uuid.uuid4, now)

            store.insert_customers(cur, [(cid, ev.tenant_id, now, ev.event_id) for cid, ev in resolution.new_customers])
            store.link_identifiers(cur, resolution.new_links, now)
            store.record_resolved(cur, [(e.tenant_id, e.event_id, resolution.customer_of[e.event_id]) for e in todo])
            outbox = []
            for cid, first in resolution.new_customers:
                created = CustomerCreated(
                    event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=first.tenant_id,
                    source="identity", customer_id=cid,
                    payload=CustomerCreatedPayload(identifier_types=tuple(sorted({i.type for i in first.identifiers})),
                                                   first_event_id=first.event_id),
                    trace=first.trace,
                )
                outbox.append((CUSTOMERS_CHANGES, str(cid), created))
            for e in todo:
                cid = resolution.customer_of[e.event_id]
                carrier = carrier_for_span(spans[e.event_id])
                resolved = e.model_copy(update={"customer_id": cid, "trace": TraceContext(**carrier)})
                outbox.append((TOUCHPOINTS_RESOLVED, str(cid), resolved))
            enqueue(cur, store.SCHEMA, outbox)
    finally:
        for span in spans.values():
            span.end()


def lookup_customer(db: Database, settings: IdentitySettings, tenant_id: str, id_type: str, value: str,
                    scope: str | None) -> dict | None:
    with db.transaction() as cur:
        region = store.tenant_regions(cur, {tenant_id}, settings.default_region)[tenant_id]
        ident = normalise(Identifier(type=id_type, value=value, scope=scope), region=region, store_id=scope)
        customer_id = store.find_customer(cur, IdKey(tenant_id, ident.type, ident.scope or "", ident.value))
        return store.customer_profile(cur, tenant_id, customer_id) if customer_id else None


def get_customer(db: Database, tenant_id: str, customer_id: UUID) -> dict | None:
    with db.transaction() as cur:
        return store.customer_profile(cur, tenant_id, customer_id)
