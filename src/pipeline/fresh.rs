//! Which telemetry of an append is new: spans, log records and facts not stored before (looked
//! up under the writer lock), and the ledger entries that will reference them. The selection is
//! pure given the stored rows, so a batch signed ahead can predict it ("nothing stored yet").

use super::writer::{AppendError, Telemetry};
use crate::core::evidence::FactRecord;
use crate::core::evidence::telemetry::{LogRow, SpanRow, TelemetryEntry, telemetry_entries};
use crate::core::ledger::batch::Draft;
use crate::core::ledger::hash::Hash;
use crate::storage::AppendTx;
use std::collections::HashSet;

/// The part of a telemetry batch not stored yet, and the entries that will reference it.
#[derive(Default)]
pub(super) struct FreshTelemetry<'a> {
    pub(super) spans: Vec<&'a SpanRow>,
    pub(super) logs: Vec<&'a LogRow>,
    /// One entry per fact, after the span and log entries.
    pub(super) facts: Vec<&'a FactRecord>,
    pub(super) entries: Vec<TelemetryEntry>,
    pub(super) spans_duplicate: u64,
    pub(super) logs_duplicate: u64,
    pub(super) facts_duplicate: u64,
    /// Nothing of the telemetry was stored before (always so without telemetry).
    pub(super) all_fresh: bool,
}

/// The first of each span (by trace and span id), log record and fact (by key) in `t`.
fn unique_spans(t: &Telemetry) -> impl Iterator<Item = &SpanRow> {
    let mut seen = HashSet::new();
    t.spans
        .iter()
        .filter(move |s| seen.insert((s.trace_id, s.span_id)))
}

fn unique_logs(t: &Telemetry) -> impl Iterator<Item = &LogRow> {
    let mut seen = HashSet::new();
    t.logs.iter().filter(move |l| seen.insert(l.digest))
}

fn unique_facts(t: &Telemetry) -> impl Iterator<Item = &FactRecord> {
    let mut seen = HashSet::new();
    t.facts.iter().filter(move |f| seen.insert(f.key.as_str()))
}

impl<'a> FreshTelemetry<'a> {
    /// Under the writer lock, so no other writer can store the same rows in between.
    pub(super) async fn find(
        tx: &mut AppendTx,
        t: &'a Telemetry,
    ) -> Result<FreshTelemetry<'a>, AppendError> {
        let keys: Vec<_> = unique_spans(t).map(|s| (s.trace_id, s.span_id)).collect();
        let spans = tx.existing_spans(&keys).await?;
        let digests: Vec<Hash> = unique_logs(t).map(|l| l.digest).collect();
        let logs = tx.existing_logs(&digests).await?;
        let keys: Vec<&str> = unique_facts(t).map(|f| f.key.as_str()).collect();
        let facts = tx.existing_facts(&keys).await?;
        FreshTelemetry::select(t, &spans, &logs, &facts)
    }

    /// What of `t` is fresh, given the rows already stored; the entries follow from that alone.
    pub(super) fn select(
        t: &'a Telemetry,
        stored_spans: &HashSet<([u8; 16], [u8; 8])>,
        stored_logs: &HashSet<Hash>,
        stored_facts: &HashSet<String>,
    ) -> Result<FreshTelemetry<'a>, AppendError> {
        let spans: Vec<&SpanRow> = unique_spans(t)
            .filter(|s| !stored_spans.contains(&(s.trace_id, s.span_id)))
            .collect();
        let logs: Vec<&LogRow> = unique_logs(t)
            .filter(|l| !stored_logs.contains(&l.digest))
            .collect();
        let mut entries = telemetry_entries(&spans, &logs)?;
        let facts: Vec<&FactRecord> = unique_facts(t)
            .filter(|f| !stored_facts.contains(&f.key))
            .collect();
        for f in &facts {
            entries.push(TelemetryEntry {
                draft: Draft::of(f.fact.entry_kind(), &f.subject(), f)?,
                spans: Vec::new(),
                logs: Vec::new(),
            });
        }
        Ok(FreshTelemetry {
            all_fresh: stored_spans.is_empty() && stored_logs.is_empty() && stored_facts.is_empty(),
            spans_duplicate: (t.spans.len() - spans.len()) as u64,
            logs_duplicate: (t.logs.len() - logs.len()) as u64,
            facts_duplicate: (t.facts.len() - facts.len()) as u64,
            spans,
            logs,
            facts,
            entries,
        })
    }

    /// Stores the fresh rows, each with the seq of the entry that references it (`seqs`: the
    /// telemetry entries' seqs, in `entries` order).
    pub(super) async fn insert(
        &self,
        tx: &mut AppendTx,
        seqs: &[u64],
        batch_time: i64,
    ) -> Result<(), AppendError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let mut span_rows = Vec::with_capacity(self.spans.len());
        let mut log_rows = Vec::with_capacity(self.logs.len());
        for (k, e) in self.entries.iter().enumerate() {
            let seq = seqs[k];
            span_rows.extend(e.spans.iter().map(|&i| (self.spans[i], seq)));
            log_rows.extend(e.logs.iter().map(|&i| (self.logs[i], seq)));
        }
        tx.insert_spans(&span_rows, batch_time).await?;
        tx.insert_logs(&log_rows, batch_time).await?;
        let fact_rows: Vec<(&FactRecord, u64, i64)> = self
            .facts
            .iter()
            .enumerate()
            .map(|(k, f)| {
                (
                    *f,
                    seqs[self.entries.len() - self.facts.len() + k],
                    batch_time,
                )
            })
            .collect();
        tx.insert_facts(&fact_rows).await?;
        Ok(())
    }
}
