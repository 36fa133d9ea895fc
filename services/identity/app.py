"""Identity's composition root: the one place settings, the PII vault, pools, workers and app are built."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.identity import api, api_changes, catalog
from services.identity.consumers import consumer_specs
from services.identity.pii import Vault
from services.identity.settings import IdentitySettings
from services.identity.suggestions import MatchWorker
from services.identity.webhooks import api as webhook_api
from services.identity.webhooks.dispatcher import Dispatcher, DispatchPolicy
from shared.runtime import service_app


def create_app(settings: IdentitySettings | None = None):
    settings = settings or IdentitySettings()
    vault = Vault(settings.pii_master_key.get_secret_value())
    app = service_app(
        settings=settings, title="identity",
        description="Ingestion, identity resolution, the customer 360, merge review, consent and erasure.",
        routers=[api.touchpoints, api.customers, api_changes.changes, api_changes.review, api_changes.erasures,
                 api_changes.policy_routes, catalog.catalog, webhook_api.routes],
        consumers=lambda db: consumer_specs(db, settings, vault),
        workers=lambda db: [MatchWorker(db, vault, settings)]
        + ([Dispatcher(db, vault, dispatch_policy(settings))] if settings.webhook_dispatcher else []),
        migrations_dir=Path(__file__).parent / "migrations",
    )
    app.state.vault = vault
    app.state.policy_cache = {}  # tenant -> (expires, TenantPolicy), see api.tenant_policy
    return app


def dispatch_policy(settings: IdentitySettings) -> DispatchPolicy:
    return DispatchPolicy(retry_delays_s=settings.webhook_retry_delays_s, jitter=settings.webhook_jitter,
                          timeout_s=settings.webhook_timeout_s, concurrency=settings.webhook_concurrency,
                          secret_grace=settings.webhook_secret_grace,
                          retention=timedelta(days=settings.webhook_retention_days))
