"""Loyalty's Kafka consumers: thin wiring of topics to handlers."""
from __future__ import annotations

from functools import partial

from services.loyalty import handlers
from services.loyalty.settings import LoyaltySettings
from shared.db import Database
from shared.runtime import ConsumerSpec
from shared.topics import CUSTOMERS_CHANGES, FEEDBACK_CHANGES, TOUCHPOINTS_RESOLVED


def consumer_specs(db: Database, settings: LoyaltySettings) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(CUSTOMERS_CHANGES, "loyalty-customers",
                     partial(handlers.apply_customer_changes, db=db, settings=settings)),
        ConsumerSpec(TOUCHPOINTS_RESOLVED, "loyalty-points", partial(handlers.apply_touchpoints, db=db)),
        ConsumerSpec(FEEDBACK_CHANGES, "loyalty-surveys", partial(handlers.apply_touchpoints, db=db)),
    ]
