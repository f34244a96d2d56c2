//! The exception rules of the SOC 2 report, each a pure function of a change's judged evidence
//! (and the report's settings). Retries that ended in success on the approved artifact are not
//! exceptions: the attempts column reports them.
//!
//! The rules come in three families: `approval` (was the change approved, in time, by whom it
//! should be), `credentials` (who is only asserted, which tokens and credentials were reused or
//! issued for something else) and `record` (what the record itself shows: gaps, contradictions,
//! lateness, rewritten history, versions no change explains). This module holds the codes, the
//! settings and the order the rules run in.

use super::identity::{Established, Principal};
use super::{ApprovalView, Evidence, decision};

mod approval;
mod credentials;
mod record;

pub use approval::{
    approval_after_deploy, approval_bypassed, approval_decision_missing, approved_subject_mismatch,
    approver_not_authorized, emergency_no_review, no_approval, self_approval,
};
pub use credentials::{
    approval_token_mismatch, credential_not_rotated, token_reused, unverified_identity,
};
pub use record::{
    change_regression, conflicting_evidence, history_rewritten, late_evidence, rollback_unlinked,
    unlinked_deploy, unreadable_fact,
};

pub const NO_APPROVAL: &str = "NO_APPROVAL";
pub const SELF_APPROVAL: &str = "SELF_APPROVAL";
pub const APPROVAL_AFTER_DEPLOY: &str = "APPROVAL_AFTER_DEPLOY";
pub const APPROVER_NOT_AUTHORIZED: &str = "APPROVER_NOT_AUTHORIZED";
pub const UNVERIFIED_IDENTITY: &str = "UNVERIFIED_IDENTITY";
pub const APPROVAL_BYPASSED: &str = "APPROVAL_BYPASSED";
pub const APPROVED_SUBJECT_MISMATCH: &str = "APPROVED_SUBJECT_MISMATCH";
pub const UNLINKED_DEPLOY: &str = "UNLINKED_DEPLOY";
pub const EMERGENCY_NO_REVIEW: &str = "EMERGENCY_NO_REVIEW";
pub const ROLLBACK_UNLINKED: &str = "ROLLBACK_UNLINKED";
pub const HISTORY_REWRITTEN: &str = "HISTORY_REWRITTEN";
pub const EVIDENCE_GAP: &str = "EVIDENCE_GAP";
pub const APPROVAL_DECISION_MISSING: &str = "APPROVAL_DECISION_MISSING";
pub const CONFLICTING_EVIDENCE: &str = "CONFLICTING_EVIDENCE";
pub const LATE_EVIDENCE: &str = "LATE_EVIDENCE";
pub const TOKEN_REUSED: &str = "TOKEN_REUSED";
pub const APPROVAL_TOKEN_MISMATCH: &str = "APPROVAL_TOKEN_MISMATCH";
pub const CREDENTIAL_NOT_ROTATED: &str = "CREDENTIAL_NOT_ROTATED";
pub const CHANGE_REGRESSION: &str = "CHANGE_REGRESSION";

/// Every code the rules can produce.
pub const ALL: [&str; 19] = [
    NO_APPROVAL,
    SELF_APPROVAL,
    APPROVAL_AFTER_DEPLOY,
    APPROVER_NOT_AUTHORIZED,
    UNVERIFIED_IDENTITY,
    APPROVAL_BYPASSED,
    APPROVED_SUBJECT_MISMATCH,
    UNLINKED_DEPLOY,
    EMERGENCY_NO_REVIEW,
    ROLLBACK_UNLINKED,
    HISTORY_REWRITTEN,
    EVIDENCE_GAP,
    APPROVAL_DECISION_MISSING,
    CONFLICTING_EVIDENCE,
    LATE_EVIDENCE,
    TOKEN_REUSED,
    APPROVAL_TOKEN_MISMATCH,
    CREDENTIAL_NOT_ROTATED,
    CHANGE_REGRESSION,
];

/// Roles that may approve the changes of the services a pattern matches (`payments-*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverRule {
    pub service: String,
    pub roles: Vec<String>,
}

/// What the rules need from configuration and from the rest of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleContext {
    /// Roles that may approve production changes; empty means approver roles are not tested.
    pub approver_roles: Vec<String>,
    /// Per-service approver roles: the first rule whose pattern matches the change's service
    /// wins over `approver_roles`.
    pub approvers: Vec<ApproverRule>,
    /// How long after an emergency deploy an independent review may come.
    pub emergency_review_window_ns: i64,
    /// Whether production deploys are compared with their runtime spans (`[suspects] enabled`):
    /// without it CHANGE_REGRESSION tests nothing.
    pub regressions_compared: bool,
}

impl Default for RuleContext {
    /// The shipped defaults (`[reports]` in src/defaults.toml; a test in config.rs keeps the two
    /// equal), for a process that judges changes without report settings of its own.
    fn default() -> RuleContext {
        RuleContext {
            approver_roles: Vec::new(),
            approvers: Vec::new(),
            emergency_review_window_ns: 48 * 3600 * 1_000_000_000,
            regressions_compared: true,
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl RuleContext {
    /// The roles that may approve a change of `service`.
    pub fn approver_roles_for(&self, service: Option<&str>) -> &[String] {
        service
            .and_then(|s| self.approvers.iter().find(|r| glob_matches(&r.service, s)))
            .map_or(&self.approver_roles, |r| &r.roles)
    }

    /// Codes that test nothing under these settings (a control tested only by them is
    /// "not tested", never "pass").
    pub fn untested_codes(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.approver_roles.is_empty() && self.approvers.iter().all(|r| r.roles.is_empty()) {
            out.push(APPROVER_NOT_AUTHORIZED);
        }
        if !self.regressions_compared {
            out.push(CHANGE_REGRESSION);
        }
        out
    }
}

/// One exception: the code and what shows it, in words an auditor reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exception {
    pub code: &'static str,
    pub evidence: String,
}

fn ex(code: &'static str, evidence: String) -> Exception {
    Exception { code, evidence }
}

fn who(p: &Option<Principal>) -> String {
    p.as_ref()
        .and_then(|p| p.subject.clone())
        .unwrap_or_else(|| "(unknown)".into())
}

fn approved(e: &Evidence) -> Vec<&ApprovalView> {
    e.approvals
        .iter()
        .filter(|a| a.decision == decision::APPROVED)
        .collect()
}

/// The token digest of a principal a judgement discredited with a code of its own.
fn discredited(e: &Evidence, p: &Principal) -> bool {
    let sha = match &p.established {
        Established::Verified { token_sha256, .. } => Some(token_sha256),
        Established::Asserted { token_sha256, .. } => token_sha256.as_ref(),
    };
    sha.is_some_and(|s| e.judgement.discredited.contains(s))
}

/// A rollback that names a change that exists and puts back a version that ran before: it undoes
/// an approved change rather than making a new one.
pub(crate) fn restoring_rollback(e: &Evidence) -> bool {
    e.change.kind == "rollback"
        && e.judgement.rollback_target_known == Some(true)
        && e.judgement.restores_seen_version
}

/// All per-change rules, in catalogue order.
pub fn change_exceptions(e: &Evidence, ctx: &RuleContext) -> Vec<Exception> {
    let mut out = Vec::new();
    out.extend(no_approval(e));
    out.extend(self_approval(e));
    out.extend(approval_after_deploy(e));
    out.extend(approver_not_authorized(e, ctx));
    out.extend(unverified_identity(e));
    out.extend(approval_bypassed(e));
    out.extend(approval_decision_missing(e));
    out.extend(approved_subject_mismatch(e));
    out.extend(approval_token_mismatch(e));
    out.extend(token_reused(e));
    out.extend(credential_not_rotated(e));
    out.extend(emergency_no_review(e, ctx));
    out.extend(rollback_unlinked(e));
    out.extend(history_rewritten(e));
    out.extend(change_regression(e));
    out.extend(conflicting_evidence(e));
    out.extend(late_evidence(e));
    out
}

/// The exceptions a judged change carries in reports and the console: the rules' (production
/// changes only, as the report's population holds only those, so the console and the report
/// never disagree) and an EVIDENCE_GAP for each of its facts (by entry) that cannot be read.
pub fn judged_exceptions(e: &Evidence, unreadable: &[u64], ctx: &RuleContext) -> Vec<Exception> {
    let mut out = if e.change.production {
        change_exceptions(e, ctx)
    } else {
        Vec::new()
    };
    out.extend(unreadable.iter().map(|seq| unreadable_fact(*seq)));
    out
}

/// "3 h 20 min", "45 s": durations as people read them.
pub fn human_duration(ns: i64) -> String {
    let s = ns.max(0) / 1_000_000_000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests;
