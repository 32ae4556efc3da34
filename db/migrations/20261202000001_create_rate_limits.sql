-- migrate:up
CREATE TABLE rate_limits (
    client_id cidr PRIMARY KEY,
    capacity integer NOT NULL CHECK (capacity BETWEEN 0 AND 1000000),
    refill_per_second double precision NOT NULL
        CHECK (refill_per_second > 0 AND refill_per_second <= 1000000),
    comment text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE rate_limits IS
    'Per-client token bucket overrides: an address (/32, /128) or a block; the most specific wins.';

-- One row counting changes: workers reload the overrides only when it moved.
CREATE TABLE rate_limits_revision (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    revision bigint NOT NULL
);
INSERT INTO rate_limits_revision (revision) VALUES (0);

-- Workers already LISTEN on balancer_config and reload config and limits on any message;
-- it is sent when the changing transaction commits.
CREATE FUNCTION notify_rate_limits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rate_limits_revision SET revision = revision + 1;
    PERFORM pg_notify('balancer_config', 'limits');
    RETURN NULL;
END;
$$;

CREATE TRIGGER rate_limits_notify
AFTER INSERT OR UPDATE OR DELETE ON rate_limits
FOR EACH STATEMENT EXECUTE FUNCTION notify_rate_limits();

-- migrate:down
DROP TABLE rate_limits;
DROP TABLE rate_limits_revision;
DROP FUNCTION notify_rate_limits();
