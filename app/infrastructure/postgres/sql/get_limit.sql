SELECT client_id, capacity, refill_per_second, comment, created_at, updated_at,
    actor, actor_issuer, actor_address
FROM rate_limits
WHERE client_id = $1
