SELECT version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
       server_rules, comment, created_at
FROM config_versions
WHERE version = $1
