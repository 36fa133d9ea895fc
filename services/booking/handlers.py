"""Booking's use cases as plain functions."""
from __future__ import annotations

from services.booking.settings import BookingSettings
from shared.bus.consumer import Delivery
from shared.bus.outbox import enqueue
from shared.db import Database
from shared.erasure import EraseStatement, erase_customers
from shared.topics import ERASURE_CONFIRMATIONS

SERVICE = "booking"

ERASE_STATEMENTS: tuple[EraseStatement, ...] = ()
"""What booking holds about a customer, deleted or anonymised on customer.erased. Nothing yet: the
issues that add its tables (appointments, waitlist entries and reminders) add their statements here."""


def apply_customer_changes(deliveries: list[Delivery], db: Database, settings: BookingSettings) -> None:
    """Erase erased customers and confirm it, in one transaction (idempotent on event_id); merges and
    splits are not followed yet (no customer data is held)."""
    schema = settings.service_name
    with db.transaction() as cur:
        confirmations = erase_customers(cur, schema, SERVICE, [d.event for d in deliveries], ERASE_STATEMENTS)
        enqueue(cur, schema, [(ERASURE_CONFIRMATIONS, str(c.customer_id), c) for c in confirmations])
