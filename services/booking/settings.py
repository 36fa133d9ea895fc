from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class BookingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore", populate_by_name=True)

    service_name: str = "booking"
