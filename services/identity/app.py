"""Identity's composition root: the one place settings, pools, producer, workers and app are built."""
from __future__ import annotations

from pathlib import Path

from services.identity import api
from services.identity.consumers import consumer_specs
from services.identity.settings import IdentitySettings
from shared.runtime import service_app


def create_app(settings: IdentitySettings | None = None):
    settings = settings or IdentitySettings()
    return service_app(
        settings=settings, title="identity",
        description="Ingestion, identity resolution and the customer profile.",
        routers=[api.touchpoints, api.customers],
        consumers=lambda db: consumer_specs(db, settings),
        migrations_dir=Path(__file__).parent / "migrations",
    )
