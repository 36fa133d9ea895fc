"""Helpers for loyalty tests: resolved touchpoints and profile changes handed to loyalty's consumers'
handlers (real Postgres), and reads through its API."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.loyalty import handlers
from shared.auth import KeyVerifier, Role
from shared.bus.consumer import Delivery
from shared.events import from_document, utcnow

DEMO = {"Authorization": "Bearer test-demo-key"}


def key(role: Role, tenant: str = "demo") -> dict:
    return {"Authorization": f"Bearer {KeyVerifier('test-secret').issue(tenant, role)}"}


def ok(response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json()


def resolved(customer_id, type_: str, payload: dict, *, days_ago: float = 0, store_id: str = "s1",
             tenant: str = "demo", event_id=None):
    """A touchpoint as identity republishes it: with its canonical customer id."""
    at = datetime.now(UTC) - timedelta(days=days_ago)
    return from_document({
        "event_id": str(event_id or uuid.uuid4()), "type": type_, "occurred_at": at.isoformat(), "channel": "pos",
        "recorded_at": datetime.now(UTC).isoformat(), "source": "pos",
        "store_id": store_id, "tenant_id": tenant, "customer_id": str(customer_id),
        "identifiers": [{"type": "member_card", "value": f"card-{customer_id}"}], "payload": payload,
    })


def purchase(customer_id, amount_minor: int, order_id: str | None = None, **kw):
    return resolved(customer_id, "purchase.completed",
                    {"order_id": order_id or f"o-{uuid.uuid4().hex[:10]}", "amount_minor": amount_minor}, **kw)


def refund(customer_id, order_id: str, amount_minor: int, **kw):
    return resolved(customer_id, "refund.issued", {"order_id": order_id, "amount_minor": amount_minor}, **kw)


def deliver(client, *events) -> None:
    """Hand events to the consumer that would read them, as one batch."""
    deliveries = [Delivery(e, "t", 0, i, {}) for i, e in enumerate(events)]
    if events and events[0].topic_kind in ("touchpoint", "feedback"):
        handlers.apply_touchpoints(deliveries, db=client.app.state.db)
    else:
        handlers.apply_customer_changes(deliveries, db=client.app.state.db, settings=client.app.state.settings)


def envelope(customer_id, tenant: str = "demo") -> dict:
    now = utcnow()
    return dict(event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=tenant, source="identity",
                customer_id=customer_id)


def member(client, customer_id, headers=DEMO) -> dict:
    return ok(client.get(f"/v1/members/{customer_id}", headers=headers))


def sql(client, query: str, *args):
    with client.app.state.db.transaction() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def ledger_is_exact(client, customer_ids=None) -> None:
    """Every member's (or these members') stored balance is the sum of their entries, and lots minus debt
    is the balance."""
    wrong = sql(client, """
        select m.customer_id, m.balance, coalesce(e.total, 0), coalesce(l.held, 0) - coalesce(d.owed, 0)
        from loyalty.members m
        left join (select customer_id, sum(points) total from loyalty.entries group by 1) e using (customer_id)
        left join (select customer_id, sum(remaining) held from loyalty.lots group by 1) l using (customer_id)
        left join (select customer_id, sum(points) owed from loyalty.debts group by 1) d using (customer_id)
        where (m.balance <> coalesce(e.total, 0) or m.balance <> coalesce(l.held, 0) - coalesce(d.owed, 0))
          and (%s::uuid[] is null or m.customer_id = any(%s::uuid[]))""", customer_ids, customer_ids)
    assert wrong == []


def announced(client, customer_id) -> list[tuple[str, dict]]:
    """The loyalty events in the outbox for this customer, oldest first."""
    import orjson
    rows = sql(client, "select event_type, body from loyalty.outbox where msg_key = %s order by id",
               str(customer_id).encode())
    return [(t, orjson.loads(bytes(b))["payload"]) for t, b in rows]
