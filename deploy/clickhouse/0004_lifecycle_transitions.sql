-- Every customer.lifecycle_changed, once (event_id is derived from customer, stages and instant).
CREATE TABLE IF NOT EXISTS ${database}.lifecycle_transitions
(
    `event_id` UUID COMMENT 'the customer.lifecycle_changed event',
    `tenant_id` LowCardinality(String) COMMENT 'the chain',
    `customer_id` UUID COMMENT 'canonical customer',
    `at` DateTime64(3, 'UTC') COMMENT 'when the stage changed',
    `from_stage` LowCardinality(String) COMMENT 'empty for the first stage',
    `to_stage` LowCardinality(String) COMMENT 'the new stage',
    `reason` String COMMENT 'readable reason',
    `home_store_id` LowCardinality(String) COMMENT 'store of most paid visits'
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, customer_id, event_id);
