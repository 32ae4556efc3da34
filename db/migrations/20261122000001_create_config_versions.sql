-- migrate:up
CREATE TABLE config_versions (
    version integer PRIMARY KEY CHECK (version > 0),
    cdn_host text NOT NULL CHECK (cdn_host <> ''),
    cdn_weight integer NOT NULL CHECK (cdn_weight >= 0),
    origin_weight integer NOT NULL CHECK (origin_weight >= 0),
    redirect_status smallint NOT NULL DEFAULT 301
        CHECK (redirect_status IN (301, 302, 307, 308)),
    origin_domains text[] NOT NULL DEFAULT '{origin-cluster}'
        CHECK (cardinality(origin_domains) > 0),
    server_rules jsonb NOT NULL DEFAULT '{}',
    comment text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (cdn_weight + origin_weight > 0)
);

COMMENT ON TABLE config_versions IS
    'Every configuration the balancer has had; the highest version is active. Rows are never updated.';

-- Every worker LISTENs on balancer_config; the notification is sent when the inserting
-- transaction commits, so no worker can see a version before it is stored.
CREATE FUNCTION notify_config_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('balancer_config', NEW.version::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER config_versions_notify
AFTER INSERT ON config_versions
FOR EACH ROW EXECUTE FUNCTION notify_config_version();

INSERT INTO config_versions (version, cdn_host, cdn_weight, origin_weight, comment)
VALUES (1, 'cdn.example.com', 9, 1, 'initial configuration');

-- migrate:down
DROP TABLE config_versions;
DROP FUNCTION notify_config_version();
