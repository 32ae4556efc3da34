SELECT client_id, capacity, refill_per_second, comment, created_at, updated_at
FROM rate_limits
