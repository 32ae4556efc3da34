INSERT INTO rate_limits (
    client_id, capacity, refill_per_second, comment, actor, actor_issuer, actor_address
)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (client_id) DO NOTHING
RETURNING client_id, capacity, refill_per_second, comment, created_at, updated_at,
    actor, actor_issuer, actor_address
