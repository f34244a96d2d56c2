//! Kept telemetry: the OTLP spans and log records bound to ledger entries, stored whole so their
//! digests can be checked against the entries that name them.

use super::{AppendTx, INSERT_CHUNK, Result, StorageError, Store, hash, i, u};
use crate::core::evidence::telemetry::{LogRow, SpanRow};
use crate::core::ledger::hash::Hash;
use sqlx::QueryBuilder;
use std::collections::HashSet;

/// A stored span of one trace, with the entry that binds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpan {
    pub span_id: [u8; 8],
    pub digest: Hash,
    pub body: Vec<u8>,
    pub name: String,
    pub rule: String,
    pub subject: String,
    pub entry_seq: u64,
}

/// A kept span of a change, for the change view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanSummary {
    pub trace_id: String,
    pub span_id: String,
    pub service: String,
    pub rule: String,
    /// The stored OTLP bytes (for status and names).
    pub body: Vec<u8>,
}

/// A stored log record, with the entry that binds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLog {
    pub digest: Hash,
    pub body: Vec<u8>,
    pub event_name: String,
    pub subject: String,
    pub entry_seq: u64,
}

type SpanTuple = (Vec<u8>, Vec<u8>, Vec<u8>, String, String, String, i64);
type LogTuple = (Vec<u8>, Vec<u8>, String, String, i64);
type SummaryTuple = (Vec<u8>, Vec<u8>, String, String, Vec<u8>);

impl Store {
    /// Stored spans of a trace, in start order: (span id, digest, body, rule, subject, entry seq).
    pub async fn spans_of_trace(&self, trace_id: &[u8; 16]) -> Result<Vec<StoredSpan>> {
        let rows: Vec<SpanTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT span_id, digest, body, name, rule, subject, entry_seq FROM spans WHERE trace_id = $1 ORDER BY start_ns, span_id")
            .bind(&trace_id[..]).fetch_all(p).await)?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredSpan {
                    span_id: r
                        .0
                        .try_into()
                        .map_err(|_| StorageError::Corrupt("span id".into()))?,
                    digest: hash(&r.1, "span digest")?,
                    body: r.2,
                    name: r.3,
                    rule: r.4,
                    subject: r.5,
                    entry_seq: u(r.6, "entry seq")?,
                })
            })
            .collect()
    }

    /// Traces bound by telemetry committed with entries `after < seq <= upto`, each (trace id,
    /// subject) once: a stored span or log record means its trace is bound to that subject. What
    /// another instance (or this one before a restart) bound, so parked spans of those traces
    /// can be released here.
    /// In the order they were first bound, each trace once with the subject it was first bound
    /// to (as an instance binding them live would have: the first binding's subject sticks).
    pub async fn bound_traces(&self, after: u64, upto: u64) -> Result<Vec<([u8; 16], String)>> {
        let rows: Vec<(Vec<u8>, String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT trace_id, subject, MIN(entry_seq) AS first FROM ( \
               SELECT trace_id, subject, entry_seq FROM spans WHERE entry_seq > $1 AND entry_seq <= $2 \
               UNION ALL SELECT trace_id, subject, entry_seq FROM log_records \
               WHERE entry_seq > $1 AND entry_seq <= $2 AND trace_id IS NOT NULL \
             ) b GROUP BY trace_id, subject ORDER BY first, subject")
            .bind(i(after)).bind(i(upto)).fetch_all(p).await)?;
        let mut seen = HashSet::new();
        Ok(rows
            .into_iter()
            .filter_map(|(t, s, _)| Some((<[u8; 16]>::try_from(t.as_slice()).ok()?, s)))
            .filter(|(t, _)| *t != [0; 16] && seen.insert(*t))
            .collect())
    }

    /// Kept spans bound to any of `subjects` (a change id or its run ids).
    pub async fn spans_about(&self, subjects: &[String]) -> Result<Vec<SpanSummary>> {
        let mut out = Vec::new();
        for s in subjects {
            let rows: Vec<SummaryTuple> = on_pool!(self, p => sqlx::query_as(
                "SELECT trace_id, span_id, service, rule, body FROM spans WHERE subject = $1")
                .bind(s).fetch_all(p).await)?;
            for (t, sp, service, rule, body) in rows {
                out.push(SpanSummary {
                    trace_id: hex::encode(t),
                    span_id: hex::encode(sp),
                    service,
                    rule,
                    body,
                });
            }
        }
        Ok(out)
    }

    /// How many spans are stored.
    pub async fn span_count(&self) -> Result<u64> {
        let n: (i64,) =
            on_pool!(self, p => sqlx::query_as("SELECT COUNT(*) FROM spans").fetch_one(p).await)?;
        u(n.0, "count")
    }

    /// Stored log records, oldest first: (digest, body, event name, subject, entry seq).
    pub async fn log_records(&self, limit: u64) -> Result<Vec<StoredLog>> {
        let rows: Vec<LogTuple> = on_pool!(self, p => sqlx::query_as(
            "SELECT digest, body, event_name, subject, entry_seq FROM log_records ORDER BY time_ns, digest LIMIT $1")
            .bind(i(limit)).fetch_all(p).await)?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredLog {
                    digest: hash(&r.0, "log digest")?,
                    body: r.1,
                    event_name: r.2,
                    subject: r.3,
                    entry_seq: u(r.4, "entry seq")?,
                })
            })
            .collect()
    }

    /// How many log records are stored.
    pub async fn log_count(&self) -> Result<u64> {
        let n: (i64,) = on_pool!(self, p => sqlx::query_as("SELECT COUNT(*) FROM log_records").fetch_one(p).await)?;
        u(n.0, "count")
    }
}

impl AppendTx {
    /// Which of these spans are stored already (retried exports resend them).
    pub async fn existing_spans(
        &mut self,
        keys: &[([u8; 16], [u8; 8])],
    ) -> Result<HashSet<([u8; 16], [u8; 8])>> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(INSERT_CHUNK) {
            let rows: Vec<(Vec<u8>, Vec<u8>)> = on_tx!(self, c => {
                let mut q = QueryBuilder::new("SELECT trace_id, span_id FROM spans WHERE (trace_id, span_id) IN (");
                q.push_values(chunk, |mut b, (t, s)| {
                    b.push_bind(&t[..]).push_bind(&s[..]);
                });
                q.push(")");
                q.build_query_as().fetch_all(&mut *c).await?
            });
            for (t, s) in rows {
                if let (Ok(t), Ok(s)) = (t.try_into(), s.try_into()) {
                    found.insert((t, s));
                }
            }
        }
        Ok(found)
    }

    /// Which of these log-record digests are stored already.
    pub async fn existing_logs(&mut self, digests: &[Hash]) -> Result<HashSet<Hash>> {
        let mut found = HashSet::new();
        for chunk in digests.chunks(INSERT_CHUNK) {
            let rows: Vec<(Vec<u8>,)> = on_tx!(self, c => {
                let mut q = QueryBuilder::new("SELECT digest FROM log_records WHERE digest IN (");
                let mut sep = q.separated(", ");
                for d in chunk {
                    sep.push_bind(&d.0[..]);
                }
                q.push(")");
                q.build_query_as().fetch_all(&mut *c).await?
            });
            found.extend(rows.into_iter().filter_map(|(d,)| Hash::from_slice(&d)));
        }
        Ok(found)
    }

    /// Stores spans, each with the seq of the entry that references it.
    pub async fn insert_spans(&mut self, rows: &[(&SpanRow, u64)], received_ns: i64) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO spans (trace_id, span_id, parent_span_id, digest, body, service, name, \
                     start_ns, end_ns, subject, rule, entry_seq, received_ns) ");
                q.push_values(chunk, |mut b, (s, seq)| {
                    b.push_bind(&s.trace_id[..])
                        .push_bind(&s.span_id[..])
                        .push_bind(s.parent_span_id.map(|p| p.to_vec()))
                        .push_bind(&s.digest.0[..])
                        .push_bind(&s.body)
                        .push_bind(&s.service)
                        .push_bind(&s.name)
                        .push_bind(i(s.start_ns))
                        .push_bind(i(s.end_ns))
                        .push_bind(&s.subject)
                        .push_bind(s.rule.as_str())
                        .push_bind(i(*seq))
                        .push_bind(received_ns);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }

    /// Stores log records, each with the seq of the entry that references it.
    pub async fn insert_logs(&mut self, rows: &[(&LogRow, u64)], received_ns: i64) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK / 2) {
            on_tx!(self, c => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO log_records (digest, body, trace_id, span_id, time_ns, event_name, subject, \
                     entry_seq, received_ns) ");
                q.push_values(chunk, |mut b, (l, seq)| {
                    b.push_bind(&l.digest.0[..])
                        .push_bind(&l.body)
                        .push_bind(l.trace_id.map(|t| t.to_vec()))
                        .push_bind(l.span_id.map(|s| s.to_vec()))
                        .push_bind(i(l.time_ns))
                        .push_bind(&l.event_name)
                        .push_bind(&l.subject)
                        .push_bind(i(*seq))
                        .push_bind(received_ns);
                });
                q.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }
}
