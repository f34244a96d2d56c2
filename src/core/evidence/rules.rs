//! The exception rules of the SOC 2 report, each a pure function of a change's judged evidence
//! (and the report's settings). Retries that ended in success on the approved artifact are not
//! exceptions: the attempts column reports them.

use super::identity::{Established, Principal};
use super::{Evidence, IdentityRole, VersionFact, decision, deployed, normalize_subject};

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

/// Every code the rules can produce.
pub const ALL: [&str; 18] = [
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
}

impl Default for RuleContext {
    /// The shipped defaults (`[reports]` in src/defaults.toml; a test in config.rs keeps the two
    /// equal), for a process that judges changes without report settings of its own.
    fn default() -> RuleContext {
        RuleContext {
            approver_roles: Vec::new(),
            approvers: Vec::new(),
            emergency_review_window_ns: 48 * 3600 * 1_000_000_000,
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
        if self.approver_roles.is_empty() && self.approvers.iter().all(|r| r.roles.is_empty()) {
            vec![APPROVER_NOT_AUTHORIZED]
        } else {
            Vec::new()
        }
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

fn approved(e: &Evidence) -> Vec<&super::ApprovalView> {
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
fn restoring_rollback(e: &Evidence) -> bool {
    e.change.kind == "rollback"
        && e.judgement.rollback_target_known == Some(true)
        && e.judgement.restores_seen_version
}

/// A change that deployed something with no approval that says "approved". A run that never
/// deployed (it failed or was rejected first) needs none; an emergency change is judged by its
/// review, a restoring rollback by the change it undoes.
pub fn no_approval(e: &Evidence) -> Option<Exception> {
    if !deployed(e) || !approved(e).is_empty() || e.change.kind == "emergency" {
        return None;
    }
    if restoring_rollback(e) {
        return None;
    }
    let seen: Vec<&str> = e.approvals.iter().map(|a| a.decision.as_str()).collect();
    Some(ex(
        NO_APPROVAL,
        if seen.is_empty() {
            "deployed with no approval on record".into()
        } else {
            format!(
                "deployed, but the approvals on record are: {}",
                seen.join(", ")
            )
        },
    ))
}

/// The requester approved their own change, or an approver set off its deploy (subjects compared
/// without case or a `mailto:` prefix).
pub fn self_approval(e: &Evidence) -> Option<Exception> {
    let requester = e
        .requester
        .as_ref()
        .and_then(|p| p.subject.as_deref())
        .map(normalize_subject);
    let triggers: Vec<String> = e
        .steps
        .iter()
        .flat_map(|s| s.attempts.iter())
        .filter_map(|a| a.triggered_by.as_deref().map(normalize_subject))
        .collect();
    approved(e).into_iter().find_map(|a| {
        let raw = a.approver.as_ref()?.subject.as_ref()?;
        let approver = normalize_subject(raw);
        if requester.as_deref() == Some(approver.as_str()) {
            Some(ex(
                SELF_APPROVAL,
                format!("{raw} requested and approved the change"),
            ))
        } else if triggers.contains(&approver) {
            Some(ex(
                SELF_APPROVAL,
                format!("{raw} approved the change and set off its deploy"),
            ))
        } else {
            None
        }
    })
}

/// No approval was decided before the first deploy attempt started — by the times its sender
/// states *and* by when the service received it (an approval received after the deploy's record,
/// beyond the receipt tolerance, is not before it, whatever time it states). An emergency change
/// is reviewed after its deploy by design; EMERGENCY_NO_REVIEW judges that review.
pub fn approval_after_deploy(e: &Evidence) -> Option<Exception> {
    if e.change.kind == "emergency" {
        return None;
    }
    let start = e.timeline.first_deploy_start_ns?;
    let approvals = approved(e);
    if approvals.is_empty()
        || approvals
            .iter()
            .any(|a| a.before_first_deploy == Some(true))
    {
        return None;
    }
    let first = approvals
        .iter()
        .min_by_key(|a| a.decided_ns.unwrap_or(i64::MAX))?;
    let decided = first.decided_ns?;
    Some(ex(
        APPROVAL_AFTER_DEPLOY,
        if decided >= start {
            format!(
                "approved {} after the first deploy attempt started",
                human_duration(decided - start)
            )
        } else {
            let deploy_received = e.timeline.deploy_received_ns.unwrap_or(first.received_ns);
            format!(
                "the approval states a time {} before the first deploy attempt, but it was \
                 received {} after the deploy was",
                human_duration(start - decided),
                human_duration(first.received_ns - deploy_received)
            )
        },
    ))
}

/// An approver without an approver role for the change's service at the time of the decision
/// (an asserted identity has no roles anyone vouched for).
pub fn approver_not_authorized(e: &Evidence, ctx: &RuleContext) -> Vec<Exception> {
    let wanted = ctx.approver_roles_for(e.change.service.as_deref());
    if wanted.is_empty() {
        return Vec::new();
    }
    approved(e)
        .into_iter()
        .filter_map(|a| {
            let p = a.approver.as_ref()?;
            if discredited(e, p) {
                return None;
            }
            let roles: &[String] = match &p.established {
                Established::Verified { roles, .. } => roles,
                Established::Asserted { .. } => &[],
            };
            (!roles.iter().any(|r| wanted.contains(r))).then(|| {
                ex(
                    APPROVER_NOT_AUTHORIZED,
                    format!(
                        "{} approved without an approver role ({}) at the time of the decision; roles held: {}",
                        who(&a.approver),
                        wanted.join(", "),
                        if roles.is_empty() { "none established".to_owned() } else { roles.join(", ") }
                    ),
                )
            })
        })
        .collect()
}

/// Requester, approvers or executing identities established only by assertion (those whose
/// token a judgement discredited are reported under that code instead).
pub fn unverified_identity(e: &Evidence) -> Vec<Exception> {
    let mut out = Vec::new();
    let mut check = |role: &str, p: &Option<Principal>| {
        if let Some(
            pr @ Principal {
                subject,
                established: Established::Asserted { reason, .. },
            },
        ) = p
            && !discredited(e, pr)
        {
            out.push(ex(
                UNVERIFIED_IDENTITY,
                format!(
                    "{role} {} is asserted, not verified ({reason})",
                    subject.as_deref().unwrap_or("(unknown)")
                ),
            ));
        }
    };
    check("requester", &e.requester);
    for a in approved(e) {
        check("approver", &a.approver);
    }
    for s in &e.steps {
        for a in &s.attempts {
            check("deployer", &a.identity);
        }
    }
    out
}

/// An approval step that was skipped (Conductor skiptask) instead of decided.
pub fn approval_bypassed(e: &Evidence) -> Option<Exception> {
    e.approvals
        .iter()
        .any(|a| a.decision == decision::SKIPPED)
        .then(|| {
            ex(
                APPROVAL_BYPASSED,
                "the approval step was skipped, not decided".into(),
            )
        })
}

/// An approval that states no decision (or one that is neither approved nor rejected).
pub fn approval_decision_missing(e: &Evidence) -> Vec<Exception> {
    e.approvals
        .iter()
        .filter(|a| a.decision == decision::UNKNOWN)
        .map(|a| {
            ex(
                APPROVAL_DECISION_MISSING,
                match &a.stated_decision {
                    Some(s) => format!(
                        "the approval by {} says {s:?}, which is neither approved nor rejected",
                        who(&a.approver)
                    ),
                    None => format!(
                        "the approval by {} states no decision; it is not counted as approved",
                        who(&a.approver)
                    ),
                },
            )
        })
        .collect()
}

/// What was approved is not what was deployed.
pub fn approved_subject_mismatch(e: &Evidence) -> Option<Exception> {
    let deployed_subjects: Vec<&String> = [&e.change.artifact, &e.change.revision]
        .into_iter()
        .flatten()
        .collect();
    if deployed_subjects.is_empty() {
        return None;
    }
    approved(e).into_iter().find_map(|a| {
        let s = a.approved_subject.as_ref()?;
        // An approval of a shortened digest (a prefix) still names the deployed artifact.
        let matches = deployed_subjects
            .iter()
            .any(|d| d == &s || d.starts_with(s.trim_end_matches("...")));
        (!matches).then(|| {
            ex(
                APPROVED_SUBJECT_MISMATCH,
                format!(
                    "approved {s}, deployed {}",
                    deployed_subjects
                        .iter()
                        .map(|d| d.as_str())
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
            )
        })
    })
}

/// An emergency change with no independent review (approval by someone other than the requester)
/// within the window after its deploy.
pub fn emergency_no_review(e: &Evidence, ctx: &RuleContext) -> Option<Exception> {
    if e.change.kind != "emergency" {
        return None;
    }
    let end = e
        .timeline
        .deploy_end_ns
        .or(e.change.finished_ns)
        .or(e.change.requested_ns)?;
    let requester = e
        .requester
        .as_ref()
        .and_then(|p| p.subject.as_deref())
        .map(normalize_subject);
    let reviewed = approved(e).into_iter().any(|a| {
        a.decided_ns
            .is_some_and(|d| d <= end.saturating_add(ctx.emergency_review_window_ns))
            && a.approver
                .as_ref()
                .and_then(|p| p.subject.as_deref())
                .map(normalize_subject)
                != requester
    });
    (!reviewed).then(|| {
        let mut why = format!(
            "emergency change without an independent review within {} of its deploy",
            human_duration(ctx.emergency_review_window_ns)
        );
        if e.change.justification.is_none() {
            why.push_str("; no justification recorded");
        }
        ex(EMERGENCY_NO_REVIEW, why)
    })
}

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

/// The workflow engine's history of this change was rewritten (a Conductor restart).
pub fn history_rewritten(e: &Evidence) -> Option<Exception> {
    e.history_rewrites.first().map(|r| {
        ex(
            HISTORY_REWRITTEN,
            format!(
                "{}: {} earlier task records vanished",
                r.operation,
                r.vanished_tasks.len()
            ),
        )
    })
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
                        super::report::time_cell(Some(v.time_ns)),
                        super::report::time_cell(Some(v.received_ns)),
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

fn reuse_text(r: &super::Reuse) -> String {
    format!(
        "the {} {}'s credential {} was used first on {} (entry {}); here at entry {}",
        r.role.as_str(),
        r.subject.as_deref().unwrap_or("(unknown)"),
        short_credential(&r.credential),
        r.first_subject,
        r.first_seq,
        r.seq
    )
}

/// `sha256:` digests shortened for reading; the full value is in the evidence packet.
fn short_credential(c: &str) -> String {
    match c.strip_prefix("sha256:") {
        Some(h) if h.len() > 16 => format!("sha256:{}…", &h[..16]),
        _ => c.to_owned(),
    }
}

/// A requester's or approver's token that another change used first: it proves nothing here.
pub fn token_reused(e: &Evidence) -> Vec<Exception> {
    e.judgement
        .reused
        .iter()
        .filter(|r| r.role != IdentityRole::Deployer)
        .map(|r| ex(TOKEN_REUSED, reuse_text(r)))
        .collect()
}

/// A deploying workload's credential that an earlier change used: not rotated between deploys.
pub fn credential_not_rotated(e: &Evidence) -> Vec<Exception> {
    e.judgement
        .reused
        .iter()
        .filter(|r| r.role == IdentityRole::Deployer)
        .map(|r| ex(CREDENTIAL_NOT_ROTATED, reuse_text(r)))
        .collect()
}

/// An approval token issued for another change or artifact.
pub fn approval_token_mismatch(e: &Evidence) -> Vec<Exception> {
    e.judgement
        .token_mismatches
        .iter()
        .map(|m| {
            ex(
                APPROVAL_TOKEN_MISMATCH,
                format!(
                    "approver {}: {}",
                    m.approver.as_deref().unwrap_or("(unknown)"),
                    m.detail
                ),
            )
        })
        .collect()
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
mod tests {
    use super::*;
    use crate::core::evidence::{
        ApprovalView, AttemptView, ChangeView, Neighbours, RewriteFact, Settings, Source, StepView,
        Timeline, judge,
    };

    const MIN: i64 = 60_000_000_000;

    fn verified(sub: &str, roles: &[&str]) -> Option<Principal> {
        Some(Principal {
            subject: Some(sub.into()),
            established: Established::Verified {
                issuer: "idp".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                expires_ns: None,
                token_sha256: format!("sha-{sub}"),
                signed_sha256: String::new(),
                jti: None,
                bound_change: None,
                bound_artifact: None,
            },
        })
    }

    fn asserted(sub: &str) -> Option<Principal> {
        Some(Principal {
            subject: Some(sub.into()),
            established: Established::Asserted {
                reason: "no token".into(),
                token_sha256: None,
            },
        })
    }

    fn approval(decision: &str, who: Option<Principal>, decided: i64) -> ApprovalView {
        ApprovalView {
            decision: decision.into(),
            approver: who,
            requested_ns: Some(0),
            decided_ns: Some(decided),
            approved_subject: Some("sha256:aa".into()),
            stated_decision: None,
            task_run_id: None,
            method: Source::Span,
            before_first_deploy: None,
            received_ns: decided,
            seq: 0,
            sent_by: None,
        }
    }

    /// A clean change: alice requests, bob (an approver) approves at 10 min, deploy 20–25 min.
    fn clean() -> Evidence {
        Evidence {
            change: ChangeView {
                id: "CHG-1".into(),
                kind: "normal".into(),
                environment: Some("production".into()),
                production: true,
                artifact: Some("sha256:aa".into()),
                requested_ns: Some(0),
                result: Some("success".into()),
                ..Default::default()
            },
            requester: verified("alice", &["engineer"]),
            approvals: vec![approval(
                "approved",
                verified("bob", &["release-approver"]),
                10 * MIN,
            )],
            timeline: Timeline {
                requested_ns: Some(0),
                approved_ns: Some(10 * MIN),
                first_deploy_start_ns: Some(20 * MIN),
                deploy_end_ns: Some(25 * MIN),
                deploy_received_ns: Some(21 * MIN),
            },
            steps: vec![StepView {
                task: "deploy".into(),
                task_type: "deploy".into(),
                attempts: vec![
                    AttemptView {
                        attempt: 0,
                        task_run_id: "t1".into(),
                        retried_from: None,
                        result: "timeout".into(),
                        start_ns: 20 * MIN,
                        end_ns: 21 * MIN,
                        worker: None,
                        identity: verified("spiffe://d", &[]),
                        credential_id: None,
                        triggered_by: None,
                        trace_id: None,
                        reason: None,
                        sources: vec![],
                        received_ns: 21 * MIN,
                        sent_by: vec![],
                    },
                    AttemptView {
                        attempt: 1,
                        task_run_id: "t2".into(),
                        retried_from: Some("t1".into()),
                        result: "success".into(),
                        start_ns: 22 * MIN,
                        end_ns: 25 * MIN,
                        worker: None,
                        identity: verified("spiffe://d", &[]),
                        credential_id: None,
                        triggered_by: None,
                        trace_id: None,
                        reason: None,
                        sources: vec![],
                        received_ns: 21 * MIN,
                        sent_by: vec![],
                    },
                ],
                outcome: "success".into(),
                summary: String::new(),
            }],
            history_rewrites: vec![],
            rolled_back_by: vec![],
            conflicts: vec![],
            deciding: vec![],
            credentials: vec![],
            judgement: Default::default(),
        }
    }

    fn ctx() -> RuleContext {
        RuleContext {
            approver_roles: vec!["release-approver".into()],
            approvers: vec![],
            emergency_review_window_ns: 24 * 60 * MIN,
        }
    }

    /// The evidence as the rules see it: judged with no neighbours and the shipped settings.
    fn judged(e: &Evidence) -> Evidence {
        let mut e = e.clone();
        judge(&mut e, &Neighbours::default(), &Settings::default());
        e
    }

    fn codes(e: &Evidence) -> Vec<&'static str> {
        change_exceptions(&judged(e), &ctx())
            .into_iter()
            .map(|x| x.code)
            .collect()
    }

    #[test]
    fn a_clean_change_with_a_retried_deploy_has_no_exception() {
        assert!(
            codes(&clean()).is_empty(),
            "{:?}",
            change_exceptions(&judged(&clean()), &ctx())
        );
    }

    #[test]
    fn no_approval() {
        let mut e = clean();
        e.approvals.clear();
        assert_eq!(codes(&e), vec![NO_APPROVAL]);
        e.approvals.push(approval(
            "rejected",
            verified("bob", &["release-approver"]),
            10 * MIN,
        ));
        assert_eq!(
            super::no_approval(&e).unwrap().evidence,
            "deployed, but the approvals on record are: rejected"
        );
        // A run that failed or was rejected before any deploy attempt: nothing to approve.
        let mut never = e.clone();
        never.steps.clear();
        never.change.result = Some("failure".into());
        assert!(super::no_approval(&never).is_none());
        // ... but a successful run that reported no deploy step did deploy.
        never.change.result = Some("success".into());
        assert!(super::no_approval(&never).is_some());
        // Only skipped attempts: nothing was applied.
        let mut skipped = e.clone();
        for a in &mut skipped.steps[0].attempts {
            a.result = "skip".into();
        }
        assert!(super::no_approval(&skipped).is_none());
        // A failed attempt may have applied part of the change.
        let mut failed = e.clone();
        failed.steps[0].attempts.truncate(1);
        assert!(super::no_approval(&failed).is_some());
    }

    #[test]
    fn a_linked_rollback_to_a_version_that_ran_before_needs_no_approval_of_its_own() {
        let mut e = clean();
        e.approvals.clear();
        e.change.kind = "rollback".into();
        e.change.rollback_of = Some("CHG-0".into());
        e.change.service = Some("api".into());
        e.change.version = Some("1.0".into());
        let mut n = Neighbours::default();
        n.known.insert("CHG-0".into());
        let judged_with = |n: &Neighbours, e: &Evidence| {
            let mut e = e.clone();
            judge(&mut e, n, &Settings::default());
            change_exceptions(&e, &ctx())
                .into_iter()
                .map(|x| x.code)
                .collect::<Vec<_>>()
        };
        // 1.0 never ran in production: rolling "back" to it is a new deploy.
        assert_eq!(judged_with(&n, &e), vec![NO_APPROVAL]);
        n.add_sighting(&VersionFact {
            service: "api".into(),
            environment: "Production".into(),
            version: "1.0".into(),
            first_seen_ns: -5,
            trace_id: None,
            previous: None,
        });
        assert!(judged_with(&n, &e).is_empty(), "{:?}", judged_with(&n, &e));
        // The change it names does not exist: unlinked, and it needs an approval after all.
        n.known.clear();
        assert_eq!(judged_with(&n, &e), vec![NO_APPROVAL, ROLLBACK_UNLINKED]);
    }

    #[test]
    fn self_approval() {
        let mut e = clean();
        e.approvals[0].approver = verified("alice", &["release-approver"]);
        assert_eq!(codes(&e), vec![SELF_APPROVAL]);
        // The same person written another way.
        e.approvals[0].approver = verified("mailto:Alice ", &["release-approver"]);
        assert_eq!(codes(&e), vec![SELF_APPROVAL]);
        // The approver set off the deploy.
        let mut e = clean();
        e.steps[0].attempts[1].triggered_by = Some("BOB".into());
        assert_eq!(
            super::self_approval(&e).unwrap().evidence,
            "bob approved the change and set off its deploy"
        );
    }

    #[test]
    fn approval_after_deploy() {
        let mut e = clean();
        e.approvals[0].decided_ns = Some(21 * MIN);
        let x = super::approval_after_deploy(&judged(&e)).unwrap();
        assert_eq!(
            x.evidence,
            "approved 1 min after the first deploy attempt started"
        );
        e.approvals[0].decided_ns = Some(20 * MIN);
        assert!(
            super::approval_after_deploy(&judged(&e)).is_some(),
            "at the same instant is not before"
        );
    }

    #[test]
    fn a_backdated_approval_received_after_the_deploy_is_not_before_it() {
        let mut e = clean();
        // Dated at 10 min, but the service got it 9 minutes after the deploy's record.
        e.approvals[0].received_ns = 30 * MIN;
        let x = super::approval_after_deploy(&judged(&e)).unwrap();
        assert_eq!(
            x.evidence,
            "the approval states a time 10 min before the first deploy attempt, but it was \
             received 9 min after the deploy was"
        );
        assert_eq!(judged(&e).approvals[0].before_first_deploy, Some(false));
        // Within the receipt tolerance (exporters batch): before.
        e.approvals[0].received_ns = 21 * MIN + 59_000_000_000;
        assert!(codes(&e).is_empty(), "{:?}", codes(&e));
        assert_eq!(judged(&e).approvals[0].before_first_deploy, Some(true));
    }

    #[test]
    fn approver_roles_per_service_and_untested_without_any() {
        let mut c = ctx();
        c.approvers = vec![ApproverRule {
            service: "payments-*".into(),
            roles: vec!["payments-approver".into()],
        }];
        let mut e = clean();
        e.change.service = Some("payments-api".into());
        let x = super::approver_not_authorized(&judged(&e), &c);
        assert_eq!(
            x.len(),
            1,
            "bob holds release-approver, not payments-approver"
        );
        e.change.service = Some("search".into());
        assert!(super::approver_not_authorized(&judged(&e), &c).is_empty());
        assert!(c.untested_codes().is_empty());
        assert_eq!(
            RuleContext::default().untested_codes(),
            vec![APPROVER_NOT_AUTHORIZED]
        );
        assert!(glob_matches("payments-*", "payments-api"));
        assert!(glob_matches("*-api", "payments-api"));
        assert!(glob_matches("p*s*i", "payments-api"));
        assert!(!glob_matches("payments-*", "search"));
        assert!(!glob_matches("a*a", "a"));
        assert!(glob_matches("search", "search"));
    }

    #[test]
    fn an_approval_without_a_decision_is_not_approved() {
        let mut e = clean();
        e.approvals[0].decision = decision::UNKNOWN.into();
        assert_eq!(codes(&e), vec![NO_APPROVAL, APPROVAL_DECISION_MISSING]);
        e.approvals[0].stated_decision = Some("LGTM".into());
        assert!(
            super::approval_decision_missing(&e)[0]
                .evidence
                .contains("\"LGTM\"")
        );
    }

    #[test]
    fn reused_tokens_and_credentials_are_named_and_prove_nothing() {
        let mut e = clean();
        e.change.runs = vec!["wf-1".into()];
        e.credentials = vec![
            crate::core::evidence::CredentialUse {
                role: IdentityRole::Approver,
                subject: Some("bob".into()),
                credential: "sha256:sha-bob".into(),
                seq: 40,
            },
            crate::core::evidence::CredentialUse {
                role: IdentityRole::Deployer,
                subject: Some("spiffe://d".into()),
                credential: "key:AKIA1".into(),
                seq: 41,
            },
        ];
        let mut n = Neighbours::default();
        // bob's token: first on CHG-0, then here. The deploy key: first on this change's run.
        n.add_credential("sha256:sha-bob", "CHG-0", 7);
        n.add_credential("sha256:sha-bob", "CHG-1", 40);
        n.add_credential("key:AKIA1", "wf-1", 41);
        let mut j = e.clone();
        judge(&mut j, &n, &Settings::default());
        let c: Vec<_> = change_exceptions(&j, &ctx())
            .into_iter()
            .map(|x| x.code)
            .collect();
        assert_eq!(
            c,
            vec![TOKEN_REUSED],
            "reported once, not as unverified or unauthorized too"
        );
        assert!(
            !j.approvals[0]
                .approver
                .as_ref()
                .unwrap()
                .established
                .is_verified()
        );
        assert!(
            super::token_reused(&j)[0]
                .evidence
                .contains("used first on CHG-0 (entry 7)")
        );
        // The deploy key seen on an earlier change.
        n.add_credential("key:AKIA1", "CHG-9", 3);
        let mut j = e.clone();
        judge(&mut j, &n, &Settings::default());
        let c: Vec<_> = change_exceptions(&j, &ctx())
            .into_iter()
            .map(|x| x.code)
            .collect();
        assert_eq!(c, vec![TOKEN_REUSED, CREDENTIAL_NOT_ROTATED]);
        // A later use elsewhere does not make this one a reuse.
        let mut n = Neighbours::default();
        n.add_credential("sha256:sha-bob", "CHG-1", 40);
        n.add_credential("sha256:sha-bob", "CHG-2", 90);
        let mut j = e.clone();
        judge(&mut j, &n, &Settings::default());
        assert!(change_exceptions(&j, &ctx()).is_empty());
    }

    #[test]
    fn an_approval_token_for_another_change_or_artifact_is_a_mismatch() {
        let bound = |change: Option<&str>, artifact: Option<&str>| {
            let mut e = clean();
            if let Some(Principal {
                established:
                    Established::Verified {
                        bound_change,
                        bound_artifact,
                        ..
                    },
                ..
            }) = e.approvals[0].approver.as_mut()
            {
                *bound_change = change.map(Into::into);
                *bound_artifact = artifact.map(Into::into);
            }
            e
        };
        assert!(codes(&bound(Some("CHG-1"), Some("sha256:aa"))).is_empty());
        assert_eq!(
            codes(&bound(Some("CHG-7"), None)),
            vec![APPROVAL_TOKEN_MISMATCH]
        );
        assert_eq!(
            codes(&bound(None, Some("sha256:bb"))),
            vec![APPROVAL_TOKEN_MISMATCH]
        );
        // Unbound tokens: fine by default, asserted when bound ones are required.
        let strict = Settings {
            require_bound_approvals: true,
            ..Settings::default()
        };
        let mut e = bound(None, None);
        judge(&mut e, &Neighbours::default(), &strict);
        let c: Vec<_> = change_exceptions(&e, &ctx())
            .into_iter()
            .map(|x| x.code)
            .collect();
        assert_eq!(c, vec![APPROVER_NOT_AUTHORIZED, UNVERIFIED_IDENTITY]);
    }

    #[test]
    fn conflicts_and_late_facts_are_exceptions() {
        let mut e = clean();
        let v = |value: &str, seq: u64| crate::core::evidence::StatedValue {
            value: value.into(),
            time_ns: 0,
            received_ns: 0,
            seq,
            source: Source::Span,
            sent_by: Some(crate::core::evidence::SentBy {
                token_id: Some("tk1".into()),
                name: "collector".into(),
            }),
        };
        e.conflicts.push(crate::core::evidence::Conflict {
            field: "environment".into(),
            values: vec![v("staging", 3), v("production", 4)],
        });
        e.deciding.push(crate::core::evidence::Receipt {
            what: "change.requested".into(),
            seq: 3,
            stated_ns: 0,
            received_ns: 3 * 86_400 * 1_000_000_000,
            max_lateness_ns: None,
        });
        assert_eq!(codes(&e), vec![CONFLICTING_EVIDENCE, LATE_EVIDENCE]);
        let x = super::conflicting_evidence(&e);
        assert!(
            x[0].evidence
                .starts_with("environment is stated as \"staging\" (span at")
                && x[0]
                    .evidence
                    .contains("entry 4, sent by collector (token tk1)"),
            "{}",
            x[0].evidence
        );
        let late = super::late_evidence(&judged(&e)).unwrap();
        assert_eq!(
            late.evidence,
            "change.requested received 3 d 0 h after the time it states (entry 3)"
        );
        // An import allowed it more.
        e.deciding[0].max_lateness_ns = Some(4 * 86_400 * 1_000_000_000);
        assert_eq!(codes(&e), vec![CONFLICTING_EVIDENCE]);
    }

    #[test]
    fn approver_not_authorized() {
        let mut e = clean();
        e.approvals[0].approver = verified("bob", &["engineer"]);
        assert_eq!(codes(&e), vec![APPROVER_NOT_AUTHORIZED]);
        e.approvals[0].approver = asserted("bob");
        let c = codes(&e);
        assert!(
            c.contains(&APPROVER_NOT_AUTHORIZED) && c.contains(&UNVERIFIED_IDENTITY),
            "{c:?}"
        );
        let open = RuleContext {
            approver_roles: vec![],
            ..ctx()
        };
        assert!(super::approver_not_authorized(&e, &open).is_empty());
    }

    #[test]
    fn unverified_identity() {
        let mut e = clean();
        e.requester = asserted("alice");
        e.steps[0].attempts[1].identity = asserted("worker-7");
        let x = super::unverified_identity(&e);
        assert_eq!(x.len(), 2);
        assert!(x[0].evidence.starts_with("requester alice is asserted"));
        assert!(x[1].evidence.starts_with("deployer worker-7"));
    }

    #[test]
    fn approval_bypassed() {
        let mut e = clean();
        e.approvals = vec![approval("skipped", None, 10 * MIN)];
        let c = codes(&e);
        assert!(
            c.contains(&APPROVAL_BYPASSED) && c.contains(&NO_APPROVAL),
            "{c:?}"
        );
    }

    #[test]
    fn approved_subject_mismatch() {
        let mut e = clean();
        e.approvals[0].approved_subject = Some("sha256:bb".into());
        assert_eq!(codes(&e), vec![APPROVED_SUBJECT_MISMATCH]);
        e.approvals[0].approved_subject = Some("sha256:a...".into());
        assert!(
            super::approved_subject_mismatch(&e).is_none(),
            "a shortened digest of the same artifact"
        );
    }

    #[test]
    fn emergency_no_review() {
        let mut e = clean();
        e.change.kind = "emergency".into();
        e.approvals.clear();
        let x = super::emergency_no_review(&e, &ctx()).unwrap();
        assert!(x.evidence.contains("no justification"), "{}", x.evidence);
        // Reviewed by someone else within the window: fine; by the requester, or too late: not.
        e.change.justification = Some("payments down".into());
        e.approvals.push(approval(
            "approved",
            verified("bob", &["release-approver"]),
            25 * MIN + 60 * MIN,
        ));
        assert!(super::emergency_no_review(&e, &ctx()).is_none());
        assert!(
            codes(&e).is_empty(),
            "an emergency reviewed afterwards is not NO_APPROVAL either: {:?}",
            codes(&e)
        );
        e.approvals[0].approver = verified("alice", &["release-approver"]);
        assert!(super::emergency_no_review(&e, &ctx()).is_some());
        e.approvals[0].approver = verified("bob", &["release-approver"]);
        e.approvals[0].decided_ns = Some(25 * MIN + 25 * 60 * MIN);
        assert!(super::emergency_no_review(&e, &ctx()).is_some());
    }

    #[test]
    fn rollback_unlinked() {
        let mut e = clean();
        e.change.kind = "rollback".into();
        assert_eq!(
            super::rollback_unlinked(&e).unwrap().evidence,
            "rollback that names no change it rolls back"
        );
        e.change.rollback_of = Some("CHG-0".into());
        e.judgement.rollback_target_known = Some(true);
        assert!(super::rollback_unlinked(&e).is_none());
        e.judgement.rollback_target_known = Some(false);
        assert!(super::rollback_unlinked(&e).is_some());
    }

    #[test]
    fn history_rewritten() {
        let mut e = clean();
        e.history_rewrites.push(RewriteFact {
            operation: "restart".into(),
            vanished_tasks: vec!["a".into(), "b".into()],
            detected_ns: 0,
        });
        assert_eq!(
            super::history_rewritten(&e).unwrap().evidence,
            "restart: 2 earlier task records vanished"
        );
    }

    #[test]
    fn unlinked_deploy_and_durations() {
        let v = VersionFact {
            service: "checkout".into(),
            environment: "production".into(),
            version: "7.0.1".into(),
            first_seen_ns: 0,
            trace_id: None,
            previous: None,
        };
        assert_eq!(
            unlinked_deploy(&v).evidence,
            "checkout 7.0.1 first seen in production with no change that deployed it"
        );
        let back = VersionFact {
            previous: Some("7.1.0".into()),
            ..v
        };
        assert_eq!(
            unlinked_deploy(&back).evidence,
            "checkout 7.0.1 seen again in production (after 7.1.0) with no change that deployed it"
        );
        assert_eq!(human_duration(45_000_000_000), "45 s");
        assert_eq!(
            human_duration(3 * 3600 * 1_000_000_000 + 20 * MIN),
            "3 h 20 min"
        );
        assert_eq!(human_duration(2 * 86_400 * 1_000_000_000), "2 d 0 h");
    }
}
