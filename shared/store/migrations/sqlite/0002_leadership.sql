-- Planner leadership: one row per epoch, the newest leads (see the
-- PostgreSQL migration). With SQLite one planner runs per log file, so
-- there is one row per start; the check in every append is the same.
CREATE TABLE planner_epochs (
    epoch          INTEGER PRIMARY KEY CHECK (epoch >= 1),
    planner        TEXT    NOT NULL,
    elected_at_ms  INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL
);

CREATE TRIGGER planner_epochs_no_delete BEFORE DELETE ON planner_epochs
BEGIN
    SELECT RAISE(ABORT, 'planner epochs are never deleted');
END;
