-- migrate:up
-- Who made each change and from where: a static token's name (actor_issuer NULL) or a JWT's
-- sub and iss, and the client address. NULL in rows written before this.
ALTER TABLE config_versions
    ADD COLUMN actor text,
    ADD COLUMN actor_issuer text,
    ADD COLUMN actor_address text;

-- On an override, who created or last replaced it.
ALTER TABLE rate_limits
    ADD COLUMN actor text,
    ADD COLUMN actor_issuer text,
    ADD COLUMN actor_address text;

-- migrate:down
ALTER TABLE rate_limits DROP COLUMN actor, DROP COLUMN actor_issuer, DROP COLUMN actor_address;
ALTER TABLE config_versions
    DROP COLUMN actor, DROP COLUMN actor_issuer, DROP COLUMN actor_address;
