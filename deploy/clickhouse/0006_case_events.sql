-- Complaint cases opened, breaching an SLA and resolved (feedback.changes), once each.
CREATE TABLE IF NOT EXISTS ${database}.case_events
(
    `event_id` UUID COMMENT 'the feedback event',
    `tenant_id` LowCardinality(String) COMMENT 'the chain',
    `case_id` UUID COMMENT 'the case',
    `store_id` LowCardinality(String) COMMENT 'store of the case',
    `customer_id` UUID COMMENT 'nil when anonymous or erased',
    `kind` LowCardinality(String) COMMENT 'opened, breached, resolved',
    `at` DateTime64(3, 'UTC') COMMENT 'when it happened',
    `local_date` Date COMMENT 'at, in the store\'s zone',
    `priority` LowCardinality(String) COMMENT 'low, medium, high',
    `reason` LowCardinality(String) COMMENT 'detractor, low_csat or complaint:<category>',
    `sla` LowCardinality(String) COMMENT 'first_response or resolution (breaches)',
    `resolved_in_business_minutes` Int32 COMMENT 'resolutions: business minutes taken'
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, store_id, local_date, event_id);
