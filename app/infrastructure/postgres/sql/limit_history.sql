-- Changes of the overrides, newest first, those before id $2 when it is given.
SELECT id, changed_at, action, client_id, capacity, refill_per_second, comment,
    actor, actor_issuer, actor_address
FROM rate_limit_history
WHERE $2::bigint IS NULL OR id < $2
ORDER BY id DESC
LIMIT $1
