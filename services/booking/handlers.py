"""Booking follows the customer view identity keeps: it learns which customer each of its touchpoints
resolved to, moves appointments and waitlist entries on merges and splits, and forgets erased customers.
Each batch is one transaction (idempotent: replaying a batch leaves the same state)."""
from __future__ import annotations

from services.booking.settings import BookingSettings
from shared.bus.consumer import Delivery
from shared.bus.outbox import enqueue
from shared.db import Database
from shared.erasure import NIL_CUSTOMER_ID, EraseStatement, customer_change, erase_customers
from shared.events import CustomerErased, CustomerMerged, CustomerSplit
from shared.topics import ERASURE_CONFIRMATIONS

SERVICE = "booking"

ERASE_STATEMENTS: tuple[EraseStatement, ...] = (
    # Future bookings are released (no touchpoint: nothing may identify the customer again).
    EraseStatement("update appointments set status = 'cancelled', cancel_reason = 'customer erased', "
                   "hold_expires_at = null where tenant_id = %(tenant_id)s and customer_id = any(%(customer_ids)s) "
                   "and status in ('held', 'confirmed')", anonymises=True),
    EraseStatement("delete from visit_due v using appointments a where a.appointment_id = v.appointment_id "
                   "and a.tenant_id = %(tenant_id)s and a.customer_id = any(%(customer_ids)s)"),
    EraseStatement("delete from reminders r using appointments a where a.appointment_id = r.appointment_id "
                   "and a.tenant_id = %(tenant_id)s and a.customer_id = any(%(customer_ids)s)"),
    EraseStatement("delete from waitlist where tenant_id = %(tenant_id)s and customer_id = any(%(customer_ids)s)"),
    EraseStatement("delete from appointment_events where customer_id = any(%(customer_ids)s)"),
    # The visit itself stays (staff hours, revenue), with nothing personal left on it.
    EraseStatement(f"update appointments set customer_id = '{NIL_CUSTOMER_ID}', identifiers = '[]'::jsonb, "
                   "subject = null, subject_key = null, notes = null where tenant_id = %(tenant_id)s "
                   "and customer_id = any(%(customer_ids)s)", anonymises=True),
)


def apply_customer_changes(deliveries: list[Delivery], db: Database, settings: BookingSettings) -> None:
    """Merged ids move to the survivor; split events take their appointments to the new profile; erased
    customers are erased and the erasure confirmed, all in one transaction."""
    schema = settings.service_name
    with db.transaction() as cur:
        for event in (customer_change(d.event) for d in deliveries):
            if isinstance(event, CustomerMerged):
                move_customers(cur, event.tenant_id, list(event.payload.merged_customer_ids), event.customer_id)
            elif isinstance(event, CustomerSplit):
                cur.execute("update appointment_events set customer_id = %s where event_id = any(%s)",
                            (event.payload.new_customer_id, list(event.payload.moved_event_ids)))
                cur.execute("update appointments a set customer_id = %s from appointment_events e "
                            "where e.appointment_id = a.appointment_id and e.event_id = any(%s) "
                            "and a.tenant_id = %s and a.customer_id is distinct from %s",
                            (event.payload.new_customer_id, list(event.payload.moved_event_ids), event.tenant_id,
                             NIL_CUSTOMER_ID))
            elif isinstance(event, CustomerErased):  # remembered, for touchpoints that resolve to them later
                cur.execute("insert into erased_customers (tenant_id, customer_id) select %s, unnest(%s::uuid[]) "
                            "on conflict do nothing", (event.tenant_id, list(event.payload.customer_ids)))
        confirmations = erase_customers(cur, schema, SERVICE, [d.event for d in deliveries
                                                               if isinstance(d.event, CustomerErased)],
                                        ERASE_STATEMENTS)
        enqueue(cur, schema, [(ERASURE_CONFIRMATIONS, str(c.customer_id), c) for c in confirmations])


def move_customers(cur, tenant_id: str, from_ids: list, to_id) -> None:
    for table in ("appointments", "waitlist"):
        cur.execute(f"update {table} set customer_id = %s where tenant_id = %s and customer_id = any(%s)",
                    (to_id, tenant_id, from_ids))
    cur.execute("update appointment_events set customer_id = %s where customer_id = any(%s)", (to_id, from_ids))


def learn_customers(deliveries: list[Delivery], db: Database) -> None:
    """Booking's own touchpoints, resolved by identity, tell it whose appointment each one is. A touchpoint
    that resolved to a customer erased meanwhile leaves nothing personal behind."""
    own = [d.event for d in deliveries if d.event.source == SERVICE and d.event.customer_id is not None]
    if not own:
        return
    with db.transaction() as cur:
        for event in own:
            cur.execute("update appointment_events set customer_id = %s where event_id = %s "
                        "returning appointment_id, waitlist_id", (event.customer_id, event.event_id))
            found = cur.fetchone()
            if found is None:
                continue  # not from this database (another environment sharing the topic)
            appointment_id, waitlist_id = found
            cur.execute("select exists (select 1 from erased_customers where tenant_id = %s and customer_id = %s)",
                        (event.tenant_id, event.customer_id))
            erased = cur.fetchone()[0]
            if appointment_id is not None:
                cur.execute("update appointments set customer_id = %s, identifiers = case when %s then '[]'::jsonb "
                            "else identifiers end, subject = case when %s then null else subject end "
                            "where appointment_id = %s and customer_id is distinct from %s",
                            (NIL_CUSTOMER_ID if erased else event.customer_id, erased, erased, appointment_id,
                             NIL_CUSTOMER_ID))
            if waitlist_id is not None:
                if erased:
                    cur.execute("delete from waitlist where waitlist_id = %s", (waitlist_id,))
                else:
                    cur.execute("update waitlist set customer_id = %s where waitlist_id = %s",
                                (event.customer_id, waitlist_id))
