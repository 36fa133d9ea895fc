"""Feedback's composition root. The foundation gives it its schema, outbox and relay, health and
readiness; its domain arrives with its own issue."""
from __future__ import annotations

from pathlib import Path

from services.feedback.consumers import consumer_specs
from services.feedback.settings import FeedbackSettings
from shared.runtime import service_app


def create_app(settings: FeedbackSettings | None = None):
    settings = settings or FeedbackSettings()
    return service_app(
        settings=settings, title="feedback",
        description="Post-service surveys (NPS, CSAT) and closed-loop complaint cases.",
        consumers=lambda db: consumer_specs(db, settings),
        migrations_dir=Path(__file__).parent / "migrations",
    )
