"""Booking's Kafka consumers: thin wiring of topics to handlers."""
from __future__ import annotations

from functools import partial

from services.booking import handlers
from services.booking.settings import BookingSettings
from shared.db import Database
from shared.runtime import ConsumerSpec
from shared.topics import CUSTOMERS_CHANGES, TOUCHPOINTS_RESOLVED


def consumer_specs(db: Database, settings: BookingSettings) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(CUSTOMERS_CHANGES, "booking-customers",
                     partial(handlers.apply_customer_changes, db=db, settings=settings)),
        ConsumerSpec(TOUCHPOINTS_RESOLVED, "booking-resolved", partial(handlers.learn_customers, db=db)),
    ]
