-- The per-change summary (issue 17): each change folded and judged, as the change list filters
-- and counts it. Derived from the signed facts, kept by the summarizer (read/summary.rs), which
-- follows the chain and refreshes every change whose fold or judgement an entry can move;
-- `verify --database-url` recomputes every row. Rows are replaced, so no append-only trigger.
CREATE TABLE change_summary (
    change_id     TEXT    PRIMARY KEY,
    requested_ns  INTEGER NOT NULL,
    first_request INTEGER NOT NULL,  -- the earliest and latest change.requested fact naming it:
    last_request  INTEGER NOT NULL,  -- the period filter (see storage/summary.rs)
    environment   TEXT    NOT NULL,  -- lower case, '' when none (filters compare without case)
    service       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    exceptions    TEXT    NOT NULL   -- ' CODE CODE ' (sorted, padded), '' for none
);
CREATE INDEX change_summary_order ON change_summary (requested_ns, change_id);
-- The rollbacks of a service, refreshed when a version of it is seen.
CREATE INDEX change_summary_rollbacks ON change_summary (kind, service, environment);

-- How far the summary has followed the chain (through_seq: every entry up to and including it;
-- -1: none yet), and under which correlation settings it was judged (a digest: other settings
-- judge differently, so the summary is rebuilt).
CREATE TABLE summary_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq  INTEGER NOT NULL,
    criteria     TEXT    NOT NULL
);
