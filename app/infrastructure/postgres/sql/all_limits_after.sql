SELECT family(client_id), masklen(client_id), host(client_id), capacity, refill_per_second,
    client_id::text AS id
FROM rate_limits
WHERE client_id > $1::text::cidr
ORDER BY client_id
LIMIT $2
