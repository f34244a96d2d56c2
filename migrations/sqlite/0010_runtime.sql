-- Runtime comparisons ([suspects], issue 18). The minutes and the comparisons are ledger entries
-- (runtime.minute; runtime.compared, a fact); this table is operational: how far the comparer
-- has followed the deploy attempts. Lost, it starts again from the head and compares nothing
-- twice (a comparison is one fact per change).
CREATE TABLE runtime_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq  BIGINT  NOT NULL  -- every deploy attempt up to it has been compared or skipped
);
-- The deploy attempts (and, for changes that report no deploy step, the runs' ends) the comparer
-- follows, in chain order.
CREATE INDEX facts_attempts ON facts (entry_seq) WHERE kind IN ('task.finished', 'change.finished');
