"""Feedback's consumers' use cases, one transaction per batch and idempotent (invitations are unique per
visit, cases per cause): resolved touchpoints schedule survey invitations, open complaint cases and tell
which channels reach a customer; profile changes bring consents, merges, splits and erasures."""
from __future__ import annotations

from uuid import UUID

from services.feedback import cases, surveys, templates
from services.feedback.settings import FeedbackSettings
from shared.bus.consumer import Delivery
from shared.bus.outbox import enqueue
from shared.db import Database
from shared.erasure import NIL_CUSTOMER_ID, EraseStatement, customer_change, erase_customers
from shared.events import CustomerConsentChanged, CustomerErased, CustomerMerged, CustomerSplit, Touchpoint, utcnow
from shared.topics import ERASURE_CONFIRMATIONS

SERVICE = "feedback"
CUSTOMER_TABLES = ("invitations", "responses", "cases")
IDENTIFIER_CHANNEL = {v: k for k, v in templates.CHANNEL_IDENTIFIER.items()}

ERASE_STATEMENTS: tuple[EraseStatement, ...] = (
    EraseStatement("delete from consents where customer_id = any(%(customer_ids)s)"),
    EraseStatement("delete from customer_channels where customer_id = any(%(customer_ids)s)"),
    EraseStatement("update invitations set status = 'skipped', skip_reason = 'erased' where tenant_id = %(tenant_id)s "
                   "and customer_id = any(%(customer_ids)s) and status = 'scheduled'", anonymises=True),
    # Scores stay (the store's NPS does not change); the comment and the person go.
    EraseStatement(f"update responses set customer_id = '{NIL_CUSTOMER_ID}', comment = null, "
                   "answers = answers - (select coalesce(array_agg(k), '{}') from jsonb_object_keys(answers) k "
                   "where jsonb_typeof(answers -> k) = 'string') where tenant_id = %(tenant_id)s "
                   "and customer_id = any(%(customer_ids)s)", anonymises=True),
    EraseStatement(f"update cases set customer_id = '{NIL_CUSTOMER_ID}', notes = '[]'::jsonb "
                   "where tenant_id = %(tenant_id)s and customer_id = any(%(customer_ids)s)", anonymises=True),
    EraseStatement(f"update invitations set customer_id = '{NIL_CUSTOMER_ID}' where tenant_id = %(tenant_id)s "
                   "and customer_id = any(%(customer_ids)s)", anonymises=True),
)


def apply_touchpoints(deliveries: list[Delivery], db: Database) -> None:
    events = [d.event for d in deliveries if isinstance(d.event, Touchpoint) and d.event.customer_id]
    if not events:
        return
    now = utcnow()
    with db.transaction() as cur:
        owner = current_customers(cur, {e.customer_id for e in events})
        channels = {(owner[e.customer_id], IDENTIFIER_CHANNEL[i.type]) for e in events for i in e.identifiers
                    if i.type in IDENTIFIER_CHANNEL and owner[e.customer_id] != NIL_CUSTOMER_ID}
        if channels:  # in key order: batches on other partitions insert the same merged customers' rows, and
            # unordered they deadlocked (185 times in a 300,000-touchpoint run, each a second's wait and a retry)
            cur.execute("insert into customer_channels (customer_id, channel) select * from unnest(%s::uuid[], "
                        "%s::text[]) as t (customer_id, channel) order by customer_id, channel on conflict do nothing",
                        tuple(map(list, zip(*sorted(channels)))))
        loaded: dict[str, templates.Template] = {}
        for event in events:
            customer = owner[event.customer_id]
            if customer == NIL_CUSTOMER_ID:
                continue  # erased meanwhile: no survey, no case
            template = loaded.get(event.tenant_id) or loaded.setdefault(event.tenant_id,
                                                                        templates.load(cur, event.tenant_id))
            if event.type in template.triggers:
                surveys.schedule(cur, template, event, customer)
            elif event.type == "complaint.filed":
                cases.open_for_complaint(cur, event.tenant_id, store_id=event.store_id, customer_id=customer,
                                         category=event.payload.category, severity=event.payload.severity,
                                         source_ref=f"complaint:{event.event_id}", now=now,
                                         source_event_id=event.event_id)


def current_customers(cur, ids: set[UUID]) -> dict[UUID, UUID]:
    """Each id as feedback knows it now: merged ids become their survivor, erased ids the nil id."""
    cur.execute("select customer_id, survivor from customer_moves where customer_id = any(%s)", (list(ids),))
    moved = dict(cur.fetchall())
    return {i: moved.get(i, i) for i in ids}


def apply_customer_changes(deliveries: list[Delivery], db: Database, settings: FeedbackSettings) -> None:
    schema = settings.service_name
    with db.transaction() as cur:
        changes = [customer_change(d.event) for d in deliveries]
        for event in changes:
            if isinstance(event, CustomerConsentChanged):
                p = event.payload
                customer = current_customers(cur, {event.customer_id})[event.customer_id]
                if customer == NIL_CUSTOMER_ID:
                    continue
                cur.execute("insert into consents (customer_id, purpose, granted, effective_at) values "
                            "(%s, %s, %s, %s) on conflict (customer_id, purpose) do update set granted = "
                            "excluded.granted, effective_at = excluded.effective_at "
                            "where consents.effective_at <= excluded.effective_at",
                            (customer, p.purpose, p.granted, p.effective_at))
            elif isinstance(event, CustomerMerged):
                merge(cur, event.tenant_id, list(event.payload.merged_customer_ids), event.customer_id)
            elif isinstance(event, CustomerSplit):
                split(cur, event)
        erasures = [e for e in changes if isinstance(e, CustomerErased)]
        for event in erasures:
            cur.execute("insert into customer_moves (customer_id, survivor) select unnest(%s::uuid[]), %s "
                        "on conflict (customer_id) do update set survivor = excluded.survivor",
                        (list(event.payload.customer_ids), NIL_CUSTOMER_ID))
        confirmations = erase_customers(cur, schema, SERVICE, erasures, ERASE_STATEMENTS)
        enqueue(cur, schema, [(ERASURE_CONFIRMATIONS, str(c.customer_id), c) for c in confirmations])


def merge(cur, tenant_id: str, losers: list[UUID], survivor: UUID) -> None:
    for table in CUSTOMER_TABLES:
        cur.execute(f"update {table} set customer_id = %s where tenant_id = %s and customer_id = any(%s)",
                    (survivor, tenant_id, losers))
    # The newest consent decision per purpose wins; channels are the union.
    cur.execute("insert into consents (customer_id, purpose, granted, effective_at) select distinct on (purpose) "
                "%s, purpose, granted, effective_at from consents where customer_id = any(%s) "
                "order by purpose, effective_at desc on conflict (customer_id, purpose) do update set "
                "granted = excluded.granted, effective_at = excluded.effective_at "
                "where consents.effective_at < excluded.effective_at", (survivor, losers))
    cur.execute("insert into customer_channels select distinct %s::uuid, channel from customer_channels "
                "where customer_id = any(%s) order by 2 on conflict do nothing", (survivor, losers))
    cur.execute("insert into customer_moves (customer_id, survivor) select unnest(%s::uuid[]), %s "
                "on conflict (customer_id) do update set survivor = excluded.survivor "
                "where customer_moves.survivor <> %s", (losers, survivor, NIL_CUSTOMER_ID))
    cur.execute("update customer_moves set survivor = %s where survivor = any(%s)", (survivor, losers))


def split(cur, event: CustomerSplit) -> None:
    """Invitations, answers and cases that came from the moved touchpoints go to the new profile."""
    moved, new = list(event.payload.moved_event_ids), event.payload.new_customer_id
    cur.execute("update invitations set customer_id = %s where tenant_id = %s and source_event_id = any(%s) "
                "returning invitation_id", (new, event.tenant_id, moved))
    invitations = [r[0] for r in cur.fetchall()]
    cur.execute("update responses set customer_id = %s where invitation_id = any(%s) returning response_id",
                (new, invitations))
    responses = [r[0] for r in cur.fetchall()]
    cur.execute("update cases set customer_id = %s where tenant_id = %s and (response_id = any(%s) "
                "or source_event_id = any(%s))", (new, event.tenant_id, responses, moved))
