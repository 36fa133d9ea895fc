"""The booking service's pure scheduling rules, without a database: local wall time vs. real instants
around daylight-saving changes, availability (`find_slots`), the reasons a start is refused (`why_not`),
reminders and visit-due notices, variants and buffers, and the interval arithmetic underneath.

Transition dates are computed from the zone database for 2027 (and checked against the published ones),
so every DST assertion is about a real change of the clocks."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.booking.appointments import next_visit_due, reminder_times, slot_view
from services.booking.catalog import offset_parts, parse_clock
from services.booking.localtime import WallClockError, boundary, instant, utc_day_bounds
from services.booking.rules import (
    Service, Shift, Staff, Store, StorePolicy, Subject, Variant, covers, merge, overlaps, subtract,
)
from services.booking.slots import DayBook, Request, find_slots, why_not

YEAR = 2027
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
DST_ZONES = [pytest.param(LONDON, id="London"), pytest.param(NEW_YORK, id="New_York")]
LONG_BEFORE = datetime(YEAR - 1, 1, 1, tzinfo=UTC)  # `now` for searches that must not be cut by the notice period
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


# ---- the real 2027 transitions, from the zone database ----------------------------------------------
@dataclass(frozen=True)
class Transition:
    at: datetime  # the UTC instant the offset changes
    before: timedelta  # the UTC offset until then
    after: timedelta  # and from then on
    tz: ZoneInfo

    @property
    def forward(self) -> bool:
        return self.after > self.before

    @property
    def day(self) -> date:
        return self.at.astimezone(self.tz).date()

    @property
    def wall_before(self) -> datetime:
        """The (naive) wall time the clocks show just as the change happens, read on the old offset."""
        return (self.at + self.before).replace(tzinfo=None)

    @property
    def wall_after(self) -> datetime:
        """The (naive) wall time the clocks are set to."""
        return (self.at + self.after).replace(tzinfo=None)


@lru_cache(maxsize=None)
def transitions(tz: ZoneInfo, year: int = YEAR) -> tuple[Transition, ...]:
    found = []
    t, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    previous = t.astimezone(tz).utcoffset()
    while t < end:
        t += HOUR
        offset = t.astimezone(tz).utcoffset()
        if offset != previous:
            at = t - HOUR
            while at.astimezone(tz).utcoffset() == previous:  # refine to the minute
                at += MIN
            found.append(Transition(at, previous, offset, tz))
            previous = offset
    return tuple(found)


def spring(tz: ZoneInfo) -> Transition:
    return next(t for t in transitions(tz) if t.forward)


def fall(tz: ZoneInfo) -> Transition:
    return next(t for t in transitions(tz) if not t.forward)


def wall(at: datetime, tz: ZoneInfo) -> datetime:
    """The naive local wall time of an instant."""
    return at.astimezone(tz).replace(tzinfo=None)


def hhmm(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%H:%M")


# ---- building rule values ---------------------------------------------------------------------------
GROOM = Service("groom", "grooming", 30, required_skill="groom")


def store(tz: ZoneInfo, *hours: tuple[time, time], holidays=(), step: int = 15, notice: int = 60,
          store_id: str = "s1") -> Store:
    hours = hours or ((time(0), time(5)),)
    return Store(store_id, tz, {weekday: tuple(hours) for weekday in range(7)}, frozenset(holidays),
                 StorePolicy(min_notice_minutes=notice, slot_step_minutes=step))


def staff(staff_id: str = "ann", skills=("groom",), start: time = time(0), end: time = time(0),
          breaks: tuple[tuple[time, time], ...] = (), store_id: str = "s1") -> Staff:
    """Works every day of the week from `start` to `end` (00:00-00:00 is the whole day)."""
    return Staff(staff_id, frozenset(skills), tuple(Shift(store_id, d, start, end, breaks) for d in range(7)))


def request(the_store: Store, service: Service = GROOM, *people: Staff, now: datetime = LONG_BEFORE,
            subject: Subject | None = None, staff_id: str | None = None) -> Request:
    return Request(the_store, service, subject, people or (staff(),), now, staff_id)


def slots_on(the_store: Store, day: date, service: Service = GROOM, book: DayBook | None = None, **kw):
    return find_slots(request(the_store, service, **kw), day, book or DayBook())


def test_the_transition_fixtures_are_the_published_2027_dates():
    assert [(t.day, t.forward) for t in transitions(LONDON)] == [(date(2027, 3, 28), True), (date(2027, 10, 31), False)]
    assert [(t.day, t.forward) for t in transitions(NEW_YORK)] == [(date(2027, 3, 14), True), (date(2027, 11, 7), False)]
    assert transitions(SHANGHAI) == ()
    assert (spring(LONDON).wall_before.time(), spring(LONDON).wall_after.time()) == (time(1), time(2))
    assert (spring(NEW_YORK).wall_before.time(), spring(NEW_YORK).wall_after.time()) == (time(2), time(3))
    assert (fall(LONDON).wall_after.time(), fall(LONDON).wall_before.time()) == (time(1), time(2))
    assert (fall(NEW_YORK).wall_after.time(), fall(NEW_YORK).wall_before.time()) == (time(1), time(2))


# ---- 1. availability across daylight-saving changes -------------------------------------------------
NIGHT = (time(0), time(5))  # opening hours spanning the transition hour in both DST zones
ORDINARY_NIGHT_SLOTS = (5 * 60 - 30) // 15 + 1  # 30-minute service, 15-minute step, 5 real hours


@pytest.mark.parametrize("tz", DST_ZONES)
def test_spring_forward_day_offers_no_start_at_a_wall_time_the_clocks_skip(tz):
    change = spring(tz)
    slots = slots_on(store(tz, NIGHT), change.day)

    assert slots
    for s in slots:
        local = wall(s.starts_at, tz)
        assert not change.wall_before <= local < change.wall_after, f"{local} does not exist in {tz.key}"
        assert instant(local, tz) == s.starts_at  # names exactly one real instant
    local_times = [hhmm(s.starts_at, tz) for s in slots]
    last_before_gap = (change.wall_before - timedelta(minutes=15)).strftime("%H:%M")
    assert local_times[local_times.index(last_before_gap) + 1] == change.wall_after.strftime("%H:%M")


@pytest.mark.parametrize("tz", DST_ZONES)
def test_spring_forward_day_slots_last_the_service_time_and_cover_the_shorter_opening(tz):
    day = spring(tz).day
    open_start = instant(datetime.combine(day, NIGHT[0]), tz)
    open_end = instant(datetime.combine(day, NIGHT[1]), tz)
    assert open_end - open_start == timedelta(hours=4)  # 00:00-05:00 is four real hours that night

    slots = slots_on(store(tz, NIGHT), day)

    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in slots)
    assert [s.starts_at for s in slots] == [open_start + k * timedelta(minutes=15) for k in range(15)]
    assert slots[0].starts_at == open_start and slots[-1].ends_at == open_end
    assert len(slots) == ORDINARY_NIGHT_SLOTS - 4
    assert len(slots_on(store(tz, NIGHT), day - timedelta(days=7))) == ORDINARY_NIGHT_SLOTS


@pytest.mark.parametrize(("tz", "offsets"), [pytest.param(LONDON, {"+01:00", "+00:00"}, id="London"),
                                             pytest.param(NEW_YORK, {"-04:00", "-05:00"}, id="New_York")])
def test_fall_back_day_offers_both_occurrences_of_the_repeated_wall_time(tz, offsets):
    day = fall(tz).day
    slots = slots_on(store(tz, NIGHT), day)

    at_0130 = [s for s in slots if hhmm(s.starts_at, tz) == "01:30"]
    assert len(at_0130) == 2
    first, second = at_0130
    assert second.starts_at - first.starts_at == HOUR  # two distinct instants, an hour apart
    assert {slot_view(s.starts_at, s.ends_at, tz)["utc_offset"] for s in at_0130} == offsets
    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in at_0130)


@pytest.mark.parametrize("tz", DST_ZONES)
def test_fall_back_day_has_the_extra_hour_of_slots(tz):
    day = fall(tz).day
    open_start = boundary(day, NIGHT[0], tz, later=False)
    open_end = boundary(day, NIGHT[1], tz, later=True)
    assert open_end - open_start == timedelta(hours=6)

    slots = slots_on(store(tz, NIGHT), day)

    assert len(slots) == ORDINARY_NIGHT_SLOTS + 4
    assert len({s.starts_at for s in slots}) == len(slots)
    assert [s.starts_at for s in slots] == [open_start + k * timedelta(minutes=15) for k in range(len(slots))]
    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in slots)
    assert slots[-1].ends_at == open_end


def test_shanghai_offers_the_same_slots_every_day_of_the_year():
    the_store = store(SHANGHAI, NIGHT)
    reference = [hhmm(s.starts_at, SHANGHAI) for s in slots_on(the_store, date(YEAR, 1, 1))]
    assert len(reference) == ORDINARY_NIGHT_SLOTS
    day = date(YEAR, 1, 1)
    while day.year == YEAR:  # includes the London and New York transition days
        slots = slots_on(the_store, day)
        assert [hhmm(s.starts_at, SHANGHAI) for s in slots] == reference, day
        assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in slots)
        day += timedelta(days=1)


TRANSITION_DAYS = [pytest.param(tz, which(tz).day, id=f"{name}-{which.__name__}")
                   for tz, name in ((LONDON, "London"), (NEW_YORK, "New_York")) for which in (spring, fall)] + [
    pytest.param(SHANGHAI, which(other).day, id=f"Shanghai-{which.__name__}-{name}")
    for other, name in ((LONDON, "London"), (NEW_YORK, "New_York")) for which in (spring, fall)]


@pytest.mark.parametrize(("tz", "day"), TRANSITION_DAYS)
def test_daytime_hours_on_transition_days_give_the_same_local_times_as_any_other_day(tz, day):
    daytime = store(tz, (time(9), time(18)))
    on_the_day = slots_on(daytime, day)
    a_week_before = slots_on(daytime, day - timedelta(days=7))

    assert [hhmm(s.starts_at, tz) for s in on_the_day] == [hhmm(s.starts_at, tz) for s in a_week_before]
    assert len(on_the_day) == (9 * 60 - 30) // 15 + 1
    assert hhmm(on_the_day[0].starts_at, tz) == "09:00" and hhmm(on_the_day[-1].ends_at, tz) == "18:00"
    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in on_the_day)


def test_fall_back_day_never_offers_the_same_instant_twice_when_hours_meet_in_the_repeated_hour():
    split = store(LONDON, (time(0), time(1, 30)), (time(1, 30), time(3)))  # adjacent: the catalogue allows it
    slots = slots_on(split, fall(LONDON).day)

    starts = [s.starts_at for s in slots]
    assert starts == sorted(set(starts))


def test_adjacent_opening_intervals_are_one_continuous_opening():
    split = store(SHANGHAI, (time(9), time(12)), (time(12), time(18)))
    hour_long = Service("bath", "grooming", 60)
    offered = [hhmm(s.starts_at, SHANGHAI) for s in slots_on(split, date(YEAR, 6, 9), hour_long)]
    continuous = [hhmm(s.starts_at, SHANGHAI)
                  for s in slots_on(store(SHANGHAI, (time(9), time(18))), date(YEAR, 6, 9), hour_long)]
    assert offered == continuous  # 11:15, 11:30 and 11:45 are missing from `offered`


# ---- 2. local wall time <-> instants ----------------------------------------------------------------
@pytest.mark.parametrize(("tz", "naive"), [pytest.param(LONDON, datetime(2027, 3, 28, 1, 30), id="London-01:30"),
                                           pytest.param(LONDON, datetime(2027, 3, 28, 1, 0), id="London-01:00"),
                                           pytest.param(NEW_YORK, datetime(2027, 3, 14, 2, 30), id="New_York-02:30"),
                                           pytest.param(NEW_YORK, datetime(2027, 3, 14, 2, 59), id="New_York-02:59")])
def test_instant_refuses_a_wall_time_the_clocks_skip(tz, naive):
    with pytest.raises(WallClockError, match="does not exist") as refused:
        instant(naive, tz)
    assert isinstance(refused.value, ValueError)
    assert naive.strftime("%Y-%m-%d %H:%M") in str(refused.value) and tz.key in str(refused.value)


@pytest.mark.parametrize(("tz", "naive", "offsets"), [
    pytest.param(LONDON, datetime(2027, 10, 31, 1, 30), ("+0100", "+0000"), id="London"),
    pytest.param(NEW_YORK, datetime(2027, 11, 7, 1, 30), ("-0400", "-0500"), id="New_York")])
def test_instant_refuses_an_ambiguous_wall_time_naming_both_offsets(tz, naive, offsets):
    with pytest.raises(WallClockError, match="happens twice") as refused:
        instant(naive, tz)
    assert all(offset in str(refused.value) for offset in offsets)


@pytest.mark.parametrize(("tz", "naive", "utc"), [
    (LONDON, datetime(2027, 1, 15, 12, 0), datetime(2027, 1, 15, 12, 0)),
    (LONDON, datetime(2027, 7, 15, 12, 0), datetime(2027, 7, 15, 11, 0)),
    (LONDON, datetime(2027, 3, 28, 0, 59), datetime(2027, 3, 28, 0, 59)),   # just before the gap
    (LONDON, datetime(2027, 3, 28, 2, 0), datetime(2027, 3, 28, 1, 0)),     # where the clock resumes
    (LONDON, datetime(2027, 10, 31, 0, 59), datetime(2027, 10, 30, 23, 59)),
    (LONDON, datetime(2027, 10, 31, 2, 0), datetime(2027, 10, 31, 2, 0)),   # just after the repeated hour
    (NEW_YORK, datetime(2027, 1, 15, 12, 0), datetime(2027, 1, 15, 17, 0)),
    (NEW_YORK, datetime(2027, 7, 15, 12, 0), datetime(2027, 7, 15, 16, 0)),
    (NEW_YORK, datetime(2027, 3, 14, 1, 59), datetime(2027, 3, 14, 6, 59)),
    (NEW_YORK, datetime(2027, 3, 14, 3, 0), datetime(2027, 3, 14, 7, 0)),
    (NEW_YORK, datetime(2027, 11, 7, 2, 0), datetime(2027, 11, 7, 7, 0)),
    (SHANGHAI, datetime(2027, 1, 15, 12, 0), datetime(2027, 1, 15, 4, 0)),
    (SHANGHAI, datetime(2027, 7, 15, 12, 0), datetime(2027, 7, 15, 4, 0)),
    (SHANGHAI, datetime(2027, 3, 28, 1, 30), datetime(2027, 3, 27, 17, 30)),  # London's gap means nothing here
    (SHANGHAI, datetime(2027, 11, 7, 1, 30), datetime(2027, 11, 6, 17, 30)),
], ids=lambda v: v.key if isinstance(v, ZoneInfo) else None)
def test_instant_converts_ordinary_wall_times(tz, naive, utc):
    assert instant(naive, tz) == utc.replace(tzinfo=UTC)


@pytest.mark.parametrize(("tz", "day", "walls", "resumes_utc"), [
    pytest.param(LONDON, date(2027, 3, 28), (time(1), time(1, 30), time(1, 59)), datetime(2027, 3, 28, 1), id="London"),
    pytest.param(NEW_YORK, date(2027, 3, 14), (time(2), time(2, 15), time(2, 59)), datetime(2027, 3, 14, 7),
                 id="New_York")])
def test_boundary_of_a_skipped_time_lands_where_the_clock_resumes(tz, day, walls, resumes_utc):
    for gap_time in walls:
        for later in (False, True):
            at = boundary(day, gap_time, tz, later=later)
            assert at == resumes_utc.replace(tzinfo=UTC)
            assert wall(at, tz) == spring(tz).wall_after


@pytest.mark.parametrize("tz", DST_ZONES)
def test_boundary_of_a_repeated_time_is_the_first_for_a_start_and_the_second_for_an_end(tz):
    day = fall(tz).day
    start = boundary(day, time(1, 30), tz, later=False)
    end = boundary(day, time(1, 30), tz, later=True)
    assert end - start == HOUR
    assert wall(start, tz) == wall(end, tz) == datetime.combine(day, time(1, 30))
    assert start.astimezone(tz).utcoffset() == fall(tz).before and end.astimezone(tz).utcoffset() == fall(tz).after


@pytest.mark.parametrize(("tz", "day", "hours"), [
    (LONDON, date(2027, 3, 28), 23), (LONDON, date(2027, 10, 31), 25), (LONDON, date(2027, 6, 9), 24),
    (NEW_YORK, date(2027, 3, 14), 23), (NEW_YORK, date(2027, 11, 7), 25), (SHANGHAI, date(2027, 3, 28), 24),
], ids=str)
def test_a_local_day_lasts_23_24_or_25_real_hours(tz, day, hours):
    start, end = utc_day_bounds(day, tz)
    assert end - start == timedelta(hours=hours)
    assert boundary(day, time(0), tz, later=True) == end  # "24:00" as an interval's end is the next midnight


# ---- 3. reminders and visit-due notices -------------------------------------------------------------
@pytest.mark.parametrize(("tz", "which", "real_hours"), [
    pytest.param(LONDON, spring, 23, id="London-spring"), pytest.param(LONDON, fall, 25, id="London-fall"),
    pytest.param(NEW_YORK, spring, 23, id="New_York-spring"), pytest.param(NEW_YORK, fall, 25, id="New_York-fall")])
def test_day_before_reminder_keeps_the_wall_time_when_the_clocks_changed_overnight(tz, which, real_hours):
    # The appointment is at 10:00 on the morning after the clocks changed (the transition day itself).
    day = which(tz).day
    starts_at = instant(datetime.combine(day, time(10)), tz)

    (label, due), = reminder_times(starts_at, ("P1D",), tz)

    assert label == "P1D"
    assert wall(due, tz) == datetime.combine(day - timedelta(days=1), time(10))
    assert starts_at - due == timedelta(hours=real_hours)


@pytest.mark.parametrize("tz", DST_ZONES)
def test_day_before_reminder_is_24_hours_when_no_change_falls_between(tz):
    for day in (spring(tz).day + timedelta(days=1), fall(tz).day + timedelta(days=1), date(2027, 6, 9)):
        starts_at = instant(datetime.combine(day, time(10)), tz)
        (_, due), = reminder_times(starts_at, ("P1D",), tz)
        assert starts_at - due == timedelta(hours=24)


@pytest.mark.parametrize("offset, minutes", [("PT2H", 120), ("PT30M", 30), ("PT1H30M", 90), ("PT12H", 720)])
@pytest.mark.parametrize(("tz", "which"), [pytest.param(LONDON, spring, id="London-spring"),
                                           pytest.param(LONDON, fall, id="London-fall"),
                                           pytest.param(NEW_YORK, spring, id="New_York-spring"),
                                           pytest.param(NEW_YORK, fall, id="New_York-fall")])
def test_elapsed_reminder_is_exactly_that_much_real_time_before_even_across_a_change(tz, which, offset, minutes):
    change = which(tz)
    for around in (-2 * HOUR, -MIN, 0 * HOUR, 30 * MIN, HOUR, 3 * HOUR):
        starts_at = change.at + around
        (_, due), = reminder_times(starts_at, (offset,), tz)
        assert starts_at - due == timedelta(minutes=minutes)


def test_elapsed_reminder_across_spring_forward_shows_three_wall_hours_for_two_real_ones():
    starts_at = instant(datetime(2027, 3, 28, 3, 0), LONDON)
    (_, due), = reminder_times(starts_at, ("PT2H",), LONDON)
    assert wall(due, LONDON) == datetime(2027, 3, 28, 0, 0)


def test_shanghai_day_before_reminder_is_always_24_hours():
    day = date(YEAR, 1, 1)
    while day.year == YEAR:
        starts_at = instant(datetime.combine(day, time(10)), SHANGHAI)
        (_, day_before), (_, two_hours) = reminder_times(starts_at, ("P1D", "PT2H"), SHANGHAI)
        assert starts_at - day_before == timedelta(hours=24), day
        assert starts_at - two_hours == timedelta(hours=2), day
        day += timedelta(days=1)


@pytest.mark.parametrize(("tz", "appointment_wall"), [
    pytest.param(LONDON, datetime(2027, 3, 29, 1, 30), id="London-01:30"),
    pytest.param(NEW_YORK, datetime(2027, 3, 15, 2, 30), id="New_York-02:30")])
def test_day_before_reminder_whose_wall_time_the_clocks_skipped_lands_where_the_clock_resumes(tz, appointment_wall):
    # The same wall time the day before is inside that night's gap, so it names no instant.
    with pytest.raises(WallClockError):
        instant(appointment_wall - timedelta(days=1), tz)
    starts_at = instant(appointment_wall, tz)

    (_, due), = reminder_times(starts_at, ("P1D",), tz)

    assert due == spring(tz).at  # the first real instant after the gap
    assert wall(due, tz) == spring(tz).wall_after
    assert starts_at - due == timedelta(hours=23, minutes=30)


@pytest.mark.parametrize("tz", DST_ZONES)
def test_day_before_reminder_is_the_same_for_either_occurrence_of_a_repeated_time(tz):
    day = fall(tz).day
    first = boundary(day, time(1, 30), tz, later=False)
    second = boundary(day, time(1, 30), tz, later=True)

    (_, due_first), = reminder_times(first, ("P1D",), tz)
    (_, due_second), = reminder_times(second, ("P1D",), tz)

    assert due_first == due_second
    assert wall(due_first, tz) == datetime.combine(day - timedelta(days=1), time(1, 30))
    assert (first - due_first, second - due_second) == (timedelta(hours=24), timedelta(hours=25))


@pytest.mark.parametrize("tz", DST_ZONES)
def test_day_before_reminder_on_a_repeated_wall_time_takes_the_earlier_occurrence(tz):
    # 01:30 the day after fall-back: the day before, 01:30 happened twice; the earlier one keeps a full day's notice.
    day = fall(tz).day
    starts_at = instant(datetime.combine(day + timedelta(days=1), time(1, 30)), tz)

    (_, due), = reminder_times(starts_at, ("P1D",), tz)

    assert due == boundary(day, time(1, 30), tz, later=False)
    assert starts_at - due == timedelta(hours=25)


def test_reminder_times_keep_the_offsets_order_and_labels():
    starts_at = instant(datetime(2027, 6, 9, 15, 0), LONDON)
    due = reminder_times(starts_at, ("PT2H", "P2D", "PT30M"), LONDON)
    assert [label for label, _ in due] == ["PT2H", "P2D", "PT30M"]
    assert [starts_at - at for _, at in due] == [timedelta(hours=2), timedelta(days=2), timedelta(minutes=30)]


def test_reminder_times_refuse_a_bad_offset():
    with pytest.raises(ValueError, match="reminder offset"):
        reminder_times(instant(datetime(2027, 6, 9, 15, 0), LONDON), ("P1W",), LONDON)


def test_no_visit_due_without_a_rebook_interval():
    row = {"starts_at": instant(datetime(2027, 6, 9, 15, 0), LONDON), "rebook_interval_days": None}
    assert next_visit_due(row, store(LONDON)) is None
    assert next_visit_due({**row, "rebook_interval_days": 0}, store(LONDON)) is None


def test_visit_due_notice_goes_out_at_the_local_time_after_a_clock_change():
    row = {"starts_at": instant(datetime(2027, 3, 10, 14, 0), LONDON), "rebook_interval_days": 28}
    due_on, notice = next_visit_due(row, store(LONDON))
    assert due_on == date(2027, 4, 7)
    assert wall(notice, LONDON) == datetime(2027, 4, 7, 10, 0)  # 10:00 BST, 09:00 UTC
    assert notice == datetime(2027, 4, 7, 9, 0, tzinfo=UTC)


def test_visit_due_counts_from_the_store_local_date():
    # 22:00 in New York is already the next day in UTC; the interval counts from the local day.
    row = {"starts_at": instant(datetime(2027, 3, 1, 22, 0), NEW_YORK), "rebook_interval_days": 7}
    due_on, notice = next_visit_due(row, store(NEW_YORK))
    assert due_on == date(2027, 3, 8)
    assert wall(notice, NEW_YORK) == datetime(2027, 3, 8, 10, 0)


def test_visit_due_notice_at_a_skipped_local_time_goes_out_when_the_clock_resumes():
    policy = StorePolicy(visit_due_local_time="01:30")
    the_store = Store("s1", LONDON, {}, policy=policy)
    row = {"starts_at": instant(datetime(2027, 3, 21, 12, 0), LONDON), "rebook_interval_days": 7}
    due_on, notice = next_visit_due(row, the_store)
    assert due_on == date(2027, 3, 28)
    assert notice == spring(LONDON).at


# ---- 4. variants and buffers ------------------------------------------------------------------------
LARGE = Variant({"size": "l"}, 90, 9000)
LARGE_LONG_COAT = Variant({"size": "l", "coat": "long"}, 120, 12000)
SMALL = Variant({"size": "s"}, 45)  # no price of its own
VARIANT_ORDERS = [pytest.param((LARGE, LARGE_LONG_COAT, SMALL), id="general-first"),
                  pytest.param((LARGE_LONG_COAT, SMALL, LARGE), id="specific-first")]


def wash(variants) -> Service:
    return Service("wash", "grooming", 60, price_minor=5000, variants=variants)


@pytest.mark.parametrize("variants", VARIANT_ORDERS)
@pytest.mark.parametrize(("subject", "minutes", "price"), [
    pytest.param(Subject("pet", size="l", coat="long"), 120, 12000, id="large-long-coat"),
    pytest.param(Subject("pet", size="l", coat="short"), 90, 9000, id="large-short-coat"),
    pytest.param(Subject("pet", size="l"), 90, 9000, id="large"),
    pytest.param(Subject("pet", coat="long"), 60, 5000, id="long-coat-size-unknown"),
    pytest.param(Subject("pet", size="m", coat="long"), 60, 5000, id="medium"),
    pytest.param(Subject("pet", size="s"), 45, 5000, id="small-variant-without-price"),
    pytest.param(None, 60, 5000, id="no-subject"),
])
def test_the_most_specific_matching_variant_sets_duration_and_price(variants, subject, minutes, price):
    service = wash(variants)
    assert service.duration(subject) == timedelta(minutes=minutes)
    assert service.price(subject) == price


def test_in_another_currency_the_service_lists_one_price_or_none():
    service = Service("wash", "grooming", 60, price_minor=5000, currency="CNY", variants=(LARGE,),
                      prices={"GBP": 600})
    large = Subject("pet", size="l")
    assert service.price(large, "CNY") == service.price(large) == 9000  # its own currency: the variant's
    assert service.price(large, "GBP") == 600  # another: the listed price, whatever the size
    assert service.price(large, "USD") is None


def test_offered_slots_last_the_variant_duration():
    service = wash((LARGE, LARGE_LONG_COAT))
    slots = slots_on(store(SHANGHAI, (time(9), time(18))), date(2027, 6, 9), service,
                     subject=Subject("pet", size="l", coat="long"))
    assert slots and all(s.ends_at - s.starts_at == timedelta(minutes=120) for s in slots)
    assert hhmm(slots[-1].starts_at, SHANGHAI) == "16:00"


BUFFERED = Service("groom", "grooming", 60, buffer_before_minutes=15, buffer_after_minutes=30)


def test_buffers_extend_the_occupied_span_but_not_the_service_time():
    start = datetime(2027, 6, 9, 2, 0, tzinfo=UTC)
    assert BUFFERED.occupied(start, None) == (start - timedelta(minutes=15), start + timedelta(minutes=90))
    slots = find_slots(request(store(SHANGHAI, (time(9), time(12))), BUFFERED, staff(start=time(8), end=time(13))),
                       date(2027, 6, 9), DayBook())
    # Opening hours bound the service time only: the buffers may run outside them while staff are there.
    assert hhmm(slots[0].starts_at, SHANGHAI) == "09:00"
    assert hhmm(slots[-1].starts_at, SHANGHAI) == "11:00" and hhmm(slots[-1].ends_at, SHANGHAI) == "12:00"
    assert all(s.ends_at - s.starts_at == timedelta(minutes=60) for s in slots)


def test_buffers_must_fit_the_staff_shift_and_clear_other_bookings():
    day = date(2027, 6, 9)
    busy_from_11 = (instant(datetime(2027, 6, 9, 11), SHANGHAI), instant(datetime(2027, 6, 9, 11, 30), SHANGHAI))
    book = DayBook(staff_busy={"ann": [busy_from_11]})
    the_store = store(SHANGHAI, (time(9), time(12)))

    buffered = find_slots(request(the_store, BUFFERED, staff(start=time(9), end=time(12))), day, book)
    plain = find_slots(request(the_store, Service("groom", "grooming", 60), staff(start=time(9), end=time(12))),
                       day, book)

    # 15 minutes' buffer needs the shift from 08:45; 30 minutes after must end by the 11:00 booking.
    assert [hhmm(s.starts_at, SHANGHAI) for s in buffered] == ["09:15", "09:30"]
    assert [hhmm(s.starts_at, SHANGHAI) for s in plain] == ["09:00", "09:15", "09:30", "09:45", "10:00"]


# ---- 5. why a start cannot be booked ----------------------------------------------------------------
TUB_GROOM = Service("groom", "grooming", 60, required_skill="groom", resource_kind="tub")
WHY_DAY = date(2027, 6, 9)  # a Wednesday
HOLIDAY = date(2027, 6, 10)


def at(hour: int, minute: int = 0, day: date = WHY_DAY) -> datetime:
    return instant(datetime.combine(day, time(hour, minute)), LONDON)


def why(start: datetime, *, book: DayBook | None = None, staff_id: str | None = None, now: datetime = LONG_BEFORE,
        day: date = WHY_DAY, service: Service = TUB_GROOM):
    the_store = store(LONDON, (time(9), time(18)), holidays={HOLIDAY})
    people = (staff("ann", ("groom",), time(9), time(18), breaks=((time(12), time(13)),)),
              staff("bob", (), time(9), time(18)))
    req = Request(the_store, service, None, people, now, staff_id)
    return why_not(req, start, book if book is not None else DayBook(resources={"tub-1": 1}), day)


def test_a_bookable_start_has_no_reason_against_it():
    assert why(at(10)) is None
    assert why(at(10), staff_id="ann") is None


def test_refused_before_the_minimum_notice():
    refusal = why(at(10), now=at(9, 30))
    assert refusal.reason == "bookings need 60 minutes' notice" and not refusal.taken
    assert why(at(10), now=at(9)) is None  # exactly the notice is enough


def test_refused_when_the_store_is_closed_that_day():
    refusal = why(at(10, day=HOLIDAY), day=HOLIDAY)
    assert refusal.reason == "store s1 is closed on 2027-06-10" and not refusal.taken


@pytest.mark.parametrize("start", [(8, 30), (17, 30), (18, 0)], ids=str)
def test_refused_outside_opening_hours(start):
    refusal = why(at(*start))
    assert refusal.reason == "outside the store's opening hours" and not refusal.taken


def test_refused_for_a_named_staff_member_without_the_skill():
    refusal = why(at(10), staff_id="bob")
    assert refusal.reason == "staff member bob does not have the skill 'groom'" and not refusal.taken


@pytest.mark.parametrize("start", [(12, 0), (11, 30), (12, 30)], ids=str)
def test_refused_when_the_only_qualified_staff_member_is_on_break(start):
    refusal = why(at(*start))
    assert refusal.reason == "no qualified staff member works then (schedule or break)" and not refusal.taken


@pytest.mark.parametrize("off", [False, True], ids=["booked", "time-off"])
def test_refused_as_taken_when_the_staff_member_is_busy(off):
    busy = {"ann": [(at(10), at(11))]}
    book = DayBook(staff_off=busy, resources={"tub-1": 1}) if off else DayBook(staff_busy=busy, resources={"tub-1": 1})
    refusal = why(at(10, 30), book=book)
    assert refusal.reason == "every qualified staff member is booked or off then" and refusal.taken
    named = why(at(10, 30), book=book, staff_id="ann")
    assert named.reason == "the staff member is already booked or off then" and named.taken
    assert why(at(11), book=book) is None  # right after the busy interval


def test_refused_as_taken_when_every_resource_unit_is_in_use():
    book = DayBook(resources={"tub-1": 2}, unit_busy={("tub-1", 1): [(at(10), at(11))],
                                                      ("tub-1", 2): [(at(10, 30), at(11, 30))]})
    refusal = why(at(10, 30), book=book)
    assert refusal.reason == "every tub is in use then" and refusal.taken
    assert why(at(10), book=book).reason == "every tub is in use then"
    assert why(at(9), book=book) is None  # ends as unit 1's booking begins
    assert why(at(13), book=book) is None  # both units free again


def test_refused_when_the_store_has_no_resource_of_the_kind():
    refusal = why(at(10), book=DayBook())
    assert refusal.reason == "store s1 has no tub" and not refusal.taken


# ---- 6. property: every offered slot can really be served -------------------------------------------
EPOCH = datetime(YEAR, 1, 1, tzinfo=UTC)
ZONE_DAYS = [(SHANGHAI, date(2027, 6, 9)), (SHANGHAI, spring(LONDON).day), (LONDON, date(2027, 6, 9)),
             (LONDON, spring(LONDON).day), (LONDON, fall(LONDON).day),
             (NEW_YORK, spring(NEW_YORK).day), (NEW_YORK, fall(NEW_YORK).day)]


def clock(minutes: int) -> time:
    return time(0) if minutes == 24 * 60 else time(minutes // 60, minutes % 60)


# Five-minute wall clock points, often in the small hours where the clocks change.
POINTS = st.one_of(st.integers(0, 288), st.integers(0, 72)).map(lambda k: 5 * k)


@st.composite
def wall_intervals(draw, min_size: int, max_size: int) -> tuple[tuple[time, time], ...]:
    """Disjoint local [start, end) intervals; an end of 24:00 is written as 00:00."""
    n = draw(st.integers(min_size, max_size))
    points = sorted(draw(st.sets(POINTS, min_size=2 * n, max_size=2 * n)))
    return tuple((clock(a), clock(b)) for a, b in zip(points[::2], points[1::2]))


@st.composite
def short_intervals(draw, max_size: int) -> tuple[tuple[time, time], ...]:
    """Breaks: up to `max_size` local intervals of at most 90 minutes (they may overlap)."""
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        start = draw(POINTS.filter(lambda m: m < 24 * 60))
        out.append((clock(start), clock(min(24 * 60, start + 5 * draw(st.integers(1, 18))))))
    return tuple(out)


@st.composite
def instants_around(draw, day_start: datetime, max_size: int) -> list[tuple[datetime, datetime]]:
    """Busy intervals, time off, unit bookings: real instants from the evening before to the morning after."""
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        a = day_start + timedelta(minutes=5 * draw(st.integers(-36, 324)))
        out.append((a, a + timedelta(minutes=5 * draw(st.integers(1, 36)))))
    return out


@st.composite
def scenarios(draw):
    tz, day = draw(st.sampled_from(ZONE_DAYS))
    day_start = boundary(day, time(0), tz, later=False)
    weekday = day.weekday()
    the_store = Store("s1", tz, {weekday: draw(wall_intervals(1, 2))},
                      frozenset({day}) if draw(st.integers(0, 29)) == 0 else frozenset(),
                      StorePolicy(min_notice_minutes=draw(st.sampled_from([0, 30, 60, 240])),
                                  slot_step_minutes=draw(st.sampled_from([5, 10, 15, 20, 30, 45, 60]))))
    service = Service("svc", "grooming", 5 * draw(st.integers(1, 30)),
                      buffer_before_minutes=draw(st.sampled_from([0, 5, 10, 15, 30])),
                      buffer_after_minutes=draw(st.sampled_from([0, 5, 10, 15, 30])),
                      required_skill=draw(st.sampled_from([None, "groom"])),
                      resource_kind=draw(st.sampled_from([None, "tub"])))
    whole_day = st.just(((time(0), time(0)),))
    people, book = [], DayBook()
    for n in range(draw(st.integers(1, 3))):
        staff_id = f"st{n}"
        shifts = []
        for _ in range(draw(st.integers(0, 2))):
            (start, end), = draw(st.one_of(whole_day, wall_intervals(1, 1)))
            shifts.append(Shift(draw(st.sampled_from(["s1", "s1", "s1", "s2"])),  # other stores' shifts don't count
                                draw(st.sampled_from([weekday, weekday, weekday, (weekday + 1) % 7])),
                                start, end, draw(short_intervals(2))))
        skills = draw(st.sampled_from([frozenset({"groom"}), frozenset({"groom", "bath"}), frozenset()]))
        people.append(Staff(staff_id, skills, tuple(shifts)))
        book.staff_busy[staff_id] = draw(instants_around(day_start, 3))
        book.staff_off[staff_id] = draw(instants_around(day_start, 1))
    if service.resource_kind:
        for r in range(draw(st.integers(0, 2))):
            capacity = draw(st.integers(1, 3))
            book.resources[f"tub-{r}"] = capacity
            for unit in range(1, capacity + 1):
                book.unit_busy[(f"tub-{r}", unit)] = draw(instants_around(day_start, 2))
    now = day_start + timedelta(minutes=5 * draw(st.one_of(st.just(-300), st.integers(-300, 300))))
    staff_id = draw(st.sampled_from([None, None, None, None, "st0", "nobody"]))
    return Request(the_store, service, None, tuple(people), now, staff_id), day, book


def occupied(service: Service, start: datetime) -> tuple[datetime, datetime]:
    """Service time plus buffers, restated (no variants in these scenarios)."""
    return (start - timedelta(minutes=service.buffer_before_minutes),
            start + timedelta(minutes=service.duration_minutes + service.buffer_after_minutes))


def minutes(span: tuple[datetime, datetime]) -> range:
    """The whole minutes an interval covers (every boundary here is on the minute)."""
    return range(int((span[0] - EPOCH) / MIN), int((span[1] - EPOCH) / MIN))


def runs(minute_set: set[int]) -> list[tuple[datetime, datetime]]:
    """Maximal runs of consecutive minutes, as intervals of instants."""
    out: list[list[int]] = []
    for m in sorted(minute_set):
        if out and out[-1][1] == m:
            out[-1][1] = m + 1
        else:
            out.append([m, m + 1])
    return [(EPOCH + a * MIN, EPOCH + b * MIN) for a, b in out]


class Oracle:
    """The rules restated independently: per-minute sets instead of interval arithmetic."""

    def __init__(self, req: Request, day: date, book: DayBook):
        self.req, self.day, self.book = req, day, book
        s, tz = req.store, req.store.tz
        hours = () if day in s.holidays else s.opening_hours.get(day.weekday(), ())
        # The store is open at every minute some interval covers: intervals that touch in real time (as
        # two the clocks' skipped hour brings together) are one opening, where a slot may span both.
        open_minutes = set().union(*(minutes((boundary(day, a, tz, later=False), boundary(day, b, tz, later=True)))
                                     for a, b in hours))
        self.opening = runs(open_minutes)
        skill = req.service.required_skill
        self.qualified = {p.staff_id: p for p in req.staff if (req.staff_id is None or p.staff_id == req.staff_id)
                          and (skill is None or skill in p.skills)}
        self.works = {sid: self._works(p) for sid, p in self.qualified.items()}

    def _works(self, person: Staff) -> set[int]:
        tz, worked = self.req.store.tz, set()
        for shift in person.shifts:
            if shift.store_id != self.req.store.store_id or shift.weekday != self.day.weekday():
                continue
            on = set(minutes((boundary(self.day, shift.start, tz, later=False),
                              boundary(self.day, shift.end, tz, later=True))))
            for b0, b1 in shift.breaks:
                on -= set(minutes((boundary(self.day, b0, tz, later=False), boundary(self.day, b1, tz, later=True))))
            worked |= on
        return worked

    def staff_free(self, staff_id: str, span) -> bool:
        taken = self.book.staff_busy.get(staff_id, []) + self.book.staff_off.get(staff_id, [])
        return (staff_id in self.works and set(minutes(span)) <= self.works[staff_id]
                and not any(a < span[1] and span[0] < b for a, b in taken))

    def unit_free(self, span) -> bool:
        return any(not any(a < span[1] and span[0] < b for a, b in self.book.unit_busy.get((r, u), ()))
                   for r, capacity in self.book.resources.items() for u in range(1, capacity + 1))

    def grid(self) -> list[datetime]:
        step = timedelta(minutes=self.req.store.policy.slot_step_minutes)
        duration = timedelta(minutes=self.req.service.duration_minutes)
        starts = []
        for o0, o1 in self.opening:
            t = o0
            while t + duration <= o1:
                starts.append(t)
                t += step
        return starts

    def expected(self) -> dict[datetime, set[str]]:
        out = {}
        for t in self.grid():
            if t < self.req.now + timedelta(minutes=self.req.store.policy.min_notice_minutes):
                continue
            span = occupied(self.req.service, t)
            who = {sid for sid in self.qualified if self.staff_free(sid, span)}
            if who and (not self.req.service.resource_kind or self.unit_free(span)):
                out[t] = who
        return out


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios(), data=st.data())
def test_every_offered_slot_can_really_be_served(scenario, data):
    req, day, book = scenario
    oracle = Oracle(req, day, book)
    service, duration = req.service, timedelta(minutes=req.service.duration_minutes)

    slots = find_slots(req, day, book)

    for s in slots:
        span = occupied(service, s.starts_at)
        # (a) the service time lies inside opening hours, after the notice period
        assert s.ends_at - s.starts_at == duration
        assert any(o0 <= s.starts_at and s.ends_at <= o1 for o0, o1 in oracle.opening)
        assert s.starts_at >= req.now + timedelta(minutes=req.store.policy.min_notice_minutes)
        # (b) every listed staff member is qualified, on shift (breaks out) and free over service + buffers
        assert s.staff_ids and len(set(s.staff_ids)) == len(s.staff_ids)
        for sid in s.staff_ids:
            assert sid in oracle.qualified
            assert set(minutes(span)) <= oracle.works[sid]
            taken = book.staff_busy.get(sid, []) + book.staff_off.get(sid, [])
            assert not any(a < span[1] and span[0] < b for a, b in taken)
        # (c) a resource unit is free when the service needs one
        if service.resource_kind:
            assert oracle.unit_free(span)

    # Nothing the rules allow on the grid is missing, and the staff lists are complete.
    assert {s.starts_at: set(s.staff_ids) for s in slots} == oracle.expected()

    if slots:
        # (d) once the offered span is booked for one listed staff member (and a unit), they are not offered again
        chosen = data.draw(st.sampled_from(slots))
        sid = data.draw(st.sampled_from(chosen.staff_ids))
        span = occupied(service, chosen.starts_at)
        after = DayBook({k: list(v) for k, v in book.staff_busy.items()}, book.staff_off, book.resources,
                        {k: list(v) for k, v in book.unit_busy.items()})
        after.staff_busy.setdefault(sid, []).append(span)
        if service.resource_kind:
            unit = book.free_unit(span)
            assert unit is not None
            after.unit_busy.setdefault(unit, []).append(span)
        again = [s for s in find_slots(req, day, after) if s.starts_at == chosen.starts_at]
        assert all(sid not in s.staff_ids for s in again)

    # why_not agrees with find_slots on the grid.
    offered = {s.starts_at for s in slots}
    grid = oracle.grid()
    if grid:
        for t in data.draw(st.lists(st.sampled_from(grid), max_size=5)):
            assert (why_not(req, t, book, day) is None) == (t in offered), t


# ---- 7. interval arithmetic and offsets -------------------------------------------------------------
def iv(a: int, b: int) -> tuple[datetime, datetime]:
    return EPOCH + timedelta(minutes=a), EPOCH + timedelta(minutes=b)


def test_merge_sorts_joins_overlapping_and_touching_intervals_and_drops_empty_ones():
    assert merge([iv(50, 60), iv(0, 10), iv(10, 20), iv(15, 30), iv(40, 40), iv(55, 58)]) == [
        iv(0, 30), iv(50, 60)]
    assert merge([]) == []


def test_subtract_removes_every_covered_instant():
    assert subtract([iv(0, 100)], [iv(20, 30), iv(25, 40), iv(90, 120), iv(-10, 5)]) == [iv(5, 20), iv(40, 90)]
    assert subtract([iv(0, 10), iv(20, 30)], [iv(100, 200)]) == [iv(0, 10), iv(20, 30)]
    assert subtract([iv(0, 10)], [iv(0, 10)]) == []
    assert subtract([iv(0, 10), iv(5, 20)], []) == [iv(0, 20)]
    assert subtract([iv(0, 10)], [iv(10, 20)]) == [iv(0, 10)]  # a hole that only touches takes nothing


def test_covers_and_overlaps_treat_intervals_as_half_open():
    assert covers([iv(0, 10), iv(20, 30)], iv(20, 30)) and not covers([iv(0, 10), iv(10, 20)], iv(5, 15))
    assert overlaps(iv(0, 10), iv(9, 20)) and not overlaps(iv(0, 10), iv(10, 20))


@pytest.mark.parametrize(("offset", "parts"), [("P1D", (1, 0)), ("P14D", (14, 0)), ("PT2H", (0, 120)),
                                               ("PT30M", (0, 30)), ("PT1H30M", (0, 90))])
def test_offset_parts_reads_days_and_elapsed_minutes(offset, parts):
    assert offset_parts(offset) == parts


@pytest.mark.parametrize("offset", ["P0D", "1D", "PT", "P1W", "P", "", "P1DT2H", "PT2h", "-PT2H", "P100D"])
def test_offset_parts_rejects_bad_offsets(offset):
    with pytest.raises(ValueError, match="reminder offset"):
        offset_parts(offset)


@pytest.mark.parametrize("offset", ["PT0M", "PT0H", "PT0H0M"])
def test_offset_parts_rejects_zero_elapsed_offsets(offset):
    with pytest.raises(ValueError):
        offset_parts(offset)


def test_parse_clock_reads_24_00_as_midnight_and_refuses_non_times():
    assert parse_clock("09:30") == time(9, 30) and parse_clock("24:00") == time(0)
    with pytest.raises(ValueError, match="not a time of day"):
        parse_clock("25:00")
