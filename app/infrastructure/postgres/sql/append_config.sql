INSERT INTO config_versions (
    version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
    server_rules, cdn_hosts, cdn_health, origin_fallback, down_servers, comment, rate_limit, regions
)
VALUES ($1 + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
          server_rules, cdn_hosts, cdn_health, origin_fallback, down_servers, rate_limit, regions,
          comment, created_at
