-- Deploy annotations sent to the tracing backend ([annotations.otlp], issue 18): how far the
-- annotator has followed the chain, and its outbox. Operational, not evidence: nothing here is
-- derived from the entries the verifier recomputes, and a lost row at worst repeats a marker.
CREATE TABLE annotation_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq  BIGINT  NOT NULL  -- every entry up to and including it has been looked at
);
-- One row per deploy announced: claimed by the instance that sends it, then sent or refused.
CREATE TABLE annotations (
    change_id   TEXT    NOT NULL,
    attempt     TEXT    NOT NULL,  -- the task run id of the change's first successful deploy attempt
    state       TEXT    NOT NULL,  -- claimed | sent | refused | gone (no such deploy any more)
    updated_ns  BIGINT  NOT NULL,  -- when the state was last set (a stale claim is sent again)
    PRIMARY KEY (change_id, attempt)
);
CREATE INDEX annotations_claimed ON annotations (state, updated_ns);
