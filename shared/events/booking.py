"""Touchpoints the booking service publishes: every step of an appointment's life, the waitlist, and
the clock's reminders and visit-due notices. Each carries the customer's identifiers (in the envelope)
and the pet or vehicle, so identity resolves it like any other touchpoint."""
from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from shared.events.base import Currency, MinorUnits, Payload, Slug, Touchpoint, UtcDatetime

ShortText = Annotated[str, Field(max_length=200)]


class BookedSubject(Payload):
    """The pet or vehicle the appointment is for (a vehicle's plate travels as an identifier)."""

    kind: Literal["pet", "vehicle"]
    name: ShortText | None = None
    species: Literal["dog", "cat", "rabbit", "bird", "other"] | None = None
    size: Literal["xs", "s", "m", "l", "xl"] | None = None
    coat: Literal["short", "medium", "long", "double", "curly", "wire"] | None = None
    vehicle_class: Literal["compact", "sedan", "suv", "van", "truck", "other"] | None = None


class AppointmentPayload(Payload):
    appointment_id: UUID
    service_id: Slug
    service_category: Slug | None = None
    staff_id: Slug | None = None
    resource_id: Slug | None = None
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    local_start: str = Field(description="Store-local start with its UTC offset, e.g. 2026-03-29T10:00:00+01:00.")
    subject: BookedSubject | None = None
    price_minor: MinorUnits = 0
    currency: Currency = "CNY"


class HeldPayload(AppointmentPayload):
    hold_expires_at: UtcDatetime


class AppointmentHeld(Touchpoint):
    """A slot was held for the customer while they confirm (consideration)."""

    type: Literal["booking.held"] = "booking.held"
    schema_version: Literal[1] = 1
    payload: HeldPayload


class AppointmentConfirmed(Touchpoint):
    type: Literal["booking.confirmed"] = "booking.confirmed"
    schema_version: Literal[1] = 1
    payload: AppointmentPayload


class AppointmentHoldExpired(Touchpoint):
    """A hold lapsed without confirmation; the slot is free again."""

    type: Literal["booking.hold_expired"] = "booking.hold_expired"
    schema_version: Literal[1] = 1
    payload: AppointmentPayload


class RescheduledPayload(AppointmentPayload):
    previous_starts_at: UtcDatetime
    previous_staff_id: Slug | None = None


class AppointmentRescheduled(Touchpoint):
    type: Literal["booking.rescheduled"] = "booking.rescheduled"
    schema_version: Literal[1] = 1
    payload: RescheduledPayload


class AppointmentCheckedIn(Touchpoint):
    """Reception: the pet or vehicle was handed over at the counter."""

    type: Literal["booking.checked_in"] = "booking.checked_in"
    schema_version: Literal[1] = 1
    payload: AppointmentPayload


class CompletedPayload(AppointmentPayload):
    amount_minor: MinorUnits
    services_performed: Annotated[tuple[Slug, ...], Field(min_length=1, max_length=20)]
    performed_by: Slug
    walk_in: bool = False
    next_visit_due_on: date | None = Field(None, description="From the service's rebook interval, store-local.")


class AppointmentCompleted(Touchpoint):
    type: Literal["booking.completed"] = "booking.completed"
    schema_version: Literal[1] = 1
    payload: CompletedPayload


class NoShowPayload(AppointmentPayload):
    fee_applies: bool = True


class AppointmentNoShow(Touchpoint):
    type: Literal["booking.no_show"] = "booking.no_show"
    schema_version: Literal[1] = 1
    payload: NoShowPayload


class ReminderDuePayload(AppointmentPayload):
    offset: str = Field(description="ISO 8601 duration before the start: P1D = same local time the day before.")


class AppointmentReminderDue(Touchpoint):
    """Time to remind the customer; the message channel (SMS, WeChat) sends it."""

    type: Literal["booking.reminder_due"] = "booking.reminder_due"
    schema_version: Literal[1] = 1
    payload: ReminderDuePayload


class VisitDuePayload(Payload):
    service_category: Slug
    due_on: date
    last_appointment_id: UUID
    last_service_id: Slug
    last_visit_at: UtcDatetime
    subject: BookedSubject | None = None


class VisitDue(Touchpoint):
    """A pet or vehicle is due its next visit (e.g. a full groom every six weeks) and has none booked."""

    type: Literal["booking.visit_due"] = "booking.visit_due"
    schema_version: Literal[1] = 1
    payload: VisitDuePayload


class WaitlistPayload(Payload):
    waitlist_id: UUID
    service_id: Slug
    staff_id: Slug | None = None
    day: date
    window_start: str
    window_end: str


class WaitlistJoined(Touchpoint):
    type: Literal["waitlist.joined"] = "waitlist.joined"
    schema_version: Literal[1] = 1
    payload: WaitlistPayload


class OfferPayload(WaitlistPayload):
    offer_id: UUID
    appointment_id: UUID
    starts_at: UtcDatetime
    local_start: str
    offered_staff_id: Slug
    expires_at: UtcDatetime


class WaitlistOffered(Touchpoint):
    """A freed slot is held for the first in line until `expires_at`; the channel tells the customer."""

    type: Literal["waitlist.offered"] = "waitlist.offered"
    schema_version: Literal[1] = 1
    payload: OfferPayload


class WaitlistClaimed(Touchpoint):
    type: Literal["waitlist.claimed"] = "waitlist.claimed"
    schema_version: Literal[1] = 1
    payload: OfferPayload


class LapsedOfferPayload(OfferPayload):
    reason: Literal["declined", "expired"]


class WaitlistOfferLapsed(Touchpoint):
    """An offer was declined or ran out; the slot goes to the next in line."""

    type: Literal["waitlist.offer_lapsed"] = "waitlist.offer_lapsed"
    schema_version: Literal[1] = 1
    payload: LapsedOfferPayload


class CancelledPayload(Payload):
    """v2 adds the fee decision and what was cancelled (optional: v1 events did not carry it)."""

    appointment_id: Slug
    reason: ShortText = ""
    late: bool = Field(False, description="Inside the store's cancellation window.")
    fee_applies: bool = Field(False, description="A late-cancellation fee is due (late and not waived).")
    service_id: Slug | None = None
    service_category: Slug | None = None
    staff_id: Slug | None = None
    starts_at: UtcDatetime | None = None
    local_start: str | None = None
    subject: BookedSubject | None = None


class AppointmentCancelled(Touchpoint):
    type: Literal["booking.cancelled"] = "booking.cancelled"
    schema_version: Literal[2] = 2
    payload: CancelledPayload


BOOKING_TOUCHPOINT_TYPES: tuple[type[Touchpoint], ...] = (
    AppointmentHeld, AppointmentConfirmed, AppointmentHoldExpired, AppointmentRescheduled, AppointmentCancelled,
    AppointmentCheckedIn, AppointmentCompleted, AppointmentNoShow, AppointmentReminderDue, VisitDue, WaitlistJoined, WaitlistOffered,
    WaitlistClaimed, WaitlistOfferLapsed,
)
