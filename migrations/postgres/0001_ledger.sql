-- The ledger (LEDGER.md v1). Ledger tables are append-only: triggers refuse UPDATE, DELETE and
-- TRUNCATE. Tamper *evidence* is the hash chain; these triggers are tamper *resistance*.

CREATE TABLE ledger_head (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    origin              TEXT    NOT NULL,
    size                BIGINT  NOT NULL,
    last_leaf           BYTEA   NOT NULL,
    last_time_ns        BIGINT  NOT NULL,
    frontier            BYTEA   NOT NULL,  -- peaks of the tree, 32 bytes each, largest first
    key_id              TEXT    NOT NULL,  -- the key that signs the next entry
    checkpoint_size     BIGINT  NOT NULL,
    checkpoint_time_ns  BIGINT  NOT NULL
);

CREATE TABLE entries (
    seq        BIGINT PRIMARY KEY,
    entry      BYTEA  NOT NULL,  -- entry_bytes exactly as signed
    sig        BYTEA  NOT NULL,
    leaf_hash  BYTEA  NOT NULL,
    time_ns    BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    subject    TEXT   NOT NULL
);
CREATE INDEX entries_subject ON entries (subject, seq);
CREATE INDEX entries_kind ON entries (kind, seq);

-- Payloads live apart so an erasure can delete one without touching the chain. TEXT, never
-- jsonb: the bytes committed to must come back verbatim.
CREATE TABLE payloads (
    seq      BIGINT PRIMARY KEY,
    salt     BYTEA  NOT NULL,
    payload  TEXT   NOT NULL
);

CREATE TABLE erasures (
    seq          BIGINT PRIMARY KEY,
    erasure_seq  BIGINT NOT NULL
);

CREATE TABLE tree_nodes (
    level  INTEGER  NOT NULL,
    idx    BIGINT   NOT NULL,
    hash   BYTEA    NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
    size        BIGINT PRIMARY KEY,
    root        BYTEA  NOT NULL,
    note        TEXT   NOT NULL,
    key_id      TEXT   NOT NULL,
    created_ns  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    key_id        TEXT   NOT NULL,
    vkey          TEXT   PRIMARY KEY,
    from_seq      BIGINT NOT NULL,
    rotation_seq  BIGINT
);

CREATE TABLE api_tokens (
    id           TEXT   PRIMARY KEY,
    name         TEXT   NOT NULL,
    role         TEXT   NOT NULL,
    secret_hash  BYTEA  NOT NULL,
    created_ns   BIGINT NOT NULL,
    revoked_ns   BIGINT
);

CREATE FUNCTION changetrail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;

CREATE FUNCTION changetrail_payload_erase_only_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'payloads cannot be changed, only erased';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM erasures WHERE erasures.seq = OLD.seq) THEN
        RAISE EXCEPTION 'a payload can only be deleted by a logged erasure';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER tree_nodes_append_only BEFORE UPDATE OR DELETE ON tree_nodes
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER tree_nodes_no_truncate BEFORE TRUNCATE ON tree_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER signing_keys_append_only BEFORE UPDATE OR DELETE ON signing_keys
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER signing_keys_no_truncate BEFORE TRUNCATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER erasures_append_only BEFORE UPDATE OR DELETE ON erasures
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER erasures_no_truncate BEFORE TRUNCATE ON erasures
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER payloads_erase_only_logged BEFORE UPDATE OR DELETE ON payloads
    FOR EACH ROW EXECUTE FUNCTION changetrail_payload_erase_only_logged();
CREATE TRIGGER payloads_no_truncate BEFORE TRUNCATE ON payloads
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();
