-- Evidence integrity (issue 14): the credential index, entry_seq indexes for recomputing derived
-- tables from the chain, and erasure reaching the facts table.

-- Every credential a fact shows (a verified token by digest and jti, a deploying workload's
-- credential id), per subject, with the first entry showing it there: what "this token was used
-- on another change first" is looked up in. Derived from the fact payloads; `verify` recomputes it.
CREATE TABLE credentials (
    credential  TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    first_seq   INTEGER NOT NULL,
    PRIMARY KEY (credential, subject)
) WITHOUT ROWID;
CREATE INDEX credentials_seq ON credentials (first_seq);
-- A credential's first use (the reuse lookup).
CREATE INDEX credentials_first ON credentials (credential, first_seq);

-- Derived rows are recomputed in entry order.
CREATE INDEX facts_entry ON facts (entry_seq);
CREATE INDEX spans_entry ON spans (entry_seq);
CREATE INDEX log_records_entry ON log_records (entry_seq);

-- One-time recomputations of derived tables added after a ledger was created.
CREATE TABLE backfills (
    name     TEXT    PRIMARY KEY,
    done_ns  INTEGER NOT NULL
);

-- An erasure removes every copy of the erased payload: the facts row (a copy) may be deleted once
-- the erasure is logged, and nothing else may delete it.
DROP TRIGGER facts_no_delete;
DELETE FROM facts WHERE entry_seq IN (SELECT seq FROM erasures);
CREATE TRIGGER facts_erase_only_logged BEFORE DELETE ON facts
WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE erasures.seq = OLD.entry_seq)
BEGIN SELECT RAISE(ABORT, 'a fact can only be deleted by a logged erasure'); END;

-- So do the spans and log records an erased binding entry bound.
DROP TRIGGER spans_no_delete;
CREATE TRIGGER spans_erase_only_logged BEFORE DELETE ON spans
WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE erasures.seq = OLD.entry_seq)
BEGIN SELECT RAISE(ABORT, 'a span can only be deleted by a logged erasure'); END;
DROP TRIGGER log_records_no_delete;
CREATE TRIGGER log_records_erase_only_logged BEFORE DELETE ON log_records
WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE erasures.seq = OLD.entry_seq)
BEGIN SELECT RAISE(ABORT, 'a log record can only be deleted by a logged erasure'); END;

CREATE TRIGGER credentials_no_update BEFORE UPDATE ON credentials
BEGIN SELECT RAISE(ABORT, 'credentials are append-only'); END;
CREATE TRIGGER credentials_erase_only_logged BEFORE DELETE ON credentials
WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE erasures.seq = OLD.first_seq)
BEGIN SELECT RAISE(ABORT, 'a credential row can only be deleted by a logged erasure'); END;
