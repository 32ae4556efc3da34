-- The documents come as JSON text, written off the event loop; $15-$17 who made the change, $18 the content steering settings.
INSERT INTO config_versions (
    version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
    server_rules, cdn_hosts, cdn_health, origin_fallback, down_servers, comment, rate_limit, regions,
    actor, actor_issuer, actor_address, content_steering
)
VALUES ($1 + 1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9::text::jsonb, $10, $11,
        $12, $13::text::jsonb, $14::text::jsonb, $15, $16, $17, $18::text::jsonb)
RETURNING version, comment, created_at
