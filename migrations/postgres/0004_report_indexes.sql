-- Reports fold changes in chunks: a change's runs, and the facts of those runs that name no other
-- change, are then found from these two indexes alone, without reading any fact row twice.
CREATE INDEX facts_change_run ON facts (change_id, run_id);
CREATE INDEX facts_run_change ON facts (run_id, change_id);
