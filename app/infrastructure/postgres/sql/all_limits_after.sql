SELECT client_id, capacity, refill_per_second
FROM rate_limits
WHERE client_id > $1
ORDER BY client_id
LIMIT $2
