"""Settings every service shares; each service subclasses with its own env prefix.

Unprefixed names (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, HUB_*) are the platform's public contract,
read by every service; the rest take the service's prefix (IDENTITY_PORT, INSIGHTS_CLICKHOUSE_URL).
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_PORTS = {"identity": 8101, "booking": 8102, "loyalty": 8103, "feedback": 8104, "insights": 8105}
DEFAULT_AUTH_SECRET = "dev-only-auth-secret-change-me"


class Environment(StrEnum):
    development = "development"
    production = "production"


class ServiceSettings(BaseSettings):
    """Base for the per-service settings classes; subclasses set `env_prefix` and `service_name`."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)
    service_name: str = Field("service", description="Name used in telemetry, topics' producer field and logs.")

    environment: Environment = Field(
        Environment.development,
        validation_alias=AliasChoices("HUB_ENV", "environment"),
        description="production refuses default secrets and private webhook targets.",
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="Postgres DSN; each service keeps its tables in its own schema.",
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="Comma-separated Kafka bootstrap servers.",
    )
    kafka_replication_factor: int = Field(
        1,
        validation_alias=AliasChoices("HUB_KAFKA_REPLICATION_FACTOR", "kafka_replication_factor"),
        description="Replicas of each topic the services create (3 on a production cluster).",
    )
    topic_prefix: str = Field(
        "",
        validation_alias=AliasChoices("HUB_TOPIC_PREFIX", "topic_prefix"),
        description="Prefix for every topic name; tests use it to isolate runs on one broker.",
    )
    auth_secret: SecretStr = Field(
        SecretStr(DEFAULT_AUTH_SECRET),
        validation_alias=AliasChoices("HUB_AUTH_SECRET", "auth_secret"),
        description="Signs tenant API keys; every service verifies keys with it.",
    )
    demo_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("HUB_DEMO_API_KEY", "demo_api_key"),
        description="A literal key accepted for the demo tenant (embedded mode prints it).",
    )
    demo_tenant_id: str = Field(
        "demo",
        validation_alias=AliasChoices("HUB_DEMO_TENANT", "demo_tenant_id"),
        description="Tenant the demo key belongs to.",
    )
    host: str = Field("127.0.0.1", description="Interface the HTTP server binds.")
    port: int = Field(0, description="HTTP port; defaults per service (identity 8101 … insights 8105).")
    run_workers: bool = Field(
        True, description="Run this service's outbox relay and consumers inside the API process."
    )
    outbox_replay_since: datetime | None = Field(
        None,
        validation_alias=AliasChoices("HUB_OUTBOX_REPLAY_SINCE", "outbox_replay_since"),
        description="Re-publish outbox rows published since this instant (set by the launcher after an "
                    "unclean stop of the in-memory broker; consumers are idempotent).",
    )
    consumer_session_timeout_ms: int = Field(
        10_000, description="Kafka group session timeout; short so rebalances after a crash are quick."
    )

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self):
        if self.environment == Environment.production:
            if self.auth_secret.get_secret_value() == DEFAULT_AUTH_SECRET:
                raise ValueError("HUB_AUTH_SECRET must be set in production (the default is public)")
            if self.demo_api_key and self.demo_api_key.get_secret_value():
                raise ValueError("HUB_DEMO_API_KEY is for the embedded demo; unset it in production")
        if not self.port:
            self.port = SERVICE_PORTS.get(self.service_name, 8100)
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
