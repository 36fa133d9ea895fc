"""Feedback's events go through the outbox to `feedback.changes`, keyed by customer (or response) id."""
from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from shared.bus.outbox import enqueue
from shared.events.feedback import FeedbackEvent
from shared.topics import FEEDBACK_CHANGES

SCHEMA = "feedback"


def envelope(tenant_id: str, customer_id: UUID | None, now: datetime) -> dict:
    return {"event_id": uuid.uuid4(), "occurred_at": now, "recorded_at": now, "tenant_id": tenant_id,
            "source": SCHEMA, "customer_id": customer_id}


def announce(cur, key: UUID, event: FeedbackEvent) -> None:
    enqueue(cur, SCHEMA, [(FEEDBACK_CHANGES, str(key), event)])
