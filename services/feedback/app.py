"""Feedback's composition root: survey template, survey links, kiosk answers, cases, store hours and NPS
routes; the consumers that invite after visits, open complaint cases and follow identity; the clock that
sends invitations and watches case deadlines."""
from __future__ import annotations

from pathlib import Path

from services.feedback import api
from services.feedback.clock import feedback_clock
from services.feedback.consumers import consumer_specs
from services.feedback.settings import FeedbackSettings
from shared.runtime import service_app


def create_app(settings: FeedbackSettings | None = None):
    settings = settings or FeedbackSettings()
    return service_app(
        settings=settings, title="feedback",
        description="Post-service surveys (NPS, CSAT, ratings per service step) and closed-loop complaint cases.",
        routers=list(api.ROUTERS),
        consumers=lambda db: consumer_specs(db, settings),
        workers=lambda db: [feedback_clock(db, settings.clock_interval_s)],
        migrations_dir=Path(__file__).parent / "migrations",
    )
