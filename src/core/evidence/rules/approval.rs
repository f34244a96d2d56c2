//! Rules about approval: whether a change that deployed was approved, before its deploy, by
//! someone other than its requester with a role that may approve it, for what it deployed (and,
//! for an emergency change, reviewed after it).

use super::{
    APPROVAL_AFTER_DEPLOY, APPROVAL_BYPASSED, APPROVAL_DECISION_MISSING, APPROVED_SUBJECT_MISMATCH,
    APPROVER_NOT_AUTHORIZED, EMERGENCY_NO_REVIEW, Exception, NO_APPROVAL, RuleContext,
    SELF_APPROVAL, approved, discredited, ex, human_duration, restoring_rollback, who,
};
use crate::core::evidence::identity::Established;
use crate::core::evidence::{Evidence, decision, deployed, normalize_subject};

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
