-- Facts about changes (CONVENTIONS.md): what spans, log records and Conductor imports state,
-- one row per fact key, each recorded by one ledger entry. Append-only.

CREATE TABLE facts (
    fact_key     TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,   -- the entry kind: change.requested, task.finished, ...
    change_id    TEXT,
    run_id       TEXT,
    source       TEXT    NOT NULL,
    time_ns      INTEGER NOT NULL,
    payload      TEXT    NOT NULL,   -- the fact as JSON (also the entry's payload)
    entry_seq    INTEGER NOT NULL,
    received_ns  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX facts_change ON facts (change_id, time_ns);
CREATE INDEX facts_run ON facts (run_id, time_ns);
CREATE INDEX facts_kind_time ON facts (kind, time_ns);

CREATE TRIGGER facts_no_update BEFORE UPDATE ON facts
BEGIN SELECT RAISE(ABORT, 'facts are append-only'); END;
CREATE TRIGGER facts_no_delete BEFORE DELETE ON facts
BEGIN SELECT RAISE(ABORT, 'facts are append-only'); END;
