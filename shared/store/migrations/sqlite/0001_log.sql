-- The append-only event log (SQLite). See src/lib.rs for the semantics.
--
-- `position` is assigned by the store as max + 1 inside a BEGIN IMMEDIATE
-- transaction, never by AUTOINCREMENT, so it is gap-free and in commit order.
-- Payload and metadata are JSON text kept byte for byte: the hash covers them.

CREATE TABLE events (
    position       INTEGER PRIMARY KEY CHECK (position >= 1),
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    id             TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);

CREATE UNIQUE INDEX events_id_unique ON events (id);
CREATE UNIQUE INDEX events_stream_version_unique ON events (stream, version);

-- Commands seen so far, so that a retried command returns its first outcome.
-- The positions are those of the append that recorded it (NULL when the
-- command produced no events).
CREATE TABLE commands (
    id             TEXT    PRIMARY KEY,
    outcome        TEXT    NOT NULL,
    first_position INTEGER,
    last_position  INTEGER,
    stream_version INTEGER
);

-- The database itself refuses to rewrite history.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER commands_no_update BEFORE UPDATE ON commands
BEGIN
    SELECT RAISE(ABORT, 'commands are append-only');
END;

CREATE TRIGGER commands_no_delete BEFORE DELETE ON commands
BEGIN
    SELECT RAISE(ABORT, 'commands are append-only');
END;
