"""Consent and erasure. Erasure destroys the customer's data keys (crypto-shredding), deletes the
personal rows identity holds, announces `customer.erased`, and completes when every service that
holds customer data has confirmed it erased its copy."""
from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from services.identity import projection, store
from services.identity.pii import Vault
from services.identity.errors import Gone, NotFound
from services.identity.webhooks.subscriptions import drop_for_erased
from shared.bus.outbox import enqueue
from shared.events import CustomerErased, ErasureConfirmed, utcnow
from shared.events.customers import CustomerErasedPayload
from shared.topics import CUSTOMERS_CHANGES

# Rows of an erased customer that are deleted outright; its timeline rows stay, stripped, so store
# and channel counts do not change retroactively.
_DELETED = ("identifiers", "weak_identifiers", "rejected_identifiers", "profile_attributes", "subjects",
            "consents", "customer_facts", "customer_appointments", "blocking_keys", "match_queue")


def active_customer(cur, tenant_id: str, requested: UUID) -> UUID:
    found = store.canonical_id(cur, tenant_id, requested)
    if found is None:
        raise NotFound("no such customer")
    customer_id, status = found
    if status == "erased":
        raise Gone(None)
    return customer_id


def record_consent(cur, tenant_id: str, requested: UUID, purpose: str, granted: bool, source: str,
                   evidence: str | None, effective_at: datetime | None) -> UUID:
    customer_id = active_customer(cur, tenant_id, requested)
    now = utcnow()
    effective_at = effective_at or now
    projection.add_consent(cur, tenant_id, customer_id, purpose, granted, source, evidence, effective_at, None)
    event = projection.consent_event(tenant_id, customer_id, purpose, granted, source, effective_at, now)
    enqueue(cur, store.SCHEMA, [(CUSTOMERS_CHANGES, str(customer_id), event)])
    return customer_id


def request_erasure(cur, vault: Vault, tenant_id: str, requested: UUID, requested_by: str,
                    expected: tuple[str, ...]) -> UUID:
    """Erase now (identity's part) and announce it; returns the erasure request id. Asking again for
    an erased customer returns the first request."""
    found = store.canonical_id(cur, tenant_id, requested)
    if found is None:
        raise NotFound("no such customer")
    customer_id, status = found
    if status == "erased":
        cur.execute("select request_id from identity.erasure_requests where customer_id = %s "
                    "order by requested_at limit 1", (customer_id,))
        return cur.fetchone()[0]
    store.lock_customers(cur, [customer_id])
    cur.execute("select customer_id from identity.customers where customer_id = %s or merged_into = %s",
                (customer_id, customer_id))
    cluster = [r[0] for r in cur.fetchall()]
    deleted = 0
    cur.execute("delete from identity.customer_keys where key_id = any(%s)", (cluster,))
    deleted += cur.rowcount
    vault.forget(cluster)
    for table in _DELETED:
        cur.execute(f"delete from identity.{table} where customer_id = any(%s)", (cluster,))
        deleted += cur.rowcount
    cur.execute("delete from identity.match_suggestions where customer_a = any(%s) or customer_b = any(%s)",
                (cluster, cluster))
    cur.execute("update identity.resolved_events set tokens = '{}', summary = '{}' where customer_id = any(%s)",
                (cluster,))
    anonymised = cur.rowcount
    now = utcnow()
    cur.execute("update identity.customers set status = 'erased', erased_at = %s, household_id = null "
                "where customer_id = %s", (now, customer_id))
    request_id = uuid.uuid4()
    cur.execute("insert into identity.erasure_requests (request_id, tenant_id, customer_id, customer_ids, "
                "requested_by, requested_at, expected) values (%s, %s, %s, %s, %s, %s, %s)",
                (request_id, tenant_id, customer_id, cluster, requested_by, now, list(expected)))
    anonymised += drop_for_erased(cur, cluster, now)
    _confirm(cur, request_id, "identity", deleted, anonymised, now)
    event = CustomerErased(event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=tenant_id,
                           source="identity", customer_id=customer_id,
                           payload=CustomerErasedPayload(erasure_request_id=request_id, customer_ids=tuple(cluster)))
    enqueue(cur, store.SCHEMA, [(CUSTOMERS_CHANGES, str(customer_id), event)])
    return request_id


def _confirm(cur, request_id: UUID, service: str, deleted: int, anonymised: int, at: datetime) -> None:
    cur.execute("insert into identity.erasure_confirmations (request_id, service, records_deleted, "
                "records_anonymised, confirmed_at) values (%s, %s, %s, %s, %s) on conflict do nothing",
                (request_id, service, deleted, anonymised, at))
    cur.execute(
        "update identity.erasure_requests r set completed_at = c.last from (select max(confirmed_at) as last, "
        " array_agg(service) as services from identity.erasure_confirmations where request_id = %s) c "
        "where r.request_id = %s and r.completed_at is null and r.expected <@ c.services",
        (request_id, request_id),
    )


def record_confirmations(cur, confirmations: list[ErasureConfirmed]) -> None:
    for c in confirmations:
        cur.execute("select 1 from identity.erasure_requests where request_id = %s and tenant_id = %s",
                    (c.payload.erasure_request_id, c.tenant_id))
        if cur.fetchone() is None:
            raise ValueError(f"confirmation for unknown erasure request {c.payload.erasure_request_id}")
        _confirm(cur, c.payload.erasure_request_id, c.payload.service, c.payload.records_deleted,
                 c.payload.records_anonymised, c.recorded_at)


def erasure_status(cur, tenant_id: str, request_id: UUID) -> dict | None:
    cur.execute("select customer_id, customer_ids, requested_by, requested_at, expected, completed_at "
                "from identity.erasure_requests where request_id = %s and tenant_id = %s", (request_id, tenant_id))
    row = cur.fetchone()
    if row is None:
        return None
    customer_id, cluster, requested_by, requested_at, expected, completed_at = row
    cur.execute("select service, records_deleted, records_anonymised, confirmed_at from identity.erasure_confirmations "
                "where request_id = %s", (request_id,))
    confirmed = {s: {"records_deleted": d, "records_anonymised": a, "confirmed_at": at}
                 for s, d, a, at in cur.fetchall()}
    return {
        "request_id": request_id, "customer_id": customer_id, "customer_ids": cluster,
        "requested_by": requested_by, "requested_at": requested_at,
        "status": "completed" if completed_at else "pending", "completed_at": completed_at,
        "services": [{"service": s, "confirmed": s in confirmed, **confirmed.get(s, {})} for s in expected],
    }
