"""What the hub keeps from each resolved touchpoint for the customer 360: the timeline row, profile
attributes (encrypted), pets and vehicles, consents and the facts other services announce (tier,
points, appointments, NPS). Also the redacted copy of a touchpoint that leaves identity."""
from __future__ import annotations

import base64
import uuid
from datetime import datetime
from uuid import UUID

import orjson
from psycopg2.extras import execute_batch, execute_values

from services.identity.domain import Classified
from services.identity.pii import Vault
from services.identity.store import token_of, upsert_facts
from shared import bulk_sql
from shared.events import Identifier, Touchpoint
from shared.events.customers import CustomerConsentChanged, CustomerConsentChangedPayload
from shared.events.touchpoints import ConsentChanged, ProfileUpdated

PROFILE_FIELDS = ("name", "birth_date", "gender", "address")
APPOINTMENT_STATUS = {"booking.created": "booked", "booking.cancelled": "cancelled",
                      "reception.checked_in": "checked_in", "service.performed": "completed",
                      "booking.held": "held", "booking.confirmed": "booked", "booking.rescheduled": "booked",
                      "booking.hold_expired": "expired", "booking.checked_in": "checked_in",
                      "booking.completed": "completed", "booking.no_show": "no_show"}


def redacted(item: Classified, vault: Vault, customer_id: UUID, trace) -> Touchpoint:
    """The touchpoint as identity publishes it: identifier values replaced by keyed tokens and the
    profile's personal fields dropped, so public topics hold no personal data after an erasure."""
    event = item.event
    identifiers = tuple(Identifier(type=k.type, scope=k.scope or None, value="tok:" + token_of(vault, k))
                        for k in item.keys) or tuple(Identifier(type=r.type, value="rejected") for r in item.rejected)
    update = {"identifiers": identifiers, "customer_id": customer_id, "trace": trace}
    if isinstance(event, ProfileUpdated):
        p = event.payload
        given = tuple(f for f in PROFILE_FIELDS if getattr(p, f) is not None)
        update["payload"] = p.model_copy(update={"name": None, "birth_date": None, "gender": None, "address": None,
                                                 "vehicles": (), "given_fields": given})
    return event.model_copy(update=update)


def _summary(event: Touchpoint) -> dict:
    if isinstance(event, ProfileUpdated):
        p = event.payload
        return {"given_fields": [f for f in PROFILE_FIELDS if getattr(p, f) is not None],
                "pets": len(p.pets), "vehicles": len(p.vehicles)}
    return event.payload.model_dump(mode="json", exclude_none=True)


def record_timeline(cur, vault: Vault, items: list[Classified], customer_of: dict[UUID, UUID]) -> None:
    bulk_sql.insert_rows(
        cur, "identity.resolved_events", _TIMELINE_COLUMNS,
        [(i.event.tenant_id, i.event.event_id, customer_of[i.event.event_id], i.event.type, i.event.channel.value,
          i.event.store_id, i.event.occurred_at, [token_of(vault, k) for k in i.keys],
          orjson.dumps(_summary(i.event)).decode()) for i in items],
    )


_TIMELINE_COLUMNS = (("tenant_id", "text"), ("event_id", "uuid"), ("customer_id", "uuid"), ("type", "text"),
                     ("channel", "text"), ("store_id", "text"), ("occurred_at", "timestamptz"), ("tokens", "text[]"),
                     ("summary", "jsonb"))
_ATTRIBUTE_COLUMNS = (("tenant_id", "text"), ("customer_id", "uuid"), ("attribute", "text"), ("value_enc", "bytea"),
                      ("key_id", "uuid"), ("source", "text"), ("verified", "boolean"), ("observed_at", "timestamptz"),
                      ("event_id", "uuid"))


def record_profiles(cur, vault: Vault, items: list[Classified], customer_of: dict[UUID, UUID]) -> set[UUID]:
    """Attributes and subjects from profile.updated events; returns the customers whose profile changed."""
    attributes, subjects, changed = [], [], set()
    for item in items:
        event = item.event
        if not isinstance(event, ProfileUpdated):
            continue
        cid = customer_of[event.event_id]
        changed.add(cid)
        source = "import" if event.source == "import" else event.channel.value
        for name in PROFILE_FIELDS:
            value = getattr(event.payload, name)
            if value is not None:
                attributes.append((event.tenant_id, cid, name, vault.encrypt(cid, str(value)), cid, source,
                                   event.payload.verified, event.occurred_at, event.event_id))
        for pet in event.payload.pets:
            subjects.append((event.tenant_id, cid, "pet", f"{pet.name.strip().lower()}|{pet.species}",
                             orjson.dumps(pet.model_dump(mode="json", exclude_none=True)).decode(), event.occurred_at))
        for vehicle in event.payload.vehicles:
            plate = "".join(vehicle.plate.split()).upper()
            fields = vehicle.model_dump(mode="json", exclude_none=True, exclude={"plate"})
            fields.update(plate_enc=base64.b64encode(vault.encrypt(cid, plate)).decode(), key_id=str(cid))
            subjects.append((event.tenant_id, cid, "vehicle", vault.token(event.tenant_id, "plate", plate),
                             orjson.dumps(fields).decode(), event.occurred_at))
    if attributes:
        bulk_sql.insert_rows(cur, "identity.profile_attributes", _ATTRIBUTE_COLUMNS, attributes)
    # Newer observations win field by field; an older (late) event only fills fields still missing. One
    # statement per observation, in order (one pet twice in a batch), sent together in one round trip.
    execute_batch(cur, "insert into identity.subjects (tenant_id, customer_id, kind, subject_key, attributes, "
                       "updated_at) values (%s, %s, %s, %s, %s, %s) on conflict (customer_id, kind, subject_key) do "
                       "update set attributes = case when excluded.updated_at >= subjects.updated_at "
                       "  then subjects.attributes || excluded.attributes else excluded.attributes || subjects.attributes "
                       "end, updated_at = greatest(subjects.updated_at, excluded.updated_at)", subjects, page_size=500)
    return changed


def record_consents(cur, items: list[Classified], customer_of: dict[UUID, UUID], now: datetime) -> list:
    """Consent touchpoints into the history (one statement for the batch); returns the
    customer.consent_changed events to publish, for the ones not recorded before."""
    consents = [(item.event, customer_of[item.event.event_id]) for item in items
                if isinstance(item.event, ConsentChanged)]
    if not consents:
        return []
    recorded = {row[0] for row in execute_values(
        cur, "insert into identity.consents (consent_id, tenant_id, customer_id, purpose, granted, source, evidence, "
             "effective_at, event_id) values %s on conflict (event_id) do nothing returning event_id",
        [(uuid.uuid4(), e.tenant_id, cid, e.payload.purpose, e.payload.granted, f"channel:{e.channel.value}",
          e.payload.evidence, e.occurred_at, e.event_id) for e, cid in consents], fetch=True, page_size=1000)}
    return [consent_event(e.tenant_id, cid, e.payload.purpose, e.payload.granted, f"channel:{e.channel.value}",
                          e.occurred_at, now) for e, cid in consents if e.event_id in recorded]


def add_consent(cur, tenant_id: str, customer_id: UUID, purpose: str, granted: bool, source: str,
                evidence: str | None, effective_at: datetime, event_id: UUID | None) -> bool:
    cur.execute(
        "insert into identity.consents (consent_id, tenant_id, customer_id, purpose, granted, source, evidence, "
        "effective_at, event_id) values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict (event_id) do nothing",
        (uuid.uuid4(), tenant_id, customer_id, purpose, granted, source, evidence, effective_at, event_id),
    )
    return cur.rowcount == 1


def consent_event(tenant_id: str, customer_id: UUID, purpose: str, granted: bool, source: str,
                  effective_at: datetime, now: datetime) -> CustomerConsentChanged:
    return CustomerConsentChanged(
        event_id=uuid.uuid4(), occurred_at=effective_at, recorded_at=now, tenant_id=tenant_id, source="identity",
        customer_id=customer_id,
        payload=CustomerConsentChangedPayload(purpose=purpose, granted=granted, source=source,
                                              effective_at=effective_at),
    )


def record_facts(cur, items: list[Classified], customer_of: dict[UUID, UUID]) -> None:
    """Last NPS and appointments from other services' touchpoints, newest by event time."""
    updates: dict[UUID, tuple[str, dict]] = {}
    appointments = []
    for item in items:
        event, cid = item.event, customer_of[item.event.event_id]
        at = event.occurred_at.isoformat()
        facts = {}
        payload = event.payload
        if event.type == "survey.answered" and payload.nps is not None:
            facts["last_nps"] = {"nps": payload.nps, "csat": payload.csat, "store_id": event.store_id,
                                 "staff_id": payload.staff_id, "answered_at": at}
        if facts:
            tenant, current = updates.get(cid, (event.tenant_id, {}))
            for name, value in facts.items():
                if name not in current or current[name]["at"] < at:
                    current[name] = {"value": value, "at": at}
            updates[cid] = (tenant, current)
        status = APPOINTMENT_STATUS.get(event.type)
        if status and getattr(payload, "appointment_id", None):
            appointments.append((event.tenant_id, str(payload.appointment_id), cid, event.store_id,
                                 getattr(payload, "service_id", None), getattr(payload, "starts_at", None), status,
                                 event.occurred_at))
    _store_facts(cur, updates, lambda old_at, new_at: old_at < new_at)
    # In order, one statement per change (held, then confirmed, of one appointment in one batch), one round trip.
    execute_batch(
        cur, "insert into identity.customer_appointments (tenant_id, appointment_id, customer_id, store_id, "
             "service_id, starts_at, status, status_at) values (%s, %s, %s, %s, %s, %s, %s, %s) "
             "on conflict (tenant_id, appointment_id) do update set "
             "starts_at = coalesce(excluded.starts_at, customer_appointments.starts_at), "
             "service_id = coalesce(excluded.service_id, customer_appointments.service_id), "
             "status = case when excluded.status_at >= customer_appointments.status_at then excluded.status "
             "  else customer_appointments.status end, "
             "status_at = greatest(excluded.status_at, customer_appointments.status_at)", appointments, page_size=500)


def set_facts(cur, facts: list[tuple[str, UUID, str, object, datetime]]) -> None:
    """(tenant, customer, name, value, at) in delivery order: a late value never replaces a newer one;
    of equal times, the later delivered wins."""
    updates: dict[UUID, tuple[str, dict]] = {}
    for tenant, cid, name, value, at in facts:
        new = updates.setdefault(cid, (tenant, {}))[1]
        fact = {"value": value, "at": at.isoformat()}
        if name not in new or new[name]["at"] <= fact["at"]:
            new[name] = fact
    _store_facts(cur, updates, lambda old_at, new_at: old_at <= new_at)


def _store_facts(cur, updates: dict[UUID, tuple[str, dict]], replaces) -> None:
    """Merge each customer's new facts into the stored ones, `replaces(stored at, new at)` deciding; one
    locked read and one upsert for the whole batch (rows locked in id order, so batches cannot deadlock)."""
    if not updates:
        return
    cur.execute("select customer_id, facts from identity.customer_facts where customer_id = any(%s) "
                "order by customer_id for update", (list(updates),))
    stored = dict(cur.fetchall())
    rows = []
    for cid, (tenant, new) in updates.items():
        merged = dict(stored.get(cid, {}))
        for name, fact in new.items():
            if name not in merged or replaces(merged[name]["at"], fact["at"]):
                merged[name] = fact
        rows.append((cid, tenant, merged))
    upsert_facts(cur, rows)
