-- migrate:up
-- Workers apply a change of the overrides by itself: each statement that changes rows bumps
-- the revision once and records the client ids it touched under that revision, so a
-- worker reads what changed since the revision it has instead of every override. The
-- revision row is locked by each writer until it commits, so revisions become visible in
-- order. Changes of the last 10,000 revisions are kept; a worker further behind (or just
-- started) reads everything, which `pruned` tells it.
ALTER TABLE rate_limits_revision
    ADD COLUMN pruned bigint NOT NULL DEFAULT 0,
    -- The number of overrides, capped: workers hold them all in memory.
    ADD COLUMN overrides integer NOT NULL DEFAULT 0
        CONSTRAINT rate_limits_cap CHECK (overrides <= 100000);
UPDATE rate_limits_revision
SET overrides = (SELECT count(*) FROM rate_limits), pruned = revision;

CREATE TABLE rate_limit_changes (
    revision bigint NOT NULL,
    client_id cidr NOT NULL,
    PRIMARY KEY (revision, client_id)
);

COMMENT ON TABLE rate_limit_changes IS
    'Client ids whose override a revision of rate_limits_revision created, changed or removed.';

DROP TRIGGER rate_limits_notify ON rate_limits;
DROP FUNCTION notify_rate_limits();

CREATE FUNCTION rate_limits_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed cidr[];
    added integer := 0;
    now_at bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE rate_limits_revision
        SET revision = revision + 1, pruned = revision + 1, overrides = 0;
        DELETE FROM rate_limit_changes;
        PERFORM pg_notify('balancer_limits', '');
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(client_id), count(*) INTO changed, added FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(client_id), -count(*) INTO changed, added FROM old_rows;
    ELSE
        SELECT array_agg(client_id) INTO changed
        FROM (SELECT client_id FROM new_rows UNION SELECT client_id FROM old_rows) AS both_sides;
    END IF;
    IF changed IS NULL THEN  -- the statement changed no row
        RETURN NULL;
    END IF;
    UPDATE rate_limits_revision
    SET revision = revision + 1,
        overrides = overrides + added,
        pruned = greatest(pruned, revision + 1 - 10000)
    RETURNING revision INTO now_at;
    INSERT INTO rate_limit_changes (revision, client_id)
    SELECT DISTINCT now_at, client_id FROM unnest(changed) AS client_id;
    -- Each statement drops the one revision that left the window: an equality on the key's
    -- first column is an index scan whatever the planner knows of the table.
    DELETE FROM rate_limit_changes WHERE revision = now_at - 10000;
    -- Workers LISTEN on balancer_limits; sent when the transaction commits.
    PERFORM pg_notify('balancer_limits', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER rate_limits_inserted
AFTER INSERT ON rate_limits REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION rate_limits_changed();

CREATE TRIGGER rate_limits_updated
AFTER UPDATE ON rate_limits REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION rate_limits_changed();

CREATE TRIGGER rate_limits_deleted
AFTER DELETE ON rate_limits REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION rate_limits_changed();

CREATE TRIGGER rate_limits_truncated
AFTER TRUNCATE ON rate_limits
FOR EACH STATEMENT EXECUTE FUNCTION rate_limits_changed();

-- migrate:down
DROP TRIGGER rate_limits_inserted ON rate_limits;
DROP TRIGGER rate_limits_updated ON rate_limits;
DROP TRIGGER rate_limits_deleted ON rate_limits;
DROP TRIGGER rate_limits_truncated ON rate_limits;
DROP FUNCTION rate_limits_changed();
DROP TABLE rate_limit_changes;
ALTER TABLE rate_limits_revision DROP COLUMN pruned, DROP COLUMN overrides;

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
