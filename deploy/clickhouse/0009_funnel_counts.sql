-- Customers per current stage and furthest stage reached, per home store and first channel.
CREATE VIEW IF NOT EXISTS ${database}.funnel_counts AS
SELECT tenant_id, home_store_id, first_channel, stage, peak_stage, count() AS customers FROM ${database}.customer_scores FINAL WHERE deleted = 0 GROUP BY tenant_id, home_store_id, first_channel, stage, peak_stage;
