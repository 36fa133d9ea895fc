from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from services.insights.scoring import ScoringConfig
from shared.settings import ServiceSettings
from shared.timezones import IanaZone


class InsightsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INSIGHTS_", extra="ignore", populate_by_name=True,
                                      env_nested_delimiter="__")

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
    rescore_every_s: float = Field(86_400, description="Re-score every customer this often, so risk rises "
                                                       "while nothing happens (the daily tick).")
    zones_refresh_s: float = Field(60, description="How often the processors re-read store zones.")
    default_timezone: IanaZone = Field("Asia/Shanghai", description="Zone of a store with none configured.")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="Lifecycle and churn thresholds "
                                                                              "(INSIGHTS_SCORING__RISK_HIGH=0.6 …).")
