-- migrate:up
-- A column per field, like the others: typed, checked by PostgreSQL, and rows written before
-- this migration stay readable (NULL cdn_hosts = a pool of one, cdn_host; {} = defaults).
ALTER TABLE config_versions
    ADD COLUMN cdn_hosts jsonb
        CHECK (cdn_hosts IS NULL OR (jsonb_typeof(cdn_hosts) = 'array'
                                     AND jsonb_array_length(cdn_hosts) BETWEEN 1 AND 64)),
    ADD COLUMN cdn_health jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(cdn_health) = 'object'),
    ADD COLUMN origin_fallback boolean NOT NULL DEFAULT true,
    ADD COLUMN down_servers text[] NOT NULL DEFAULT '{}';

-- Versions written before health checks existed keep behaving as they did: no probes. An
-- upgrade must not start probing production CDN hosts on a path they may answer with 403 or
-- 404, which would send every viewer to the origin. Admins turn checks on with
-- PATCH /config {"cdn_health": {"enabled": true, ...}}.
UPDATE config_versions SET cdn_health = '{"enabled": false}';

COMMENT ON COLUMN config_versions.cdn_host IS
    'The first host of the CDN pool (the whole pool when cdn_hosts is NULL).';
COMMENT ON COLUMN config_versions.cdn_hosts IS
    'CDN pool: [{"host": ..., "weight": N}, ...]; NULL in rows older than pools.';

-- migrate:down
ALTER TABLE config_versions
    DROP COLUMN cdn_hosts,
    DROP COLUMN cdn_health,
    DROP COLUMN origin_fallback,
    DROP COLUMN down_servers;
