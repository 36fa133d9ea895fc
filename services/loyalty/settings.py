from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class LoyaltySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_", extra="ignore", populate_by_name=True)

    service_name: str = "loyalty"
