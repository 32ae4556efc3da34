SELECT version, cdn_host, cdn_weight, origin_weight, redirect_status, origin_domains,
       server_rules, comment, created_at
FROM config_versions
WHERE $2::integer IS NULL OR version < $2
ORDER BY version DESC
LIMIT $1
