SELECT r.revision AS stored, r.pruned, c.revision, c.client_id, l.capacity, l.refill_per_second
FROM rate_limits_revision AS r
LEFT JOIN LATERAL (
    SELECT revision, client_id
    FROM rate_limit_changes
    WHERE revision > $1
    ORDER BY revision, client_id
    LIMIT $2
) AS c ON true
LEFT JOIN rate_limits AS l ON l.client_id = c.client_id
ORDER BY c.revision, c.client_id
