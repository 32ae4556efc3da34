-- migrate:up
-- Every change of an override, with who made it and from where: the rows of rate_limits
-- show the last writer only, and a deleted override leaves no row there.
CREATE TABLE rate_limit_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at timestamptz NOT NULL DEFAULT now(),
    action text NOT NULL CHECK (action IN ('created', 'replaced', 'deleted')),
    client_id cidr NOT NULL,
    -- The override after the change; NULL for a deletion.
    capacity integer,
    refill_per_second double precision,
    comment text,
    actor text,
    actor_issuer text,
    actor_address text
);

-- migrate:down
DROP TABLE rate_limit_history;
