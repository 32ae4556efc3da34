INSERT INTO config_versions (
    version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
    server_rules, comment
)
VALUES ($1 + 1, $2, $3, $4, $5, $6, $7, $8)
RETURNING version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
          server_rules, comment, created_at
