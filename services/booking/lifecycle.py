"""The appointment use cases: hold -> confirm, reschedule, cancel, check-in, complete, no-show, and
walk-ins recorded at the POS. Each runs in the caller's transaction and leaves its touchpoint in the
outbox; a refusal raises before anything is written, so there is never a partial appointment."""
from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from services.booking import appointments as appts
from services.booking import catalog, events, waitlist
from services.booking.appointments import Customer, Placement, rule_subject
from services.booking.rules import Store
from shared.errors import Conflict, Invalid


def hold(cur, tenant_id: str, store_id: str, service_id: str, start: datetime, customer: Customer, channel: str,
         now: datetime, staff_id: str | None = None, notes: str | None = None, store: Store | None = None) -> dict:
    ctx = appts.load_context(cur, tenant_id, store_id, service_id, staff_id, store)
    req = ctx.request(customer.rule_subject(), now, staff_id)
    expires = now + timedelta(minutes=ctx.store.policy.hold_minutes)
    created: list[dict] = []

    def write(p: Placement) -> bool:
        created.append(appts.insert(cur, tenant_id, ctx, p, customer, status="held", channel=channel,
                                    hold_expires_at=expires, notes=notes))
        return created[-1] is not None

    appts.claim(cur, ctx, req, start, write, now)
    row = created[-1]
    events.emit(cur, row, "booking.held", now, hold_expires_at=expires)
    return appts.view(row)


def _transition(cur, tenant_id: str, appointment_id: UUID, allowed: tuple[str, ...], action: str) -> dict:
    row = appts.get(cur, tenant_id, appointment_id, lock=True)
    if row["status"] not in allowed:
        raise Conflict(f"cannot {action} an appointment that is {row['status']}", status=row["status"])
    return row


def _set(cur, row: dict, now: datetime, **changes) -> dict:
    assignments = ", ".join(f"{k} = %({k})s" for k in changes)
    cur.execute(f"update appointments set {assignments}, updated_at = %(now)s where appointment_id = %(id)s "
                f"returning {', '.join(appts.COLUMNS)}", {**changes, "now": now, "id": row["appointment_id"]})
    return appts.returned(cur, row)


def confirm(cur, tenant_id: str, appointment_id: UUID, now: datetime) -> dict:
    row = appts.get(cur, tenant_id, appointment_id, lock=True)
    if row["status"] == "confirmed":
        return appts.view(row)  # a retried confirm changes nothing
    if row["status"] != "held":
        raise Conflict(f"cannot confirm an appointment that is {row['status']}", status=row["status"])
    if row["hold_expires_at"] <= now:
        ctx = appts.load_context(cur, tenant_id, row["store_id"], row["service_id"])
        req = ctx.request(rule_subject(row["subject"]), now)
        raise Conflict(f"the hold expired at {row['hold_expires_at'].isoformat()}; book again",
                       next_free_slots=appts.next_free(cur, ctx, req, max(row["starts_at"], now)))
    if row["waitlist_offer_id"]:
        raise Conflict("this hold is a waitlist offer: claim it through the offer")
    row = _set(cur, row, now, status="confirmed", hold_expires_at=None)
    _after_confirm(cur, row, now)
    return appts.view(row)


def _after_confirm(cur, row: dict, now: datetime) -> None:
    store = catalog.store_rules(cur, row["tenant_id"], row["store_id"])
    appts.schedule_reminders(cur, row, store, now, first=True)
    events.emit(cur, row, "booking.confirmed", now)


def reschedule(cur, tenant_id: str, appointment_id: UUID, start: datetime, now: datetime,
               staff_id: str | None = None, store: Store | None = None) -> dict:
    row = _transition(cur, tenant_id, appointment_id, ("held", "confirmed"), "reschedule")
    ctx = appts.load_context(cur, tenant_id, row["store_id"], row["service_id"], staff_id, store)
    req = ctx.request(rule_subject(row["subject"]), now, staff_id)
    before = dict(row)

    def write(p: Placement) -> bool:
        return appts.unless_taken(
            cur, "update appointments set starts_at = %s, ends_at = %s, occupied = tstzrange(%s, %s), "
                 f"staff_id = %s, staff_key = {appts.STAFF_KEY}, resource_id = %s, "
                 f"resource_key = {appts.RESOURCE_KEY}, resource_unit = %s, updated_at = %s where appointment_id = %s",
            (p.starts_at, p.ends_at, p.occupied[0], p.occupied[1], p.staff_id, tenant_id, p.staff_id, p.resource_id,
             tenant_id, p.resource_id, p.resource_unit, now, appointment_id))

    appts.claim(cur, ctx, req, start, write, now, exclude=appointment_id)
    row = appts.get(cur, tenant_id, appointment_id)
    if row["status"] == "confirmed":
        appts.schedule_reminders(cur, row, ctx.store, now)
    events.emit(cur, row, "booking.rescheduled", now, previous_starts_at=before["starts_at"],
                previous_staff_id=before["staff_id"])
    waitlist.offer_freed(cur, tenant_id, row["store_id"], before["starts_at"], now)
    return appts.view(row)


def cancel(cur, tenant_id: str, appointment_id: UUID, now: datetime, reason: str = "",
           waive_fee: bool = False) -> dict:
    row = _transition(cur, tenant_id, appointment_id, ("held", "confirmed"), "cancel")
    store = catalog.store_rules(cur, tenant_id, row["store_id"])
    late = row["status"] == "confirmed" and now > row["starts_at"] - timedelta(hours=store.policy.cancellation_window_hours)
    row = _set(cur, row, now, status="cancelled", late_cancel=late, fee_applies=late and not waive_fee,
               cancel_reason=reason or None, hold_expires_at=None)
    cur.execute("delete from reminders where appointment_id = %s and sent_at is null", (appointment_id,))
    if row["waitlist_offer_id"]:
        events.lapse_offer(cur, row, "declined", now)
    else:
        events.emit(cur, row, "booking.cancelled", now, reason=reason, late=late, fee_applies=row["fee_applies"])
    waitlist.offer_freed(cur, tenant_id, row["store_id"], row["starts_at"], now)
    return appts.view(row)


def check_in(cur, tenant_id: str, appointment_id: UUID, now: datetime) -> dict:
    row = _transition(cur, tenant_id, appointment_id, ("confirmed",), "check in")
    tz = catalog.zone(row["timezone"])
    if now.astimezone(tz).date() != row["starts_at"].astimezone(tz).date():
        raise Invalid("check-in is on the day of the appointment (store-local)")
    row = _set(cur, row, now, status="checked_in")
    events.emit(cur, row, "booking.checked_in", now)
    return appts.view(row)


def complete(cur, tenant_id: str, appointment_id: UUID, now: datetime, amount_minor: int,
             services_performed: list[str] | None = None, performed_by: str | None = None) -> dict:
    row = _transition(cur, tenant_id, appointment_id, ("confirmed", "checked_in"), "complete")
    if now < row["starts_at"] - timedelta(hours=1):
        raise Invalid("an appointment is completed once it has started")
    performed = services_performed or [row["service_id"]]
    row = _set(cur, row, now, status="completed", amount_minor=amount_minor, services_performed=performed,
               performed_by=performed_by or row["staff_id"])
    _announce_completion(cur, row, now, walk_in=False)
    return appts.view(row)


def _announce_completion(cur, row: dict, now: datetime, *, walk_in: bool) -> None:
    store = catalog.store_rules(cur, row["tenant_id"], row["store_id"])
    due = appts.next_visit_due(row, store)
    if due and row["subject"]:
        cur.execute("select subject_key from appointments where appointment_id = %s", (row["appointment_id"],))
        (subject_key,) = cur.fetchone()
        cur.execute("insert into visit_due (tenant_id, subject_key, category, due_at, appointment_id) "
                    "values (%s, %s, %s, %s, %s) on conflict (tenant_id, subject_key, category) do update set "
                    "due_at = excluded.due_at, appointment_id = excluded.appointment_id, sent_at = null "
                    "where visit_due.due_at < excluded.due_at",
                    (row["tenant_id"], subject_key, row["service_category"], due[1], row["appointment_id"]))
    cur.execute("delete from reminders where appointment_id = %s and sent_at is null", (row["appointment_id"],))
    events.emit(cur, row, "booking.completed", now, amount_minor=row["amount_minor"],
                services_performed=tuple(row["services_performed"]), performed_by=row["performed_by"],
                walk_in=walk_in, next_visit_due_on=due[0] if due else None)


def no_show(cur, tenant_id: str, appointment_id: UUID, now: datetime, waive_fee: bool = False) -> dict:
    row = _transition(cur, tenant_id, appointment_id, ("confirmed",), "mark as no-show")
    store = catalog.store_rules(cur, tenant_id, row["store_id"])
    if now < row["starts_at"] + timedelta(minutes=store.policy.no_show_after_minutes):
        raise Invalid(f"a no-show is recorded {store.policy.no_show_after_minutes} minutes after the start at the "
                      "earliest")
    row = _set(cur, row, now, status="no_show", fee_applies=not waive_fee)
    cur.execute("delete from reminders where appointment_id = %s and sent_at is null", (appointment_id,))
    events.emit(cur, row, "booking.no_show", now, fee_applies=not waive_fee)
    return appts.view(row)


def walk_in(cur, tenant_id: str, store_id: str, service_id: str, staff_id: str, started_at: datetime,
            customer: Customer, channel: str, now: datetime, amount_minor: int,
            services_performed: list[str] | None = None) -> dict:
    """A service done without a booking, recorded at the POS as a completed appointment. Opening hours and
    notice do not apply (it happened), but the staff member and resource still cannot be in two places."""
    if started_at > now:
        raise Invalid("a walk-in is recorded once it has started")
    ctx = appts.load_context(cur, tenant_id, store_id, service_id, staff_id)
    subject = customer.rule_subject()
    span = ctx.service.occupied(started_at, subject)
    unit = None
    if ctx.service.resource_kind:
        unit = appts.load_book(cur, ctx, started_at.astimezone(ctx.store.tz).date(), now).free_unit(span)
        if unit is None:
            raise Conflict(f"every {ctx.service.resource_kind} was in use then")
    p = Placement(staff_id, unit[0] if unit else None, unit[1] if unit else None, started_at,
                  started_at + ctx.service.duration(subject), span)

    def record() -> dict | None:
        return appts.insert(
            cur, tenant_id, ctx, p, customer, status="completed", channel=channel, hold_expires_at=None,
            completed={"amount_minor": amount_minor, "services_performed": services_performed or [service_id],
                       "performed_by": staff_id})

    row = record() or appts.expire_overlapping_holds(cur, tenant_id, p, now) and record()
    if not row:
        raise Conflict(f"staff member {staff_id} has another appointment then: mark it completed or no-show "
                       "first, or record who really served")
    _announce_completion(cur, row, now, walk_in=True)
    return appts.view(row)
