from datetime import timedelta

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, ServiceSettings

DEFAULT_PII_KEY = "dev-only-pii-master-key-change-me"


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IDENTITY_", extra="ignore", populate_by_name=True)

    service_name: str = "identity"
    default_region: str = Field("CN", description="Region for phone numbers written without a country code.")
    max_batch: int = Field(1000, description="Most events accepted in one POST /v1/touchpoints.")
    max_future_seconds: int = Field(86_400, description="How far in the future occurred_at may lie.")
    # 2000 over 500: a backlog drained about 13 % faster end to end (fewer commits and round trips per
    # touchpoint); a split or merge request may then wait up to one batch (about 2 s under a backlog).
    resolve_batch: int = Field(2000, description="Most touchpoints resolved in one database transaction.")
    pii_master_key: SecretStr = Field(
        SecretStr(DEFAULT_PII_KEY),
        description="Wraps the per-customer data keys and keys the identifier hashes. Keep it outside the "
                    "database backups; changing it makes stored personal data unreadable.")
    match_batch: int = Field(200, description="Profiles the match worker scores per transaction.")
    match_block_limit: int = Field(
        200, description="A blocking key shared by more profiles than this is too common to find candidates with.")
    match_candidates: int = Field(
        30, ge=1, description="Candidates scored per queued profile at most: those sharing its rarest blocking keys.")
    erasure_services: tuple[str, ...] = Field(
        ("identity", "booking", "loyalty", "feedback", "insights"),
        description="Services that must confirm an erasure before it counts as complete.")

    webhook_retry_delays_s: tuple[float, ...] = Field(
        (5, 20, 80, 320, 1280, 5120, 20480, 28800, 28800, 28800),
        description="Wait before each retry of a failed webhook delivery; after the last one it is a dead letter. "
                    "The default spans about 31 hours (at least 28 with jitter).")
    webhook_jitter: float = Field(0.1, ge=0, lt=1, description="Each wait is varied by up to this fraction.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="A receiver slower than this counts as failed.")
    webhook_concurrency: int = Field(64, ge=1, description="Requests in flight per subscription at most.")
    webhook_secret_grace_hours: float = Field(24, ge=0, description="How long a rotated-out secret still signs.")
    webhook_retention_days: float = Field(14, gt=0, description="How long finished deliveries stay in the log "
                                                                "(and can be replayed); dead letters stay until replayed.")
    webhook_dispatcher: bool = Field(True, description="Send webhooks from this process (replicas share the "
                                                       "subscriptions; off for a process that only serves the API).")
    webhook_allow_private_urls: bool | None = Field(
        None, description="Deliver to loopback and private addresses; default: everywhere but production.")

    @property
    def webhook_private_urls_allowed(self) -> bool:
        if self.webhook_allow_private_urls is not None:
            return self.webhook_allow_private_urls
        return self.environment != Environment.production

    @property
    def webhook_secret_grace(self) -> timedelta:
        return timedelta(hours=self.webhook_secret_grace_hours)

    @model_validator(mode="after")
    def _refuse_default_pii_key_in_production(self):
        if self.environment == Environment.production and self.pii_master_key.get_secret_value() == DEFAULT_PII_KEY:
            raise ValueError("IDENTITY_PII_MASTER_KEY must be set in production (the default is public)")
        return self
