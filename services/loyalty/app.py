"""Loyalty's composition root: program, members, redemptions, adjustments and liability routes; the
consumers that earn and reverse points and follow identity; the clock that expires points and holds
and reviews tiers."""
from __future__ import annotations

from pathlib import Path

from services.loyalty import api
from services.loyalty.clock import loyalty_clock
from services.loyalty.consumers import consumer_specs
from services.loyalty.settings import LoyaltySettings
from shared.runtime import service_app


def create_app(settings: LoyaltySettings | None = None):
    settings = settings or LoyaltySettings()
    return service_app(
        settings=settings, title="loyalty",
        description="Membership tiers (silver, gold, diamond, VIP) on points earned, and the exact points ledger.",
        routers=list(api.ROUTERS),
        consumers=lambda db: consumer_specs(db, settings),
        workers=lambda db: [loyalty_clock(db, settings.clock_interval_s)],
        migrations_dir=Path(__file__).parent / "migrations",
    )
