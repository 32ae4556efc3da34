INSERT INTO rate_limits (client_id, capacity, refill_per_second, comment)
VALUES ($1, $2, $3, $4)
ON CONFLICT (client_id) DO NOTHING
RETURNING client_id, capacity, refill_per_second, comment, created_at, updated_at
