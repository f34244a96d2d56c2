//! Facts read from the evidence and the credential uses they show: written with the entries that
//! record them (the writer skips repeats), read back by the Conductor import (task ids it saw
//! before) and the change list; an erasure removes what its entry's payload produced.

use super::{AppendTx, INSERT_CHUNK, Result, StorageError, Store, i, u};
use crate::core::evidence::{Fact, FactRecord, ObservedRun};
use sqlx::QueryBuilder;
use std::collections::HashSet;

impl Store {
    /// Change ids with a change.requested fact in `[from, to)` (nanoseconds).
    pub async fn changes_between(&self, from: i64, to: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT DISTINCT change_id FROM facts WHERE kind = 'change.requested' AND change_id IS NOT NULL \
             AND time_ns >= $1 AND time_ns < $2 ORDER BY change_id")
            .bind(from).bind(to).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// The entry that recorded the fact stored under `key` (a repeat of a fact answers with its
    /// first entry), counting only a row its own fact entry backs, as the writer does.
    pub async fn fact_entry(&self, key: &str) -> Result<Option<u64>> {
        let row: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT f.entry_seq FROM facts f JOIN entries e ON e.seq = f.entry_seq \
             AND e.kind = f.kind AND e.subject = COALESCE(f.change_id, f.run_id, '') \
             WHERE f.fact_key = $1")
            .bind(key).fetch_optional(p).await)?;
        row.map(|(s,)| u(s, "fact entry seq")).transpose()
    }

    /// version.observed facts first seen in `[from, to]` (inclusive), by time.
    pub async fn version_facts_between(&self, from: i64, to: i64) -> Result<Vec<FactRecord>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM facts WHERE kind = 'version.observed' AND time_ns >= $1 AND time_ns <= $2 \
             ORDER BY time_ns, fact_key")
            .bind(from).bind(to).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(p,)| {
                serde_json::from_str(&p).map_err(|e| StorageError::Corrupt(format!("fact: {e}")))
            })
            .collect()
    }

    /// All version observations, oldest first.
    pub async fn version_facts(&self) -> Result<Vec<FactRecord>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM facts WHERE kind = 'version.observed' ORDER BY time_ns, fact_key")
            .fetch_all(p).await)?;
        rows.into_iter()
            .map(|(p,)| {
                serde_json::from_str(&p).map_err(|e| StorageError::Corrupt(format!("fact: {e}")))
            })
            .collect()
    }

    /// The baseline observation (`run.observed`) of a Conductor run, the change it named, and
    /// whether a deletion was recorded after it. The baseline is the freshest state seen: the
    /// greatest updateTime (ties and observations without one: the latest entry), not merely
    /// the last committed, since two fetches racing may commit the older state last.
    pub async fn last_observation(
        &self,
        run_id: &str,
    ) -> Result<Option<(ObservedRun, Option<String>, bool)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload, entry_seq FROM facts WHERE run_id = $1 AND source = 'conductor' \
             AND kind IN ('run.observed', 'history.rewritten') ORDER BY entry_seq")
            .bind(run_id).fetch_all(p).await)?;
        let mut best: Option<((i64, i64), ObservedRun, Option<String>)> = None;
        let mut last_deletion = None;
        for (p, seq) in rows {
            let f: FactRecord = serde_json::from_str(&p)
                .map_err(|e| StorageError::Corrupt(format!("fact: {e}")))?;
            match f.fact {
                Fact::RunObserved(o) => {
                    let rank = (o.update_time_ms.unwrap_or(i64::MIN), seq);
                    if best.as_ref().is_none_or(|(r, _, _)| rank >= *r) {
                        best = Some((rank, o, f.change_id));
                    }
                }
                Fact::HistoryRewritten(r)
                    if r.after_digest.is_none() && r.before_digest.is_some() =>
                {
                    last_deletion = Some(seq);
                }
                _ => {}
            }
        }
        Ok(best.map(|((_, seq), o, change)| (o, change, last_deletion.is_some_and(|d| d > seq))))
    }

    /// Conductor runs observed at or after `since_ns` by the sender named `sent_by` without a
    /// token (a reconciler), whose id sorts after `after`, at most `limit`, by id: a
    /// round-robin over the runs a reconciler re-checks. Runs others imported (an ingest token
    /// may state any run) are not its to re-check.
    pub async fn observed_runs(
        &self,
        sent_by: &str,
        after: &str,
        since_ns: i64,
        limit: u32,
    ) -> Result<Vec<String>> {
        // The payload is the fact as serialized: a sender without a token is exactly
        // `"sent_by":{"name":…}` (a token's id would come first). LIKE's own wildcards are
        // escaped; the JSON text of the name cannot appear unescaped inside a stated string.
        // (SQLite's LIKE ignores ASCII case: names differing only so are one reconciler.)
        let name =
            serde_json::to_string(sent_by).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let literal = format!("\"sent_by\":{{\"name\":{name}}}")
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{literal}%");
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT DISTINCT run_id FROM facts WHERE kind = 'run.observed' AND source = 'conductor' \
             AND time_ns >= $1 AND run_id > $2 AND payload LIKE $4 ESCAPE '\\' \
             ORDER BY run_id LIMIT $3")
            .bind(since_ns).bind(after).bind(i64::from(limit)).bind(&pattern).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(r,)| r).collect())
    }

    /// Task ids seen in earlier Conductor imports of a run (to notice history that vanished).
    pub async fn imported_task_ids(&self, run_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT payload FROM facts WHERE run_id = $1 AND source = 'conductor' AND kind IN ('task.finished', 'approval.decided', 'approval.requested')")
            .bind(run_id).fetch_all(p).await)?;
        let mut ids = Vec::new();
        for (p,) in rows {
            if let Ok(f) = serde_json::from_str::<FactRecord>(&p) {
                match f.fact {
                    crate::core::evidence::Fact::Task(t) => ids.push(t.task_run_id),
                    crate::core::evidence::Fact::Approval(a) => ids.extend(a.task_run_id),
                    _ => {}
                }
            }
        }
        Ok(ids)
    }
}

impl AppendTx {
    /// Which of these fact keys are stored already.
    pub async fn existing_facts(&mut self, keys: &[&str]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(INSERT_CHUNK) {
            // Only a row recorded by a fact entry about the same subject counts: a row a
            // database writer planted under an expected key must not make the real fact a
            // "repeat" that is never signed.
            let rows: Vec<(String,)> = on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "SELECT f.fact_key FROM facts f JOIN entries e ON e.seq = f.entry_seq \
                     AND e.kind = f.kind AND e.subject = COALESCE(f.change_id, f.run_id, '') \
                     WHERE f.fact_key IN (");
                let mut sep = q.separated(", ");
                for k in chunk {
                    sep.push_bind(*k);
                }
                q.push(")");
                q.build_query_as().fetch_all(&mut *c).await?
            });
            found.extend(rows.into_iter().map(|(k,)| k));
        }
        Ok(found)
    }

    /// Stores facts, each with the seq and time of the entry that records it, and the
    /// credentials they show (the first entry per credential and subject is kept).
    pub async fn insert_facts(&mut self, rows: &[(&FactRecord, u64, i64)]) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            let payloads: Vec<String> = chunk
                .iter()
                .map(|(f, _, _)| {
                    serde_json::to_string(f).map_err(|e| StorageError::Corrupt(e.to_string()))
                })
                .collect::<Result<_>>()?;
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO facts (fact_key, kind, change_id, run_id, source, time_ns, payload, entry_seq, received_ns) ");
                q.push_values(chunk.iter().zip(&payloads), |mut b, ((f, seq, received), payload)| {
                    b.push_bind(&f.key)
                        .push_bind(f.fact.entry_kind())
                        .push_bind(&f.change_id)
                        .push_bind(&f.run_id)
                        .push_bind(f.source.as_str())
                        .push_bind(f.time_ns)
                        .push_bind(payload)
                        .push_bind(i(*seq))
                        .push_bind(*received);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        let creds: Vec<(String, String, u64)> = rows
            .iter()
            .flat_map(|(f, seq, _)| {
                let subject = f.subject();
                f.credentials()
                    .into_iter()
                    .map(move |c| (c, subject.clone(), *seq))
            })
            .collect();
        self.insert_credentials(&creds).await
    }

    /// Records credential uses; a (credential, subject) seen before keeps its first entry.
    pub(super) async fn insert_credentials(
        &mut self,
        rows: &[(String, String, u64)],
    ) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new("INSERT INTO credentials (credential, subject, first_seq) ");
                q.push_values(chunk, |mut b, (cred, subject, seq)| {
                    b.push_bind(cred).push_bind(subject).push_bind(i(*seq));
                });
                q.push(" ON CONFLICT (credential, subject) DO NOTHING");
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    /// Removes what an erased entry's payload produced in derived tables: its facts row, the
    /// credential uses only it showed (a use another fact of the same subject shows moves to
    /// that fact's entry), and the spans and log records a binding entry bound.
    pub async fn erase_derived(&mut self, seq: u64) -> Result<()> {
        let gone: Vec<(String, String)> = on_tx!(self, c => sqlx::query_as(
            "SELECT credential, subject FROM credentials WHERE first_seq = $1")
            .bind(i(seq)).fetch_all(&mut *c).await)?;
        on_tx!(self, c => {
            sqlx::query("DELETE FROM facts WHERE entry_seq = $1").bind(i(seq)).execute(&mut *c).await?;
            sqlx::query("DELETE FROM credentials WHERE first_seq = $1").bind(i(seq)).execute(&mut *c).await?;
            // An erased binding takes the telemetry it bound with it.
            sqlx::query("DELETE FROM spans WHERE entry_seq = $1").bind(i(seq)).execute(&mut *c).await?;
            sqlx::query("DELETE FROM log_records WHERE entry_seq = $1").bind(i(seq)).execute(&mut *c).await?;
        });
        let subjects: std::collections::BTreeSet<&String> = gone.iter().map(|(_, s)| s).collect();
        let mut again = Vec::new();
        for subject in subjects {
            let facts: Vec<(String, i64)> = on_tx!(self, c => sqlx::query_as(
                "SELECT payload, entry_seq FROM facts WHERE change_id = $1 \
                 OR (change_id IS NULL AND run_id = $1) ORDER BY entry_seq")
                .bind(subject).fetch_all(&mut *c).await)?;
            for (payload, fseq) in facts {
                let Ok(f) = serde_json::from_str::<FactRecord>(&payload) else {
                    continue;
                };
                for cred in f.credentials() {
                    if gone.iter().any(|(c, s)| c == &cred && s == subject) {
                        again.push((cred, subject.clone(), u(fseq, "entry seq")?));
                    }
                }
            }
        }
        self.insert_credentials(&again).await
    }
}
