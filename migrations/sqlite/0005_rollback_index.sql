-- The change list and the report look up the changes that roll back others: change.requested
-- facts naming `rollback_of`. They are few, but without this index every change.requested payload
-- was read to find them, most of a short list's time on a large ledger (0.5 s of 100,000 on
-- SQLite). The predicate is the one `Store::rollback_facts` queries with, so the planner answers
-- from this index alone; `kind` leads so it wins over facts_kind_time without statistics.
CREATE INDEX facts_rollbacks ON facts (kind, entry_seq)
    WHERE kind = 'change.requested' AND payload LIKE '%"rollback_of":%';
