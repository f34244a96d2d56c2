//! The deploy gate: whether a change may deploy an artifact to an environment now, decided from
//! the evidence committed so far (`POST /v1/gate`). A workflow asks before its deploy step; the
//! answer and its reasons become a `gate.decided` fact of the change, so the report shows which
//! changes passed the gate and an auditor can see what each decision read.
//!
//! The gate denies whatever the report would hold against the change before its deploy, and
//! demands what the report can only look for afterwards: an approval, verified, for this
//! artifact, decided before now. A deploy the gate allowed is therefore never one the report
//! lists for its approval; one it denied never had to reach production to be caught.

use super::identity::Established;
use super::rules::{self, Exception, RuleContext};
use super::statement::{About, Intake};
use super::{ApprovalView, Evidence, Fact, FactRecord, Source, decision, normalize_subject};
use serde::{Deserialize, Serialize};

/// What a workflow asks: may `change_id` deploy `artifact_digest` to `environment`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRequest {
    pub change_id: String,
    pub environment: String,
    pub artifact_digest: String,
}

/// `allow` or `deny`.
pub const ALLOW: &str = "allow";
pub const DENY: &str = "deny";

/// Reasons the gate gives of its own (the others are the report's exception codes).
pub mod reason {
    /// No fact describes the change.
    pub const CHANGE_UNKNOWN: &str = "CHANGE_UNKNOWN";
    /// The change states another environment (or none).
    pub const ENVIRONMENT_MISMATCH: &str = "ENVIRONMENT_MISMATCH";
    /// The change states another artifact (or none) than the one about to deploy.
    pub const ARTIFACT_MISMATCH: &str = "ARTIFACT_MISMATCH";
    /// An approval was rejected after the last approval.
    pub const APPROVAL_REJECTED: &str = "APPROVAL_REJECTED";
    /// Allowed: an approval that meets every condition (the reason names it).
    pub const APPROVED: &str = "APPROVED";
    /// Allowed: the environment is not a production one; no approval is required.
    pub const NOT_PRODUCTION: &str = "NOT_PRODUCTION";
    /// The approval relied on states a decision before the change was requested.
    pub const APPROVAL_BEFORE_REQUEST: &str = "APPROVAL_BEFORE_REQUEST";
}

/// The report's exception codes that deny a deploy: each is open evidence against the change
/// that no deploy can settle (who approved, with which token, what the record shows).
pub const DENYING: [&str; 10] = [
    rules::SELF_APPROVAL,
    rules::APPROVER_NOT_AUTHORIZED,
    rules::APPROVED_SUBJECT_MISMATCH,
    rules::APPROVAL_TOKEN_MISMATCH,
    rules::APPROVAL_BYPASSED,
    rules::TOKEN_REUSED,
    rules::CREDENTIAL_NOT_ROTATED,
    rules::CONFLICTING_EVIDENCE,
    rules::HISTORY_REWRITTEN,
    rules::EVIDENCE_GAP,
];

/// One reason for a decision: a code scripts match on, and words an auditor reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateReason {
    pub code: String,
    pub detail: String,
}

fn why(code: &str, detail: impl Into<String>) -> GateReason {
    GateReason {
        code: code.to_owned(),
        detail: detail.into(),
    }
}

/// A decision of the gate, as its `gate.decided` fact records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateFact {
    /// `allow` or `deny`.
    pub decision: String,
    /// What was asked: the environment and the artifact about to deploy.
    pub environment: String,
    pub artifact_digest: String,
    /// Every reason, deny reasons first; an allow names the approval it relied on.
    pub reasons: Vec<GateReason>,
    /// The ledger size whose entries the decision read: the evidence committed so far.
    pub evidence_size: u64,
    /// The entry of the approval an allow relied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_seq: Option<u64>,
}

impl GateFact {
    pub fn allowed(&self) -> bool {
        self.decision == ALLOW
    }
}

/// Decides a request against the change's judged evidence (`None`: no fact describes it) and
/// the exceptions the report's rules find in it. `now_ns` is the gate's clock: an approval that
/// states a later decision time does not count yet.
pub fn decide(
    req: &GateRequest,
    evidence: Option<(&Evidence, &[Exception])>,
    ctx: &RuleContext,
    production: bool,
    now_ns: i64,
    evidence_size: u64,
) -> GateFact {
    let fact = |mut reasons: Vec<GateReason>, approval_seq: Option<u64>| {
        // A fault the report's rules and the approval check both see is one reason: the first
        // words for it (the report's) stand.
        let mut seen = std::collections::BTreeSet::new();
        reasons.retain(|r| seen.insert(r.code.clone()));
        let allow = !reasons.is_empty() && reasons.iter().all(|r| allowing(&r.code));
        GateFact {
            decision: if allow { ALLOW } else { DENY }.to_owned(),
            environment: req.environment.clone(),
            artifact_digest: req.artifact_digest.clone(),
            reasons,
            evidence_size,
            approval_seq: approval_seq.filter(|_| allow),
        }
    };
    let Some((e, exceptions)) = evidence else {
        return fact(
            vec![why(
                reason::CHANGE_UNKNOWN,
                format!("no evidence of change {} is on record", req.change_id),
            )],
            None,
        );
    };
    let mut deny = Vec::new();
    let c = &e.change;
    match &c.environment {
        Some(env) if env.eq_ignore_ascii_case(&req.environment) => {}
        stated => deny.push(why(
            reason::ENVIRONMENT_MISMATCH,
            format!(
                "the change states environment {}, the deploy is to {}",
                stated.as_deref().unwrap_or("(none)"),
                req.environment
            ),
        )),
    }
    match &c.artifact {
        Some(a) if a == &req.artifact_digest => {}
        stated => deny.push(why(
            reason::ARTIFACT_MISMATCH,
            format!(
                "the change states artifact {}, the deploy is of {}",
                stated.as_deref().unwrap_or("(none)"),
                req.artifact_digest
            ),
        )),
    }
    deny.extend(
        exceptions
            .iter()
            .filter(|x| DENYING.contains(&x.code))
            .map(|x| why(x.code, x.evidence.clone())),
    );
    if !production {
        if !deny.is_empty() {
            return fact(deny, None);
        }
        return fact(
            vec![why(
                reason::NOT_PRODUCTION,
                format!("{} is not a production environment", req.environment),
            )],
            None,
        );
    }
    // Independence from the requester can only be shown of a requester a token proved.
    if let Some(r) = unproven_requester(e) {
        deny.push(r);
    }
    let (approval, refused) = qualifying_approval(e, req, ctx, now_ns);
    if let Some(r) = rejected_after(e, approval) {
        deny.push(r);
    }
    let allow = match approval {
        Some(a) => why(
            reason::APPROVED,
            format!(
                "approved by {} (verified, {}) at entry {}",
                a.approver
                    .as_ref()
                    .and_then(|p| p.subject.as_deref())
                    .unwrap_or("(unknown)"),
                match &a.approver.as_ref().map(|p| &p.established) {
                    Some(Established::Verified { issuer, .. }) => format!("issuer {issuer}"),
                    _ => "no issuer".into(),
                },
                a.seq
            ),
        ),
        // A rollback asks for an approval like any change: the report's leniency for a rollback
        // that restores an earlier version rests on sightings and a stated version, neither of
        // which binds the artifact about to deploy. A rollback that cannot wait skips the gate,
        // and the report judges it.
        None => {
            deny.extend(refused);
            return fact(deny, None);
        }
    };
    if !deny.is_empty() {
        return fact(deny, None);
    }
    fact(vec![allow], approval.map(|a| a.seq))
}

fn allowing(code: &str) -> bool {
    [reason::APPROVED, reason::NOT_PRODUCTION].contains(&code)
}

/// Why the requester cannot be told apart from the approver, if so: no requester on record, one
/// only asserted, or one whose token the judgement discredited.
fn unproven_requester(e: &Evidence) -> Option<GateReason> {
    let Some(p) = &e.requester else {
        return Some(why(
            rules::UNVERIFIED_IDENTITY,
            "no requester is on record: that the approval is independent cannot be shown",
        ));
    };
    let who = p.subject.as_deref().unwrap_or("(unknown)");
    match &p.established {
        Established::Verified { token_sha256, .. }
            if !e.judgement.discredited.contains(token_sha256) =>
        {
            None
        }
        _ => Some(why(
            rules::UNVERIFIED_IDENTITY,
            format!(
                "requester {who} is not proven by a token: that the approval is independent \
                 cannot be shown"
            ),
        )),
    }
}

/// The latest approval (by decision time) that lets the deploy go, or why none does: each
/// approved decision that fails a condition says which, and no approved decision at all is
/// NO_APPROVAL. The latest, so that approving again after a rejection counts.
fn qualifying_approval<'a>(
    e: &'a Evidence,
    req: &GateRequest,
    ctx: &RuleContext,
    now_ns: i64,
) -> (Option<&'a ApprovalView>, Vec<GateReason>) {
    let requester = e
        .requester
        .as_ref()
        .and_then(|p| p.subject.as_deref())
        .map(normalize_subject);
    let roles_wanted = ctx.approver_roles_for(e.change.service.as_deref());
    let mut approvals: Vec<&ApprovalView> = e
        .approvals
        .iter()
        .filter(|a| a.decision == decision::APPROVED)
        .collect();
    approvals.sort_by_key(|a| (a.decided_ns.unwrap_or(i64::MAX), a.seq));
    let mut refused = Vec::new();
    for a in approvals.iter().rev() {
        match refusal(e, a, req, requester.as_deref(), roles_wanted, now_ns) {
            None => return (Some(a), refused),
            Some(r) => refused.push(r),
        }
    }
    if approvals.is_empty() {
        let seen: Vec<&str> = e.approvals.iter().map(|a| a.decision.as_str()).collect();
        refused.push(why(
            rules::NO_APPROVAL,
            if seen.is_empty() {
                "no approval is on record".to_owned()
            } else {
                format!("no approval says approved; on record: {}", seen.join(", "))
            },
        ));
    }
    (None, refused)
}

/// Why one approved decision does not let the deploy go, if it does not.
fn refusal(
    e: &Evidence,
    a: &ApprovalView,
    req: &GateRequest,
    requester: Option<&str>,
    roles_wanted: &[String],
    now_ns: i64,
) -> Option<GateReason> {
    let who = a
        .approver
        .as_ref()
        .and_then(|p| p.subject.clone())
        .unwrap_or_else(|| "(unknown)".into());
    let Some(p) = &a.approver else {
        return Some(why(
            rules::UNVERIFIED_IDENTITY,
            format!("the approval at entry {} names no approver", a.seq),
        ));
    };
    let Established::Verified {
        roles,
        token_sha256,
        bound_change,
        bound_artifact,
        ..
    } = &p.established
    else {
        return Some(why(
            rules::UNVERIFIED_IDENTITY,
            format!("approver {who} is asserted, not verified by a token"),
        ));
    };
    // The judgement discredits a token another change used first, or one issued for another
    // change or artifact; the report's exception says which, and so does this reason.
    if e.judgement.discredited.contains(token_sha256) {
        let reused = e.judgement.reused.iter().any(|r| {
            r.role == super::IdentityRole::Approver
                && r.subject.as_deref().map(normalize_subject)
                    == p.subject.as_deref().map(normalize_subject)
        });
        return Some(if reused {
            why(
                rules::TOKEN_REUSED,
                format!("approver {who}'s token was used on another change first"),
            )
        } else {
            why(
                rules::APPROVAL_TOKEN_MISMATCH,
                format!("approver {who}'s token was issued for another change or artifact"),
            )
        });
    }
    if requester.is_some() && requester == p.subject.as_deref().map(normalize_subject).as_deref() {
        return Some(why(
            rules::SELF_APPROVAL,
            format!("{who} requested the change and approved it"),
        ));
    }
    if !roles_wanted.is_empty() && !roles.iter().any(|r| roles_wanted.contains(r)) {
        return Some(why(
            rules::APPROVER_NOT_AUTHORIZED,
            format!(
                "approver {who} holds none of the roles that may approve {} ({})",
                e.change.service.as_deref().unwrap_or("this service"),
                roles_wanted.join(", ")
            ),
        ));
    }
    if let Some(s) = &a.approved_subject
        && !names_artifact(s, &req.artifact_digest)
    {
        return Some(why(
            rules::APPROVED_SUBJECT_MISMATCH,
            format!(
                "approver {who} approved {s}, the deploy is of {}",
                req.artifact_digest
            ),
        ));
    }
    // A token's claim is machine-made: it must name the artifact exactly.
    if let Some(s) = bound_artifact
        && s != &req.artifact_digest
    {
        return Some(why(
            rules::APPROVAL_TOKEN_MISMATCH,
            format!(
                "approver {who}'s token is for artifact {s}, the deploy is of {}",
                req.artifact_digest
            ),
        ));
    }
    // The judge accepts a token bound to the change or to one of its runs; so does the gate.
    if let Some(c) = bound_change
        && c != &e.change.id
        && !e.change.runs.contains(c)
    {
        return Some(why(
            rules::APPROVAL_TOKEN_MISMATCH,
            format!("approver {who}'s token is for change {c}"),
        ));
    }
    // A decision received much later than the time it states may be backdated; one stated
    // before the change was even requested approved something else.
    if e.judgement.late.iter().any(|r| r.seq == a.seq) {
        return Some(why(
            rules::LATE_EVIDENCE,
            format!(
                "approver {who}'s decision reached changetrail later than allowed after the time \
                 it states (entry {})",
                a.seq
            ),
        ));
    }
    match a.decided_ns {
        Some(d) if e.change.requested_ns.is_some_and(|r| d < r) => Some(why(
            reason::APPROVAL_BEFORE_REQUEST,
            format!("approver {who}'s decision states a time before the change was requested"),
        )),
        Some(d) if d <= now_ns => None,
        Some(_) => Some(why(
            rules::NO_APPROVAL,
            format!("approver {who}'s decision states a time after now"),
        )),
        None => Some(why(
            rules::APPROVAL_DECISION_MISSING,
            format!("approver {who}'s decision states no time"),
        )),
    }
}

/// Whether an approved subject names the artifact: exactly, or as a shortened digest written
/// with a trailing `...` (people approve what a ticket shows) keeping at least 12 characters
/// after the algorithm (`sha256:9b1f0c7d2e8a...`, 48 bits), so a stub names nothing.
fn names_artifact(subject: &str, digest: &str) -> bool {
    match subject.strip_suffix("...") {
        Some(prefix) => {
            let hex = prefix.rsplit_once(':').map_or(prefix, |(_, h)| h);
            hex.len() >= 12 && digest.starts_with(prefix)
        }
        None => subject == digest,
    }
}

/// A rejection not superseded by the approval the gate would rely on: one decided at or after
/// it, or one that states no time (it cannot be placed before). The later word stands; a time
/// stated ahead of the gate's clock counts too, since the rejection is on record.
fn rejected_after(e: &Evidence, approval: Option<&ApprovalView>) -> Option<GateReason> {
    let after = approval.and_then(|a| a.decided_ns).unwrap_or(i64::MIN);
    e.approvals
        .iter()
        .filter(|r| r.decision == decision::REJECTED)
        .find(|r| r.decided_ns.is_none_or(|d| d >= after))
        .map(|r| {
            why(
                reason::APPROVAL_REJECTED,
                format!(
                    "{} rejected the change at entry {}",
                    r.approver
                        .as_ref()
                        .and_then(|p| p.subject.as_deref())
                        .unwrap_or("(unknown)"),
                    r.seq
                ),
            )
        })
}

/// The `gate.decided` fact of a decision, stated by the gate at `now_ns` for whoever asked.
pub fn gate_fact(req: &GateRequest, decided: GateFact, now_ns: i64, intake: &Intake) -> FactRecord {
    FactRecord::stated(
        About {
            base: format!("gate:{}", req.change_id),
            change_id: Some(req.change_id.clone()),
            run_id: None,
            source: Source::Gate,
            time_ns: now_ns,
            until_ns: now_ns,
        },
        intake,
        Fact::Gate(decided),
    )
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
