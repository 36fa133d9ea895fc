"""Loyalty's composition root. The foundation gives it its schema, outbox and relay, health and
readiness; its domain arrives with its own issue."""
from __future__ import annotations

from pathlib import Path

from services.loyalty.consumers import consumer_specs
from services.loyalty.settings import LoyaltySettings
from shared.runtime import service_app


def create_app(settings: LoyaltySettings | None = None):
    settings = settings or LoyaltySettings()
    return service_app(
        settings=settings, title="loyalty",
        description="Membership tiers (silver, gold, diamond, VIP) and the points ledger.",
        consumers=lambda db: consumer_specs(db, settings),
        migrations_dir=Path(__file__).parent / "migrations",
    )
