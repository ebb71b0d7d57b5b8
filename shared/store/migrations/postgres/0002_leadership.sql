-- Planner leadership: one row per epoch, the newest leads. A planner takes
-- the next epoch only when the newest one's lease has run out (database
-- time), and every append checks, inside its own transaction, that it was
-- decided under the newest epoch: a planner that lost its lease while
-- paused or cut off cannot append a single event. Rows are never deleted;
-- only the newest row's lease is renewed.
CREATE TABLE planner_epochs (
    epoch          BIGINT PRIMARY KEY CHECK (epoch >= 1),
    planner        TEXT   NOT NULL,
    elected_at_ms  BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL
);

CREATE TRIGGER planner_epochs_never_deleted
    BEFORE DELETE OR TRUNCATE ON planner_epochs
    FOR EACH STATEMENT EXECUTE FUNCTION mentat_refuse_rewrite();
