"""From the public topics to the delivery queue: each event becomes one delivery row per subscription that
wants its type, whose filter it passes and whose purpose the customer consented to. Rows are written in
the consumer's transaction, so the offset commits only once they are durable; a redelivered message
adds nothing (one row per subscription and event)."""
from __future__ import annotations

from uuid import UUID

import orjson
from psycopg2.extras import execute_values

from services.identity.webhooks.audience import blocked, is_compliance_notice, notice_purpose
from shared.bus.consumer import Delivery
from shared.db import Database
from shared.events import Event, Touchpoint, utcnow
from shared.events.loyalty import TierChanged
from shared.events.scores import CustomerChurnRiskChanged, CustomerLifecycleChanged

# Fields a subscriber never receives: tokens of identifiers and trace context are internal.
_INTERNAL = {"identifiers", "trace"}


def public_body(event: Event) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude=_INTERNAL))


def store_of(event: Event) -> str | None:
    return getattr(event, "store_id", None) or getattr(event.payload, "store_id", None)


def _facts(cur, customer_ids: set[UUID]) -> dict[UUID, dict]:
    """Stage, churn risk and tier as the 360 knows them (the survivor's, for a merged id)."""
    if not customer_ids:
        return {}
    cur.execute("select c.customer_id, f.facts from identity.customers c join identity.customer_facts f "
                "on f.customer_id = coalesce(c.merged_into, c.customer_id) where c.customer_id = any(%s)",
                (list(customer_ids),))
    found = {}
    for customer_id, facts in cur.fetchall():
        stage = ((facts.get("lifecycle") or {}).get("value") or {}).get("stage")
        risk = ((facts.get("churn_risk") or {}).get("value") or {}).get("risk")
        tier = (facts.get("loyalty_tier") or {}).get("value")
        found[customer_id] = {"stage": stage, "risk": risk, "tier": tier}
    return found


def matches(event: Event, flt: dict, facts: dict) -> bool:
    """The event passes every field of the filter; the event's own news (a new stage, risk or tier)
    counts over what the 360 knew before it."""
    if isinstance(event, CustomerLifecycleChanged):
        facts = {**facts, "stage": event.payload.to_stage}
    elif isinstance(event, CustomerChurnRiskChanged):
        facts = {**facts, "risk": event.payload.risk}
    elif isinstance(event, TierChanged):
        facts = {**facts, "tier": event.payload.to_tier}
    if "store_ids" in flt and store_of(event) not in flt["store_ids"]:
        return False
    if "channels" in flt and (not isinstance(event, Touchpoint) or event.channel not in flt["channels"]):
        return False
    if "stages" in flt and facts.get("stage") not in flt["stages"]:
        return False
    if "min_churn_risk" in flt and (facts.get("risk") is None or facts["risk"] < flt["min_churn_risk"]):
        return False
    return "tiers" not in flt or facts.get("tier") in flt["tiers"]


def _subscriptions(cur, tenants: set[str]) -> list[tuple]:
    """Active and paused ones (a paused subscription keeps queueing and catches up on resume)."""
    cur.execute("select subscription_id, tenant_id, event_types, filter, purpose from identity.webhook_subscriptions "
                "where tenant_id = any(%s) and state in ('active', 'paused')", (list(tenants),))
    return cur.fetchall()


def any_subscription(db: Database) -> bool:
    """Whether any tenant subscribed at all: without one the fan-out need not even decode a batch."""
    with db.transaction() as cur:
        cur.execute("select exists (select 1 from identity.webhook_subscriptions where state in ('active', 'paused'))")
        return cur.fetchone()[0]


def enqueue_deliveries(deliveries: list[Delivery], db: Database, now=utcnow) -> int:
    events = [d.event for d in deliveries]
    with db.transaction() as cur:
        subscriptions = _subscriptions(cur, {e.tenant_id for e in events})
        if not subscriptions:
            return 0
        wanted = [(e, s) for e in events for s in subscriptions if s[1] == e.tenant_id and e.type in s[2]]
        customers = {e.customer_id for e, _ in wanted if getattr(e, "customer_id", None)}
        facts = _facts(cur, customers) if any(s[3].keys() & {"stages", "min_churn_risk", "tiers"}
                                              for _, s in wanted) else {}
        refused = blocked(cur, customers, {s[4] for _, s in wanted})
        at = now()
        rows, bodies = [], {}
        for event, (subscription_id, tenant_id, _, flt, purpose) in wanted:
            customer_id = getattr(event, "customer_id", None)
            if customer_id and (customer_id, purpose) in refused and \
                    not is_compliance_notice(event.type, notice_purpose(event), purpose):
                continue
            if not matches(event, flt, facts.get(customer_id, {})):
                continue
            body = bodies.get(event.event_id) or bodies.setdefault(event.event_id, public_body(event))
            rows.append((subscription_id, tenant_id, event.event_id, event.type, customer_id, event.occurred_at,
                         body, at, at))
        if rows:
            execute_values(
                cur, "insert into identity.webhook_deliveries (subscription_id, tenant_id, event_id, event_type, "
                     "customer_id, occurred_at, body, next_attempt_at, created_at) values %s "
                     "on conflict (subscription_id, event_id) where replay_of is null do nothing", rows, page_size=1000)
        return len(rows)

