-- The override and its line in the history, in one statement.
WITH replaced AS (
    UPDATE rate_limits
    SET capacity = $2, refill_per_second = $3, comment = $4, updated_at = now(),
        actor = $5, actor_issuer = $6, actor_address = $7
    WHERE client_id = $1
    RETURNING client_id, capacity, refill_per_second, comment, created_at, updated_at,
        actor, actor_issuer, actor_address
), logged AS (
    INSERT INTO rate_limit_history (
        action, client_id, capacity, refill_per_second, comment, actor, actor_issuer, actor_address
    )
    SELECT 'replaced', client_id, capacity, refill_per_second, comment, actor, actor_issuer,
        actor_address
    FROM replaced
)
SELECT * FROM replaced
