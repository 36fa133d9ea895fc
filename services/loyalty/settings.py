from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class LoyaltySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_", extra="ignore", populate_by_name=True)

    service_name: str = "loyalty"
    clock_interval_s: float = 5.0  # how often points, holds and tier reviews are checked when idle
