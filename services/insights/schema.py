"""ClickHouse tables as one column list each; the DDL in deploy/clickhouse is rendered from these
(`hub docs` writes it, a snapshot test keeps it in step)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from shared.generated import sync_files


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str, str], ...]  # (name, type, comment)
    engine: str
    order_by: str
    partition_by: str | None = None
    indexes: tuple[str, ...] = ()
    comment: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c[0] for c in self.columns if "DEFAULT" not in c[1] and "MATERIALIZED" not in c[1]]


TOUCHPOINTS = Table(
    name="touchpoints",
    comment="Every resolved touchpoint, once: ReplacingMergeTree collapses redeliveries of an event_id "
            "and keeps the latest attribution when a merge or split re-attributes it.",
    columns=(
        ("event_id", "UUID", "the producer's id; deduplication key"),
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("store_id", "LowCardinality(String)", "empty for online touchpoints"),
        ("customer_id", "UUID", "canonical customer from identity resolution"),
        ("type", "LowCardinality(String)", "event type, e.g. service.performed"),
        ("schema_version", "UInt16", "version the payload was upcast to"),
        ("channel", "LowCardinality(String)", "app, wechat_miniprogram, web, pos, phone, walk_in, social, ads"),
        ("source", "LowCardinality(String)", "producing service or integration"),
        ("occurred_at", "DateTime64(3, 'UTC')", "when it happened (event time)"),
        ("recorded_at", "DateTime64(3, 'UTC')", "when the hub accepted it"),
        ("identifier_types", "Array(LowCardinality(String))", "types only; values stay in identity"),
        ("payload", "String CODEC(ZSTD(3))", "the type's payload as JSON"),
        ("trace_id", "String", "OpenTelemetry trace of this touchpoint"),
        ("attribution_version", "UInt64", "raised when the event is re-attributed to another customer"),
        ("stored_at", "DateTime64(3, 'UTC') DEFAULT now64(3)", "when it reached ClickHouse"),
    ),
    engine="ReplacingMergeTree(attribution_version)",
    partition_by="toYYYYMM(occurred_at)",
    order_by="(tenant_id, toDate(occurred_at), event_id)",
    indexes=(
        "INDEX event_id_bf event_id TYPE bloom_filter GRANULARITY 4",
        "INDEX customer_id_bf customer_id TYPE bloom_filter GRANULARITY 4",
    ),
)

CUSTOMER_STATE = Table(
    name="customer_state",
    comment="Each customer's timeline digest (services/insights/profile.py) as the processors last wrote it: "
            "their working state, reloaded after a restart or a rebalance. deleted=1 after a merge or erasure.",
    columns=(
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("customer_id", "UUID", "canonical customer"),
        ("version", "UInt64", "write time in microseconds: the latest row wins"),
        ("deleted", "UInt8", "1: merged into another profile or erased"),
        ("state", "String CODEC(ZSTD(3))", "the digest as JSON (event ids, times, kinds, amounts; no personal data)"),
    ),
    engine="ReplacingMergeTree(version)",
    order_by="(tenant_id, customer_id)",
)

CUSTOMER_SCORES = Table(
    name="customer_scores",
    comment="Latest lifecycle stage, churn risk with reasons, RFM and value tier per customer "
            "(read with FINAL and deleted = 0).",
    columns=(
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("customer_id", "UUID", "canonical customer"),
        ("version", "UInt64", "write time in microseconds: the latest row wins"),
        ("deleted", "UInt8", "1: merged into another profile or erased"),
        ("computed_at", "DateTime64(3, 'UTC')", "the instant the scores hold for"),
        ("stage", "LowCardinality(String)", "awareness … loyal, at_risk, churned, win_back"),
        ("stage_since", "DateTime64(3, 'UTC')", "when the customer entered the stage"),
        ("peak_stage", "LowCardinality(String)", "furthest funnel stage ever reached"),
        ("risk", "Float32", "churn risk 0–1: no paid visit within the horizon"),
        ("band", "LowCardinality(String)", "low, medium, high"),
        ("reasons", "Array(String)", "what raised the risk, readable"),
        ("recency_days", "Nullable(Int32)", "days since the last paid visit"),
        ("frequency", "UInt32", "paid visits in the last 12 months"),
        ("monetary_minor", "Int64", "spend in the last 12 months, refunds deducted"),
        ("r", "UInt8", "RFM recency score 1–5 (0: no paid visit)"),
        ("f", "UInt8", "RFM frequency score 1–5"),
        ("m", "UInt8", "RFM monetary score 1–5"),
        ("rfm_segment", "LowCardinality(String)", "champions, loyal, new, promising, need_attention, at_risk, "
                                                   "cannot_lose, hibernating, prospect"),
        ("value_tier", "LowCardinality(String)", "high, medium, low"),
        ("home_store_id", "LowCardinality(String)", "store of most paid visits"),
        ("first_channel", "LowCardinality(String)", "channel the customer was first seen through"),
        ("first_seen_at", "DateTime64(3, 'UTC')", "first touchpoint"),
        ("first_paid_at", "Nullable(DateTime64(3, 'UTC'))", "first paid service or purchase"),
        ("returned_within_90d", "UInt8", "a second paid visit within 90 days of the first"),
        ("last_paid_visit_at", "Nullable(DateTime64(3, 'UTC'))", "latest paid service or purchase"),
        ("tier", "LowCardinality(String)", "loyalty tier"),
        ("category", "LowCardinality(String)", "usual service category"),
        ("expected_interval_days", "Float32", "expected return interval"),
        ("overdue_days", "Nullable(Int32)", "days past the expected return (negative: not yet due)"),
        ("visits", "UInt32", "paid visits ever"),
    ),
    engine="ReplacingMergeTree(version)",
    order_by="(tenant_id, customer_id)",
)

LIFECYCLE_TRANSITIONS = Table(
    name="lifecycle_transitions",
    comment="Every customer.lifecycle_changed, once (event_id is derived from customer, stages and instant).",
    columns=(
        ("event_id", "UUID", "the customer.lifecycle_changed event"),
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("customer_id", "UUID", "canonical customer"),
        ("at", "DateTime64(3, 'UTC')", "when the stage changed"),
        ("from_stage", "LowCardinality(String)", "empty for the first stage"),
        ("to_stage", "LowCardinality(String)", "the new stage"),
        ("reason", "String", "readable reason"),
        ("home_store_id", "LowCardinality(String)", "store of most paid visits"),
    ),
    engine="ReplacingMergeTree",
    order_by="(tenant_id, customer_id, event_id)",
)

SURVEY_ANSWERS = Table(
    name="survey_answers",
    comment="NPS and CSAT answers (feedback.survey_answered and survey.answered touchpoints), once each.",
    columns=(
        ("event_id", "UUID", "the answer event"),
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("customer_id", "UUID", "nil for an anonymous kiosk answer or once erased"),
        ("store_id", "LowCardinality(String)", "store of the visit"),
        ("staff_id", "LowCardinality(String)", "who served"),
        ("service_id", "LowCardinality(String)", "service performed"),
        ("source", "LowCardinality(String)", "link, kiosk, staff or touchpoint"),
        ("answered_at", "DateTime64(3, 'UTC')", "when it was answered"),
        ("local_date", "Date", "answered_at in the store's zone"),
        ("nps", "Int8", "0–10, -1 when not asked"),
        ("csat", "Int8", "1–5, -1 when not asked"),
        ("step_ratings", "Map(LowCardinality(String), UInt8)", "service step -> 1–5"),
    ),
    engine="ReplacingMergeTree",
    order_by="(tenant_id, store_id, local_date, event_id)",
)

CASE_EVENTS = Table(
    name="case_events",
    comment="Complaint cases opened, breaching an SLA and resolved (feedback.changes), once each.",
    columns=(
        ("event_id", "UUID", "the feedback event"),
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("case_id", "UUID", "the case"),
        ("store_id", "LowCardinality(String)", "store of the case"),
        ("customer_id", "UUID", "nil when anonymous or erased"),
        ("kind", "LowCardinality(String)", "opened, breached, resolved"),
        ("at", "DateTime64(3, 'UTC')", "when it happened"),
        ("local_date", "Date", "at, in the store's zone"),
        ("priority", "LowCardinality(String)", "low, medium, high"),
        ("reason", "LowCardinality(String)", "detractor, low_csat or complaint:<category>"),
        ("sla", "LowCardinality(String)", "first_response or resolution (breaches)"),
        ("resolved_in_business_minutes", "Int32", "resolutions: business minutes taken"),
    ),
    engine="ReplacingMergeTree",
    order_by="(tenant_id, store_id, local_date, event_id)",
)

STORES = Table(
    name="stores",
    comment="Store names and IANA zones: every dashboard date is store-local.",
    columns=(
        ("tenant_id", "LowCardinality(String)", "the chain"),
        ("store_id", "String", "store"),
        ("name", "String", "display name"),
        ("timezone", "String", "IANA zone"),
        ("updated_at", "DateTime64(6, 'UTC')", "the latest row wins"),
    ),
    engine="ReplacingMergeTree(updated_at)",
    order_by="(tenant_id, store_id)",
)

TABLES = (TOUCHPOINTS, CUSTOMER_STATE, CUSTOMER_SCORES, LIFECYCLE_TRANSITIONS, SURVEY_ANSWERS, CASE_EVENTS, STORES)


@dataclass(frozen=True)
class View:
    """A rollup computed at query time over a deduplicated table: a materialized view would count a
    redelivered batch twice, since it sees inserts before ReplacingMergeTree collapses them."""

    name: str
    select: str
    comment: str


NPS_DAILY = View(
    name="nps_daily",
    comment="NPS and CSAT per store, staff and service per store-local day.",
    select="SELECT tenant_id, store_id, staff_id, service_id, local_date, count() AS responses, "
           "countIf(nps >= 9) AS promoters, countIf(nps BETWEEN 7 AND 8) AS passives, "
           "countIf(nps BETWEEN 0 AND 6) AS detractors, sumIf(csat, csat > 0) AS csat_sum, "
           "countIf(csat > 0) AS csat_answers FROM ${database}.survey_answers FINAL "
           "GROUP BY tenant_id, store_id, staff_id, service_id, local_date",
)
FUNNEL_COUNTS = View(
    name="funnel_counts",
    comment="Customers per current stage and furthest stage reached, per home store and first channel.",
    select="SELECT tenant_id, home_store_id, first_channel, stage, peak_stage, count() AS customers "
           "FROM ${database}.customer_scores FINAL WHERE deleted = 0 "
           "GROUP BY tenant_id, home_store_id, first_channel, stage, peak_stage",
)
CHANNEL_DAILY = View(
    name="channel_daily",
    comment="Customers acquired per first channel and day first seen (UTC), converted to a paid visit "
            "and retained (second paid visit within 90 days).",
    select="SELECT tenant_id, home_store_id, first_channel, toDate(first_seen_at) AS day, count() AS acquired, "
           "countIf(first_paid_at IS NOT NULL) AS converted, countIf(returned_within_90d = 1) AS retained_90d "
           "FROM ${database}.customer_scores FINAL WHERE deleted = 0 "
           "GROUP BY tenant_id, home_store_id, first_channel, day",
)
VIEWS = (NPS_DAILY, FUNNEL_COUNTS, CHANNEL_DAILY)


def render(table: Table) -> str:
    cols = [f"    `{n}` {t} COMMENT '{c.replace(chr(39), chr(92) + chr(39))}'" for n, t, c in table.columns]
    body = ",\n".join(cols + [f"    {i}" for i in table.indexes])
    lines = [
        f"-- {table.comment}",
        f"CREATE TABLE IF NOT EXISTS ${{database}}.{table.name}\n(\n{body}\n)",
        f"ENGINE = {table.engine}",
    ]
    if table.partition_by:
        lines.append(f"PARTITION BY {table.partition_by}")
    lines.append(f"ORDER BY {table.order_by}")
    return "\n".join(lines) + ";\n"


def render_view(view: View) -> str:
    return f"-- {view.comment}\nCREATE VIEW IF NOT EXISTS ${{database}}.{view.name} AS\n{view.select};\n"


def rendered_migrations() -> dict[str, str]:
    """File name under deploy/clickhouse -> its content: tables first, then the views over them."""
    files = [(t.name, render(t)) for t in TABLES] + [(v.name, render_view(v)) for v in VIEWS]
    return {f"{i + 1:04d}_{name}.sql": text for i, (name, text) in enumerate(files)}


if __name__ == "__main__":  # `hub docs` runs this: prints each stale file
    ddl_dir = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
    for stale_path in sync_files(ddl_dir, rendered_migrations(), "--check" in sys.argv):
        print(stale_path)
