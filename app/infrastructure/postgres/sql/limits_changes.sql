SELECT c.revision, c.client_id, l.capacity, l.refill_per_second
FROM rate_limit_changes AS c
LEFT JOIN rate_limits AS l ON l.client_id = c.client_id
WHERE c.revision > $1
ORDER BY c.revision, c.client_id
LIMIT $2
