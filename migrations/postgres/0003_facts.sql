-- Facts about changes (CONVENTIONS.md): what spans, log records and Conductor imports state,
-- one row per fact key, each recorded by one ledger entry. Append-only.

CREATE TABLE facts (
    fact_key     TEXT   PRIMARY KEY,
    kind         TEXT   NOT NULL,
    change_id    TEXT,
    run_id       TEXT,
    source       TEXT   NOT NULL,
    time_ns      BIGINT NOT NULL,
    payload      TEXT   NOT NULL,
    entry_seq    BIGINT NOT NULL,
    received_ns  BIGINT NOT NULL
);
CREATE INDEX facts_change ON facts (change_id, time_ns);
CREATE INDEX facts_run ON facts (run_id, time_ns);
CREATE INDEX facts_kind_time ON facts (kind, time_ns);

CREATE TRIGGER facts_append_only BEFORE UPDATE OR DELETE ON facts
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER facts_no_truncate BEFORE TRUNCATE ON facts
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
