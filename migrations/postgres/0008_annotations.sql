-- Deploy annotations sent to the tracing backend ([annotations.otlp], issue 18): how far the
-- annotator has followed the chain, and its outbox. Operational, not evidence: nothing here is
-- derived from the entries the verifier recomputes, and a lost row at worst repeats a marker.
CREATE TABLE annotation_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq  BIGINT  NOT NULL  -- every entry up to and including it has been looked at
);
-- One row per change announced (one marker per change): claimed by the instance that sends it,
-- then sent, refused, or gone (no successful production deploy any more).
CREATE TABLE annotations (
    change_id   TEXT    PRIMARY KEY,
    attempt     TEXT    NOT NULL,  -- the task run id of the deploy attempt announced
    state       TEXT    NOT NULL,  -- claimed | sent | refused | gone
    updated_ns  BIGINT  NOT NULL   -- when the state was last set: the holder's token (a claim
                                   -- left this long unrenewed is sent again)
);
CREATE INDEX annotations_claimed ON annotations (state, updated_ns);
