//! The derived-table audit: every row of facts, spans, log_records and credentials is recomputed
//! from the signed entries as they stream past (`core::derived`), and each row no signed entry
//! produced, or that differs from what its entry produces, is a DERIVED_MISMATCH naming the table
//! and the row's key. The report and the console read these tables; this is what makes them
//! proven rather than trusted.

use crate::core::evidence::derived::{self, Derived, FactRow, LogRef, SpanRef};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::verify::{Class, Finding};
use crate::storage::{EntryRow, StorageError, Store, StoredLogRow, StoredSpanRow};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Mismatches listed at most; the rest are counted.
const LISTED: usize = 1000;

/// What an entry of the page produces, and where.
struct Expected {
    seq: u64,
    subject: String,
    time_ns: i64,
    /// The payload was erased: the entry produces nothing any more (the erasure removed what it
    /// bound).
    erased: bool,
    derived: Derived,
}

#[derive(Default)]
pub struct DerivedAudit {
    /// (credential, subject) pairs seen so far, as 16-byte digests (a 100k-change ledger holds a
    /// few hundred thousand).
    credentials_seen: HashSet<[u8; 16]>,
    out: Vec<Finding>,
    pub suppressed: u64,
}

fn pair_digest(credential: &str, subject: &str) -> [u8; 16] {
    let h = Hash::of(&[credential.as_bytes(), b"\n", subject.as_bytes()]);
    let mut d = [0u8; 16];
    d.copy_from_slice(&h.0[..16]);
    d
}

impl DerivedAudit {
    fn mismatch(&mut self, seq: Option<u64>, detail: String) {
        if self.out.len() >= LISTED {
            self.suppressed += 1;
            return;
        }
        self.out.push(match seq {
            Some(s) => Finding::at_seq(Class::DerivedMismatch, s, detail),
            None => Finding::general(Class::DerivedMismatch, detail),
        });
    }

    /// Checks the derived rows naming the entries of this page (consecutive rows, in order).
    pub async fn page(&mut self, store: &Store, rows: &[&EntryRow]) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        let (lo, hi) = (first.seq, last.seq + 1);
        let mut expected: BTreeMap<u64, Expected> = BTreeMap::new();
        for r in rows.iter().filter(|r| derived::produces_rows(&r.kind)) {
            // An entry whose payload is no fact (or binding) the writer records — one appended
            // as a plain draft — produces no rows, and a row naming it is flagged below.
            let (derived, erased) = match &r.payload {
                None => (Derived::default(), true),
                Some(p) => (
                    derived::derive(r.seq, &r.kind, &r.subject, r.time_ns, p).unwrap_or_default(),
                    false,
                ),
            };
            expected.insert(
                r.seq,
                Expected {
                    seq: r.seq,
                    subject: r.subject.clone(),
                    time_ns: r.time_ns,
                    erased,
                    derived,
                },
            );
        }
        self.facts(store, lo, hi, &expected).await?;
        self.credentials(store, lo, hi, &expected).await?;
        self.spans(store, lo, hi, &expected).await?;
        self.logs(store, lo, hi, &expected).await
    }

    async fn facts(
        &mut self,
        store: &Store,
        lo: u64,
        hi: u64,
        expected: &BTreeMap<u64, Expected>,
    ) -> Result<(), StorageError> {
        let mut by_seq: BTreeMap<u64, Vec<FactRow>> = BTreeMap::new();
        for row in store.facts_between(lo, hi).await? {
            by_seq.entry(row.entry_seq).or_default().push(row);
        }
        let mut matched: HashSet<u64> = HashSet::new();
        for (seq, mut rows) in by_seq {
            let want = expected.get(&seq).and_then(|e| e.derived.fact.as_ref());
            if let Some(w) = want {
                // The row under the entry's key is the entry's; any other is forged.
                let i = rows
                    .iter()
                    .position(|r| r.fact_key == w.fact_key)
                    .unwrap_or(0);
                let row = rows.remove(i);
                matched.insert(seq);
                let diff = derived::fact_differences(&row, w);
                if !diff.is_empty() {
                    self.mismatch(
                        Some(seq),
                        format!(
                            "facts row {:?}: {} differ from what entry {seq} produces",
                            row.fact_key,
                            diff.join(", ")
                        ),
                    );
                }
            }
            for row in rows {
                let why = match expected.get(&seq) {
                    Some(e) if e.erased => "whose payload was erased",
                    Some(e) if e.derived.fact.is_some() => "which records another fact",
                    _ => "which records no fact",
                };
                self.mismatch(
                    Some(seq),
                    format!(
                        "facts row {:?} names entry {seq}, {why}: no signed entry produced it",
                        row.fact_key
                    ),
                );
            }
        }
        for e in expected.values() {
            if let Some(f) = &e.derived.fact
                && !matched.contains(&e.seq)
            {
                self.mismatch(
                    Some(e.seq),
                    format!(
                        "facts has no row {:?} for the fact entry {} records",
                        f.fact_key, e.seq
                    ),
                );
            }
        }
        Ok(())
    }

    async fn credentials(
        &mut self,
        store: &Store,
        lo: u64,
        hi: u64,
        expected: &BTreeMap<u64, Expected>,
    ) -> Result<(), StorageError> {
        // A pair's row names the first entry that shows it.
        let mut want: HashMap<(String, String), u64> = HashMap::new();
        for e in expected.values() {
            for (c, s) in &e.derived.credentials {
                if self.credentials_seen.insert(pair_digest(c, s)) {
                    want.insert((c.clone(), s.clone()), e.seq);
                }
            }
        }
        for (seq, credential, subject) in store.credentials_between(lo, hi).await? {
            match want.remove(&(credential.clone(), subject.clone())) {
                Some(first) if first == seq => {}
                Some(first) => self.mismatch(
                    Some(seq),
                    format!(
                        "credentials row ({credential}, {subject}) names entry {seq}; entry {first} shows it first"
                    ),
                ),
                None => self.mismatch(
                    Some(seq),
                    format!(
                        "credentials row ({credential}, {subject}) names entry {seq}, which does not show it first: no signed entry produced it"
                    ),
                ),
            }
        }
        let mut missing: Vec<((String, String), u64)> = want.into_iter().collect();
        missing.sort_by_key(|(_, seq)| *seq);
        for ((credential, subject), seq) in missing {
            self.mismatch(
                Some(seq),
                format!("credentials has no row ({credential}, {subject}) for entry {seq}"),
            );
        }
        Ok(())
    }

    async fn spans(
        &mut self,
        store: &Store,
        lo: u64,
        hi: u64,
        expected: &BTreeMap<u64, Expected>,
    ) -> Result<(), StorageError> {
        let mut want: HashMap<(String, String), (&Expected, &SpanRef)> = HashMap::new();
        for e in expected.values() {
            for r in &e.derived.spans {
                want.insert((r.trace_id.clone(), r.span_id.clone()), (e, r));
            }
        }
        for row in store.spans_between(lo, hi).await? {
            let key = (hex::encode(&row.trace_id), hex::encode(&row.span_id));
            let name = format!("spans row {}/{}", key.0, key.1);
            let seq = row.entry_seq;
            let mut wrong = span_body_problems(&row);
            match want.remove(&key) {
                Some((e, r)) => {
                    if hex::encode(&row.digest) != r.digest {
                        wrong.push("digest".into());
                    }
                    if row.rule != r.rule {
                        wrong.push("rule".into());
                    }
                    if row.subject != e.subject {
                        wrong.push("subject".into());
                    }
                    if row.entry_seq != e.seq {
                        wrong.push("entry_seq".into());
                    }
                    if row.received_ns != e.time_ns {
                        wrong.push("received_ns".into());
                    }
                    if !wrong.is_empty() {
                        self.mismatch(
                            Some(seq),
                            format!(
                                "{name}: {} differ from what entry {} binds",
                                wrong.join(", "),
                                e.seq
                            ),
                        );
                    }
                }
                // An erased binding's rows go with it: none may name it.
                None => self.mismatch(
                    Some(seq),
                    format!(
                        "{name} names entry {seq}, which does not bind it{}: no signed entry produced it",
                        if expected.get(&seq).is_some_and(|e| e.erased) {
                            " (its payload was erased)"
                        } else {
                            ""
                        }
                    ),
                ),
            }
        }
        let mut missing: Vec<(u64, String)> = want
            .into_iter()
            .map(|((t, s), (e, _))| (e.seq, format!("{t}/{s}")))
            .collect();
        missing.sort();
        for (seq, key) in missing {
            self.mismatch(
                Some(seq),
                format!("spans has no row {key} for the span entry {seq} binds"),
            );
        }
        Ok(())
    }

    async fn logs(
        &mut self,
        store: &Store,
        lo: u64,
        hi: u64,
        expected: &BTreeMap<u64, Expected>,
    ) -> Result<(), StorageError> {
        let mut want: HashMap<String, (&Expected, &LogRef)> = HashMap::new();
        for e in expected.values() {
            for r in &e.derived.logs {
                want.insert(r.digest.clone(), (e, r));
            }
        }
        for row in store.logs_between(lo, hi).await? {
            let key = hex::encode(&row.digest);
            let name = format!("log_records row {key}");
            let seq = row.entry_seq;
            let mut wrong = log_body_problems(&row);
            match want.remove(&key) {
                Some((e, r)) => {
                    if row.trace_id.as_ref().map(hex::encode) != r.trace_id {
                        wrong.push("trace_id".into());
                    }
                    if row.span_id.as_ref().map(hex::encode) != r.span_id {
                        wrong.push("span_id".into());
                    }
                    if row.subject != e.subject {
                        wrong.push("subject".into());
                    }
                    if row.entry_seq != e.seq {
                        wrong.push("entry_seq".into());
                    }
                    if row.received_ns != e.time_ns {
                        wrong.push("received_ns".into());
                    }
                    if !wrong.is_empty() {
                        self.mismatch(
                            Some(seq),
                            format!(
                                "{name}: {} differ from what entry {} binds",
                                wrong.join(", "),
                                e.seq
                            ),
                        );
                    }
                }
                None => self.mismatch(
                    Some(seq),
                    format!(
                        "{name} names entry {seq}, which does not bind it{}: no signed entry produced it",
                        if expected.get(&seq).is_some_and(|e| e.erased) {
                            " (its payload was erased)"
                        } else {
                            ""
                        }
                    ),
                ),
            }
        }
        let mut missing: Vec<(u64, String)> =
            want.into_iter().map(|(k, (e, _))| (e.seq, k)).collect();
        missing.sort();
        for (seq, key) in missing {
            self.mismatch(
                Some(seq),
                format!("log_records has no row {key} for the record entry {seq} binds"),
            );
        }
        Ok(())
    }

    /// Rows that name an entry past the head (or before the first): no signed entry produced
    /// them. A server appending meanwhile moves the head; rows it added with their entries are
    /// not findings, so the head is read again before anything is said.
    pub async fn finish(
        mut self,
        store: &Store,
        head_size: u64,
    ) -> Result<(Vec<Finding>, u64), StorageError> {
        let outside = store.derived_rows_outside(head_size).await?;
        if !outside.is_empty() {
            let now = store.head().await?.map_or(head_size, |h| h.head.size);
            for (table, key, seq) in outside {
                if u64::try_from(seq).is_ok_and(|s| s < now) {
                    continue;
                }
                self.mismatch(
                    None,
                    format!(
                        "{table} row {key:?} names entry {seq}, outside the ledger's 0..{now}: no signed entry produced it"
                    ),
                );
            }
        }
        Ok((self.out, self.suppressed))
    }
}

/// What the stored bytes of a span row say against its other columns: the digest is of the
/// body, and the ids, parent, name, times and service are the body's.
fn span_body_problems(row: &StoredSpanRow) -> Vec<String> {
    let mut out = Vec::new();
    if crate::core::evidence::contract::telemetry_digest(b"span", &row.body)
        .0
        .as_slice()
        != row.digest
    {
        out.push("body (its digest)".into());
    }
    let Ok(rs) = ResourceSpans::decode(row.body.as_slice()) else {
        out.push("body (not one OTLP span)".into());
        return out;
    };
    let one = rs.scope_spans.len() == 1 && rs.scope_spans[0].spans.len() == 1;
    let Some(span) = rs
        .scope_spans
        .first()
        .and_then(|s| s.spans.first())
        .filter(|_| one)
    else {
        out.push("body (not one OTLP span)".into());
        return out;
    };
    let service = rs
        .resource
        .as_ref()
        .and_then(|r| crate::ingest::convert::service_name(&r.attributes))
        .unwrap_or("unknown_service");
    let parent = (!span.parent_span_id.is_empty()).then(|| span.parent_span_id.clone());
    let checks = [
        ("trace_id", span.trace_id == row.trace_id),
        ("span_id", span.span_id == row.span_id),
        ("parent_span_id", parent == row.parent_span_id),
        ("name", span.name == row.name),
        (
            "start_ns",
            i64::try_from(span.start_time_unix_nano).ok() == Some(row.start_ns),
        ),
        (
            "end_ns",
            i64::try_from(span.end_time_unix_nano).ok() == Some(row.end_ns),
        ),
        ("service", service == row.service),
    ];
    out.extend(
        checks
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(c, _)| format!("{c} (against its body)")),
    );
    out
}

fn log_body_problems(row: &StoredLogRow) -> Vec<String> {
    let mut out = Vec::new();
    if crate::core::evidence::contract::telemetry_digest(b"log", &row.body)
        .0
        .as_slice()
        != row.digest
    {
        out.push("body (its digest)".into());
    }
    let record = ResourceLogs::decode(row.body.as_slice())
        .ok()
        .filter(|r| r.scope_logs.len() == 1 && r.scope_logs[0].log_records.len() == 1)
        .and_then(|r| {
            r.scope_logs
                .into_iter()
                .next()?
                .log_records
                .into_iter()
                .next()
        });
    let Some(record) = record else {
        out.push("body (not one OTLP log record)".into());
        return out;
    };
    let time = if record.time_unix_nano != 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    if i64::try_from(time).ok() != Some(row.time_ns) {
        out.push("time_ns (against its body)".into());
    }
    let ids_ok = (record.trace_id.is_empty() && row.trace_id.is_none())
        || Some(&record.trace_id) == row.trace_id.as_ref();
    if !ids_ok {
        out.push("trace_id (against its body)".into());
    }
    out
}
