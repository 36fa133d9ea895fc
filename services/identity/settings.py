from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IDENTITY_", extra="ignore", populate_by_name=True)

    service_name: str = "identity"
    default_region: str = Field("CN", description="Region for phone numbers written without a country code.")
    max_batch: int = Field(1000, description="Most events accepted in one POST /v1/touchpoints.")
    max_future_seconds: int = Field(86_400, description="How far in the future occurred_at may lie.")
    resolve_batch: int = Field(500, description="Most touchpoints resolved in one database transaction.")
