-- Kept telemetry: spans and log records that are audit evidence, stored as the exact bytes the
-- ledger's spans.bound / logs.bound entries commit to (secrets already redacted). Append-only.

CREATE TABLE spans (
    trace_id        BYTEA  NOT NULL,
    span_id         BYTEA  NOT NULL,
    parent_span_id  BYTEA,
    digest          BYTEA  NOT NULL,
    body            BYTEA  NOT NULL,
    service         TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    start_ns        BIGINT NOT NULL,
    end_ns          BIGINT NOT NULL,
    subject         TEXT   NOT NULL,
    rule            TEXT   NOT NULL,
    entry_seq       BIGINT NOT NULL,
    received_ns     BIGINT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX spans_subject ON spans (subject);

CREATE TABLE log_records (
    digest       BYTEA  PRIMARY KEY,
    body         BYTEA  NOT NULL,
    trace_id     BYTEA,
    span_id      BYTEA,
    time_ns      BIGINT NOT NULL,
    event_name   TEXT   NOT NULL,
    subject      TEXT   NOT NULL,
    entry_seq    BIGINT NOT NULL,
    received_ns  BIGINT NOT NULL
);
CREATE INDEX log_records_subject ON log_records (subject);
CREATE INDEX log_records_trace ON log_records (trace_id);

CREATE TRIGGER spans_append_only BEFORE UPDATE OR DELETE ON spans
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER spans_no_truncate BEFORE TRUNCATE ON spans
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER log_records_append_only BEFORE UPDATE OR DELETE ON log_records
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER log_records_no_truncate BEFORE TRUNCATE ON log_records
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
