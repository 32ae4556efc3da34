-- migrate:up
-- The default per-client limit, {"capacity": 100, "refill_per_second": 50}; NULL is off.
ALTER TABLE config_versions ADD COLUMN rate_limit jsonb;

-- migrate:down
ALTER TABLE config_versions DROP COLUMN rate_limit;
