//! The exception rules of the SOC 2 report, each a pure function of a change's evidence (and
//! the report's settings). Retries that ended in success on the approved artifact are not
//! exceptions: the attempts column reports them.

use super::evidence::{Evidence, VersionFact};
use super::identity::{Established, Principal};

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

/// Every code the rules can produce.
pub const ALL: [&str; 12] = [
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
];

/// What the rules need from configuration and from the rest of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleContext {
    /// Roles that may approve production changes; empty means any verified approver may.
    pub approver_roles: Vec<String>,
    /// How long after an emergency deploy an independent review may come.
    pub emergency_review_window_ns: i64,
}

impl Default for RuleContext {
    /// The shipped defaults (`[reports]` in src/defaults.toml; a test in config.rs keeps the two
    /// equal), for a process that judges changes without report settings of its own.
    fn default() -> RuleContext {
        RuleContext {
            approver_roles: Vec::new(),
            emergency_review_window_ns: 48 * 3600 * 1_000_000_000,
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

fn deployed(e: &Evidence) -> bool {
    e.timeline.first_deploy_start_ns.is_some() || e.change.result.is_some()
}

fn approved(e: &Evidence) -> Vec<&super::evidence::ApprovalView> {
    e.approvals
        .iter()
        .filter(|a| a.decision == "approved")
        .collect()
}

/// A deployed change with no approval that says "approved".
pub fn no_approval(e: &Evidence) -> Option<Exception> {
    if !deployed(e) || !approved(e).is_empty() || e.change.kind == "emergency" {
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

/// The requester approved their own change.
pub fn self_approval(e: &Evidence) -> Option<Exception> {
    let requester = e.requester.as_ref()?.subject.as_ref()?;
    approved(e)
        .into_iter()
        .find(|a| a.approver.as_ref().and_then(|p| p.subject.as_ref()) == Some(requester))
        .map(|_| {
            ex(
                SELF_APPROVAL,
                format!("{requester} requested and approved the change"),
            )
        })
}

/// The approval was decided at or after the first deploy attempt started. (An emergency change is
/// reviewed after its deploy by design; EMERGENCY_NO_REVIEW judges that review.)
pub fn approval_after_deploy(e: &Evidence) -> Option<Exception> {
    if e.change.kind == "emergency" {
        return None;
    }
    let start = e.timeline.first_deploy_start_ns?;
    let first = approved(e).into_iter().filter_map(|a| a.decided_ns).min()?;
    (first >= start).then(|| {
        ex(
            APPROVAL_AFTER_DEPLOY,
            format!(
                "approved {} after the first deploy attempt started",
                human_duration(first - start)
            ),
        )
    })
}

/// An approver without a configured approver role at the time of the decision (an asserted
/// identity has no roles anyone vouched for).
pub fn approver_not_authorized(e: &Evidence, ctx: &RuleContext) -> Vec<Exception> {
    if ctx.approver_roles.is_empty() {
        return Vec::new();
    }
    approved(e)
        .into_iter()
        .filter_map(|a| {
            let p = a.approver.as_ref()?;
            let roles: &[String] = match &p.established {
                Established::Verified { roles, .. } => roles,
                Established::Asserted { .. } => &[],
            };
            (!roles.iter().any(|r| ctx.approver_roles.contains(r))).then(|| {
                ex(
                    APPROVER_NOT_AUTHORIZED,
                    format!(
                        "{} approved without an approver role ({}) at the time of the decision; roles held: {}",
                        who(&a.approver),
                        ctx.approver_roles.join(", "),
                        if roles.is_empty() { "none established".to_owned() } else { roles.join(", ") }
                    ),
                )
            })
        })
        .collect()
}

/// Requester, approvers or executing identities established only by assertion.
pub fn unverified_identity(e: &Evidence) -> Vec<Exception> {
    let mut out = Vec::new();
    let mut check = |role: &str, p: &Option<Principal>| {
        if let Some(Principal {
            subject,
            established: Established::Asserted { reason, .. },
        }) = p
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
        .any(|a| a.decision == "skipped")
        .then(|| {
            ex(
                APPROVAL_BYPASSED,
                "the approval step was skipped, not decided".into(),
            )
        })
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
    let requester = e.requester.as_ref().and_then(|p| p.subject.clone());
    let reviewed = approved(e).into_iter().any(|a| {
        a.decided_ns
            .is_some_and(|d| d <= end.saturating_add(ctx.emergency_review_window_ns))
            && a.approver.as_ref().and_then(|p| p.subject.clone()) != requester
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
pub fn rollback_unlinked(e: &Evidence, known: &dyn Fn(&str) -> bool) -> Option<Exception> {
    if e.change.kind != "rollback" {
        return None;
    }
    match &e.change.rollback_of {
        None => Some(ex(
            ROLLBACK_UNLINKED,
            "rollback that names no change it rolls back".into(),
        )),
        Some(of) if !known(of) => Some(ex(
            ROLLBACK_UNLINKED,
            format!("rolls back {of}, which is not a known change"),
        )),
        Some(_) => None,
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

/// A fact the ledger recorded (by entry `seq`) that can no longer be read: evidence is missing.
pub fn unreadable_fact(seq: u64) -> Exception {
    ex(
        EVIDENCE_GAP,
        format!("the fact recorded by entry {seq} cannot be read"),
    )
}

/// A production version first seen in runtime telemetry that no change explains.
pub fn unlinked_deploy(v: &VersionFact) -> Exception {
    ex(
        UNLINKED_DEPLOY,
        format!(
            "{} {} first seen in {} with no change that deployed it",
            v.service, v.version, v.environment
        ),
    )
}

/// All per-change rules, in catalogue order.
pub fn change_exceptions(
    e: &Evidence,
    ctx: &RuleContext,
    known: &dyn Fn(&str) -> bool,
) -> Vec<Exception> {
    let mut out = Vec::new();
    out.extend(no_approval(e));
    out.extend(self_approval(e));
    out.extend(approval_after_deploy(e));
    out.extend(approver_not_authorized(e, ctx));
    out.extend(unverified_identity(e));
    out.extend(approval_bypassed(e));
    out.extend(approved_subject_mismatch(e));
    out.extend(emergency_no_review(e, ctx));
    out.extend(rollback_unlinked(e, known));
    out.extend(history_rewritten(e));
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
        ApprovalView, AttemptView, ChangeView, RewriteFact, Source, StepView, Timeline,
    };

    const MIN: i64 = 60_000_000_000;

    fn verified(sub: &str, roles: &[&str]) -> Option<Principal> {
        Some(Principal {
            subject: Some(sub.into()),
            established: Established::Verified {
                issuer: "idp".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                expires_ns: None,
                token_sha256: "00".into(),
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
            method: Source::Span,
            before_first_deploy: None,
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
                        trace_id: None,
                        reason: None,
                        sources: vec![],
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
                        trace_id: None,
                        reason: None,
                        sources: vec![],
                    },
                ],
                outcome: "success".into(),
                summary: String::new(),
            }],
            history_rewrites: vec![],
            rolled_back_by: vec![],
        }
    }

    fn ctx() -> RuleContext {
        RuleContext {
            approver_roles: vec!["release-approver".into()],
            emergency_review_window_ns: 24 * 60 * MIN,
        }
    }

    fn codes(e: &Evidence) -> Vec<&'static str> {
        change_exceptions(e, &ctx(), &|_| true)
            .into_iter()
            .map(|x| x.code)
            .collect()
    }

    #[test]
    fn a_clean_change_with_a_retried_deploy_has_no_exception() {
        assert!(
            codes(&clean()).is_empty(),
            "{:?}",
            change_exceptions(&clean(), &ctx(), &|_| true)
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
        // Not deployed: nothing to flag yet.
        e.timeline.first_deploy_start_ns = None;
        e.change.result = None;
        assert!(super::no_approval(&e).is_none());
    }

    #[test]
    fn self_approval() {
        let mut e = clean();
        e.approvals[0].approver = verified("alice", &["release-approver"]);
        assert_eq!(codes(&e), vec![SELF_APPROVAL]);
    }

    #[test]
    fn approval_after_deploy() {
        let mut e = clean();
        e.approvals[0].decided_ns = Some(21 * MIN);
        let x = super::approval_after_deploy(&e).unwrap();
        assert_eq!(
            x.evidence,
            "approved 1 min after the first deploy attempt started"
        );
        e.approvals[0].decided_ns = Some(20 * MIN);
        assert!(
            super::approval_after_deploy(&e).is_some(),
            "at the same instant is not before"
        );
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
            super::rollback_unlinked(&e, &|_| true).unwrap().evidence,
            "rollback that names no change it rolls back"
        );
        e.change.rollback_of = Some("CHG-0".into());
        assert!(super::rollback_unlinked(&e, &|c| c == "CHG-0").is_none());
        assert!(super::rollback_unlinked(&e, &|_| false).is_some());
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
        };
        assert_eq!(
            unlinked_deploy(&v).evidence,
            "checkout 7.0.1 first seen in production with no change that deployed it"
        );
        assert_eq!(human_duration(45_000_000_000), "45 s");
        assert_eq!(
            human_duration(3 * 3600 * 1_000_000_000 + 20 * MIN),
            "3 h 20 min"
        );
        assert_eq!(human_duration(2 * 86_400 * 1_000_000_000), "2 d 0 h");
    }
}
