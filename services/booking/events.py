"""Booking's touchpoints, built from appointment and waitlist rows and put in the outbox in the
transaction that made the change. Each is remembered with its appointment, so a split in identity that
moves the event can move the appointment too."""
from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from services.booking.localtime import zone
from shared.bus.outbox import enqueue
from shared.events.base import Identifier, Touchpoint, raw_partition_key
from shared.events.booking import BOOKING_TOUCHPOINT_TYPES, BookedSubject
from shared.topics import TOUCHPOINTS_RAW

SCHEMA = "booking"
TYPES: dict[str, type[Touchpoint]] = {cls.type_name(): cls for cls in BOOKING_TOUCHPOINT_TYPES}


def appointment_fields(row: dict) -> dict:
    return {
        "appointment_id": row["appointment_id"], "service_id": row["service_id"],
        "service_category": row["service_category"], "staff_id": row["staff_id"], "resource_id": row["resource_id"],
        "starts_at": row["starts_at"], "ends_at": row["ends_at"],
        "local_start": row["starts_at"].astimezone(zone(row["timezone"])).isoformat(),
        "subject": BookedSubject(**row["subject"]) if row["subject"] else None,
        "price_minor": row["price_minor"], "currency": row["currency"],
    }


def touchpoint(row: dict, type_name: str, now: datetime, payload: dict) -> Touchpoint:
    cls = TYPES[type_name]
    return cls(
        event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=row["tenant_id"], source=SCHEMA,
        store_id=row["store_id"], channel=row["channel"],
        identifiers=tuple(Identifier(**i) for i in row["identifiers"]),
        payload=cls.model_fields["payload"].annotation(**payload),
    )


def publish(cur, event: Touchpoint, appointment_id: UUID | None = None, waitlist_id: UUID | None = None) -> None:
    enqueue(cur, SCHEMA, [(TOUCHPOINTS_RAW, raw_partition_key(event), event)])
    cur.execute("insert into appointment_events (event_id, appointment_id, waitlist_id) values (%s, %s, %s)",
                (event.event_id, appointment_id, waitlist_id))


def emit(cur, row: dict, type_name: str, now: datetime, **extra) -> Touchpoint:
    """Announce a change of the appointment `row` (as it is after the change)."""
    if not row["identifiers"]:
        return None  # an erased customer's appointment: nothing may identify them again
    fields = appointment_fields(row)
    if type_name == "booking.cancelled":
        fields = {k: fields[k] for k in ("appointment_id", "service_id", "service_category", "staff_id",
                                         "starts_at", "local_start", "subject")}
        fields["appointment_id"] = str(fields["appointment_id"])
    event = touchpoint(row, type_name, now, {**fields, **extra})
    publish(cur, event, appointment_id=row["appointment_id"])
    return event


def offer_fields(entry: dict, offer: dict, appointment: dict) -> dict:
    return {**waitlist_fields(entry), "offer_id": offer["offer_id"], "appointment_id": appointment["appointment_id"],
            "starts_at": appointment["starts_at"],
            "local_start": appointment["starts_at"].astimezone(zone(appointment["timezone"])).isoformat(),
            "offered_staff_id": appointment["staff_id"], "expires_at": offer["expires_at"]}


def waitlist_fields(entry: dict) -> dict:
    return {"waitlist_id": entry["waitlist_id"], "service_id": entry["service_id"], "staff_id": entry["staff_id"],
            "day": entry["day"], "window_start": entry["window_start"].strftime("%H:%M"),
            "window_end": entry["window_end"].strftime("%H:%M")}


def emit_waitlist(cur, entry: dict, type_name: str, now: datetime, payload: dict,
                  appointment_id: UUID | None = None) -> None:
    if entry["identifiers"]:
        publish(cur, touchpoint(entry, type_name, now, payload), appointment_id, entry["waitlist_id"])


def lapse_offer(cur, appointment: dict, reason: str, now: datetime) -> None:
    """The offer held by `appointment` ran out or was declined: its waitlist entry leaves the line."""
    cur.execute("update waitlist_offers set status = %s where offer_id = %s and status = 'offered' "
                "returning offer_id, waitlist_id, expires_at", (reason, appointment["waitlist_offer_id"]))
    found = cur.fetchone()
    if found is None:
        return
    offer = {"offer_id": found[0], "expires_at": found[2]}
    cur.execute("update waitlist set status = 'lapsed' where waitlist_id = %s "
                "returning waitlist_id, tenant_id, store_id, service_id, staff_id, day, window_start, window_end, "
                "channel, identifiers", (found[1],))
    entry = dict(zip(("waitlist_id", "tenant_id", "store_id", "service_id", "staff_id", "day", "window_start",
                      "window_end", "channel", "identifiers"), cur.fetchone()))
    emit_waitlist(cur, entry, "waitlist.offer_lapsed", now, {**offer_fields(entry, offer, appointment),
                                                             "reason": reason}, appointment["appointment_id"])
