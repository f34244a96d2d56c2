-- Kept telemetry: spans and log records that are audit evidence, stored as the exact bytes the
-- ledger's spans.bound / logs.bound entries commit to (secrets already redacted). Append-only.

CREATE TABLE spans (
    trace_id        BLOB    NOT NULL,
    span_id         BLOB    NOT NULL,
    parent_span_id  BLOB,
    digest          BLOB    NOT NULL,
    body            BLOB    NOT NULL,  -- OTLP ResourceSpans (one resource, scope and span), protobuf
    service         TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    start_ns        INTEGER NOT NULL,
    end_ns          INTEGER NOT NULL,
    subject         TEXT    NOT NULL,  -- the change it is about, when known
    rule            TEXT    NOT NULL,  -- why it was kept: attribute, link, trace
    entry_seq       INTEGER NOT NULL,  -- the spans.bound entry that references it
    received_ns     INTEGER NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX spans_subject ON spans (subject);

CREATE TABLE log_records (
    digest       BLOB    PRIMARY KEY,
    body         BLOB    NOT NULL,    -- OTLP ResourceLogs (one resource, scope and record), protobuf
    trace_id     BLOB,
    span_id      BLOB,
    time_ns      INTEGER NOT NULL,
    event_name   TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    entry_seq    INTEGER NOT NULL,
    received_ns  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX log_records_subject ON log_records (subject);
CREATE INDEX log_records_trace ON log_records (trace_id);

CREATE TRIGGER spans_no_update BEFORE UPDATE ON spans
BEGIN SELECT RAISE(ABORT, 'spans are append-only'); END;
CREATE TRIGGER spans_no_delete BEFORE DELETE ON spans
BEGIN SELECT RAISE(ABORT, 'spans are append-only'); END;
CREATE TRIGGER log_records_no_update BEFORE UPDATE ON log_records
BEGIN SELECT RAISE(ABORT, 'log records are append-only'); END;
CREATE TRIGGER log_records_no_delete BEFORE DELETE ON log_records
BEGIN SELECT RAISE(ABORT, 'log records are append-only'); END;
