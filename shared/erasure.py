"""Honouring `customer.erased`: the part every service shares, so that each service's handler only
states what it holds about a customer.

- `erasure_confirmed` builds the proof a service publishes once its erasure is durable.
- `erase_customers` is the whole Postgres side for a consumed batch of `customers.changes`, inside the
  caller's transaction: claim each erasure's event id in `<schema>.processed_events` (a redelivered
  one changes nothing), run the service's erase statements for every id of the person, and return
  the confirmations for the caller to put in its outbox in that same transaction.

A service's erase statements are plain SQL over its own tables (unqualified names: the schema is on
the search path), with `%(tenant_id)s` and `%(customer_ids)s` (a uuid[]) as parameters, e.g.

    EraseStatement("delete from appointment_notes where tenant_id = %(tenant_id)s "
                   "and customer_id = any(%(customer_ids)s)")
    EraseStatement("update appointments set customer_id = null, contact_name = null "
                   "where tenant_id = %(tenant_id)s and customer_id = any(%(customer_ids)s)", anonymises=True)

Each statement's row count is reported as deleted or anonymised.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.events import CustomerErased, CustomerEvent, DecodeError, Event, ErasureConfirmed, utcnow
from shared.events.customers import ErasureConfirmedPayload

log = logging.getLogger(__name__)

NIL_CUSTOMER_ID = uuid.UUID(int=0)
"""What an anonymised row carries instead of the erased customer's id."""


@dataclass(frozen=True)
class EraseStatement:
    """One statement deleting (or, with `anonymises`, anonymising) a service's rows about customers."""

    sql: str
    anonymises: bool = False


def erasure_confirmed(erased: CustomerErased, service: str, *, deleted: int = 0,
                      anonymised: int = 0) -> ErasureConfirmed:
    """The `customer.erasure_confirmed` a service publishes once its erasure of `erased` is committed."""
    now = utcnow()
    return ErasureConfirmed(
        event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=erased.tenant_id, source=service,
        customer_id=erased.customer_id, trace=erased.trace,
        payload=ErasureConfirmedPayload(erasure_request_id=erased.payload.erasure_request_id, service=service,
                                        records_deleted=deleted, records_anonymised=anonymised),
    )


def customer_change(event: Event) -> CustomerEvent:
    """The event as a profile change, or DecodeError (dead-lettered) for anything else on that topic."""
    if not isinstance(event, CustomerEvent) or event.topic_kind != "customer":
        raise DecodeError(f"customers.changes carries profile changes only, not {event.type}")
    return event


def erase_customers(cur, schema: str, service: str, events: Iterable[Event],
                    statements: Sequence[EraseStatement]) -> list[ErasureConfirmed]:
    """Apply the erasures among a batch of `customers.changes` events in the caller's transaction and
    return one confirmation per erasure applied now (none for a redelivered one). Other profile changes
    are left to the service's own handlers."""
    confirmations = []
    cur.execute(f'set local search_path to "{schema}", public')
    for event in events:
        if not isinstance(customer_change(event), CustomerErased):
            continue
        cur.execute(
            f'insert into "{schema}".processed_events (event_id) values (%s) on conflict do nothing returning event_id',
            (event.event_id,),
        )
        if cur.fetchone() is None:
            continue  # redelivered: erased and confirmed when first processed
        params = {"tenant_id": event.tenant_id, "customer_ids": list(event.payload.customer_ids)}
        deleted = anonymised = 0
        for statement in statements:
            cur.execute(statement.sql, params)
            if statement.anonymises:
                anonymised += max(cur.rowcount, 0)
            else:
                deleted += max(cur.rowcount, 0)
        log.info("erased customer", extra={
            "service": service, "tenant_id": event.tenant_id, "customer_id": str(event.customer_id),
            "event_id": str(event.event_id), "erasure_request_id": str(event.payload.erasure_request_id),
            "records_deleted": deleted, "records_anonymised": anonymised})
        confirmations.append(erasure_confirmed(event, service, deleted=deleted, anonymised=anonymised))
    return confirmations
