from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class BookingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKING_", extra="ignore", populate_by_name=True)

    service_name: str = "booking"
    clock_interval_s: float = Field(1.0, gt=0, description="How often the booking clock looks for due holds, "
                                                           "waitlist offers, reminders and visit-due notices.")
