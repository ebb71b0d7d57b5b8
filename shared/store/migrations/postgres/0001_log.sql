-- The append-only event log (PostgreSQL). See src/lib.rs for the semantics.
--
-- `position` is assigned by the store as max + 1 while holding
-- `LOCK TABLE events IN EXCLUSIVE MODE`, never by a sequence (a rolled-back
-- nextval leaves a gap), so it is gap-free and in commit order.
-- Payload and metadata are TEXT, not jsonb: jsonb reorders keys and would
-- change the bytes the hash covers.

CREATE TABLE events (
    position       BIGINT  PRIMARY KEY CHECK (position >= 1),
    stream         TEXT    NOT NULL,
    version        BIGINT  NOT NULL CHECK (version >= 1),
    id             TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at_ms BIGINT  NOT NULL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    CONSTRAINT events_id_unique UNIQUE (id),
    CONSTRAINT events_stream_version_unique UNIQUE (stream, version)
);

-- Commands seen so far, so that a retried command returns its first outcome.
-- The positions are those of the append that recorded it (NULL when the
-- command produced no events).
CREATE TABLE commands (
    id             TEXT    PRIMARY KEY,
    outcome        TEXT    NOT NULL,
    first_position BIGINT,
    last_position  BIGINT,
    stream_version BIGINT
);

-- The database itself refuses to rewrite history. Statement-level, so even an
-- UPDATE or DELETE that matches no row is refused, and TRUNCATE too.
CREATE FUNCTION mentat_refuse_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION mentat_refuse_rewrite();

CREATE TRIGGER commands_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON commands
    FOR EACH STATEMENT EXECUTE FUNCTION mentat_refuse_rewrite();
