DELETE FROM rate_limits
WHERE client_id = $1
RETURNING client_id
