"""Booking's composition root. The foundation gives it its schema, outbox and relay, health and
readiness; its domain arrives with its own issue."""
from __future__ import annotations

from pathlib import Path

from services.booking.consumers import consumer_specs
from services.booking.settings import BookingSettings
from shared.runtime import service_app


def create_app(settings: BookingSettings | None = None):
    settings = settings or BookingSettings()
    return service_app(
        settings=settings, title="booking",
        description="Stores, staff, resources, services, availability, appointments, waitlist and reminders.",
        consumers=lambda db: consumer_specs(db, settings),
        migrations_dir=Path(__file__).parent / "migrations",
    )
