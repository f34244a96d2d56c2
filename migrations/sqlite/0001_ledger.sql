-- The ledger (LEDGER.md v1). Ledger tables are append-only: triggers refuse UPDATE and DELETE.
-- Tamper *evidence* is the hash chain; these triggers are tamper *resistance* against mistakes.

CREATE TABLE ledger_head (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    origin              TEXT    NOT NULL,
    size                INTEGER NOT NULL,
    last_leaf           BLOB    NOT NULL,
    last_time_ns        INTEGER NOT NULL,
    frontier            BLOB    NOT NULL,  -- peaks of the tree, 32 bytes each, largest first
    key_id              TEXT    NOT NULL,  -- the key that signs the next entry
    checkpoint_size     INTEGER NOT NULL,
    checkpoint_time_ns  INTEGER NOT NULL
);

CREATE TABLE entries (
    seq        INTEGER PRIMARY KEY,
    entry      BLOB    NOT NULL,  -- entry_bytes exactly as signed
    sig        BLOB    NOT NULL,
    leaf_hash  BLOB    NOT NULL,
    time_ns    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    subject    TEXT    NOT NULL
);
CREATE INDEX entries_subject ON entries (subject, seq);
CREATE INDEX entries_kind ON entries (kind, seq);

-- Payloads live apart so an erasure can delete one without touching the chain.
CREATE TABLE payloads (
    seq      INTEGER PRIMARY KEY,
    salt     BLOB NOT NULL,
    payload  TEXT NOT NULL
);

-- An erasure is recorded here (with the payload.erased entry) before the payload row goes.
CREATE TABLE erasures (
    seq          INTEGER PRIMARY KEY,
    erasure_seq  INTEGER NOT NULL
);

-- Perfect subtrees of level >= 1 (level 0 is entries.leaf_hash), for proofs.
CREATE TABLE tree_nodes (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    size        INTEGER PRIMARY KEY,
    root        BLOB    NOT NULL,
    note        TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    created_ns  INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    key_id        TEXT    NOT NULL,
    vkey          TEXT    PRIMARY KEY,
    from_seq      INTEGER NOT NULL,   -- first entry this key signs
    rotation_seq  INTEGER             -- the key.rotated entry that introduced it (NULL for the first key)
);

CREATE TABLE api_tokens (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    secret_hash  BLOB    NOT NULL,
    created_ns   INTEGER NOT NULL,
    revoked_ns   INTEGER
);

CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER tree_nodes_no_update BEFORE UPDATE ON tree_nodes
BEGIN SELECT RAISE(ABORT, 'tree nodes are append-only'); END;
CREATE TRIGGER tree_nodes_no_delete BEFORE DELETE ON tree_nodes
BEGIN SELECT RAISE(ABORT, 'tree nodes are append-only'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER signing_keys_no_update BEFORE UPDATE ON signing_keys
BEGIN SELECT RAISE(ABORT, 'signing keys are append-only'); END;
CREATE TRIGGER signing_keys_no_delete BEFORE DELETE ON signing_keys
BEGIN SELECT RAISE(ABORT, 'signing keys are append-only'); END;
CREATE TRIGGER erasures_no_update BEFORE UPDATE ON erasures
BEGIN SELECT RAISE(ABORT, 'erasures are append-only'); END;
CREATE TRIGGER erasures_no_delete BEFORE DELETE ON erasures
BEGIN SELECT RAISE(ABORT, 'erasures are append-only'); END;
CREATE TRIGGER payloads_no_update BEFORE UPDATE ON payloads
BEGIN SELECT RAISE(ABORT, 'payloads cannot be changed, only erased'); END;
CREATE TRIGGER payloads_erase_only_logged BEFORE DELETE ON payloads
WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE erasures.seq = OLD.seq)
BEGIN SELECT RAISE(ABORT, 'a payload can only be deleted by a logged erasure'); END;
