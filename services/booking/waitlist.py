"""The waitlist: a customer asks for a day, a time window and optionally a staff member; whenever a slot
on that store-day frees up, the first in line whose request fits gets it held for a limited time. A
declined or expired offer moves on to the next in line; a claimed one becomes a confirmed appointment."""
from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from uuid import UUID

import orjson

from services.booking import appointments as appts
from services.booking import catalog, events
from services.booking.appointments import Customer, Placement, customer_of, rule_subject
from services.booking.slots import find_slots
from shared.errors import Conflict, Invalid, NotFound

ENTRY_COLUMNS = ("waitlist_id", "tenant_id", "store_id", "service_id", "staff_id", "day", "window_start",
                 "window_end", "status", "channel", "customer_id", "identifiers", "subject", "created_at")


def _entries(cur, where: str, params: tuple, lock: bool = False) -> list[dict]:
    cur.execute(f"select {', '.join(ENTRY_COLUMNS)} from waitlist where {where} order by created_at, waitlist_id"
                + (" for update skip locked" if lock else ""), params)
    return [dict(zip(ENTRY_COLUMNS, r)) for r in cur.fetchall()]


def get(cur, tenant_id: str, waitlist_id: UUID) -> dict:
    found = _entries(cur, "tenant_id = %s and waitlist_id = %s", (tenant_id, waitlist_id))
    if not found:
        raise NotFound(f"unknown waitlist entry {waitlist_id}")
    entry = found[0]
    cur.execute("select offer_id, appointment_id, expires_at, status from waitlist_offers where waitlist_id = %s "
                "order by created_at", (waitlist_id,))
    offers = [dict(zip(("offer_id", "appointment_id", "expires_at", "status"), r)) for r in cur.fetchall()]
    return {**{k: v for k, v in entry.items() if k not in ("identifiers", "tenant_id")}, "offers": offers}


def join(cur, tenant_id: str, store_id: str, service_id: str, day: date, window: tuple[time, time],
         customer: Customer, channel: str, now: datetime, staff_id: str | None = None) -> dict:
    ctx = appts.load_context(cur, tenant_id, store_id, service_id, staff_id)
    if day < now.astimezone(ctx.store.tz).date():
        raise Invalid(f"{day.isoformat()} has passed in {ctx.store.tz.key}")
    if staff_id and ctx.service.required_skill and not any(
            s.staff_id == staff_id and ctx.service.required_skill in s.skills for s in ctx.staff):
        raise Invalid(f"staff member {staff_id} does not do {service_id} at {store_id}")
    waitlist_id = uuid.uuid4()
    cur.execute(
        "insert into waitlist (tenant_id, waitlist_id, store_id, service_id, staff_id, day, window_start, window_end, "
        "status, channel, customer_id, identifiers, subject, created_at) "
        "values (%s, %s, %s, %s, %s, %s, %s, %s, 'waiting', %s, %s, %s, %s, %s)",
        (tenant_id, waitlist_id, store_id, service_id, staff_id, day, window[0], window[1], channel,
         customer.customer_id, orjson.dumps([i.model_dump(exclude_none=True) for i in customer.identifiers]).decode(),
         customer.subject.model_dump_json(exclude_none=True) if customer.subject else None, now))
    entry = _entries(cur, "waitlist_id = %s", (waitlist_id,))[0]
    events.emit_waitlist(cur, entry, "waitlist.joined", now, events.waitlist_fields(entry))
    offer_day(cur, tenant_id, store_id, day, now)
    return get(cur, tenant_id, waitlist_id)


def offer_freed(cur, tenant_id: str, store_id: str, at: datetime, now: datetime) -> int:
    """Time around `at` was freed (cancellation, reschedule, expired hold): offer it on that store-day."""
    store = catalog.store_rules(cur, tenant_id, store_id)
    return offer_day(cur, tenant_id, store_id, at.astimezone(store.tz).date(), now)


def offer_day(cur, tenant_id: str, store_id: str, day: date, now: datetime) -> int:
    """Walk the line for one store-day in order and hold the first fitting free slot for each waiting
    entry; returns how many offers were made."""
    offered = 0
    for entry in _entries(cur, "tenant_id = %s and store_id = %s and day = %s and status = 'waiting'",
                          (tenant_id, store_id, day), lock=True):
        if _offer(cur, entry, now):
            offered += 1
    return offered


def _offer(cur, entry: dict, now: datetime) -> bool:
    ctx = appts.load_context(cur, entry["tenant_id"], entry["store_id"], entry["service_id"])
    subject = rule_subject(entry["subject"])
    req = ctx.request(subject, now, entry["staff_id"])
    tz = ctx.store.tz
    fitting = [s for s in find_slots(req, entry["day"], appts.load_book(cur, ctx, entry["day"], now))
               if s.starts_at.astimezone(tz).time() >= entry["window_start"]
               and s.starts_at.astimezone(tz).date() == s.ends_at.astimezone(tz).date()
               and s.ends_at.astimezone(tz).time() <= entry["window_end"]]
    if not fitting:
        return False
    offer_id, expires = uuid.uuid4(), now + timedelta(minutes=ctx.store.policy.waitlist_offer_minutes)
    customer = customer_of(entry)
    created: list[dict] = []

    def write(p: Placement) -> bool:
        created.append(appts.insert(cur, entry["tenant_id"], ctx, p, customer, status="held",
                                    channel=entry["channel"], hold_expires_at=expires, offer_id=offer_id))
        return created[-1] is not None

    try:
        appts.claim(cur, ctx, req, fitting[0].starts_at, write, now)
    except Conflict:
        return False
    appointment = created[-1]
    appointment_id = appointment["appointment_id"]
    cur.execute("insert into waitlist_offers (offer_id, tenant_id, waitlist_id, appointment_id, expires_at, status, "
                "created_at) values (%s, %s, %s, %s, %s, 'offered', %s)",
                (offer_id, entry["tenant_id"], entry["waitlist_id"], appointment_id, expires, now))
    cur.execute("update waitlist set status = 'offered' where waitlist_id = %s", (entry["waitlist_id"],))
    events.emit_waitlist(cur, entry, "waitlist.offered", now,
                         events.offer_fields(entry, {"offer_id": offer_id, "expires_at": expires}, appointment),
                         appointment_id)
    return True


def _open_offer(cur, tenant_id: str, offer_id: UUID) -> tuple[dict, dict]:
    cur.execute("select offer_id, waitlist_id, appointment_id, expires_at, status from waitlist_offers "
                "where tenant_id = %s and offer_id = %s for update", (tenant_id, offer_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown waitlist offer {offer_id}")
    offer = dict(zip(("offer_id", "waitlist_id", "appointment_id", "expires_at", "status"), row))
    if offer["status"] != "offered":
        raise Conflict(f"this offer was {offer['status']}", status=offer["status"])
    entry = _entries(cur, "waitlist_id = %s", (offer["waitlist_id"],))[0]
    return offer, entry


def claim(cur, tenant_id: str, offer_id: UUID, now: datetime) -> dict:
    offer, entry = _open_offer(cur, tenant_id, offer_id)
    if offer["expires_at"] <= now:
        raise Conflict(f"the offer expired at {offer['expires_at'].isoformat()}")
    cur.execute("update appointments set status = 'confirmed', hold_expires_at = null, updated_at = %s "
                "where appointment_id = %s and status = 'held'", (now, offer["appointment_id"]))
    if cur.rowcount != 1:
        raise Conflict("the offered slot is no longer held")
    cur.execute("update waitlist_offers set status = 'claimed' where offer_id = %s", (offer_id,))
    cur.execute("update waitlist set status = 'claimed' where waitlist_id = %s", (entry["waitlist_id"],))
    appointment = appts.get(cur, tenant_id, offer["appointment_id"])
    events.emit_waitlist(cur, entry, "waitlist.claimed", now, events.offer_fields(entry, offer, appointment),
                         appointment["appointment_id"])
    appts.schedule_reminders(cur, appointment, catalog.store_rules(cur, tenant_id, appointment["store_id"]), now,
                             first=True)
    events.emit(cur, appointment, "booking.confirmed", now)
    return appts.view(appointment)


def decline(cur, tenant_id: str, offer_id: UUID, now: datetime) -> dict:
    offer, entry = _open_offer(cur, tenant_id, offer_id)
    cur.execute("update appointments set status = 'cancelled', cancel_reason = 'waitlist offer declined', "
                "hold_expires_at = null, updated_at = %s where appointment_id = %s and status = 'held'",
                (now, offer["appointment_id"]))
    appointment = appts.get(cur, tenant_id, offer["appointment_id"])
    events.lapse_offer(cur, appointment, "declined", now)
    offer_day(cur, tenant_id, entry["store_id"], entry["day"], now)
    return get(cur, tenant_id, entry["waitlist_id"])


def leave(cur, tenant_id: str, waitlist_id: UUID, now: datetime) -> dict:
    entry = get(cur, tenant_id, waitlist_id)
    for offer in entry["offers"]:
        if offer["status"] == "offered":
            decline(cur, tenant_id, offer["offer_id"], now)
    cur.execute("update waitlist set status = 'cancelled' where waitlist_id = %s and status in ('waiting', 'lapsed')",
                (waitlist_id,))
    return get(cur, tenant_id, waitlist_id)
