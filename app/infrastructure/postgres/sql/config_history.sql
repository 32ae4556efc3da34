SELECT version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
       server_rules, cdn_hosts, cdn_health, origin_fallback, down_servers, rate_limit, regions,
       comment, created_at
FROM config_versions
WHERE $2::integer IS NULL OR version < $2
ORDER BY version DESC
LIMIT $1
