"""Booking's composition root: catalogue, availability, appointments and waitlist routes; the consumers
that follow identity; the clock that expires holds and sends reminders and visit-due notices."""
from __future__ import annotations

from pathlib import Path

from services.booking import api_appointments, api_catalog
from services.booking.clock import booking_clock
from services.booking.consumers import consumer_specs
from services.booking.settings import BookingSettings
from shared.runtime import service_app


def create_app(settings: BookingSettings | None = None):
    settings = settings or BookingSettings()
    return service_app(
        settings=settings, title="booking",
        description="Stores, staff, resources, services, availability, appointments, waitlist and reminders.",
        routers=[*api_catalog.ROUTERS, *api_appointments.ROUTERS],
        consumers=lambda db: consumer_specs(db, settings),
        workers=lambda db: [booking_clock(db, settings.clock_interval_s)],
        migrations_dir=Path(__file__).parent / "migrations",
    )
