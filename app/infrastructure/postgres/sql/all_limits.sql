SELECT client_id, capacity, refill_per_second
FROM rate_limits
ORDER BY client_id
LIMIT $1
