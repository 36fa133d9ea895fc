"""Booking's routes for availability, appointments, walk-ins and the waitlist. Times go in as either an
instant with its offset (`starts_at`, what availability returns) or the store's wall-clock time
(`local_start`, refused when the clocks skip or repeat it); they come out as both."""
from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.booking import appointments as appts
from services.booking import catalog, lifecycle, waitlist
from services.booking.api_catalog import SLUG, SlugQuery
from services.booking.appointments import Customer, rule_subject
from services.booking.catalog import ClockInterval, parse_clock
from shared.auth import CallerBooking, CallerStaff
from shared.events.base import Channel, Identifier, Slug, utcnow
from shared.events.booking import BookedSubject
from shared.http import BIGINT_MAX, Day, Instant, Timestamp, answered

availability = APIRouter(prefix="/v1/availability", tags=["availability"])
appointments = APIRouter(prefix="/v1/appointments", tags=["appointments"])
walk_ins = APIRouter(prefix="/v1/walk-ins", tags=["appointments"])
waitlists = APIRouter(prefix="/v1/waitlist", tags=["waitlist"])
offers = APIRouter(prefix="/v1/waitlist-offers", tags=["waitlist"])
REFUSALS = {404: {"description": "Unknown store, service, staff or appointment"},
            409: {"description": "Taken or in the wrong state; `next_free_slots` lists alternatives"},
            422: {"description": "Against the rules (hours, skill, notice, a time the clocks skip)"}}


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    identifiers: list[Identifier] = Field(min_length=1, max_length=10,
                                          description="How identity knows the customer: phone, app user id, …; "
                                                      "a vehicle's plate as a license_plate identifier.")
    customer_id: UUID | None = Field(None, description="The hub's id, when the caller looked the customer up.")
    subject: BookedSubject | None = Field(None, description="The pet or vehicle; its size, coat or class sets the "
                                                            "duration.")

    def domain(self) -> Customer:
        return Customer(tuple(self.identifiers), self.customer_id, self.subject)


class TimeChoice(BaseModel):
    starts_at: Timestamp | None = Field(None, description="An instant with offset, e.g. a slot's starts_at.")
    local_start: Timestamp | None = Field(None, description="Store-local wall-clock time without offset.")


class HoldIn(TimeChoice):
    model_config = ConfigDict(extra="forbid")
    store_id: Slug
    service_id: Slug
    staff_id: Slug | None = Field(None, description="A named staff member; otherwise any qualified one free.")
    customer: CustomerIn
    channel: Channel = Channel.app
    notes: str | None = Field(None, max_length=1000)


class RescheduleIn(TimeChoice):
    model_config = ConfigDict(extra="forbid")
    staff_id: Slug | None = None


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=200)
    waive_fee: bool = Field(False, description="Staff may waive the late-cancellation fee.")


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_minor: int = Field(ge=0, le=BIGINT_MAX, description="What the customer paid, in minor units.")
    services_performed: list[Slug] | None = Field(None, min_length=1, max_length=20)
    performed_by: Slug | None = Field(None, description="Who did the work, when not the booked staff member.")


class NoShowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    waive_fee: bool = False


class WalkInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store_id: Slug
    service_id: Slug
    staff_id: Slug
    started_at: Instant | None = Field(None, description="When the service began (default: now).")
    customer: CustomerIn
    amount_minor: int = Field(ge=0, le=BIGINT_MAX)
    services_performed: list[Slug] | None = Field(None, min_length=1, max_length=20)
    channel: Channel = Channel.pos


class WaitlistIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store_id: Slug
    service_id: Slug
    staff_id: Slug | None = None
    day: Day = Field(description="The store-local day wanted.")
    window_start: str = Field(description="Earliest local start, HH:MM.")
    window_end: str = Field(description="Latest local end, HH:MM (24:00 for the day's end).")
    customer: CustomerIn
    channel: Channel = Channel.app

    @model_validator(mode="after")
    def _window(self):
        ClockInterval(start=self.window_start, end=self.window_end)
        return self


@availability.get("", responses=REFUSALS, summary="Free slots for a service on a store-local day")
async def get_availability(
    request: Request, caller: CallerBooking,
    store_id: Annotated[str, Query(pattern=SLUG, max_length=64)],
    service_id: Annotated[str, Query(pattern=SLUG, max_length=64)],
    date: Annotated[Day, Query(description="Store-local date.")],
    staff_id: SlugQuery = None,
    size: Annotated[str | None, Query(pattern="^(xs|s|m|l|xl)$")] = None,
    coat: Annotated[str | None, Query(pattern="^(short|medium|long|double|curly|wire)$")] = None,
    vehicle_class: Annotated[str | None, Query(pattern="^(compact|sedan|suv|van|truck|other)$")] = None,
):
    kind = "vehicle" if vehicle_class else "pet"
    subject = rule_subject({"kind": kind, "size": size, "coat": coat, "vehicle_class": vehicle_class}
                           if size or coat or vehicle_class else None)
    return await answered(request, appts.availability, caller.tenant_id, store_id, service_id, date, utcnow(),
                          staff_id, subject)


@appointments.post("", status_code=201, responses=REFUSALS,
                   summary="Hold a slot; it expires unless confirmed within the store's hold minutes")
async def hold(body: HoldIn, request: Request, caller: CallerBooking):
    def run(cur):
        store = catalog.store_rules(cur, caller.tenant_id, body.store_id)
        start = appts.resolve_start(body.starts_at, body.local_start, store)
        return lifecycle.hold(cur, caller.tenant_id, body.store_id, body.service_id, start, body.customer.domain(),
                              body.channel.value, utcnow(), body.staff_id, body.notes, store)

    return await answered(request, run)


@appointments.get("/{appointment_id}", responses=REFUSALS, summary="One appointment with its reminders")
async def get_appointment(appointment_id: UUID, request: Request, caller: CallerBooking):
    return await answered(request, appts.details, caller.tenant_id, appointment_id)


@appointments.get("", summary="A store's appointments on a local day (the day sheet)",
                  responses={404: {"description": "Unknown store"}})
async def day_sheet(request: Request, caller: CallerBooking,
                    store_id: Annotated[str, Query(pattern=SLUG, max_length=64)],
                    date: Annotated[Day, Query(description="Store-local date.")],
                    staff_id: SlugQuery = None):
    return await answered(request, appts.day_sheet, caller.tenant_id, store_id, date, staff_id)


@appointments.post("/{appointment_id}/confirm", responses=REFUSALS)
async def confirm(appointment_id: UUID, request: Request, caller: CallerBooking):
    return await answered(request, lifecycle.confirm, caller.tenant_id, appointment_id, utcnow())


@appointments.post("/{appointment_id}/reschedule", responses=REFUSALS)
async def reschedule(appointment_id: UUID, body: RescheduleIn, request: Request, caller: CallerBooking):
    def run(cur):
        row = appts.get(cur, caller.tenant_id, appointment_id)
        store = catalog.store_rules(cur, caller.tenant_id, row["store_id"])
        start = appts.resolve_start(body.starts_at, body.local_start, store)
        return lifecycle.reschedule(cur, caller.tenant_id, appointment_id, start, utcnow(), body.staff_id, store)

    return await answered(request, run)


@appointments.post("/{appointment_id}/cancel", responses=REFUSALS,
                   summary="Cancel; inside the store's window it is late and a fee applies unless waived")
async def cancel(appointment_id: UUID, body: CancelIn, request: Request, caller: CallerBooking):
    return await answered(request, lifecycle.cancel, caller.tenant_id, appointment_id, utcnow(), body.reason,
                          body.waive_fee)


@appointments.post("/{appointment_id}/check-in", responses=REFUSALS)
async def check_in(appointment_id: UUID, request: Request, caller: CallerStaff):
    return await answered(request, lifecycle.check_in, caller.tenant_id, appointment_id, utcnow())


@appointments.post("/{appointment_id}/complete", responses=REFUSALS)
async def complete(appointment_id: UUID, body: CompleteIn, request: Request, caller: CallerStaff):
    return await answered(request, lifecycle.complete, caller.tenant_id, appointment_id, utcnow(),
                          body.amount_minor, body.services_performed, body.performed_by)


@appointments.post("/{appointment_id}/no-show", responses=REFUSALS)
async def no_show(appointment_id: UUID, body: NoShowIn, request: Request, caller: CallerStaff):
    return await answered(request, lifecycle.no_show, caller.tenant_id, appointment_id, utcnow(),
                          body.waive_fee)


@walk_ins.post("", status_code=201, responses=REFUSALS, summary="Record a walk-in served at the POS (completed)")
async def walk_in(body: WalkInIn, request: Request, caller: CallerBooking):
    now = utcnow()
    return await answered(request, lifecycle.walk_in, caller.tenant_id, body.store_id, body.service_id,
                          body.staff_id, body.started_at or now, body.customer.domain(), body.channel.value,
                          now, body.amount_minor, body.services_performed)


@waitlists.post("", status_code=201, responses=REFUSALS,
                summary="Join the waitlist for a day and time window; a freed slot is offered in line order")
async def join(body: WaitlistIn, request: Request, caller: CallerBooking):
    window = (parse_clock(body.window_start), parse_clock(body.window_end))
    return await answered(request, waitlist.join, caller.tenant_id, body.store_id, body.service_id, body.day,
                          window, body.customer.domain(), body.channel.value, utcnow(), body.staff_id)


@waitlists.get("/{waitlist_id}", responses=REFUSALS, summary="A waitlist entry with its offers")
async def get_entry(waitlist_id: UUID, request: Request, caller: CallerBooking):
    return await answered(request, waitlist.get, caller.tenant_id, waitlist_id)


@waitlists.delete("/{waitlist_id}", responses=REFUSALS, summary="Leave the waitlist (an open offer is declined)")
async def leave(waitlist_id: UUID, request: Request, caller: CallerBooking):
    return await answered(request, waitlist.leave, caller.tenant_id, waitlist_id, utcnow())


@offers.post("/{offer_id}/claim", responses=REFUSALS, summary="Take the offered slot: a confirmed appointment")
async def claim(offer_id: UUID, request: Request, caller: CallerBooking):
    return await answered(request, waitlist.claim, caller.tenant_id, offer_id, utcnow())


@offers.post("/{offer_id}/decline", responses=REFUSALS, summary="Decline; the slot goes to the next in line")
async def decline(offer_id: UUID, request: Request, caller: CallerBooking):
    return await answered(request, waitlist.decline, caller.tenant_id, offer_id, utcnow())


ROUTERS = (availability, appointments, walk_ins, waitlists, offers)
