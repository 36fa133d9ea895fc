-- Customers acquired per first channel and day first seen (UTC), converted to a paid visit and retained (second paid visit within 90 days).
CREATE VIEW IF NOT EXISTS ${database}.channel_daily AS
SELECT tenant_id, home_store_id, first_channel, toDate(first_seen_at) AS day, count() AS acquired, countIf(first_paid_at IS NOT NULL) AS converted, countIf(returned_within_90d = 1) AS retained_90d FROM ${database}.customer_scores FINAL WHERE deleted = 0 GROUP BY tenant_id, home_store_id, first_channel, day;
