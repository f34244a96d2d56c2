//! Rules about the record itself: a rollback that links to nothing, history the workflow engine
//! rewrote, facts that contradict each other or arrived late, facts that can no longer be read,
//! and production versions no change explains.

use super::{
    CHANGE_REGRESSION, CONFLICTING_EVIDENCE, EVIDENCE_GAP, Exception, HISTORY_REWRITTEN,
    LATE_EVIDENCE, ROLLBACK_UNLINKED, UNLINKED_DEPLOY, ex, human_duration,
};
use crate::core::evidence::{Evidence, VersionFact, rewrite};

/// A rollback that names no change it rolls back (or one that does not exist).
pub fn rollback_unlinked(e: &Evidence) -> Option<Exception> {
    if e.change.kind != "rollback" {
        return None;
    }
    match (&e.change.rollback_of, e.judgement.rollback_target_known) {
        (None, _) => Some(ex(
            ROLLBACK_UNLINKED,
            "rollback that names no change it rolls back".into(),
        )),
        (Some(of), Some(false)) => Some(ex(
            ROLLBACK_UNLINKED,
            format!("rolls back {of}, which is not a known change"),
        )),
        _ => None,
    }
}

/// The workflow engine's history of this change was rewritten (a Conductor restart, rerun,
/// retry, skip, removal, in-place edit or deletion): every rewrite, each saying what changed.
pub fn history_rewritten(e: &Evidence) -> Option<Exception> {
    if e.history_rewrites.is_empty() {
        return None;
    }
    let each: Vec<String> = e.history_rewrites.iter().map(rewrite::describe).collect();
    Some(ex(HISTORY_REWRITTEN, each.join(" | ")))
}

/// Its service's runtime spans were clearly worse after the deploy than before it
/// (`core::runtime::compare`, thresholds in `[suspects]`).
pub fn change_regression(e: &Evidence) -> Option<Exception> {
    let c = e.runtime.as_ref().filter(|c| c.regression)?;
    let first = c
        .after
        .first_error
        .as_ref()
        .map(|f| format!("; first error span in trace {}", f.trace_id))
        .unwrap_or_default();
    let kinds = if c.new_error_kinds.is_empty() {
        String::new()
    } else {
        format!("; new error kinds: {}", c.new_error_kinds.join(", "))
    };
    Some(ex(
        CHANGE_REGRESSION,
        format!(
            "{} in {}, {} after the deploy against {} before it: {}{kinds}{first}",
            c.service,
            c.environment,
            human_duration(c.window_ns),
            human_duration(c.baseline_ns),
            c.reasons.join("; ")
        ),
    ))
}

/// Facts about the change that contradict each other: every value, with when and from whom;
/// and runs the change names that another change claims.
pub fn conflicting_evidence(e: &Evidence) -> Vec<Exception> {
    let runs = e.judgement.contested_runs.iter().map(|(run, others)| {
        ex(
            CONFLICTING_EVIDENCE,
            format!(
                "run {run} is named by this change and claimed by {}",
                others.join(", ")
            ),
        )
    });
    e.conflicts
        .iter()
        .map(|c| {
            let values: Vec<String> = c
                .values
                .iter()
                .map(|v| {
                    format!(
                        "{:?} ({} at {}, received {}, entry {}{})",
                        v.value,
                        v.source.as_str(),
                        crate::core::evidence::report::time_cell(Some(v.time_ns)),
                        crate::core::evidence::report::time_cell(Some(v.received_ns)),
                        v.seq,
                        v.sent_by
                            .as_ref()
                            .map(|s| format!(", sent by {}", s.label()))
                            .unwrap_or_default()
                    )
                })
                .collect();
            ex(
                CONFLICTING_EVIDENCE,
                format!("{} is stated as {}", c.field, values.join(" and as ")),
            )
        })
        .chain(runs)
        .collect()
}

/// Deciding facts (what the change is, its approvals, its deploy attempts) that reached the
/// service long after the time they state.
pub fn late_evidence(e: &Evidence) -> Option<Exception> {
    if e.judgement.late.is_empty() {
        return None;
    }
    let items: Vec<String> = e
        .judgement
        .late
        .iter()
        .map(|r| {
            format!(
                "{} received {} after the time it states (entry {})",
                r.what,
                human_duration(r.received_ns - r.stated_ns),
                r.seq
            )
        })
        .collect();
    Some(ex(LATE_EVIDENCE, items.join("; ")))
}

/// A fact the ledger recorded (by entry `seq`) that can no longer be read: evidence is missing.
pub fn unreadable_fact(seq: u64) -> Exception {
    ex(
        EVIDENCE_GAP,
        format!("the fact recorded by entry {seq} cannot be read"),
    )
}

/// A production version seen running that no change explains.
pub fn unlinked_deploy(v: &VersionFact) -> Exception {
    ex(
        UNLINKED_DEPLOY,
        match &v.previous {
            Some(p) => format!(
                "{} {} seen again in {} (after {p}) with no change that deployed it",
                v.service, v.version, v.environment
            ),
            None => format!(
                "{} {} first seen in {} with no change that deployed it",
                v.service, v.version, v.environment
            ),
        },
    )
}
