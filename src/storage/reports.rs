//! Queries the reports stream through: changes of a period in chunks, with their facts, spans and
//! ledger entries, all bounded by the checkpoint the report is built against. Facts come back as
//! their stored text so a damaged one becomes a finding in the report instead of an abort.

use super::{Result, Store, hash, i, u};
use crate::core::ledger::hash::Hash;
use sqlx::QueryBuilder;

/// The change.requested facts below `$1` that name a change they roll back. The predicate is
/// exactly the one of the partial index `facts_rollbacks` (migration 0005), which is what lets the
/// planner answer from that index instead of reading every change.requested payload: change the
/// two together (`storage::the_rollback_lookup_is_answered_from_its_index` checks the plan).
pub const ROLLBACK_FACTS: &str = "SELECT payload FROM facts WHERE kind = 'change.requested' \
    AND entry_seq < $1 AND payload LIKE '%\"rollback_of\":%'";

/// A fact as stored: the change it was read for, its JSON text and the entry recording it.
#[derive(Debug, Clone)]
pub struct RawFact {
    pub change_id: String,
    pub payload: String,
    pub entry_seq: u64,
    /// The time of that entry: the fact's receipt.
    pub received_ns: i64,
}

/// Entries about one subject below the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectEntries {
    pub subject: String,
    pub first: u64,
    pub last: u64,
    pub count: u64,
}

impl Store {
    /// (change id, run id, stated time, receipt) of every change.requested fact below `size`:
    /// no payloads.
    pub async fn change_heads(
        &self,
        size: u64,
    ) -> Result<Vec<(Option<String>, Option<String>, i64, i64)>> {
        Ok(on_pool!(self, p => sqlx::query_as(
            "SELECT change_id, run_id, time_ns, received_ns FROM facts \
             WHERE kind = 'change.requested' AND entry_seq >= 0 AND entry_seq < $1")
            .bind(i(size)).fetch_all(p).await)?)
    }

    /// Those of `ids` that a change.requested fact below entry `size` names as its change or run.
    pub async fn existing_changes(&self, ids: &[String], size: u64) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(Option<String>, Option<String>)> = on_pool!(self, p => {
            // `kind || ''` keeps SQLite off facts_kind_time: without statistics it would read
            // every change.requested fact (0.27 s on 100k changes) instead of looking the ids up
            // in facts_change_run and facts_run_change (0.3 ms). The list asks once per chunk.
            let mut q = QueryBuilder::new(
                "SELECT change_id, run_id FROM facts WHERE kind || '' = 'change.requested' AND entry_seq < ");
            q.push_bind(i(size)).push(" AND (change_id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            q.push(") OR run_id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            q.push("))");
            q.build_query_as().fetch_all(p).await
        })?;
        let wanted: std::collections::HashSet<&String> = ids.iter().collect();
        Ok(rows
            .into_iter()
            .flat_map(|(c, r)| [c, r])
            .flatten()
            .filter(|id| wanted.contains(id))
            .collect())
    }

    /// change.requested facts below `size` that name a change they roll back.
    pub async fn rollback_facts(&self, size: u64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(ROLLBACK_FACTS)
            .bind(i(size)).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    /// change.requested facts below `size` neither timed nor received in `[from, to)`.
    pub async fn change_facts_outside(&self, from: i64, to: i64, size: u64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM facts WHERE kind = 'change.requested' AND entry_seq < $1 \
             AND (time_ns < $2 OR time_ns >= $3) AND (received_ns < $2 OR received_ns >= $3)")
            .bind(i(size)).bind(from).bind(to).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    /// Stored facts of one kind below `size` (text, entry seq and receipt), in no particular
    /// order.
    pub async fn facts_of_kind(&self, kind: &str, size: u64) -> Result<Vec<(String, u64, i64)>> {
        let rows: Vec<(String, i64, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload, entry_seq, received_ns FROM facts WHERE kind = $1 AND entry_seq < $2")
            .bind(kind).bind(i(size)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(p, s, r)| Ok((p, u(s, "entry seq")?, r)))
            .collect()
    }

    /// The changes that claim each of `runs` below `size`: facts naming the run with a change
    /// id, and the change whose own id the run id is. (run, change) pairs.
    pub async fn run_claims(&self, runs: &[String], size: u64) -> Result<Vec<(String, String)>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT DISTINCT run_id, change_id FROM facts WHERE change_id IS NOT NULL AND entry_seq < ");
            q.push_bind(i(size)).push(" AND run_id IN (");
            let mut sep = q.separated(", ");
            for r in runs {
                sep.push_bind(r);
            }
            // A gate decision names the id it was asked about, not a run the asker may claim:
            // anyone with a gate token could otherwise contest another change's run.
            q.push(") UNION SELECT DISTINCT change_id, change_id FROM facts WHERE entry_seq < ");
            q.push_bind(i(size)).push(" AND kind <> 'gate.decided' AND change_id IN (");
            let mut sep = q.separated(", ");
            for r in runs {
                sep.push_bind(r);
            }
            q.push(")");
            q.build_query_as().fetch_all(p).await
        })?)
    }

    /// The facts of each change in `ids` below `size`: those naming the change, and those of its
    /// runs (a task span may name only the run) that name no change at all — a fact naming
    /// another change is that change's, whatever run it names.
    pub async fn facts_of_changes(&self, ids: &[String], size: u64) -> Result<Vec<RawFact>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, i64, i64)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT f.change_id, f.payload, f.entry_seq, f.received_ns FROM facts f WHERE f.entry_seq < ");
            q.push_bind(i(size)).push(" AND f.change_id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            // Both halves of the run join are answered from indexes (migration 0004); only facts
            // that belong to the change through its run are read.
            q.push(") UNION ALL SELECT r.change_id, f.payload, f.entry_seq, f.received_ns FROM \
                    (SELECT DISTINCT change_id, run_id FROM facts WHERE run_id IS NOT NULL AND entry_seq < ");
            q.push_bind(i(size)).push(" AND change_id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            // CROSS JOIN keeps SQLite's order: from each run to its facts (facts_run_change),
            // not from every fact naming no change (all version sightings) to the runs.
            q.push(")) r CROSS JOIN facts f WHERE f.run_id = r.run_id AND f.change_id IS NULL AND f.entry_seq < ");
            q.push_bind(i(size));
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(change_id, payload, seq, received_ns)| {
                Ok(RawFact {
                    change_id,
                    payload,
                    entry_seq: u(seq, "entry seq")?,
                    received_ns,
                })
            })
            .collect()
    }

    /// Spans bound below entry `size` per (subject, trace) for the subjects given: (subject,
    /// trace id hex, count).
    pub async fn span_counts(
        &self,
        subjects: &[String],
        size: u64,
    ) -> Result<Vec<(String, String, u64)>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, Vec<u8>, i64)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT subject, trace_id, COUNT(*) FROM spans WHERE entry_seq < ");
            q.push_bind(i(size)).push(" AND subject IN (");
            let mut sep = q.separated(", ");
            for s in subjects {
                sep.push_bind(s);
            }
            q.push(") GROUP BY subject, trace_id");
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(s, t, n)| Ok((s, hex::encode(t), u(n, "span count")?)))
            .collect()
    }

    /// The range and number of entries below `size` about each of `subjects`.
    pub async fn entries_of_subjects(
        &self,
        subjects: &[String],
        size: u64,
    ) -> Result<Vec<SubjectEntries>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, i64, i64, i64)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new(
                "SELECT subject, MIN(seq), MAX(seq), COUNT(*) FROM entries WHERE seq < ");
            q.push_bind(i(size)).push(" AND subject IN (");
            let mut sep = q.separated(", ");
            for s in subjects {
                sep.push_bind(s);
            }
            q.push(") GROUP BY subject");
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(subject, a, b, n)| {
                Ok(SubjectEntries {
                    subject,
                    first: u(a, "seq")?,
                    last: u(b, "seq")?,
                    count: u(n, "entry count")?,
                })
            })
            .collect()
    }

    /// (seq, leaf hash, subject) of the entries asked for that exist.
    pub async fn leaves(&self, seqs: &[u64]) -> Result<Vec<(u64, Hash, String)>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, Vec<u8>, String)> = on_pool!(self, p => {
            let mut q = QueryBuilder::new("SELECT seq, leaf_hash, subject FROM entries WHERE seq IN (");
            let mut sep = q.separated(", ");
            for s in seqs {
                sep.push_bind(i(*s));
            }
            q.push(")");
            q.build_query_as().fetch_all(p).await
        })?;
        rows.into_iter()
            .map(|(s, h, subject)| Ok((u(s, "seq")?, hash(&h, "leaf hash")?, subject)))
            .collect()
    }
}
