"""The booking rules as plain values: a store's hours and policy, staff shifts and skills, a service's
duration by pet or vehicle, and the interval arithmetic the availability search is built from.
Pure: no database, no clock (the caller passes `now`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.booking.localtime import boundary

Interval = tuple[datetime, datetime]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class StorePolicy:
    min_notice_minutes: int = 60
    hold_minutes: int = 10
    slot_step_minutes: int = 15
    cancellation_window_hours: int = 24
    no_show_after_minutes: int = 15
    reminder_offsets: tuple[str, ...] = ("P1D", "PT2H")
    waitlist_offer_minutes: int = 30
    visit_due_local_time: str = "10:00"


@dataclass(frozen=True)
class Store:
    store_id: str
    tz: ZoneInfo
    opening_hours: dict[int, tuple[tuple[time, time], ...]]  # weekday (0 = Monday) -> local intervals
    holidays: frozenset[date] = frozenset()
    policy: StorePolicy = StorePolicy()
    currency: str = "CNY"  # what the store charges in

    def open_intervals(self, day: date) -> list[Interval]:
        if day in self.holidays:
            return []
        # merged: adjacent intervals are one opening, and boundaries inside a repeated hour may overlap
        return merge([(boundary(day, start, self.tz, later=False), boundary(day, end, self.tz, later=True))
                      for start, end in self.opening_hours.get(day.weekday(), ())])


@dataclass(frozen=True)
class Shift:
    store_id: str
    weekday: int
    start: time
    end: time
    breaks: tuple[tuple[time, time], ...] = ()


@dataclass(frozen=True)
class Staff:
    staff_id: str
    skills: frozenset[str] = frozenset()
    shifts: tuple[Shift, ...] = ()
    # (store, zone, day) -> working(): a hold asks it for every qualified staff member several times, and
    # catalog.staff_rules reuses one Staff per schedule across requests. Derived, so not part of equality.
    _worked: dict = field(default_factory=dict, compare=False, repr=False)

    def working(self, store: Store, day: date) -> tuple[Interval, ...]:
        """The instants this person works at the store that day, breaks taken out."""
        key = (store.store_id, store.tz, day)
        if (found := self._worked.get(key)) is None:
            if len(self._worked) >= 1024:  # a long-lived process asked about many days: start over
                self._worked.clear()
            found = self._worked[key] = tuple(self._working(store, day))
        return found

    def _working(self, store: Store, day: date) -> list[Interval]:
        worked: list[Interval] = []
        for s in self.shifts:
            if s.store_id != store.store_id or s.weekday != day.weekday():
                continue
            shift = [(boundary(day, s.start, store.tz, later=False), boundary(day, s.end, store.tz, later=True))]
            breaks = [(boundary(day, b0, store.tz, later=False), boundary(day, b1, store.tz, later=True))
                      for b0, b1 in s.breaks]
            worked += subtract(shift, breaks)
        return merge(worked)


@dataclass(frozen=True)
class Subject:
    """The pet or vehicle being served; what the duration depends on."""

    kind: str  # pet | vehicle
    size: str | None = None
    coat: str | None = None
    vehicle_class: str | None = None

    def traits(self) -> dict[str, str]:
        return {k: v for k, v in (("size", self.size), ("coat", self.coat), ("vehicle_class", self.vehicle_class))
                if v is not None}


@dataclass(frozen=True)
class Variant:
    traits: dict[str, str]
    minutes: int
    price_minor: int | None = None


@dataclass(frozen=True)
class Service:
    service_id: str
    category: str
    duration_minutes: int
    buffer_before_minutes: int = 0
    buffer_after_minutes: int = 0
    price_minor: int = 0
    currency: str = "CNY"
    required_skill: str | None = None
    resource_kind: str | None = None
    rebook_interval_days: int | None = None
    variants: tuple[Variant, ...] = field(default_factory=tuple)
    prices: dict[str, int] = field(default_factory=dict)  # list prices in other currencies

    def variant_for(self, subject: Subject | None) -> Variant | None:
        """The most specific variant whose traits the subject has (first listed on a tie)."""
        traits = subject.traits() if subject else {}
        matching = [v for v in self.variants if v.traits and all(traits.get(k) == x for k, x in v.traits.items())]
        return max(matching, key=lambda v: len(v.traits), default=None)

    def duration(self, subject: Subject | None) -> timedelta:
        variant = self.variant_for(subject)
        return timedelta(minutes=variant.minutes if variant else self.duration_minutes)

    def price(self, subject: Subject | None, currency: str | None = None) -> int | None:
        """The price in `currency` (default: the service's own): a variant's price is in the service's own
        currency; in another one the service's listed price for it, or None when it lists none."""
        if currency is not None and currency != self.currency:
            return self.prices.get(currency)
        variant = self.variant_for(subject)
        return variant.price_minor if variant and variant.price_minor is not None else self.price_minor

    def occupied(self, start: datetime, subject: Subject | None) -> Interval:
        """Service time plus the buffers before and after: what a booking takes from staff and resource."""
        return (start - timedelta(minutes=self.buffer_before_minutes),
                start + self.duration(subject) + timedelta(minutes=self.buffer_after_minutes))


def merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif end > start:
            out.append((start, end))
    return out


def subtract(base: list[Interval], holes: list[Interval]) -> list[Interval]:
    """`base` with every instant covered by `holes` removed."""
    out: list[Interval] = []
    holes = merge(holes)
    for start, end in merge(base):
        cursor = start
        for h0, h1 in holes:
            if h1 <= cursor or h0 >= end:
                continue
            if h0 > cursor:
                out.append((cursor, h0))
            cursor = max(cursor, h1)
        if cursor < end:
            out.append((cursor, end))
    return out


def covers(intervals: list[Interval], span: Interval) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in intervals)


def overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]
