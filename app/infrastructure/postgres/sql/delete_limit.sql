-- The deletion and its line in the history (who, from where), in one statement.
WITH deleted AS (
    DELETE FROM rate_limits
    WHERE client_id = $1
    RETURNING client_id
), logged AS (
    INSERT INTO rate_limit_history (action, client_id, actor, actor_issuer, actor_address)
    SELECT 'deleted', client_id, $2::text, $3::text, $4::text
    FROM deleted
)
SELECT client_id FROM deleted
