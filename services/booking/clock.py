"""The booking clock: a worker that, every second, expires lapsed holds and waitlist offers (offering the
freed time to the next in line), emits reminders that are due and visit-due notices for pets and
vehicles with nothing booked. Rows are claimed with SKIP LOCKED, so several replicas can run it."""
from __future__ import annotations

from datetime import datetime

from services.booking import appointments as appts
from services.booking import events, waitlist
from services.booking.localtime import zone
from shared.bus.worker import Clock, run_jobs
from shared.db import Database
from shared.events.base import utcnow
from shared.events.booking import BookedSubject

BATCH = 200


def expire_holds(cur, now: datetime) -> int:
    cur.execute("select tenant_id, appointment_id from appointments where status = 'held' and hold_expires_at <= %s "
                "order by hold_expires_at limit %s for update skip locked", (now, BATCH))
    due = cur.fetchall()
    for tenant_id, appointment_id in due:
        row = appts.expire_hold(cur, tenant_id, appointment_id, now)
        waitlist.offer_freed(cur, tenant_id, row["store_id"], row["starts_at"], now)
    return len(due)


def send_reminders(cur, now: datetime) -> int:
    cur.execute("select r.appointment_id, r.offset_label, a.tenant_id, a.starts_at from reminders r "
                "join appointments a using (appointment_id) where r.sent_at is null and r.due_at <= %s "
                "and a.status = 'confirmed' order by r.due_at limit %s for update of r skip locked", (now, BATCH))
    due = cur.fetchall()
    for appointment_id, label, tenant_id, starts_at in due:
        if now < starts_at:  # after the start a reminder is no use; it is marked, not sent
            events.emit(cur, appts.get(cur, tenant_id, appointment_id), "booking.reminder_due", now, offset=label)
        cur.execute("update reminders set sent_at = %s where appointment_id = %s and offset_label = %s",
                    (now, appointment_id, label))
    return len(due)


def send_visit_due(cur, now: datetime) -> int:
    """Announce pets and vehicles due their next visit, unless one is already booked in that category."""
    cur.execute("select tenant_id, subject_key, category, due_at, appointment_id from visit_due "
                "where sent_at is null and due_at <= %s order by due_at limit %s for update skip locked", (now, BATCH))
    due = cur.fetchall()
    for tenant_id, subject_key, category, due_at, appointment_id in due:
        cur.execute("select exists (select 1 from appointments a join services s using (tenant_id, service_id) "
                    "where a.tenant_id = %s and a.subject_key = %s and s.category = %s "
                    "and a.status in ('held', 'confirmed', 'checked_in') and a.starts_at > %s)",
                    (tenant_id, subject_key, category, now))
        if not cur.fetchone()[0]:
            last = appts.get(cur, tenant_id, appointment_id)
            if last["identifiers"]:
                tz = zone(last["timezone"])
                events.publish(cur, events.touchpoint(last, "booking.visit_due", now, {
                    "service_category": category, "due_on": due_at.astimezone(tz).date(),
                    "last_appointment_id": appointment_id, "last_service_id": last["service_id"],
                    "last_visit_at": last["starts_at"],
                    "subject": BookedSubject(**last["subject"]) if last["subject"] else None,
                }), appointment_id=appointment_id)
        cur.execute("update visit_due set sent_at = %s where tenant_id = %s and subject_key = %s and category = %s",
                    (now, tenant_id, subject_key, category))
    return len(due)


JOBS = (("holds_expired", expire_holds), ("reminders_sent", send_reminders), ("visits_due", send_visit_due))


def tick(db: Database, now: datetime | None = None) -> dict[str, int]:
    """One pass of every due job, each in its own transaction; returns how many rows each handled."""
    return run_jobs(db, JOBS, now or utcnow())


def booking_clock(db: Database, interval_s: float = 1.0) -> Clock:
    return Clock("booking-clock", db, JOBS, interval_s, BATCH, utcnow)
