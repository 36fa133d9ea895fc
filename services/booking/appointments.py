"""Appointments from hold to completion. Every change is one transaction that also puts its touchpoint
in the outbox; the exclusion constraints on `appointments` are what makes double booking impossible, so
a request that loses a race gets 409 with the next free slots rather than a second booking."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import orjson
from psycopg2 import errors as pg_errors

from services.booking import catalog, events
from services.booking.catalog import offset_parts, parse_clock
from services.booking.localtime import WallClockError, boundary, instant, same_wall_time_days_before, utc_day_bounds
from services.booking.rules import Service, Staff, Store, Subject
from services.booking.slots import DayBook, Request, find_slots, free_staff, why_not
from shared.db import Prepared
from shared.errors import Conflict, Invalid, NotFound
from shared.events.base import Identifier
from shared.events.booking import BookedSubject

LIVE = ("held", "confirmed", "checked_in", "completed")
"""Statuses that occupy staff and resources (the exclusion constraints' predicate)."""
CLAIM_ATTEMPTS = 4


@dataclass(frozen=True)
class Customer:
    identifiers: tuple[Identifier, ...]
    customer_id: UUID | None = None
    subject: BookedSubject | None = None

    def rule_subject(self) -> Subject | None:
        return rule_subject(self.subject.model_dump() if self.subject else None)

    def subject_key(self, tenant_id: str) -> str | None:
        """A keyed hash naming this pet or vehicle of this customer (visit-due notices), no personal data."""
        if self.subject is None:
            return None
        if self.subject.kind == "vehicle":
            plates = [i for i in self.identifiers if i.type == "license_plate"]
            if plates:
                return _digest(tenant_id, "vehicle", plates[0].value.replace(" ", "").upper())
        first = min(self.identifiers, key=lambda i: (i.type, i.scope or "", i.value))
        return _digest(tenant_id, first.type, first.scope or "", first.value, self.subject.kind,
                       (self.subject.name or "").strip().lower())


def rule_subject(subject: dict | None) -> Subject | None:
    """What the duration rules need of a stored pet or vehicle."""
    if not subject:
        return None
    return Subject(subject["kind"], subject.get("size"), subject.get("coat"), subject.get("vehicle_class"))


def customer_of(row: dict) -> Customer:
    """The customer as an appointment or waitlist row holds them."""
    return Customer(tuple(Identifier(**i) for i in row["identifiers"]), row["customer_id"],
                    BookedSubject(**row["subject"]) if row["subject"] else None)


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Context:
    """The rules one booking decision needs: the store, the service and the store's staff."""

    tenant_id: str
    store: Store
    service: Service
    staff: tuple[Staff, ...]

    def request(self, subject: Subject | None, now: datetime, staff_id: str | None = None) -> Request:
        return Request(self.store, self.service, subject, self.staff, now, staff_id)


def load_context(cur, tenant_id: str, store_id: str, service_id: str, staff_id: str | None = None,
                 store: Store | None = None) -> Context:
    """The rules a booking at the store is checked against; `store`, when the caller read it already."""
    store = store or catalog.store_rules(cur, tenant_id, store_id)
    service = catalog.service_rules(cur, tenant_id, service_id)
    if staff_id is not None:
        catalog.get_staff(cur, tenant_id, staff_id)  # 404 for an unknown staff member
    if service.price(None, store.currency) is None:
        raise Invalid(f"service {service_id!r} has no price in {store.currency}, the currency of store "
                      f"{store_id!r}: list one in the service's prices")
    return Context(tenant_id, store, service, catalog.staff_rules(cur, tenant_id, store_id))


# What load_book reads on every availability and booking request, prepared: planning them cost Postgres
# about as much as running them. Live appointments in [$4, $5), $3 being now and $6 one to leave out.
_LIVE = (f"status in ({', '.join(repr(s) for s in LIVE)}) and not (status = 'held' and hold_expires_at <= $3) "
         "and starts_at >= $4 - interval '1 day' and starts_at < $5 "  # index range; buffers < 1 day
         "and occupied && tstzrange($4, $5) and appointment_id is distinct from $6")
_BOOK_TYPES = ("text", "text[]", "timestamptz", "timestamptz", "timestamptz", "uuid")
_STAFF_BUSY = Prepared("booking_staff_busy", _BOOK_TYPES, "select staff_id, lower(occupied), upper(occupied) from "
                       f"appointments where tenant_id = $1 and staff_id = any($2) and {_LIVE}")
_UNITS_BUSY = Prepared("booking_units_busy", _BOOK_TYPES, "select resource_id, resource_unit, lower(occupied), "
                       f"upper(occupied) from appointments where tenant_id = $1 and resource_id = any($2) and {_LIVE}")
_STAFF_OFF = Prepared("booking_staff_off", ("text", "text[]", "timestamptz", "timestamptz"),
                      "select staff_id, lower(during), upper(during) from staff_time_off where tenant_id = $1 "
                      "and staff_id = any($2) and upper(during) > $3 and during && tstzrange($3, $4)")
_RESOURCES = Prepared("booking_resources", ("text", "text", "text"), "select resource_id, capacity from resources "
                      "where tenant_id = $1 and store_id = $2 and kind = $3")


def load_book(cur, ctx: Context, day: date, now: datetime, exclude: UUID | None = None) -> DayBook:
    """What is taken around the store's local `day` (a day either side, for buffers and long services).
    Holds past their expiry no longer count; `exclude` leaves out the appointment being moved."""
    start, end = utc_day_bounds(day, ctx.store.tz)
    a, b = start - timedelta(days=1), end + timedelta(days=1)
    book = DayBook()
    _STAFF_BUSY.execute(cur, (ctx.tenant_id, [s.staff_id for s in ctx.staff], now, a, b, exclude))
    for staff_id, busy_from, busy_to in cur.fetchall():
        book.staff_busy.setdefault(staff_id, []).append((busy_from, busy_to))
    _STAFF_OFF.execute(cur, (ctx.tenant_id, [s.staff_id for s in ctx.staff], a, b))
    for staff_id, off_from, off_to in cur.fetchall():
        book.staff_off.setdefault(staff_id, []).append((off_from, off_to))
    if ctx.service.resource_kind:
        _RESOURCES.execute(cur, (ctx.tenant_id, ctx.store.store_id, ctx.service.resource_kind))
        book.resources = dict(cur.fetchall())
        _UNITS_BUSY.execute(cur, (ctx.tenant_id, list(book.resources), now, a, b, exclude))
        for resource_id, unit, busy_from, busy_to in cur.fetchall():
            book.unit_busy.setdefault((resource_id, unit), []).append((busy_from, busy_to))
    return book


def slot_view(starts_at: datetime, ends_at: datetime, tz, **extra) -> dict:
    local = starts_at.astimezone(tz)
    return {"starts_at": starts_at.astimezone(UTC), "ends_at": ends_at.astimezone(UTC),
            "local_start": local.isoformat(), "local_time": local.strftime("%H:%M"),
            "utc_offset": local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:], **extra}


def availability(cur, tenant_id: str, store_id: str, service_id: str, day: date, now: datetime,
                 staff_id: str | None = None, subject: Subject | None = None) -> dict:
    ctx = load_context(cur, tenant_id, store_id, service_id, staff_id)
    req = ctx.request(subject, now, staff_id)
    slots = find_slots(req, day, load_book(cur, ctx, day, now))
    return {"store_id": store_id, "service_id": service_id, "date": day, "timezone": ctx.store.tz.key,
            "duration_minutes": int(ctx.service.duration(subject).total_seconds() // 60),
            "slots": [slot_view(s.starts_at, s.ends_at, ctx.store.tz, staff_ids=list(s.staff_ids)) for s in slots]}


def next_free(cur, ctx: Context, req: Request, after: datetime, exclude: UUID | None = None,
              days: int = 7, limit: int = 3) -> list[dict]:
    """The first free slots at or after `after`, searching up to `days` store-local days ahead."""
    first_day = after.astimezone(ctx.store.tz).date()
    found: list[dict] = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        for s in find_slots(req, day, load_book(cur, ctx, day, req.now, exclude)):
            if s.starts_at >= after:
                found.append(slot_view(s.starts_at, s.ends_at, ctx.store.tz, staff_ids=list(s.staff_ids)))
                if len(found) == limit:
                    return found
    return found


def resolve_start(starts_at: datetime | None, local_start: datetime | None, store: Store) -> datetime:
    """The instant a request names: an aware `starts_at`, or a naive store-local `local_start` (refused
    when the clocks skip it or pass it twice)."""
    if (starts_at is None) == (local_start is None):
        raise Invalid("give exactly one of starts_at (with offset) or local_start (store-local wall time)")
    if starts_at is not None:
        if starts_at.tzinfo is None:
            raise Invalid("starts_at needs a UTC offset; use local_start for the store's wall-clock time")
        return starts_at.astimezone(UTC)
    if local_start.tzinfo is not None:
        raise Invalid("local_start is the store's wall-clock time without an offset")
    try:
        return instant(local_start, store.tz)
    except WallClockError as exc:
        raise Invalid(str(exc)) from None


@dataclass(frozen=True)
class Placement:
    staff_id: str
    resource_id: str | None
    resource_unit: int | None
    starts_at: datetime
    ends_at: datetime
    occupied: tuple[datetime, datetime]


def claim(cur, ctx: Context, req: Request, start: datetime, write, now: datetime,
          exclude: UUID | None = None) -> Placement:
    """Pick staff and a resource unit for `start` and run `write(placement)`, which writes it unless the
    exclusion constraints find it taken, and returns whether it did. Lapsed holds in the way are then
    expired and the write tried again; a lost race is retried with fresh state; what cannot be had is
    refused with the reason and the next free slots."""
    day = start.astimezone(ctx.store.tz).date()
    for _ in range(CLAIM_ATTEMPTS):
        book = load_book(cur, ctx, day, now, exclude)
        refusal = why_not(req, start, book, day)
        if refusal:
            alternatives = next_free(cur, ctx, req, start, exclude)
            error = Conflict if refusal.taken else Invalid
            raise error(refusal.reason, next_free_slots=alternatives)
        span = ctx.service.occupied(start, req.subject)
        # why_not found one free; of those working then, the one with the fewest bookings that day.
        free = free_staff(req, day, book, span)
        staff_id = req.staff_id or min(free, key=lambda s: (len(book.staff_busy.get(s, [])), s))
        unit = book.free_unit(span) if ctx.service.resource_kind else None
        placement = Placement(staff_id, unit[0] if unit else None, unit[1] if unit else None, start,
                              start + ctx.service.duration(req.subject), span)
        if write(placement) or expire_overlapping_holds(cur, ctx.tenant_id, placement, now) and write(placement):
            return placement
    raise Conflict("the slot was just taken by another booking",
                   next_free_slots=next_free(cur, ctx, req, start, exclude))


# --- reading and writing rows -----------------------------------------------------------------------

COLUMNS = ("appointment_id", "tenant_id", "store_id", "service_id", "staff_id", "resource_id", "status",
           "starts_at", "ends_at", "hold_expires_at", "channel", "customer_id", "identifiers", "subject",
           "price_minor", "currency", "notes", "amount_minor", "services_performed", "performed_by",
           "late_cancel", "fee_applies", "cancel_reason", "waitlist_offer_id", "created_at", "updated_at")


def _joined(row: tuple, timezone: str, category: str, rebook_interval_days: int | None) -> dict:
    return {**dict(zip(COLUMNS, row)), "timezone": timezone, "service_category": category,
            "rebook_interval_days": rebook_interval_days}


_GET = (f"select {', '.join('a.' + c for c in COLUMNS)}, s.timezone, v.category, v.rebook_interval_days "
        "from appointments a join stores s using (tenant_id, store_id) join services v using (tenant_id, service_id) "
        "where a.tenant_id = $1 and a.appointment_id = $2")
_GETS = {False: Prepared("booking_appointment", ("text", "uuid"), _GET),
         True: Prepared("booking_appointment_locked", ("text", "uuid"), _GET + " for update of a")}


def get(cur, tenant_id: str, appointment_id: UUID, *, lock: bool = False) -> dict:
    _GETS[lock].execute(cur, (tenant_id, appointment_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"unknown appointment {appointment_id}")
    return _joined(row, *row[-3:])


def returned(cur, like: dict) -> dict:
    """The row an `update ... returning COLUMNS` gave back, with the store and service fields of `like`
    (the same appointment): its store and service never change."""
    return _joined(cur.fetchone(), like["timezone"], like["service_category"], like["rebook_interval_days"])


def view(row: dict) -> dict:
    """What the API shows: the row without its personal identifiers, with store-local start."""
    out = {k: v for k, v in row.items() if k not in ("identifiers", "tenant_id", "rebook_interval_days")}
    local = row["starts_at"].astimezone(catalog.zone(row["timezone"]))
    return {**out, "local_start": local.isoformat()}


def details(cur, tenant_id: str, appointment_id: UUID) -> dict:
    row = get(cur, tenant_id, appointment_id)
    tz = catalog.zone(row["timezone"])
    cur.execute("select offset_label, due_at, sent_at from reminders where appointment_id = %s order by due_at",
                (appointment_id,))
    reminders = [{"offset": label, "due_at": due, "local_due": due.astimezone(tz).isoformat(), "sent_at": sent}
                 for label, due, sent in cur.fetchall()]
    return {**view(row), "reminders": reminders}


def day_sheet(cur, tenant_id: str, store_id: str, day: date, staff_id: str | None = None) -> list[dict]:
    """A store's appointments starting on its local `day`, in time order (expired holds left out)."""
    start, end = utc_day_bounds(day, catalog.store_rules(cur, tenant_id, store_id).tz)
    cur.execute("select appointment_id from appointments where tenant_id = %s and store_id = %s and starts_at >= %s "
                "and starts_at < %s and status <> 'expired' and (%s::text is null or staff_id = %s) "
                "order by starts_at, staff_id", (tenant_id, store_id, start, end, staff_id, staff_id))
    return [view(get(cur, tenant_id, appointment_id)) for (appointment_id,) in cur.fetchall()]


STAFF_KEY = "(select staff_key from staff where tenant_id = %s and staff_id = %s)"
RESOURCE_KEY = "(select resource_key from resources where tenant_id = %s and resource_id = %s)"


def insert(cur, tenant_id: str, ctx: Context, p: Placement, customer: Customer, *, status: str, channel: str,
           hold_expires_at: datetime | None, notes: str | None = None, offer_id: UUID | None = None,
           completed: dict | None = None) -> dict | None:
    """Insert the appointment, the row as `get` reads it; None when its staff member or resource unit is
    taken then (the exclusion constraints decide, waiting for a concurrent booking's outcome)."""
    appointment_id = uuid.uuid4()
    done = completed or {}
    cur.execute(
        "insert into appointments (tenant_id, appointment_id, store_id, service_id, staff_id, staff_key, resource_id, "
        "resource_key, resource_unit, status, starts_at, ends_at, occupied, hold_expires_at, channel, customer_id, "
        "identifiers, subject, subject_key, price_minor, currency, notes, waitlist_offer_id, amount_minor, "
        "services_performed, performed_by) values (%s, %s, %s, %s, %s, "
        f"{STAFF_KEY}, %s, {RESOURCE_KEY}, %s, %s, %s, %s, tstzrange(%s, %s), %s, %s, %s, %s, %s, %s, "
        f"%s, %s, %s, %s, %s, %s, %s) on conflict do nothing returning {', '.join(COLUMNS)}",
        (tenant_id, appointment_id, ctx.store.store_id, ctx.service.service_id, p.staff_id, tenant_id, p.staff_id,
         p.resource_id, tenant_id, p.resource_id, p.resource_unit, status, p.starts_at, p.ends_at, p.occupied[0],
         p.occupied[1], hold_expires_at, channel,
         customer.customer_id, orjson.dumps([i.model_dump(exclude_none=True) for i in customer.identifiers]).decode(),
         customer.subject.model_dump_json(exclude_none=True) if customer.subject else None,
         customer.subject_key(tenant_id), ctx.service.price(customer.rule_subject(), ctx.store.currency),
         ctx.store.currency, notes,
         offer_id, done.get("amount_minor"), done.get("services_performed"), done.get("performed_by")))
    row = cur.fetchone()
    return row and _joined(row, ctx.store.tz.key, ctx.service.category, ctx.service.rebook_interval_days)


def unless_taken(cur, statement: str, params) -> bool:
    """Run an update that moves an appointment; False, with nothing changed, if the exclusion constraints
    find its new time taken."""
    cur.execute("savepoint move_slot")
    try:
        cur.execute(statement, params)
    except pg_errors.ExclusionViolation:
        cur.execute("rollback to savepoint move_slot")
        return False
    cur.execute("release savepoint move_slot")
    return True


def expire_overlapping_holds(cur, tenant_id: str, p: Placement, now: datetime) -> int:
    """Holds past their expiry still sit in the exclusion constraints until marked expired: mark the ones
    in the way (with their touchpoints) so the new booking can take the time. How many there were."""
    cur.execute(
        "select appointment_id from appointments where tenant_id = %s and status = 'held' and hold_expires_at <= %s "
        "and occupied && tstzrange(%s, %s) and (staff_id = %s or (resource_id = %s and resource_unit = %s)) "
        "for update skip locked",
        (tenant_id, now, p.occupied[0], p.occupied[1], p.staff_id, p.resource_id, p.resource_unit))
    lapsed = cur.fetchall()
    for (appointment_id,) in lapsed:
        expire_hold(cur, tenant_id, appointment_id, now)
    return len(lapsed)


def expire_hold(cur, tenant_id: str, appointment_id: UUID, now: datetime) -> dict:
    """Mark one lapsed hold expired and announce it; a waitlist offer's hold lapses the offer too."""
    cur.execute("update appointments set status = 'expired', updated_at = %s where appointment_id = %s "
                "and status = 'held'", (now, appointment_id))
    row = get(cur, tenant_id, appointment_id)
    if row["waitlist_offer_id"]:
        events.lapse_offer(cur, row, "expired", now)
    else:
        events.emit(cur, row, "booking.hold_expired", now)
    return row


# --- reminders and visit-due --------------------------------------------------------------------------

def reminder_times(starts_at: datetime, offsets: tuple[str, ...], tz) -> list[tuple[str, datetime]]:
    """When each reminder falls: day offsets at the same local wall time that many days before, time
    offsets that much real time before (so "P1D" before 10:00 is 10:00 the day before, even when the
    clocks changed overnight)."""
    out = []
    for offset in offsets:
        days, minutes = offset_parts(offset)
        due = same_wall_time_days_before(starts_at, days, tz) if days else starts_at - timedelta(minutes=minutes)
        out.append((offset, due))
    return out


def schedule_reminders(cur, row: dict, store: Store, now: datetime, *, first: bool = False) -> None:
    """The appointment's reminders from its start; `first` when it never had any (just confirmed)."""
    if not first:
        cur.execute("delete from reminders where appointment_id = %s and sent_at is null", (row["appointment_id"],))
    due = [(label, at) for label, at in reminder_times(row["starts_at"], store.policy.reminder_offsets, store.tz)
           if at > now]  # a reminder whose time has passed is not sent late
    if due:
        cur.execute("insert into reminders (appointment_id, offset_label, due_at) "
                    "select %s, * from unnest(%s::text[], %s::timestamptz[]) "
                    "on conflict (appointment_id, offset_label) do update set due_at = excluded.due_at, "
                    "sent_at = null", (row["appointment_id"], [d[0] for d in due], [d[1] for d in due]))


def next_visit_due(row: dict, store: Store) -> tuple[date, datetime] | None:
    """The store-local day (and the instant that day's notice goes out) the pet or vehicle is due again."""
    if not row["rebook_interval_days"]:
        return None
    due_on = row["starts_at"].astimezone(store.tz).date() + timedelta(days=row["rebook_interval_days"])
    return due_on, boundary(due_on, parse_clock(store.policy.visit_due_local_time), store.tz, later=False)
