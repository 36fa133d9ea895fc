"""Ingestion: validate a batch from a channel and hand the accepted touchpoints to the outbox."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.identity import store
from services.identity.domain import partition_key, usable_identifiers
from services.identity.settings import IdentitySettings
from shared.auth import Principal
from shared.bus.outbox import enqueue
from shared.db import Database
from shared.events import EVENT_TYPES, TOUCHPOINT_TYPE_NAMES, DecodeError, Touchpoint, TraceContext, from_document, utcnow
from shared.http import storable_instant
from shared.telemetry import carrier_from_current, tracer
from shared.topics import TOUCHPOINTS_RAW

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
    try:  # year 1 or an offset no zone has would be accepted here and break the warehouse downstream
        storable_instant(event.occurred_at)
    except ValueError as exc:
        raise DecodeError(f"occurred_at: {exc}") from None
    problems = usable_identifiers(event, region)
    if problems:  # one bad identifier among good ones is kept as rejected; none usable is an error
        raise DecodeError("no usable identifier: " + "; ".join(problems))
    return event


def ingest_touchpoints(
    raw_events: list[Any], principal: Principal, db: Database, settings: IdentitySettings
) -> list[IngestResult]:
    """Validate each event on its own; store the valid new ones and their outbox rows in one
    transaction. Answers one result per input, in order."""
    now = utcnow()
    results: list[IngestResult] = []
    valid: list[tuple[int, Touchpoint]] = []
    with db.transaction() as cur:
        region = store.tenant_policies(cur, {principal.tenant_id}, settings.default_region)[principal.tenant_id] \
            .default_region
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
