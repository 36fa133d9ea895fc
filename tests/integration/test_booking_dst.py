"""Daylight-saving changes through the booking API: availability, holds and reminders in Europe/London and
America/New_York on their next spring-forward and fall-back days, against Asia/Shanghai (no DST)."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.integration.booking_setup import DEMO, customer, hold, next_transition, ok, setup_store
from tests.integration.test_booking import booking  # noqa: F401  (fixture)

ZONES = ("Europe/London", "America/New_York")
NIGHT = ("00:00", "05:00")  # an all-night store, so the opening hours span the clock change
REPEATED = {"Europe/London": "01:30", "America/New_York": "01:30"}
SKIPPED = {"Europe/London": "01:30", "America/New_York": "02:30"}


def slots(client, day) -> list[dict]:
    return ok(client.get("/v1/availability", headers=DEMO, params={
        "store_id": "s1", "service_id": "full-groom", "date": day.isoformat()}))["slots"]


def night_store(client, tz):
    setup_store(client, tz=tz, hours=NIGHT, breaks=(), tables=None, policy={"slot_step_minutes": 30})


@pytest.mark.parametrize("tz", ZONES)
def test_spring_forward_offers_no_skipped_time_and_refuses_to_book_one(booking, tz):
    night_store(booking, tz)
    day = next_transition(tz, forward=True)
    offered = slots(booking, day)
    zone = ZoneInfo(tz)
    for s in offered:
        start = datetime.fromisoformat(s["starts_at"])
        assert start.astimezone(zone).isoformat() == s["local_start"]  # a real wall time, with its offset
        assert datetime.fromisoformat(s["ends_at"]) - start == timedelta(minutes=60)
    # 4 real hours open (one skipped): starts every 30 min while service + 15 min buffer fit
    assert len(offered) == len(slots(booking, day - timedelta(days=7))) - 2
    refused = hold(booking, day, SKIPPED[tz])
    assert refused.status_code == 422 and "does not exist" in refused.json()["detail"]


@pytest.mark.parametrize("tz", ZONES)
def test_fall_back_offers_the_repeated_time_twice_and_asks_which_one_is_meant(booking, tz):
    night_store(booking, tz)
    day = next_transition(tz, forward=False)
    offered = slots(booking, day)
    repeated = [s for s in offered if s["local_time"] == REPEATED[tz]]
    assert len(repeated) == 2 and repeated[0]["utc_offset"] != repeated[1]["utc_offset"]
    assert len(offered) == len(slots(booking, day - timedelta(days=7))) + 2
    ambiguous = hold(booking, day, REPEATED[tz])
    assert ambiguous.status_code == 422 and "happens twice" in ambiguous.json()["detail"]
    second = ok(booking.post("/v1/appointments", headers=DEMO, json={
        "store_id": "s1", "service_id": "full-groom", "staff_id": "g1", "starts_at": repeated[1]["starts_at"],
        "customer": customer()}), 201)
    assert second["local_start"] == repeated[1]["local_start"]
    assert datetime.fromisoformat(second["starts_at"]) == datetime.fromisoformat(repeated[1]["starts_at"])
    assert repeated[1]["starts_at"] not in [s["starts_at"] for s in slots(booking, day)]


@pytest.mark.parametrize("tz, forward, real_hours", [
    ("Europe/London", True, 23), ("Europe/London", False, 25),
    ("America/New_York", True, 23), ("America/New_York", False, 25),
])
def test_the_day_before_reminder_keeps_the_wall_time_across_the_clock_change(booking, tz, forward, real_hours):
    setup_store(booking, tz=tz)
    day = next_transition(tz, forward)  # 10:00 on the change day; the day before had the other offset
    held = ok(hold(booking, day, "10:00"), 201)
    ok(booking.post(f"/v1/appointments/{held['appointment_id']}/confirm", headers=DEMO))
    reminders = {r["offset"]: r for r in
                 ok(booking.get(f"/v1/appointments/{held['appointment_id']}", headers=DEMO))["reminders"]}
    start = datetime.fromisoformat(held["starts_at"])
    day_before = reminders["P1D"]
    assert day_before["local_due"].startswith(f"{(day - timedelta(days=1)).isoformat()}T10:00:00")
    assert start - datetime.fromisoformat(day_before["due_at"]) == timedelta(hours=real_hours)
    assert start - datetime.fromisoformat(reminders["PT2H"]["due_at"]) == timedelta(hours=2)


def test_shanghai_has_the_same_slots_every_day_and_a_24_hour_day_before_reminder(booking):
    setup_store(booking, tz="Asia/Shanghai")
    day = next_transition("Europe/London", forward=True)  # a date that is ordinary in Shanghai
    assert [s["local_time"] for s in slots(booking, day)] == [s["local_time"] for s in slots(booking, day + timedelta(days=7))]
    held = ok(hold(booking, day + timedelta(days=1), "10:00"), 201)
    ok(booking.post(f"/v1/appointments/{held['appointment_id']}/confirm", headers=DEMO))
    (p1d,) = [r for r in ok(booking.get(f"/v1/appointments/{held['appointment_id']}", headers=DEMO))["reminders"]
              if r["offset"] == "P1D"]
    assert datetime.fromisoformat(held["starts_at"]) - datetime.fromisoformat(p1d["due_at"]) == timedelta(hours=24)
