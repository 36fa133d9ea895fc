-- Each customer's timeline digest (services/insights/profile.py) as the processors last wrote it: their working state, reloaded after a restart or a rebalance. deleted=1 after a merge or erasure.
CREATE TABLE IF NOT EXISTS ${database}.customer_state
(
    `tenant_id` LowCardinality(String) COMMENT 'the chain',
    `customer_id` UUID COMMENT 'canonical customer',
    `version` UInt64 COMMENT 'write time in microseconds: the latest row wins',
    `deleted` UInt8 COMMENT '1: merged into another profile or erased',
    `state` String CODEC(ZSTD(3)) COMMENT 'the digest as JSON (event ids, times, kinds, amounts; no personal data)'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, customer_id);
