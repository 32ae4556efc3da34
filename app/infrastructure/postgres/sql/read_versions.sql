-- Versions above $1 and below $2 (NULL: no bound), newest first, at most $3.
-- The documents as JSON text, the long ones an array of a text per entry (a rule is
-- ["s1", {...}]): each is decoded on its own off the event loop, so no single decoding holds
-- it up. NULL: server_rules is not an object, regions not an array.
SELECT version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
       CASE WHEN jsonb_typeof(server_rules) = 'object' THEN
           ARRAY(SELECT jsonb_build_array(key, value)::text FROM jsonb_each(server_rules))
       END AS server_rules,
       cdn_hosts::text, cdn_health::text, origin_fallback, down_servers, rate_limit::text,
       CASE WHEN regions IS NULL THEN '{}'::text[]
            WHEN jsonb_typeof(regions) = 'array' THEN
           ARRAY(SELECT entry::text FROM jsonb_array_elements(regions) WITH ORDINALITY
                 AS element(entry, place) ORDER BY place)
       END AS regions,
       content_steering::text, comment, created_at
FROM config_versions
WHERE version > $1::bigint AND ($2::bigint IS NULL OR version < $2)
ORDER BY version DESC
LIMIT $3
