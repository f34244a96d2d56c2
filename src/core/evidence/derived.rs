//! What the derived tables must hold for a signed entry: the facts row a fact entry produces,
//! the credential uses it shows, the span and log-record references a `spans.bound` /
//! `logs.bound` entry binds. Recomputed from the entry alone, so a row no signed entry produced,
//! or one that differs, can be named.

use super::telemetry::{LOGS_BOUND, SPANS_BOUND};
use super::{FACT_KINDS, FactRecord};

/// A facts row as the writer stores it for a fact entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactRow {
    pub fact_key: String,
    pub kind: String,
    pub change_id: Option<String>,
    pub run_id: Option<String>,
    pub source: String,
    pub time_ns: i64,
    pub payload: String,
    pub entry_seq: u64,
    /// The entry's time: the fact's receipt.
    pub received_ns: i64,
}

/// A span an entry binds: its ids, the digest of its stored bytes, and why it was kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SpanRef {
    pub trace_id: String,
    pub span_id: String,
    pub digest: String,
    pub rule: String,
}

/// A log record an entry binds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct LogRef {
    pub digest: String,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub span_id: Option<String>,
}

/// What one entry produces in the derived tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived {
    pub fact: Option<FactRow>,
    /// (credential, subject) pairs the fact shows.
    pub credentials: Vec<(String, String)>,
    pub spans: Vec<SpanRef>,
    pub logs: Vec<LogRef>,
}

/// Whether entries of `kind` produce derived rows (and so may have rows naming them).
pub fn produces_rows(kind: &str) -> bool {
    FACT_KINDS.contains(&kind) || kind == SPANS_BOUND || kind == LOGS_BOUND
}

/// The derived rows entry `seq` (of `kind`, about `subject`, at `time_ns`) produces from its
/// payload; an error says why the payload cannot produce what its kind promises.
pub fn derive(
    seq: u64,
    kind: &str,
    subject: &str,
    time_ns: i64,
    payload: &str,
) -> Result<Derived, String> {
    let mut d = Derived::default();
    if FACT_KINDS.contains(&kind) {
        let f: FactRecord =
            serde_json::from_str(payload).map_err(|e| format!("the fact does not parse: {e}"))?;
        if f.fact.entry_kind() != kind {
            return Err(format!(
                "the entry is {kind} but its fact is {}",
                f.fact.entry_kind()
            ));
        }
        if f.subject() != subject {
            return Err(format!(
                "the entry is about {subject:?} but its fact about {:?}",
                f.subject()
            ));
        }
        let who = f.subject();
        d.credentials = f
            .credentials()
            .into_iter()
            .map(|c| (c, who.clone()))
            .collect();
        d.fact = Some(FactRow {
            fact_key: f.key.clone(),
            kind: kind.to_owned(),
            change_id: f.change_id.clone(),
            run_id: f.run_id.clone(),
            source: f.source.as_str().to_owned(),
            time_ns: f.time_ns,
            payload: payload.to_owned(),
            entry_seq: seq,
            received_ns: time_ns,
        });
    } else if kind == SPANS_BOUND {
        #[derive(serde::Deserialize)]
        struct P {
            spans: Vec<SpanRef>,
        }
        let p: P = serde_json::from_str(payload)
            .map_err(|e| format!("the span references do not parse: {e}"))?;
        d.spans = p.spans;
    } else if kind == LOGS_BOUND {
        #[derive(serde::Deserialize)]
        struct P {
            log_records: Vec<LogRef>,
        }
        let p: P = serde_json::from_str(payload)
            .map_err(|e| format!("the log references do not parse: {e}"))?;
        d.logs = p.log_records;
    }
    Ok(d)
}

/// The columns of two facts rows that differ, by name.
pub fn fact_differences(stored: &FactRow, expected: &FactRow) -> Vec<&'static str> {
    let mut out = Vec::new();
    let checks: [(&'static str, bool); 9] = [
        ("fact_key", stored.fact_key == expected.fact_key),
        ("kind", stored.kind == expected.kind),
        ("change_id", stored.change_id == expected.change_id),
        ("run_id", stored.run_id == expected.run_id),
        ("source", stored.source == expected.source),
        ("time_ns", stored.time_ns == expected.time_ns),
        ("payload", stored.payload == expected.payload),
        ("entry_seq", stored.entry_seq == expected.entry_seq),
        ("received_ns", stored.received_ns == expected.received_ns),
    ];
    for (name, same) in checks {
        if !same {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACT: &str = r#"{"key":"run:wf:requested:span:ab","change_id":"CHG-1","run_id":"wf","source":"span","time_ns":5,"fact":"change","environment":"production","requester":{"subject":"alice","established":"verified","issuer":"i","roles":[],"token_sha256":"aa","jti":"j1"},"requested_ns":5}"#;

    #[test]
    fn a_fact_entry_produces_its_row_and_credentials() {
        let d = derive(7, "change.requested", "CHG-1", 99, FACT).unwrap();
        let row = d.fact.unwrap();
        assert_eq!(row.fact_key, "run:wf:requested:span:ab");
        assert_eq!((row.entry_seq, row.received_ns, row.time_ns), (7, 99, 5));
        assert_eq!(row.payload, FACT);
        assert_eq!(
            d.credentials,
            vec![
                ("jti:i#j1".to_owned(), "CHG-1".to_owned()),
                ("sha256:aa".to_owned(), "CHG-1".to_owned())
            ]
        );
        let mut other = row.clone();
        other.change_id = None;
        other.received_ns = 1;
        assert_eq!(
            fact_differences(&other, &row),
            vec!["change_id", "received_ns"]
        );
    }

    #[test]
    fn an_entry_whose_fact_disagrees_with_it_produces_nothing() {
        let e = derive(7, "task.finished", "CHG-1", 99, FACT).unwrap_err();
        assert!(
            e.contains("is task.finished but its fact is change.requested"),
            "{e}"
        );
        let e = derive(7, "change.requested", "CHG-2", 99, FACT).unwrap_err();
        assert!(e.contains("about \"CHG-2\""), "{e}");
        assert!(derive(7, "change.requested", "CHG-1", 99, "{").is_err());
        assert_eq!(
            derive(7, "heartbeat", "", 99, "{}").unwrap(),
            Derived::default()
        );
        assert!(!produces_rows("heartbeat") && produces_rows("spans.bound"));
    }

    #[test]
    fn bound_entries_produce_their_references() {
        let d = derive(
            3,
            "spans.bound",
            "CHG-1",
            1,
            r#"{"spans":[{"trace_id":"aa","span_id":"bb","digest":"cc","rule":"trace"}]}"#,
        )
        .unwrap();
        assert_eq!(d.spans[0].rule, "trace");
        let d = derive(
            3,
            "logs.bound",
            "CHG-1",
            1,
            r#"{"log_records":[{"digest":"dd"}]}"#,
        )
        .unwrap();
        assert_eq!(d.logs[0].digest, "dd");
    }
}
