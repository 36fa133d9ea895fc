"""Points from resolved touchpoints: earn rules per touchpoint type, and reversals of an earn by the
refund, cancellation or no-show that names its order or appointment. Every posting is idempotent on
its source event, so a redelivered event never credits (or reverses) twice."""
from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from services.loyalty import ledger, members, program as programs
from services.loyalty.members import Posting
from services.loyalty.program import EARN_REFERENCE, REVERSALS, Program
from shared.errors import Invalid
from shared.events import Touchpoint

REFERENCE_KIND = {"order_id": "order", "appointment_id": "appointment"}


def reference(event: Touchpoint, field: str | None) -> str | None:
    value = getattr(event.payload, field, None) if field else None
    return f"{REFERENCE_KIND[field]}:{value}" if value else None


def is_relevant(event: Touchpoint, program: Program) -> bool:
    return event.type in program.earn_rules or event.type in REVERSALS


def earn(cur, program: Program, member: dict, event) -> list[Posting]:
    """Points for a touchpoint (or a feedback answer) by the program's rule for its type."""
    amount = getattr(event.payload, programs.AMOUNT_FIELD, None)
    try:
        points = program.points_for(event.type, amount, member["tier"], getattr(event.payload, "currency", None))
    except ValueError as exc:
        raise Invalid(f"{event.type} {event.event_id}: {exc}") from None
    if points <= 0:
        return []
    entry_id = uuid.uuid4()
    store_id = getattr(event, "store_id", None) or getattr(event.payload, "store_id", None)  # feedback: payload
    entry = ledger.Entry(entry_id, "earn", points, event.occurred_at, store_id, lot_key=entry_id,
                         expires_at=program.expires_at(event.occurred_at), qualifying=points,
                         qualifies_at=event.occurred_at)
    return [Posting(entry, f"earn:{event.event_id}", event.type, event.event_id,
                    reference(event, EARN_REFERENCE.get(event.type)), amount_minor=amount)]


def reverse(cur, tenant_id: str, event_id: UUID, event_type: str, ref: str, amount_minor: int | None,
            occurred_at: datetime) -> list[tuple[UUID, Posting]]:
    """Reversals of the earns made for `ref`: (customer holding the earn's lot, posting). Empty when no
    earn exists yet (the caller keeps the reversal pending)."""
    cur.execute("select e.entry_id, e.points, e.qualifies_at, e.store_id, e.amount_minor, e.expires_at, "
                "coalesce((select -sum(r.points) from entries r where r.kind = 'reverse' and r.lot_key = e.entry_id), 0) "
                "from entries e where e.tenant_id = %s and e.source_ref = %s and e.kind = 'earn' order by e.seq",
                (tenant_id, ref))
    reversals = []
    for entry_id, points, qualifies_at, store_id, earned_for, expires_at, reversed_so_far in cur.fetchall():
        unreversed = points - reversed_so_far
        share = unreversed if amount_minor is None or not earned_for else round(points * amount_minor / earned_for)
        share = min(share, unreversed)
        if share <= 0:
            continue
        holder = lot_holder(cur, entry_id)
        entry = ledger.Entry(uuid.uuid4(), "reverse", -share, occurred_at, store_id, lot_key=entry_id,
                             qualifying=-share, qualifies_at=qualifies_at, expires_at=expires_at)
        reversals.append((holder, Posting(entry, f"reverse:{event_id}:{entry_id}", event_type, event_id, ref,
                                          announce={"reversed_entry_id": entry_id})))
    return reversals


def lot_holder(cur, lot_key: UUID) -> UUID:
    """Who holds a lot now: its latest owner by earn or transfer, followed through merges."""
    cur.execute("select customer_id from entries where lot_key = %s and kind in ('earn', 'transfer_in') "
                "order by seq desc limit 1", (lot_key,))
    holder = cur.fetchone()[0]
    return members.canonical_ids(cur, {holder})[holder]


def reversal_of(event: Touchpoint) -> tuple[str, int | None] | None:
    """(reference, amount or None for all) when the event reverses an earn."""
    field = REVERSALS.get(event.type)
    ref = reference(event, field)
    if ref is None:
        return None
    amount = getattr(event.payload, programs.AMOUNT_FIELD, None) if event.type == "refund.issued" else None
    return ref, amount


def keep_pending(cur, event: Touchpoint, ref: str, amount: int | None) -> None:
    cur.execute("insert into pending_reversals (tenant_id, source_ref, event_id, event_type, amount_minor, store_id, "
                "occurred_at) values (%s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
                (event.tenant_id, ref, event.event_id, event.type, amount, event.store_id, event.occurred_at))


def take_pending(cur, tenant_id: str, refs: list[str]) -> list[tuple]:
    """(ref, event id, type, amount, occurred_at) of the kept reversals of these references, oldest first."""
    cur.execute("delete from pending_reversals where tenant_id = %s and source_ref = any(%s) "
                "returning source_ref, event_id, event_type, amount_minor, occurred_at", (tenant_id, refs))
    return sorted(cur.fetchall(), key=lambda r: r[4])
