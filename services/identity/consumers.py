"""Identity's Kafka consumers: thin wiring of topics to handlers."""
from __future__ import annotations

from functools import partial

from services.identity import handlers
from services.identity.settings import IdentitySettings
from shared.db import Database
from shared.runtime import ConsumerSpec
from shared.topics import TOUCHPOINTS_RAW


def consumer_specs(db: Database, settings: IdentitySettings) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(TOUCHPOINTS_RAW, "identity-resolver",
                     partial(handlers.resolve_touchpoints, db=db, settings=settings),
                     max_records=settings.resolve_batch),
    ]
