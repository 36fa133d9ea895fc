from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class InsightsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INSIGHTS_", extra="ignore", populate_by_name=True)

    service_name: str = "insights"
    clickhouse_url: str | None = Field(
        None, validation_alias=AliasChoices("CLICKHOUSE_URL", "INSIGHTS_CLICKHOUSE_URL", "clickhouse_url"),
        description="http(s)://user:password@host:8123 of a ClickHouse server; unset: the embedded engine.",
    )
    clickhouse_path: str = Field(
        ".hub/clickhouse", description="Data directory of the embedded ClickHouse engine (one process owns it)."
    )
    clickhouse_database: str = Field("hub", description="ClickHouse database holding the insights tables.")
    data_dir: str = Field(".hub/faust", description="Working directory of the faust worker.")
    flush_max_rows: int = Field(5000, description="Most rows in one ClickHouse insert.")
    flush_interval_s: float = Field(1.0, description="Longest a row waits before its batch is inserted.")
    run_processors: bool = Field(True, description="Run the faust worker inside the API process "
                                                   "(required with the embedded engine).")
