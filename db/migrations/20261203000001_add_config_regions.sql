-- migrate:up
-- Pools by viewer network or country, in order:
-- [{"name": "eu", "countries": ["DE"], "networks": ["10.20.0.0/16"],
--   "cdn_hosts": [{"host": "cdn-fra.example.com", "weight": 1}],
--   "cdn_weight": 9, "origin_weight": 1}]  (weights optional). NULL: none.
ALTER TABLE config_versions ADD COLUMN regions jsonb;

-- migrate:down
ALTER TABLE config_versions DROP COLUMN regions;
