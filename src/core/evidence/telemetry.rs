//! Kept telemetry as the ledger sees it: stored span and log rows (exact bytes and digest) and
//! the `spans.bound` / `logs.bound` entries that reference them in batches.

use super::contract::KeepRule;
use crate::core::ledger::batch::{Draft, DraftError};
use crate::core::ledger::hash::Hash;
use std::collections::BTreeMap;

/// Span references per `spans.bound` entry at most (keeps payloads well under a megabyte).
pub const REFS_PER_ENTRY: usize = 256;

pub const SPANS_BOUND: &str = "spans.bound";
pub const LOGS_BOUND: &str = "logs.bound";

/// A span to store: its OTLP bytes (one resource, one scope, this span; secrets redacted) and
/// what the ledger and queries need about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRow {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub digest: Hash,
    pub body: Vec<u8>,
    pub service: String,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub subject: String,
    pub rule: KeepRule,
}

/// A log record to store, identified by the digest of its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub digest: Hash,
    pub body: Vec<u8>,
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
    pub time_ns: u64,
    pub event_name: String,
    pub subject: String,
}

/// One entry's worth of references: the draft and which rows it covers.
#[derive(Debug, Clone)]
pub struct TelemetryEntry {
    pub draft: Draft,
    pub spans: Vec<usize>,
    pub logs: Vec<usize>,
}

#[derive(serde::Serialize)]
struct SpanRef<'a> {
    trace_id: String,
    span_id: String,
    digest: String,
    rule: &'a str,
}

#[derive(serde::Serialize)]
struct LogRef {
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<String>,
}

/// Entries referencing `spans` and `logs` (already deduplicated): grouped by subject, in chunks.
pub fn telemetry_entries(
    spans: &[&SpanRow],
    logs: &[&LogRow],
) -> Result<Vec<TelemetryEntry>, DraftError> {
    let mut out = Vec::new();
    let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in spans.iter().enumerate() {
        by_subject.entry(&s.subject).or_default().push(i);
    }
    for (subject, idx) in by_subject {
        for chunk in idx.chunks(REFS_PER_ENTRY) {
            let refs: Vec<SpanRef<'_>> = chunk
                .iter()
                .map(|&i| SpanRef {
                    trace_id: hex::encode(spans[i].trace_id),
                    span_id: hex::encode(spans[i].span_id),
                    digest: spans[i].digest.to_hex(),
                    rule: spans[i].rule.as_str(),
                })
                .collect();
            out.push(TelemetryEntry {
                draft: Draft::of(SPANS_BOUND, subject, &serde_json::json!({ "spans": refs }))?,
                spans: chunk.to_vec(),
                logs: Vec::new(),
            });
        }
    }
    let mut by_subject: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in logs.iter().enumerate() {
        by_subject.entry(&l.subject).or_default().push(i);
    }
    for (subject, idx) in by_subject {
        for chunk in idx.chunks(REFS_PER_ENTRY) {
            let refs: Vec<LogRef> = chunk
                .iter()
                .map(|&i| LogRef {
                    digest: logs[i].digest.to_hex(),
                    trace_id: logs[i].trace_id.map(hex::encode),
                    span_id: logs[i].span_id.map(hex::encode),
                })
                .collect();
            out.push(TelemetryEntry {
                draft: Draft::of(
                    LOGS_BOUND,
                    subject,
                    &serde_json::json!({ "log_records": refs }),
                )?,
                spans: Vec::new(),
                logs: chunk.to_vec(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(i: u8, subject: &str) -> SpanRow {
        SpanRow {
            trace_id: [i; 16],
            span_id: [i; 8],
            parent_span_id: None,
            digest: Hash([i; 32]),
            body: vec![i],
            service: "svc".into(),
            name: "deploy".into(),
            start_ns: 1,
            end_ns: 2,
            subject: subject.into(),
            rule: KeepRule::Attribute,
        }
    }

    #[test]
    fn groups_by_subject_and_chunks() {
        let mut spans: Vec<SpanRow> = (0..=255u8).map(|i| span(i, "CHG-1")).collect();
        spans.push(span(1, "CHG-2"));
        spans.push(span(2, "CHG-1"));
        let refs: Vec<&SpanRow> = spans.iter().collect();
        let entries = telemetry_entries(&refs, &[]).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].draft.subject(), "CHG-1");
        assert_eq!(entries[0].spans.len(), REFS_PER_ENTRY);
        assert_eq!(entries[1].spans, vec![257]);
        assert_eq!(entries[2].draft.subject(), "CHG-2");
        assert!(entries[2].draft.payload().contains(&Hash([1; 32]).to_hex()));
    }
}
