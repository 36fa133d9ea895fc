-- Store names and IANA zones: every dashboard date is store-local.
CREATE TABLE IF NOT EXISTS ${database}.stores
(
    `tenant_id` LowCardinality(String) COMMENT 'the chain',
    `store_id` String COMMENT 'store',
    `name` String COMMENT 'display name',
    `timezone` String COMMENT 'IANA zone',
    `updated_at` DateTime64(6, 'UTC') COMMENT 'the latest row wins'
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant_id, store_id);
