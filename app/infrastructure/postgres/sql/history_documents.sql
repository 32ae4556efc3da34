-- Versions as stored, for the history: every field of the configuration as JSON text, in
-- the shapes the API uses, so that a page of 100 large versions is passed on, not decoded.
-- A row older than pools has a pool of one, its cdn_host; older than regions, none.
SELECT version, comment, created_at, actor, actor_issuer, actor_address,
       to_jsonb(cdn_host)::text AS cdn_host,
       cdn_weight::text AS cdn_weight,
       origin_weight::text AS origin_weight,
       redirect_status::text AS redirect_status,
       to_jsonb(origin_domains)::text AS origin_domains,
       server_rules::text AS server_rules,
       COALESCE(cdn_hosts, jsonb_build_array(jsonb_build_object('host', cdn_host, 'weight', 1)))::text
           AS cdn_hosts,
       cdn_health::text AS cdn_health,
       to_jsonb(origin_fallback)::text AS origin_fallback,
       to_jsonb(down_servers)::text AS down_servers,
       COALESCE(rate_limit, 'null')::text AS rate_limit,
       COALESCE(regions, '[]')::text AS regions,
       content_steering::text AS content_steering
FROM config_versions
WHERE $2::integer IS NULL OR version < $2
ORDER BY version DESC
LIMIT $1
