"""Booking against real Postgres: the exclusion constraints, the outbox, holds, the waitlist and the clock."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import psycopg2
import pytest
from fastapi.testclient import TestClient

from services.booking import clock, lifecycle
from services.booking.app import create_app
from services.booking.settings import BookingSettings
from shared.auth import Role
from tests.integration.booking_setup import DEMO, WEEK, customer, hold, key, local_day, ok, setup_store
from tests.integration.conftest import settings_for
from tests.integration.helpers import run_together


@pytest.fixture
def booking(service_env):
    # The clock is driven by the tests (clock.tick with an explicit `now`), not by the worker.
    app = create_app(settings_for(BookingSettings, service_env, clock_interval_s=3600))
    with TestClient(app) as client:
        yield client


def db(client):
    return client.app.state.db


def outbox(client, *types) -> list[dict]:
    with db(client).transaction() as cur:
        cur.execute("select body from booking.outbox order by id")
        events = [orjson.loads(bytes(r[0])) for r in cur.fetchall()]
    return [e for e in events if not types or e["type"] in types]


def live_appointments(client) -> int:
    with db(client).transaction() as cur:
        cur.execute("select count(*) from booking.appointments where status in ('held', 'confirmed')")
        return cur.fetchone()[0]


def use_case(client, fn, *args):
    with db(client).transaction() as cur:
        return fn(cur, "demo", *args)


def test_of_fifty_concurrent_requests_for_one_slot_exactly_one_wins_and_the_rest_get_alternatives(booking):
    setup_store(booking)
    day = local_day("Asia/Shanghai")
    responses, errors = run_together(*[
        (lambda i=i: hold(booking, day, "10:00", who=customer(f"+861391234{i:04d}"))) for i in range(50)])
    assert not errors
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 49
    losers = [r.json() for r in responses if r.status_code == 409]
    assert all(body["next_free_slots"] and body["next_free_slots"][0]["local_time"] != "10:00" for body in losers)
    assert live_appointments(booking) == 1


def test_the_database_itself_refuses_an_overlapping_appointment_for_a_staff_member(booking):
    setup_store(booking)
    held = ok(hold(booking, local_day("Asia/Shanghai"), "10:00"), 201)
    with pytest.raises(psycopg2.errors.ExclusionViolation), db(booking).transaction() as cur:
        cur.execute("insert into booking.appointments (tenant_id, appointment_id, store_id, service_id, staff_id, "
                    "staff_key, status, starts_at, ends_at, occupied, channel, identifiers, price_minor, currency) "
                    "select tenant_id, gen_random_uuid(), store_id, service_id, staff_id, staff_key, 'confirmed', "
                    "starts_at + interval '30 minutes', ends_at + interval '30 minutes', "
                    "tstzrange(starts_at + interval '30 minutes', ends_at + interval '30 minutes'), channel, "
                    "identifiers, price_minor, currency from booking.appointments where appointment_id = %s",
                    (held["appointment_id"],))


def test_a_resource_at_capacity_refuses_the_next_booking_with_the_reason(booking):
    setup_store(booking, staff=("g1", "g2", "g3"), tables=2)
    day = local_day("Asia/Shanghai")
    ok(hold(booking, day, "10:00", staff_id="g1"), 201)
    ok(hold(booking, day, "10:00", staff_id="g2", who=customer("+8613900000002")), 201)
    third = hold(booking, day, "10:00", staff_id="g3", who=customer("+8613900000003"))
    assert third.status_code == 409
    assert "grooming_table" in third.json()["detail"]
    slots = ok(booking.get("/v1/availability", headers=DEMO, params={
        "store_id": "s1", "service_id": "full-groom", "date": day.isoformat()}))["slots"]
    assert "10:00" not in [s["local_time"] for s in slots]


@pytest.mark.parametrize("change, local_time, status, words", [
    ({}, "19:00", 422, "opening hours"),
    ({"staff_skills": []}, "10:00", 422, "skill"),
    ({}, "12:30", 422, "break"),
    ({"store_id": "nowhere"}, "10:00", 404, "unknown store"),
    ({"service_id": "moon-walk"}, "10:00", 404, "unknown service"),
])
def test_a_booking_against_the_rules_is_refused_with_the_reason_and_leaves_nothing(booking, change, local_time,
                                                                                   status, words):
    setup_store(booking)
    if "staff_skills" in change:
        ok(booking.put("/v1/staff/g1", headers=DEMO, json={"name": "g1", "skills": [], "schedule": [
            {"store_id": "s1", "weekday": d, "start": "09:00", "end": "18:00"}
            for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]}))
    body = {"store_id": change.get("store_id", "s1"), "service_id": change.get("service_id", "full-groom"),
            "staff_id": "g1", "local_start": f"{local_day('Asia/Shanghai').isoformat()}T{local_time}",
            "customer": customer()}
    response = booking.post("/v1/appointments", headers=DEMO, json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert live_appointments(booking) == 0 and outbox(booking) == []


def test_a_confirm_after_the_hold_expired_is_refused_with_fresh_slots(booking):
    setup_store(booking, policy={"hold_minutes": 5})
    held = ok(hold(booking, local_day("Asia/Shanghai"), "10:00"), 201)
    later = datetime.fromisoformat(held["hold_expires_at"]) + timedelta(seconds=1)
    with pytest.raises(Exception) as refused:
        use_case(booking, lifecycle.confirm, held["appointment_id"], later)
    assert refused.value.status == 409 and "expired" in refused.value.detail
    assert refused.value.extra["next_free_slots"][0]["local_time"] == "10:00"  # its own slot is free again
    assert clock.tick(db(booking), later)["holds_expired"] == 1
    assert ok(booking.get(f"/v1/appointments/{held['appointment_id']}", headers=DEMO))["status"] == "expired"
    assert [e["type"] for e in outbox(booking)] == ["booking.held", "booking.hold_expired"]


def test_a_lapsed_hold_the_clock_has_not_expired_yet_gives_way_to_a_new_booking_or_a_move(booking):
    setup_store(booking)
    day = local_day("Asia/Shanghai")
    lapsed = [ok(hold(booking, day, t), 201)["appointment_id"] for t in ("10:00", "14:00")]
    with db(booking).transaction() as cur:  # past their expiry, before the clock's next tick
        cur.execute("update appointments set hold_expires_at = now() - interval '1 minute' "
                    "where appointment_id = any(%s::uuid[])", (lapsed,))
    taken = ok(hold(booking, day, "10:00", who=customer(phone="+8613900000001")), 201)
    moving = ok(hold(booking, day, "16:00", who=customer(phone="+8613900000002")), 201)["appointment_id"]
    moved = ok(booking.post(f"/v1/appointments/{moving}/reschedule", headers=DEMO,
                            json={"local_start": f"{day.isoformat()}T14:00", "staff_id": "g1"}))
    assert (taken["staff_id"], moved["staff_id"], moved["local_start"][11:16]) == ("g1", "g1", "14:00")
    assert [ok(booking.get(f"/v1/appointments/{a}", headers=DEMO))["status"] for a in lapsed] == ["expired"] * 2
    assert len(outbox(booking, "booking.hold_expired")) == 2


def test_an_appointment_lives_from_hold_to_completion_and_announces_every_step(booking):
    setup_store(booking, staff=("g1", "g2"))
    day = local_day("Asia/Shanghai")
    held = ok(hold(booking, day, "10:00"), 201)
    aid = held["appointment_id"]
    ok(booking.post(f"/v1/appointments/{aid}/confirm", headers=DEMO))
    moved = ok(booking.post(f"/v1/appointments/{aid}/reschedule", headers=DEMO,
                            json={"local_start": f"{day.isoformat()}T14:00", "staff_id": "g2"}))
    assert moved["local_start"].endswith("T14:00:00+08:00") and moved["staff_id"] == "g2"
    start = datetime.fromisoformat(moved["starts_at"])
    use_case(booking, lifecycle.check_in, aid, start - timedelta(minutes=10))
    done = use_case(booking, lifecycle.complete, aid, start + timedelta(minutes=70), 26000, None, None)
    assert done["status"] == "completed" and done["amount_minor"] == 26000
    events = outbox(booking)
    assert [e["type"] for e in events] == ["booking.held", "booking.confirmed", "booking.rescheduled",
                                           "booking.checked_in", "booking.completed"]
    completed = events[-1]["payload"]
    assert completed["next_visit_due_on"] == (day + timedelta(days=42)).isoformat()
    assert completed["performed_by"] == "g2" and events[-1]["identifiers"][0]["value"] == "+8613912345678"
    assert events[2]["payload"]["previous_starts_at"] == held["starts_at"].replace("+00:00", "Z")


def test_a_late_cancellation_carries_a_fee_unless_waived_and_frees_the_slot(booking):
    setup_store(booking, policy={"cancellation_window_hours": 24})
    day = local_day("Asia/Shanghai", days_ahead=3)
    first = ok(hold(booking, day, "10:00"), 201)
    ok(booking.post(f"/v1/appointments/{first['appointment_id']}/confirm", headers=DEMO))
    start = datetime.fromisoformat(first["starts_at"])
    early = use_case(booking, lifecycle.cancel, first["appointment_id"], start - timedelta(days=2), "", False)
    assert early["late_cancel"] is False and early["fee_applies"] is False
    second = ok(hold(booking, day, "10:00"), 201)  # the slot is free again
    ok(booking.post(f"/v1/appointments/{second['appointment_id']}/confirm", headers=DEMO))
    late = use_case(booking, lifecycle.cancel, second["appointment_id"], start - timedelta(hours=3), "sick", True)
    assert late["late_cancel"] is True and late["fee_applies"] is False
    cancelled = outbox(booking, "booking.cancelled")
    assert [(e["payload"]["late"], e["payload"]["fee_applies"]) for e in cancelled] == [(False, False), (True, False)]


def test_a_no_show_is_recorded_only_after_the_start_and_frees_the_staff_for_a_walk_in(booking):
    setup_store(booking)
    held = ok(hold(booking, local_day("Asia/Shanghai"), "10:00"), 201)
    aid = held["appointment_id"]
    ok(booking.post(f"/v1/appointments/{aid}/confirm", headers=DEMO))
    start = datetime.fromisoformat(held["starts_at"])
    with pytest.raises(Exception) as early:
        use_case(booking, lifecycle.no_show, aid, start, False)
    assert early.value.status == 422
    walk_in = dict(store_id="s1", service_id="full-groom", staff_id="g1", started_at=start + timedelta(minutes=20),
                   customer=customer("+8613900000009"), amount_minor=18000, channel="pos")
    args = ("s1", "full-groom", "g1", start + timedelta(minutes=20),
            lifecycle.Customer((), None, None), "pos", start + timedelta(minutes=25), 18000, None)
    with pytest.raises(Exception) as busy:  # the booked customer may still come: the staff member is taken
        use_case(booking, lifecycle.walk_in, *args)
    assert busy.value.status == 409
    assert use_case(booking, lifecycle.no_show, aid, start + timedelta(minutes=20), False)["fee_applies"] is True
    recorded = ok(booking.post("/v1/walk-ins", headers=DEMO, json={
        **{k: v for k, v in walk_in.items() if k != "started_at"},
        "started_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}), 201)
    assert recorded["status"] == "completed"
    types = [e["type"] for e in outbox(booking)]
    assert types[-2:] == ["booking.no_show", "booking.completed"]
    assert outbox(booking, "booking.completed")[0]["payload"]["walk_in"] is True


def test_a_store_charges_in_its_own_currency_and_a_service_without_a_price_in_it_is_refused(booking):
    setup_store(booking)
    setup_store(booking, "ldn", tz="Europe/London", staff=("l1",))
    ok(booking.put("/v1/stores/ldn", headers=DEMO, json={
        **{k: v for k, v in ok(booking.get("/v1/stores/ldn", headers=DEMO)).items() if k != "store_id"},
        "currency": "GBP"}))
    day = local_day("Europe/London")
    refused = hold(booking, day, "10:00", store_id="ldn", staff_id="l1")  # full-groom is priced in CNY only
    assert refused.status_code == 422 and "no price in GBP" in refused.json()["detail"]
    assert booking.get("/v1/availability", headers=DEMO, params={
        "store_id": "ldn", "service_id": "full-groom", "date": day.isoformat()}).status_code == 422
    assert live_appointments(booking) == 0 and outbox(booking) == []

    service = ok(booking.get("/v1/services/full-groom", headers=DEMO))
    ok(booking.put("/v1/services/full-groom", headers=DEMO, json={
        **{k: v for k, v in service.items() if k != "service_id"}, "prices": {"GBP": 4500}}))
    held = ok(hold(booking, day, "10:00", store_id="ldn", staff_id="l1", who=customer("+447700900123")), 201)
    assert (held["price_minor"], held["currency"]) == (4500, "GBP")
    ok(booking.post(f"/v1/appointments/{held['appointment_id']}/confirm", headers=DEMO))
    start = datetime.fromisoformat(held["starts_at"])
    use_case(booking, lifecycle.complete, held["appointment_id"], start + timedelta(minutes=70), 5200, None, None)
    completed = outbox(booking, "booking.completed")[0]["payload"]
    assert (completed["amount_minor"], completed["price_minor"], completed["currency"]) == (5200, 4500, "GBP")
    cny = ok(hold(booking, local_day("Asia/Shanghai"), "10:00"), 201)  # the CNY store: the variant price
    assert (cny["price_minor"], cny["currency"]) == (20000, "CNY")


def fill_the_day(client, day) -> None:
    for i in range(40):
        slots = ok(client.get("/v1/availability", headers=DEMO, params={
            "store_id": "s1", "service_id": "full-groom", "date": day.isoformat()}))["slots"]
        if not slots:
            return
        ok(hold(client, day, slots[0]["local_start"][11:16], who=customer(f"+86139000011{i:02d}")), 201)
    raise AssertionError("the day never filled")


def test_a_freed_slot_goes_to_the_waitlist_in_order_and_a_claim_becomes_an_appointment(booking):
    setup_store(booking, policy={"waitlist_offer_minutes": 20})
    day = local_day("Asia/Shanghai")
    taken = ok(hold(booking, day, "10:00"), 201)
    ok(booking.post(f"/v1/appointments/{taken['appointment_id']}/confirm", headers=DEMO))
    fill_the_day(booking, day)  # so that only a cancellation frees a slot
    wait = {"store_id": "s1", "service_id": "full-groom", "day": day.isoformat(), "window_start": "10:00",
            "window_end": "12:00"}
    first = ok(booking.post("/v1/waitlist", headers=DEMO, json={**wait, "customer": customer("+8613900000021")}), 201)
    second = ok(booking.post("/v1/waitlist", headers=DEMO, json={**wait, "customer": customer("+8613900000022")}), 201)
    assert first["status"] == second["status"] == "waiting"

    ok(booking.post(f"/v1/appointments/{taken['appointment_id']}/cancel", headers=DEMO, json={}))
    first = ok(booking.get(f"/v1/waitlist/{first['waitlist_id']}", headers=DEMO))
    assert first["status"] == "offered"
    assert ok(booking.get(f"/v1/waitlist/{second['waitlist_id']}", headers=DEMO))["status"] == "waiting"

    ok(booking.post(f"/v1/waitlist-offers/{first['offers'][0]['offer_id']}/decline", headers=DEMO))
    second = ok(booking.get(f"/v1/waitlist/{second['waitlist_id']}", headers=DEMO))
    assert second["status"] == "offered"
    appointment = ok(booking.post(f"/v1/waitlist-offers/{second['offers'][0]['offer_id']}/claim", headers=DEMO))
    assert appointment["status"] == "confirmed" and appointment["local_start"].endswith("T10:00:00+08:00")
    offered = outbox(booking, "waitlist.offered", "waitlist.offer_lapsed", "waitlist.claimed")
    assert [(e["type"], e["identifiers"][0]["value"]) for e in offered] == [
        ("waitlist.offered", "+8613900000021"), ("waitlist.offer_lapsed", "+8613900000021"),
        ("waitlist.offered", "+8613900000022"), ("waitlist.claimed", "+8613900000022")]


def test_an_expired_waitlist_offer_moves_to_the_next_in_line(booking):
    setup_store(booking, policy={"waitlist_offer_minutes": 20})
    day = local_day("Asia/Shanghai")
    taken = ok(hold(booking, day, "10:00"), 201)
    wait = {"store_id": "s1", "service_id": "full-groom", "day": day.isoformat(), "window_start": "10:00",
            "window_end": "11:15"}
    first = ok(booking.post("/v1/waitlist", headers=DEMO, json={**wait, "customer": customer("+8613900000031")}), 201)
    second = ok(booking.post("/v1/waitlist", headers=DEMO, json={**wait, "customer": customer("+8613900000032")}), 201)
    ok(booking.post(f"/v1/appointments/{taken['appointment_id']}/cancel", headers=DEMO, json={}))
    offer = ok(booking.get(f"/v1/waitlist/{first['waitlist_id']}", headers=DEMO))["offers"][0]
    clock.tick(db(booking), datetime.fromisoformat(offer["expires_at"]) + timedelta(seconds=1))
    assert ok(booking.get(f"/v1/waitlist/{first['waitlist_id']}", headers=DEMO))["status"] == "lapsed"
    assert ok(booking.get(f"/v1/waitlist/{second['waitlist_id']}", headers=DEMO))["status"] == "offered"
    lapsed = outbox(booking, "waitlist.offer_lapsed")
    assert [e["payload"]["reason"] for e in lapsed] == ["expired"]


def test_reminders_and_visit_due_notices_are_emitted_by_the_clock_when_due(booking):
    setup_store(booking)
    day = local_day("Asia/Shanghai", days_ahead=3)
    held = ok(hold(booking, day, "10:00"), 201)
    aid = held["appointment_id"]
    ok(booking.post(f"/v1/appointments/{aid}/confirm", headers=DEMO))
    reminders = ok(booking.get(f"/v1/appointments/{aid}", headers=DEMO))["reminders"]
    assert [(r["offset"], r["local_due"]) for r in reminders] == [
        ("P1D", f"{(day - timedelta(days=1)).isoformat()}T10:00:00+08:00"), ("PT2H", f"{day.isoformat()}T08:00:00+08:00")]
    first_due = datetime.fromisoformat(reminders[0]["due_at"])
    assert clock.tick(db(booking), first_due - timedelta(seconds=1))["reminders_sent"] == 0
    assert clock.tick(db(booking), first_due)["reminders_sent"] == 1
    assert clock.tick(db(booking), first_due)["reminders_sent"] == 0  # never twice
    assert [e["payload"]["offset"] for e in outbox(booking, "booking.reminder_due")] == ["P1D"]

    start = datetime.fromisoformat(held["starts_at"])
    use_case(booking, lifecycle.complete, aid, start + timedelta(hours=1), 20000, None, None)
    due_on = day + timedelta(days=42)
    due_at = datetime.fromisoformat(f"{due_on.isoformat()}T10:00:00+08:00")
    assert clock.tick(db(booking), due_at - timedelta(minutes=1))["visits_due"] == 0
    assert clock.tick(db(booking), due_at)["visits_due"] == 1
    (notice,) = outbox(booking, "booking.visit_due")
    assert notice["payload"]["due_on"] == due_on.isoformat() and notice["payload"]["subject"]["name"] == "Lucky"
    assert notice["payload"]["service_category"] == "full_groom"


def test_no_visit_due_notice_when_the_next_visit_is_already_booked(booking):
    setup_store(booking, policy={"min_notice_minutes": 0})
    day = local_day("Asia/Shanghai", days_ahead=1)
    held = ok(hold(booking, day, "10:00"), 201)
    ok(booking.post(f"/v1/appointments/{held['appointment_id']}/confirm", headers=DEMO))
    start = datetime.fromisoformat(held["starts_at"])
    use_case(booking, lifecycle.complete, held["appointment_id"], start + timedelta(hours=1), 20000, None, None)
    ok(booking.post(f"/v1/appointments/{ok(hold(booking, local_day('Asia/Shanghai', 60), '10:00'), 201)['appointment_id']}"
                    "/confirm", headers=DEMO))
    assert clock.tick(db(booking), start + timedelta(days=43))["visits_due"] == 1
    assert outbox(booking, "booking.visit_due") == []


def test_another_tenant_sees_nothing_and_roles_are_enforced(booking):
    setup_store(booking)
    held = ok(hold(booking, local_day("Asia/Shanghai"), "10:00"), 201)
    other = key(Role.admin, tenant="chain-b")
    assert booking.get(f"/v1/appointments/{held['appointment_id']}", headers=other).status_code == 404
    assert booking.get("/v1/stores/s1", headers=other).status_code == 404
    assert hold(booking, local_day("Asia/Shanghai"), "14:00", headers=other).status_code == 404
    marketing = key(Role.marketing)
    assert hold(booking, local_day("Asia/Shanghai"), "14:00", headers=marketing).status_code == 403
    assert booking.put("/v1/stores/s2", headers=key(Role.store_staff), json={}).status_code == 403
    assert booking.post(f"/v1/appointments/{held['appointment_id']}/check-in",
                        headers=key(Role.ingest)).status_code == 403


def test_waitlist_offers_hold_the_slot_against_other_bookings(booking):
    setup_store(booking)
    day = local_day("Asia/Shanghai")
    entry = ok(booking.post("/v1/waitlist", headers=DEMO, json={
        "store_id": "s1", "service_id": "full-groom", "day": day.isoformat(), "window_start": "10:00",
        "window_end": "11:15", "customer": customer("+8613900000041")}), 201)
    assert entry["status"] == "offered"  # the slot was free: offered at once
    assert hold(booking, day, "10:00").status_code == 409
    ok(booking.delete(f"/v1/waitlist/{entry['waitlist_id']}", headers=DEMO))
    assert hold(booking, day, "10:00").status_code == 201


def test_any_staff_means_someone_who_works_then_not_merely_someone_without_bookings(booking):
    setup_store(booking, staff=("g1", "g2"), hours=("09:00", "18:00"), breaks=())
    ok(booking.put("/v1/staff/g1", headers=DEMO, json={  # mornings only; g1 sorts first and is idle
        "name": "g1", "skills": ["grooming"],
        "schedule": [{"store_id": "s1", "weekday": d, "start": "09:00", "end": "12:00"} for d in WEEK]}))
    day = local_day("Asia/Shanghai")
    afternoon = ok(hold(booking, day, "14:00", staff_id=None), 201)
    assert afternoon["staff_id"] == "g2"
    morning = ok(hold(booking, day, "09:00", staff_id=None, who=customer("+8613912340999")), 201)
    assert morning["staff_id"] == "g1"
