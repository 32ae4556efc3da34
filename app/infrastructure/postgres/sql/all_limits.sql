SELECT family(client_id), masklen(client_id), host(client_id), capacity, refill_per_second,
    client_id::text AS id
FROM rate_limits
ORDER BY client_id
LIMIT $1
