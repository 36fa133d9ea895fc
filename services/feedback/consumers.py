"""Feedback's Kafka consumers: thin wiring of topics to handlers."""
from __future__ import annotations

from functools import partial

from services.feedback import handlers
from services.feedback.settings import FeedbackSettings
from shared.db import Database
from shared.runtime import ConsumerSpec
from shared.topics import CUSTOMERS_CHANGES, TOUCHPOINTS_RESOLVED


def consumer_specs(db: Database, settings: FeedbackSettings) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(CUSTOMERS_CHANGES, "feedback-customers",
                     partial(handlers.apply_customer_changes, db=db, settings=settings)),
        ConsumerSpec(TOUCHPOINTS_RESOLVED, "feedback-visits", partial(handlers.apply_touchpoints, db=db)),
    ]
