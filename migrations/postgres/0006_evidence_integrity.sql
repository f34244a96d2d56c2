-- Evidence integrity (issue 14): the credential index, entry_seq indexes for recomputing derived
-- tables from the chain, and erasure reaching the facts table.

-- Every credential a fact shows (a verified token by digest and jti, a deploying workload's
-- credential id), per subject, with the first entry showing it there: what "this token was used
-- on another change first" is looked up in. Derived from the fact payloads; `verify` recomputes it.
CREATE TABLE credentials (
    credential  TEXT   NOT NULL,
    subject     TEXT   NOT NULL,
    first_seq   BIGINT NOT NULL,
    PRIMARY KEY (credential, subject)
);
CREATE INDEX credentials_seq ON credentials (first_seq);
-- A credential's first use (the reuse lookup).
CREATE INDEX credentials_first ON credentials (credential, first_seq);

-- Version sightings are looked up by key prefix, byte for byte: in the C collation (the
-- database's own need not order bytes), which this index answers.
CREATE INDEX facts_key_bytes ON facts (fact_key COLLATE "C");

-- Derived rows are recomputed in entry order.
CREATE INDEX facts_entry ON facts (entry_seq);
CREATE INDEX spans_entry ON spans (entry_seq);
CREATE INDEX log_records_entry ON log_records (entry_seq);

-- One-time recomputations of derived tables added after a ledger was created.
CREATE TABLE backfills (
    name     TEXT   PRIMARY KEY,
    done_ns  BIGINT NOT NULL
);

-- An erasure removes every copy of the erased payload: a derived row (the facts row is a copy)
-- may be deleted once the erasure is logged, and nothing else may delete it.
CREATE FUNCTION changetrail_derived_erase_only_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM erasures WHERE seq = OLD.entry_seq) THEN
        RAISE EXCEPTION 'a % row can only be deleted by a logged erasure', TG_TABLE_NAME;
    END IF;
    RETURN OLD;
END $$;
CREATE FUNCTION changetrail_credential_erase_only_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM erasures WHERE seq = OLD.first_seq) THEN
        RAISE EXCEPTION 'a % row can only be deleted by a logged erasure', TG_TABLE_NAME;
    END IF;
    RETURN OLD;
END $$;

DROP TRIGGER facts_append_only ON facts;
DELETE FROM facts WHERE entry_seq IN (SELECT seq FROM erasures);
CREATE TRIGGER facts_erase_only_logged BEFORE UPDATE OR DELETE ON facts
    FOR EACH ROW EXECUTE FUNCTION changetrail_derived_erase_only_logged();

DROP TRIGGER spans_append_only ON spans;
CREATE TRIGGER spans_erase_only_logged BEFORE UPDATE OR DELETE ON spans
    FOR EACH ROW EXECUTE FUNCTION changetrail_derived_erase_only_logged();
DROP TRIGGER log_records_append_only ON log_records;
CREATE TRIGGER log_records_erase_only_logged BEFORE UPDATE OR DELETE ON log_records
    FOR EACH ROW EXECUTE FUNCTION changetrail_derived_erase_only_logged();

CREATE TRIGGER credentials_erase_only_logged BEFORE UPDATE OR DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION changetrail_credential_erase_only_logged();
CREATE TRIGGER credentials_no_truncate BEFORE TRUNCATE ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
