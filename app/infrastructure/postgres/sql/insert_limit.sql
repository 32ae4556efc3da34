-- The override and its line in the history, in one statement.
WITH created AS (
    INSERT INTO rate_limits (
        client_id, capacity, refill_per_second, comment, actor, actor_issuer, actor_address
    )
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (client_id) DO NOTHING
    RETURNING client_id, capacity, refill_per_second, comment, created_at, updated_at,
        actor, actor_issuer, actor_address
), logged AS (
    INSERT INTO rate_limit_history (
        action, client_id, capacity, refill_per_second, comment, actor, actor_issuer, actor_address
    )
    SELECT 'created', client_id, capacity, refill_per_second, comment, actor, actor_issuer,
        actor_address
    FROM created
)
SELECT * FROM created
