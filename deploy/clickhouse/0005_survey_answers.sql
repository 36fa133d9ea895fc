-- NPS and CSAT answers (feedback.survey_answered and survey.answered touchpoints), once each.
CREATE TABLE IF NOT EXISTS ${database}.survey_answers
(
    `event_id` UUID COMMENT 'the answer event',
    `tenant_id` LowCardinality(String) COMMENT 'the chain',
    `customer_id` UUID COMMENT 'nil for an anonymous kiosk answer or once erased',
    `store_id` LowCardinality(String) COMMENT 'store of the visit',
    `staff_id` LowCardinality(String) COMMENT 'who served',
    `service_id` LowCardinality(String) COMMENT 'service performed',
    `source` LowCardinality(String) COMMENT 'link, kiosk, staff or touchpoint',
    `answered_at` DateTime64(3, 'UTC') COMMENT 'when it was answered',
    `local_date` Date COMMENT 'answered_at in the store\'s zone',
    `nps` Int8 COMMENT '0–10, -1 when not asked',
    `csat` Int8 COMMENT '1–5, -1 when not asked',
    `step_ratings` Map(LowCardinality(String), UInt8) COMMENT 'service step -> 1–5'
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, store_id, local_date, event_id);
