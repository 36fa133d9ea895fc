"""SLA clocks that run only while a store is open, in the store's own zone: "one business hour" opened
at 17:30 on a Friday of a store closing at 18:00 and closed on Saturday is due at 09:30 on Sunday (or
Monday). Opening intervals are local wall times turned into instants day by day, so a daylight-saving
change shortens or lengthens that day's business time as it really does."""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import Invalid
from shared.timezones import IanaZone

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Clock = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$", description="HH:MM local")]
MAX_DAYS = 800  # a store open a few days a year still ends the search


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: Clock
    end: Clock

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.end <= self.start:
            raise ValueError(f"an opening interval ends after it starts ({self.start}–{self.end})")
        return self


class StoreHours(BaseModel):
    """When a store's staff can answer a case. Unknown stores use the tenant default (09:00–18:00 daily)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timezone: IanaZone = "Asia/Shanghai"
    hours: dict[str, tuple[Interval, ...]] = Field(
        default_factory=lambda: {d: (Interval(start="09:00", end="18:00"),) for d in WEEKDAYS})
    holidays: tuple[date, ...] = ()
    manager: Annotated[str, Field(min_length=1, max_length=120)] | None = Field(
        None, description="Who owns the store's cases by default.")

    @field_validator("hours")
    @classmethod
    def _weekdays(cls, hours: dict) -> dict:
        unknown = sorted(set(hours) - set(WEEKDAYS))
        if unknown:
            raise ValueError(f"unknown weekdays {unknown}: use {', '.join(WEEKDAYS)}")
        if not any(hours.values()):
            raise ValueError("a store must open at least one day a week")
        return hours

    def open_spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's opening intervals as UTC-comparable instants (a skipped wall time moves forward)."""
        if day in self.holidays:
            return []
        zone = ZoneInfo(self.timezone)
        spans = []
        for interval in self.hours.get(WEEKDAYS[day.weekday()], ()):
            spans.append((_instant(day, interval.start, zone), _instant(day, interval.end, zone)))
        return spans

    def add(self, start: datetime, minutes: int) -> datetime:
        """The instant `minutes` of opening time after `start`."""
        remaining = timedelta(minutes=minutes)
        day = start.astimezone(ZoneInfo(self.timezone)).date()
        for _ in range(MAX_DAYS):
            for opens, closes in self.open_spans(day):
                begin = max(opens, start)
                if begin >= closes:
                    continue
                if begin + remaining <= closes:
                    return begin + remaining
                remaining -= closes - begin
            day += timedelta(days=1)
        raise Invalid(f"the store's hours and holidays leave less than {minutes} business minutes within the "
                      f"next {MAX_DAYS} days: nothing could fall due")

    def between(self, start: datetime, end: datetime) -> int:
        """Minutes of opening time from `start` to `end`."""
        total = timedelta()
        day = start.astimezone(ZoneInfo(self.timezone)).date()
        last = end.astimezone(ZoneInfo(self.timezone)).date()
        while day <= last:
            for opens, closes in self.open_spans(day):
                begin, finish = max(opens, start), min(closes, end)
                if finish > begin:
                    total += finish - begin
            day += timedelta(days=1)
        return int(total.total_seconds() // 60)


def _instant(day: date, clock: str, zone: ZoneInfo) -> datetime:
    """A local wall time as an instant. A time the clocks skip maps past the gap (fold=0 reads it with
    the offset before the change); a repeated time means its first occurrence."""
    if clock == "24:00":
        return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=zone).astimezone(UTC)
    hour, minute = map(int, clock.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
