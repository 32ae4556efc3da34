-- migrate:up
-- Content steering of the global pool: {"enabled": false, "ttl_seconds": 10}. Regions and
-- server rules with a pool of their own keep theirs in their documents
-- ("content_steering"), and CDN hosts their pathway id ({"host": ..., "pathway": "cdn-a"}).
ALTER TABLE config_versions
    ADD COLUMN content_steering jsonb NOT NULL DEFAULT '{"enabled": false, "ttl_seconds": 10}';

-- migrate:down
ALTER TABLE config_versions DROP COLUMN content_steering;
