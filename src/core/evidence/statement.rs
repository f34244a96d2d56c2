//! What spans, log records and Conductor executions share on their way to facts: how an item
//! arrived, how a statement becomes a keyed fact (a repeat is the same key, a contradiction a new
//! one), and the results and decisions senders state, each in one vocabulary.

use super::{Fact, FactRecord, SentBy, Source, decision};
use crate::core::ledger::hash::Hash;

/// How an item reached the service: when (the receiver's clock), from whom, and how late it may
/// be (an import may allow more than the default).
#[derive(Debug, Clone, Default)]
pub struct Intake {
    pub received_ns: i64,
    pub sent_by: Option<SentBy>,
    /// A lateness allowance wider than `[evidence] max_lateness`, recorded in each fact.
    pub max_lateness_ns: Option<i64>,
    /// Event times further than this ahead of the receipt are refused (imports).
    pub max_clock_skew_ns: i64,
}

/// A stated result in the one vocabulary the fold and the rules read (`success`, `failure`,
/// `timeout`, `cancellation`, `skip`, `error`); anything else is kept, lower-cased.
pub(super) fn normalize_result(r: &str) -> String {
    match r.to_ascii_lowercase().as_str() {
        "completed" | "completed_with_errors" | "success" | "succeeded" => "success".into(),
        "failed" | "failed_with_terminal_error" | "failure" => "failure".into(),
        "timed_out" | "timeout" => "timeout".into(),
        "canceled" | "cancelled" | "cancellation" | "terminated" => "cancellation".into(),
        "skipped" | "skip" => "skip".into(),
        "error" => "error".into(),
        other => other.to_owned(),
    }
}

/// A stated decision as one of `decision::*`, and the stated text when it is none of them.
pub(super) fn normalize_decision(stated: Option<&str>) -> (String, Option<String>) {
    let Some(s) = stated.map(str::trim).filter(|s| !s.is_empty()) else {
        return (decision::UNKNOWN.into(), None);
    };
    let known = match s.to_ascii_lowercase().as_str() {
        "approved" | "approve" => decision::APPROVED,
        "rejected" | "reject" | "denied" => decision::REJECTED,
        "skipped" => decision::SKIPPED,
        "pending" => decision::PENDING,
        _ => {
            return (
                decision::UNKNOWN.into(),
                Some(s.chars().take(200).collect()),
            );
        }
    };
    (known.into(), None)
}

/// What a fact is about and when its sender says it happened.
pub(super) struct About {
    /// The key before the statement's digest: what the fact is about.
    pub base: String,
    pub change_id: Option<String>,
    pub run_id: Option<String>,
    pub source: Source,
    pub time_ns: i64,
    /// When the item stating it ended.
    pub until_ns: i64,
}

impl FactRecord {
    /// A fact under `about.base` with its statement's digest appended, so a repeat is the same
    /// key and a contradiction is a new one.
    pub(super) fn stated(about: About, intake: &Intake, fact: Fact) -> FactRecord {
        let About {
            base,
            change_id,
            run_id,
            source,
            time_ns,
            until_ns,
        } = about;
        let mut f = FactRecord {
            key: base,
            change_id,
            run_id,
            source,
            time_ns,
            stated_until_ns: (until_ns > time_ns).then_some(until_ns),
            sent_by: intake.sent_by.clone(),
            max_lateness_ns: intake.max_lateness_ns,
            fact,
        };
        f.key = format!("{}:{}", f.key, f.statement_digest());
        f
    }

    /// A digest of what the sender stated: not who sent it, how late it may be, or how a token
    /// verified (that depends on when it arrived): a token is named by its digest alone.
    fn statement_digest(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for k in ["key", "sent_by", "max_lateness_ns"] {
                o.remove(k);
            }
        }
        reduce_principals(&mut v);
        let text = v.to_string();
        Hash::of(&[b"changetrail/fact-statement/v1\n", text.as_bytes()]).to_hex()[..16].to_owned()
    }
}

/// A principal as stated (subject and token digest) and whether its token verified — not why
/// or when: a statement re-sent after the issuer's keys arrived is a new fact (verified), one
/// re-sent unchanged is the same fact.
fn reduce_principals(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.contains_key("established") {
                o.retain(|k, _| k == "subject" || k == "token_sha256" || k == "established");
            } else {
                o.values_mut().for_each(reduce_principals);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(reduce_principals),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::RunFinishedFact;

    #[test]
    fn results_and_decisions_are_read_in_one_vocabulary() {
        let results: Vec<String> = [
            "COMPLETED",
            "Succeeded",
            "FAILED_WITH_TERMINAL_ERROR",
            "TIMED_OUT",
            "Cancelled",
            "TERMINATED",
            "SKIPPED",
            "ERROR",
            "Paused",
        ]
        .iter()
        .map(|r| normalize_result(r))
        .collect();
        assert_eq!(
            results,
            [
                "success",
                "success",
                "failure",
                "timeout",
                "cancellation",
                "cancellation",
                "skip",
                "error",
                "paused"
            ]
        );
        assert_eq!(
            normalize_decision(Some(" Denied ")),
            ("rejected".into(), None)
        );
        assert_eq!(normalize_decision(Some("")), ("unknown".into(), None));
        assert_eq!(normalize_decision(None), ("unknown".into(), None));
        let (d, stated) = normalize_decision(Some(&"x".repeat(300)));
        assert_eq!(
            (d.as_str(), stated.map(|s| s.len())),
            ("unknown", Some(200))
        );
    }

    #[test]
    fn a_statement_is_keyed_by_what_it_says_not_by_who_sent_it() {
        let about = |time_ns, until_ns| About {
            base: "run:wf:finished:span".into(),
            change_id: Some("CHG-1".into()),
            run_id: Some("wf".into()),
            source: Source::Span,
            time_ns,
            until_ns,
        };
        let done = |r: &str| {
            Fact::RunFinished(RunFinishedFact {
                result: r.into(),
                end_ns: 5,
                compensation_run: None,
            })
        };
        let from = |name: &str| Intake {
            received_ns: 1,
            sent_by: Some(SentBy {
                token_id: None,
                name: name.into(),
            }),
            max_lateness_ns: Some(7),
            max_clock_skew_ns: 0,
        };
        let a = FactRecord::stated(about(5, 5), &from("a"), done("success"));
        let b = FactRecord::stated(about(5, 5), &from("b"), done("success"));
        let c = FactRecord::stated(about(5, 5), &from("a"), done("failure"));
        let d = FactRecord::stated(about(5, 9), &from("a"), done("success"));
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert_ne!(
            a.key, d.key,
            "when the item ended is part of what it states"
        );
        assert_eq!(a.key.len(), "run:wf:finished:span:".len() + 16);
        assert_eq!((a.stated_until_ns, d.stated_until_ns), (None, Some(9)));
        assert_eq!(
            (a.max_lateness_ns, a.sent_by.unwrap().name),
            (Some(7), "a".into())
        );
    }
}
