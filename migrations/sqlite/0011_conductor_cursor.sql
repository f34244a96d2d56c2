-- Conductor reconciliation ([conductor], issue 19): how far the reconciler has imported from a
-- Conductor server. Operational, not evidence (the imported facts are the evidence, and they
-- dedup): a lost row re-imports from the look-back, and nothing is lost or recorded twice.
CREATE TABLE conductor_cursor (
    server          TEXT    PRIMARY KEY,  -- the Conductor base URL (no credentials)
    update_time_ms  BIGINT  NOT NULL,     -- executions updated before it are all imported
    ids_at          TEXT    NOT NULL,     -- JSON array: those updated exactly at it, imported
    moved_ns        BIGINT  NOT NULL      -- when it last moved, by this service's clock
);
