"""Who may be delivered to: consent for the subscription's purpose and not erased, checked when an event
is queued and again right before each send (consent can be withdrawn while a delivery waits)."""
from __future__ import annotations

from uuid import UUID

from shared.events import Event
from shared.events.customers import CustomerConsentChanged, CustomerErased


def is_compliance_notice(event_type: str, body_purpose: str | None, purpose: str) -> bool:
    """An erasure, or a consent change for the subscription's own purpose, is what a downstream tool
    needs to stop using the data: it is delivered without consent, and carries no personal data."""
    return event_type == CustomerErased.type_name() or (
        event_type == CustomerConsentChanged.type_name() and body_purpose == purpose)


def notice_purpose(event: Event) -> str | None:
    return event.payload.purpose if isinstance(event, CustomerConsentChanged) else None


def blocked(cur, customer_ids: set[UUID], purposes: set[str]) -> dict[tuple[UUID, str], str]:
    """(customer id, purpose) -> why it may not be delivered; pairs not listed may be. Merged ids answer
    for their survivor, whose consents they now share."""
    if not customer_ids:
        return {}
    cur.execute(
        "select c.customer_id, s.status, p.purpose, coalesce(k.granted, false) "
        "from identity.customers c join identity.customers s on s.customer_id = coalesce(c.merged_into, c.customer_id) "
        "cross join unnest(%s::text[]) p(purpose) "
        "left join lateral (select granted from identity.consents k where k.customer_id = s.customer_id "
        "  and k.purpose = p.purpose order by effective_at desc, recorded_at desc limit 1) k on true "
        "where c.customer_id = any(%s)",
        (sorted(purposes), list(customer_ids)))
    found: dict[tuple[UUID, str], str] = {}
    known = set()
    for customer_id, status, purpose, granted in cur.fetchall():
        known.add(customer_id)
        if status == "erased":
            found[(customer_id, purpose)] = "customer erased"
        elif not granted:
            found[(customer_id, purpose)] = f"no consent for {purpose}"
    for customer_id in customer_ids - known:
        for purpose in purposes:
            found[(customer_id, purpose)] = "unknown customer"
    return found
