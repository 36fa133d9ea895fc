"""Store-local wall clock <-> UTC instants, honest about daylight-saving changes.

A local time can be missing (clocks spring forward over it) or happen twice (clocks fall back over it).
Rules such as opening hours are stated in wall-clock time, so they are turned into instants here and
only here; everything else computes with UTC instants.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class WallClockError(ValueError):
    """A local time that does not name exactly one instant in the store's zone."""


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone, or ValueError naming the bad value."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r} (e.g. Asia/Shanghai, Europe/London)") from None


def _exists(naive: datetime, tz: ZoneInfo) -> bool:
    aware = naive.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive


def _ambiguous(naive: datetime, tz: ZoneInfo) -> bool:
    return naive.replace(tzinfo=tz, fold=0).utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset()


def instant(naive: datetime, tz: ZoneInfo) -> datetime:
    """The one UTC instant a local wall time names; WallClockError if it is skipped or repeated."""
    if not _exists(naive, tz):
        raise WallClockError(f"{naive:%Y-%m-%d %H:%M} does not exist in {tz.key}: the clocks spring forward "
                             "over it; choose a later time")
    if _ambiguous(naive, tz):
        early = naive.replace(tzinfo=tz, fold=0).strftime("%z")
        late = naive.replace(tzinfo=tz, fold=1).strftime("%z")
        raise WallClockError(f"{naive:%Y-%m-%d %H:%M} happens twice in {tz.key} (the clocks fall back); "
                             f"give the offset, {early} or {late}")
    return naive.replace(tzinfo=tz).astimezone(UTC)


@lru_cache(maxsize=16384)  # pure; a hold checks every qualified staff member's shifts several times
def boundary(day: date, wall: time, tz: ZoneInfo, *, later: bool) -> datetime:
    """The instant a rule boundary (opening, closing, shift start) falls on. A boundary the clocks skip
    falls where the clock resumes; a repeated one takes its first occurrence for a start and its second
    for an end (`later`), so an interval never loses the repeated hour."""
    naive = datetime.combine(day, wall)
    if wall == time(0) and later:  # "24:00" written as 00:00 at the end of an interval: the next midnight
        naive += timedelta(days=1)
    probe = naive
    while not _exists(probe, tz):
        probe += timedelta(minutes=1)
    if probe != naive:
        return probe.replace(tzinfo=tz, fold=0).astimezone(UTC)
    return naive.replace(tzinfo=tz, fold=1 if later else 0).astimezone(UTC)


def local(at: datetime, tz: ZoneInfo) -> datetime:
    return at.astimezone(tz)


def utc_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants a local calendar day starts and ends (23, 24 or 25 hours apart)."""
    return boundary(day, time(0), tz, later=False), boundary(day + timedelta(days=1), time(0), tz, later=False)


def same_wall_time_days_before(at: datetime, days: int, tz: ZoneInfo) -> datetime:
    """The instant `days` calendar days earlier at the same local wall time (what "the day before at the
    same time" means to a customer, even when the clocks changed in between). A wall time the clocks
    skip that day moves to where the clock resumes."""
    wall = at.astimezone(tz)
    naive = wall.replace(tzinfo=None) - timedelta(days=days)
    probe = naive
    while not _exists(probe, tz):
        probe += timedelta(minutes=1)
    return probe.replace(tzinfo=tz, fold=wall.fold).astimezone(UTC)
