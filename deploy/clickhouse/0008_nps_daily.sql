-- NPS and CSAT per store, staff and service per store-local day.
CREATE VIEW IF NOT EXISTS ${database}.nps_daily AS
SELECT tenant_id, store_id, staff_id, service_id, local_date, count() AS responses, countIf(nps >= 9) AS promoters, countIf(nps BETWEEN 7 AND 8) AS passives, countIf(nps BETWEEN 0 AND 6) AS detractors, sumIf(csat, csat > 0) AS csat_sum, countIf(csat > 0) AS csat_answers FROM ${database}.survey_answers FINAL GROUP BY tenant_id, store_id, staff_id, service_id, local_date;
