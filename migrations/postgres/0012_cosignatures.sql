-- Witness cosignatures ([[tlog.witnesses]], C2SP tlog-witness, issue 20). Append-only like the
-- checkpoints they sit beside: each row is a signature line that verifies by itself over the
-- stored checkpoint, so there is never a reason to change one, and deleting one only loses
-- evidence. A repeated cosignature of the same checkpoint by the same key is kept once.
CREATE TABLE cosignatures (
    checkpoint_size  BIGINT  NOT NULL,
    witness          TEXT    NOT NULL,  -- the witness's key name
    key_id           TEXT    NOT NULL,  -- its cosignature key id, 8 hex characters
    line             TEXT    NOT NULL,  -- the signature line, without its newline
    timestamp_s      BIGINT  NOT NULL,  -- when the witness says it cosigned (POSIX seconds)
    received_ns      BIGINT  NOT NULL,  -- when this service stored it
    PRIMARY KEY (checkpoint_size, witness, key_id)
);
CREATE TRIGGER cosignatures_append_only BEFORE UPDATE OR DELETE ON cosignatures
    FOR EACH ROW EXECUTE FUNCTION changetrail_append_only();
CREATE TRIGGER cosignatures_no_truncate BEFORE TRUNCATE ON cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION changetrail_append_only();

-- What the witness client remembers per witness: the tree size the witness last cosigned (the
-- `old` of the next add-checkpoint). Operational: if lost, a 409 tells the client again.
CREATE TABLE witness_state (
    witness     TEXT    PRIMARY KEY,  -- the witness's vkey
    known_size  BIGINT  NOT NULL,
    updated_ns  BIGINT  NOT NULL
);
