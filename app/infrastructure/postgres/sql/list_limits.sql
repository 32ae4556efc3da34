SELECT client_id, capacity, refill_per_second, comment, created_at, updated_at,
    actor, actor_issuer, actor_address
FROM rate_limits
WHERE $2::cidr IS NULL OR client_id > $2
ORDER BY client_id
LIMIT $1
