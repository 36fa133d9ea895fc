"""Booking's touchpoints are resolved by identity, and booking follows identity's view back: it learns whose
appointment each is, moves appointments on merges and splits, and erases on customer.erased."""
from __future__ import annotations

import uuid

import orjson
from fastapi.testclient import TestClient

from services.booking import handlers
from services.booking.app import create_app as create_booking
from services.booking.settings import BookingSettings
from services.identity.app import create_app as create_identity
from services.identity.settings import IdentitySettings
from shared.bus.consumer import Delivery
from shared.erasure import NIL_CUSTOMER_ID
from shared.events import CustomerErased, CustomerMerged, CustomerSplit, from_document, utcnow
from shared.events.customers import CustomerErasedPayload, CustomerMergedPayload, CustomerSplitPayload
from tests.integration.booking_setup import DEMO, customer, hold, local_day, ok, setup_store
from tests.integration.conftest import settings_for
from tests.integration.helpers import wait_until
from tests.integration.test_booking import booking, outbox  # noqa: F401  (fixture)


def appointment_row(client, appointment_id) -> dict:
    with client.app.state.db.transaction() as cur:
        cur.execute("select customer_id, status, identifiers, subject from booking.appointments "
                    "where appointment_id = %s", (appointment_id,))
        return dict(zip(("customer_id", "status", "identifiers", "subject"), cur.fetchone()))


def deliver(client, *events) -> None:
    handlers.apply_customer_changes([Delivery(e, "customers.changes", 0, i, {}) for i, e in enumerate(events)],
                                    db=client.app.state.db, settings=client.app.state.settings)


def envelope(customer_id) -> dict:
    now = utcnow()
    return dict(event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id="demo", source="identity",
                customer_id=customer_id)


def set_customer(client, appointment_id, customer_id) -> None:
    with client.app.state.db.transaction() as cur:
        cur.execute("update booking.appointments set customer_id = %s where appointment_id = %s",
                    (customer_id, appointment_id))
        cur.execute("update booking.appointment_events set customer_id = %s where appointment_id = %s",
                    (customer_id, appointment_id))


def test_identity_resolves_a_booking_and_booking_learns_whose_it_is(service_env):
    with TestClient(create_identity(settings_for(IdentitySettings, service_env))) as identity, \
            TestClient(create_booking(settings_for(BookingSettings, service_env, clock_interval_s=3600))) as booking:
        setup_store(booking)
        held = ok(hold(booking, local_day("Asia/Shanghai"), "10:00"), 201)
        ok(booking.post(f"/v1/appointments/{held['appointment_id']}/confirm", headers=DEMO))
        learned = wait_until(lambda: appointment_row(booking, held["appointment_id"])["customer_id"], timeout_s=60,
                             message="booking learns the customer id")
        found = ok(identity.get("/v1/customers/lookup", headers=DEMO,
                                params={"type": "phone", "value": "+8613912345678"}))
        assert str(learned) == found["customer_id"]
        assert found["next_booking"]["appointment_id"] == held["appointment_id"]


def test_a_merge_moves_appointments_to_the_survivor_and_a_split_moves_those_whose_events_moved(booking):
    setup_store(booking, staff=("g1", "g2"), tables=2)
    day = local_day("Asia/Shanghai")
    first = ok(hold(booking, day, "10:00"), 201)["appointment_id"]
    second = ok(hold(booking, day, "10:00", staff_id="g2", who=customer("+8613900000077")), 201)["appointment_id"]
    survivor, merged = uuid.uuid4(), uuid.uuid4()
    set_customer(booking, first, survivor)
    set_customer(booking, second, merged)
    deliver(booking, CustomerMerged(**envelope(survivor), payload=CustomerMergedPayload(
        merged_customer_ids=(merged,), rule="shared_strong_identifier")))
    assert appointment_row(booking, second)["customer_id"] == survivor

    moved_events = [e["event_id"] for e in outbox(booking) if e["payload"]["appointment_id"] == second]
    new_customer = uuid.uuid4()
    deliver(booking, CustomerSplit(**envelope(survivor), payload=CustomerSplitPayload(
        new_customer_id=new_customer, moved_identifier_types=("phone",), moved_event_ids=tuple(moved_events),
        decision_id=uuid.uuid4())))
    assert appointment_row(booking, second)["customer_id"] == new_customer
    assert appointment_row(booking, first)["customer_id"] == survivor


def test_an_erased_customer_loses_their_data_and_future_bookings_and_booking_confirms(booking):
    setup_store(booking)
    day = local_day("Asia/Shanghai")
    held = ok(hold(booking, day, "10:00"), 201)["appointment_id"]
    ok(booking.post(f"/v1/appointments/{held}/confirm", headers=DEMO))
    entry = ok(booking.post("/v1/waitlist", headers=DEMO, json={
        "store_id": "s1", "service_id": "full-groom", "day": day.isoformat(), "window_start": "10:00",
        "window_end": "11:15", "customer": customer()}), 201)
    late = ok(hold(booking, day, "15:00", who=customer("+8613900000088")), 201)["appointment_id"]
    gone = uuid.uuid4()
    set_customer(booking, held, gone)
    with booking.app.state.db.transaction() as cur:
        cur.execute("update booking.waitlist set customer_id = %s where waitlist_id = %s", (gone, entry["waitlist_id"]))
    erasure = CustomerErased(**envelope(gone), payload=CustomerErasedPayload(
        erasure_request_id=uuid.uuid4(), customer_ids=(gone,)))
    deliver(booking, erasure)
    deliver(booking, erasure)  # redelivered: erased and confirmed once
    row = appointment_row(booking, held)
    assert row == {"customer_id": NIL_CUSTOMER_ID, "status": "cancelled", "identifiers": [], "subject": None}
    assert booking.get(f"/v1/waitlist/{entry['waitlist_id']}", headers=DEMO).status_code == 404
    with booking.app.state.db.transaction() as cur:
        cur.execute("select body from booking.outbox where event_type = 'customer.erasure_confirmed'")
        confirmations = [orjson.loads(bytes(r[0])) for r in cur.fetchall()]
    assert [c["payload"]["erasure_request_id"] for c in confirmations] == [str(erasure.payload.erasure_request_id)]

    # A booking touchpoint that identity resolves to the erased customer afterwards leaves nothing behind.
    (late_event,) = [e for e in outbox(booking, "booking.held") if e["payload"]["appointment_id"] == late]
    resolved = from_document({**late_event, "customer_id": str(gone)})
    handlers.learn_customers([Delivery(resolved, "touchpoints.resolved", 0, 0, {})], db=booking.app.state.db)
    assert appointment_row(booking, late)["identifiers"] == []
