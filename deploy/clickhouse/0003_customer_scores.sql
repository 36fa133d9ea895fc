-- Latest lifecycle stage, churn risk with reasons, RFM and value tier per customer (read with FINAL and deleted = 0).
CREATE TABLE IF NOT EXISTS ${database}.customer_scores
(
    `tenant_id` LowCardinality(String) COMMENT 'the chain',
    `customer_id` UUID COMMENT 'canonical customer',
    `version` UInt64 COMMENT 'write time in microseconds: the latest row wins',
    `deleted` UInt8 COMMENT '1: merged into another profile or erased',
    `computed_at` DateTime64(3, 'UTC') COMMENT 'the instant the scores hold for',
    `stage` LowCardinality(String) COMMENT 'awareness … loyal, at_risk, churned, win_back',
    `stage_since` DateTime64(3, 'UTC') COMMENT 'when the customer entered the stage',
    `peak_stage` LowCardinality(String) COMMENT 'furthest funnel stage ever reached',
    `risk` Float32 COMMENT 'churn risk 0–1: no paid visit within the horizon',
    `band` LowCardinality(String) COMMENT 'low, medium, high',
    `reasons` Array(String) COMMENT 'what raised the risk, readable',
    `recency_days` Nullable(Int32) COMMENT 'days since the last paid visit',
    `frequency` UInt32 COMMENT 'paid visits in the last 12 months',
    `monetary_minor` Int64 COMMENT 'spend in the last 12 months, refunds deducted',
    `r` UInt8 COMMENT 'RFM recency score 1–5 (0: no paid visit)',
    `f` UInt8 COMMENT 'RFM frequency score 1–5',
    `m` UInt8 COMMENT 'RFM monetary score 1–5',
    `rfm_segment` LowCardinality(String) COMMENT 'champions, loyal, new, promising, need_attention, at_risk, cannot_lose, hibernating, prospect',
    `value_tier` LowCardinality(String) COMMENT 'high, medium, low',
    `home_store_id` LowCardinality(String) COMMENT 'store of most paid visits',
    `first_channel` LowCardinality(String) COMMENT 'channel the customer was first seen through',
    `first_seen_at` DateTime64(3, 'UTC') COMMENT 'first touchpoint',
    `first_paid_at` Nullable(DateTime64(3, 'UTC')) COMMENT 'first paid service or purchase',
    `returned_within_90d` UInt8 COMMENT 'a second paid visit within 90 days of the first',
    `last_paid_visit_at` Nullable(DateTime64(3, 'UTC')) COMMENT 'latest paid service or purchase',
    `tier` LowCardinality(String) COMMENT 'loyalty tier',
    `category` LowCardinality(String) COMMENT 'usual service category',
    `expected_interval_days` Float32 COMMENT 'expected return interval',
    `overdue_days` Nullable(Int32) COMMENT 'days past the expected return (negative: not yet due)',
    `visits` UInt32 COMMENT 'paid visits ever'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, customer_id);
