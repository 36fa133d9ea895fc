-- Every resolved touchpoint, once: ReplacingMergeTree collapses redeliveries of an event_id and keeps the latest attribution when a merge or split re-attributes it.
CREATE TABLE IF NOT EXISTS ${database}.touchpoints
(
    `event_id` UUID COMMENT 'the producer\'s id; deduplication key',
    `tenant_id` LowCardinality(String) COMMENT 'the chain',
    `store_id` LowCardinality(String) COMMENT 'empty for online touchpoints',
    `customer_id` UUID COMMENT 'canonical customer from identity resolution',
    `type` LowCardinality(String) COMMENT 'event type, e.g. service.performed',
    `schema_version` UInt16 COMMENT 'version the payload was upcast to',
    `channel` LowCardinality(String) COMMENT 'app, wechat_miniprogram, web, pos, phone, walk_in, social, ads',
    `source` LowCardinality(String) COMMENT 'producing service or integration',
    `occurred_at` DateTime64(3, 'UTC') COMMENT 'when it happened (event time)',
    `recorded_at` DateTime64(3, 'UTC') COMMENT 'when the hub accepted it',
    `identifier_types` Array(LowCardinality(String)) COMMENT 'types only; values stay in identity',
    `payload` String CODEC(ZSTD(3)) COMMENT 'the type\'s payload as JSON',
    `trace_id` String COMMENT 'OpenTelemetry trace of this touchpoint',
    `attribution_version` UInt64 COMMENT 'raised when the event is re-attributed to another customer',
    `stored_at` DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when it reached ClickHouse',
    INDEX event_id_bf event_id TYPE bloom_filter GRANULARITY 4,
    INDEX customer_id_bf customer_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(attribution_version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), event_id);
