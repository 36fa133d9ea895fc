"""The availability search: which start times a service can be booked at on a store's local day, and
why a given start time cannot. Pure; the database's exclusion constraints stay the final word under
concurrency (a slot offered here can still be taken by a request that commits first)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from services.booking.rules import Interval, Service, Staff, Store, Subject, covers, overlaps, subtract


@dataclass
class DayBook:
    """What is already taken around one store-day: live appointments' occupied ranges per staff member and
    per resource unit, staff time off, and the capacity of the resources the service needs."""

    staff_busy: dict[str, list[Interval]] = field(default_factory=dict)
    staff_off: dict[str, list[Interval]] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)  # resource_id -> capacity
    unit_busy: dict[tuple[str, int], list[Interval]] = field(default_factory=dict)

    def free_unit(self, span: Interval) -> tuple[str, int] | None:
        for resource_id, capacity in sorted(self.resources.items()):
            for unit in range(1, capacity + 1):
                if not any(overlaps(span, b) for b in self.unit_busy.get((resource_id, unit), ())):
                    return resource_id, unit
        return None


@dataclass(frozen=True)
class Slot:
    starts_at: datetime
    ends_at: datetime
    staff_ids: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    store: Store
    service: Service
    subject: Subject | None
    staff: tuple[Staff, ...]  # everyone the store could ask; filtered by skill and `staff_id` here
    now: datetime
    staff_id: str | None = None

    def qualified(self) -> list[Staff]:
        skill = self.service.required_skill
        return [s for s in self.staff if (self.staff_id is None or s.staff_id == self.staff_id)
                and (skill is None or skill in s.skills)]

    def earliest(self) -> datetime:
        return self.now + timedelta(minutes=self.store.policy.min_notice_minutes)


def _free_time(req: Request, day: date, book: DayBook) -> dict[str, list[Interval]]:
    return {s.staff_id: subtract(s.working(req.store, day),
                                 book.staff_off.get(s.staff_id, []) + book.staff_busy.get(s.staff_id, []))
            for s in req.qualified()}


def free_staff(req: Request, day: date, book: DayBook, span: Interval) -> list[str]:
    """Qualified staff who work over the whole span (shift, not on a break or time off) with nothing booked."""
    return [staff_id for staff_id, free in _free_time(req, day, book).items() if covers(free, span)]


def find_slots(req: Request, day: date, book: DayBook) -> list[Slot]:
    """Every start on the store's step grid that fits: inside opening hours, after the minimum notice,
    with a qualified staff member free over the service and its buffers, and a resource unit free."""
    free = _free_time(req, day, book)
    step = timedelta(minutes=req.store.policy.slot_step_minutes)
    duration = req.service.duration(req.subject)
    earliest = req.earliest()
    needs_resource = req.service.resource_kind is not None
    slots: list[Slot] = []
    for open_start, open_end in req.store.open_intervals(day):
        start = open_start  # stepping in UTC: never lands in a skipped hour, keeps both repeated ones
        while start + duration <= open_end:
            if start >= earliest:
                span = req.service.occupied(start, req.subject)
                who = tuple(sid for sid, intervals in free.items() if covers(intervals, span))
                if who and (not needs_resource or book.free_unit(span) is not None):
                    slots.append(Slot(start, start + duration, who))
            start += step
    return slots


@dataclass(frozen=True)
class Refusal:
    reason: str
    taken: bool  # by another booking (409, try another slot) rather than against the rules (422)


def why_not(req: Request, start: datetime, book: DayBook, day: date) -> Refusal | None:
    """Why `start` cannot be booked (None if it can), in words a receptionist can act on."""
    refusal = _rule_broken(req, start, day)
    if refusal:
        return Refusal(refusal, taken=False)
    if req.service.resource_kind and not book.resources:
        return Refusal(f"store {req.store.store_id} has no {req.service.resource_kind}", taken=False)
    span = req.service.occupied(start, req.subject)
    if not any(covers(intervals, span) for intervals in _free_time(req, day, book).values()):
        return Refusal("the staff member is already booked or off then" if req.staff_id
                       else "every qualified staff member is booked or off then", taken=True)
    if req.service.resource_kind and book.free_unit(span) is None:
        return Refusal(f"every {req.service.resource_kind} is in use then", taken=True)
    return None


def _rule_broken(req: Request, start: datetime, day: date) -> str | None:
    service, duration = req.service, req.service.duration(req.subject)
    if start < req.earliest():
        return f"bookings need {req.store.policy.min_notice_minutes} minutes' notice"
    opening = req.store.open_intervals(day)
    if not opening:
        return f"store {req.store.store_id} is closed on {day.isoformat()}"
    if not covers(opening, (start, start + duration)):
        return "outside the store's opening hours"
    if req.staff_id and req.service.required_skill:
        named = next((s for s in req.staff if s.staff_id == req.staff_id), None)
        if named is not None and service.required_skill not in named.skills:
            return f"staff member {req.staff_id} does not have the skill {service.required_skill!r}"
    qualified = req.qualified()
    if not qualified:
        return (f"no staff member has the skill {service.required_skill!r}" if service.required_skill
                else "no such staff member works at this store")
    span = service.occupied(start, req.subject)
    if not any(covers(s.working(req.store, day), span) for s in qualified):
        return "no qualified staff member works then (schedule or break)"
    return None
