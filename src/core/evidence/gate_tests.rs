//! Unit tests of the deploy gate: one change before its deploy per case, and the decision.

use super::*;
use crate::core::evidence::identity::Principal;
use crate::core::evidence::{ChangeView, Timeline};

const MIN: i64 = 60_000_000_000;
const NOW: i64 = 60 * MIN;
const ART: &str = "sha256:aa11";

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

fn approval(decision: &str, who: Option<Principal>, decided: i64, seq: u64) -> ApprovalView {
    ApprovalView {
        decision: decision.into(),
        approver: who,
        requested_ns: Some(0),
        decided_ns: Some(decided),
        approved_subject: Some(ART.into()),
        stated_decision: None,
        task_run_id: None,
        method: Source::Conductor,
        before_first_deploy: None,
        received_ns: decided,
        seq,
        sent_by: None,
    }
}

/// alice requests CHG-1 for production; bob (an approver) approves it at 10 min; no deploy yet.
fn approved_change() -> Evidence {
    Evidence {
        change: ChangeView {
            id: "CHG-1".into(),
            kind: "normal".into(),
            environment: Some("production".into()),
            production: true,
            service: Some("checkout".into()),
            artifact: Some(ART.into()),
            requested_ns: Some(0),
            ..Default::default()
        },
        requester: verified("alice", &["engineer"]),
        approvals: vec![approval(
            "approved",
            verified("bob", &["release-approver"]),
            10 * MIN,
            7,
        )],
        timeline: Timeline {
            requested_ns: Some(0),
            approved_ns: Some(10 * MIN),
            first_deploy_start_ns: None,
            deploy_end_ns: None,
            deploy_received_ns: None,
        },
        steps: vec![],
        history_rewrites: vec![],
        gates: vec![],
        runtime: None,
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
        ..RuleContext::default()
    }
}

fn req() -> GateRequest {
    GateRequest {
        change_id: "CHG-1".into(),
        environment: "production".into(),
        artifact_digest: ART.into(),
    }
}

/// The decision on `e` with the exceptions the report's rules find in it.
fn decide_on(e: &Evidence, r: &GateRequest) -> GateFact {
    let xs = rules::change_exceptions(e, &ctx());
    decide(r, Some((e, &xs)), &ctx(), true, NOW, 40)
}

fn codes(f: &GateFact) -> Vec<&str> {
    f.reasons.iter().map(|r| r.code.as_str()).collect()
}

#[test]
fn a_verified_independent_authorised_approval_for_this_artifact_allows() {
    let f = decide_on(&approved_change(), &req());
    assert_eq!(f.decision, ALLOW, "{:?}", f.reasons);
    assert_eq!(codes(&f), [reason::APPROVED]);
    assert!(f.reasons[0].detail.contains("bob"), "{:?}", f.reasons);
    assert_eq!((f.approval_seq, f.evidence_size), (Some(7), 40));
    assert_eq!(
        (f.environment.as_str(), f.artifact_digest.as_str()),
        ("production", ART)
    );
}

#[test]
fn an_unknown_change_is_denied() {
    let f = decide(&req(), None, &ctx(), true, NOW, 3);
    assert_eq!(f.decision, DENY);
    assert_eq!(codes(&f), [reason::CHANGE_UNKNOWN]);
    assert_eq!(f.approval_seq, None);
}

#[test]
fn another_environment_or_artifact_is_denied() {
    let mut r = req();
    r.environment = "prod-eu".into();
    let f = decide_on(&approved_change(), &r);
    assert_eq!(f.decision, DENY);
    assert!(codes(&f).contains(&reason::ENVIRONMENT_MISMATCH), "{f:?}");

    let mut r = req();
    r.artifact_digest = "sha256:bb22".into();
    let f = decide_on(&approved_change(), &r);
    assert_eq!(f.decision, DENY);
    // The change states another artifact, and the approval was for another one too.
    assert!(codes(&f).contains(&reason::ARTIFACT_MISMATCH), "{f:?}");
    assert!(
        codes(&f).contains(&rules::APPROVED_SUBJECT_MISMATCH),
        "{f:?}"
    );

    let mut e = approved_change();
    e.change.artifact = None;
    let f = decide_on(&e, &req());
    assert_eq!(codes(&f), [reason::ARTIFACT_MISMATCH], "{f:?}");
}

#[test]
fn no_approval_pending_or_rejected_is_denied() {
    let mut e = approved_change();
    e.approvals.clear();
    let f = decide_on(&e, &req());
    assert_eq!(
        (f.decision.as_str(), codes(&f)),
        (DENY, vec![rules::NO_APPROVAL])
    );

    e.approvals = vec![approval("pending", None, 5 * MIN, 3)];
    let f = decide_on(&e, &req());
    assert_eq!(codes(&f), [rules::NO_APPROVAL]);
    assert!(f.reasons[0].detail.contains("pending"), "{f:?}");
}

#[test]
fn an_asserted_approver_is_denied() {
    let mut e = approved_change();
    e.approvals[0].approver = Some(Principal {
        subject: Some("bob".into()),
        established: Established::Asserted {
            reason: "no token".into(),
            token_sha256: None,
        },
    });
    let f = decide_on(&e, &req());
    assert_eq!(f.decision, DENY);
    assert!(codes(&f).contains(&rules::UNVERIFIED_IDENTITY), "{f:?}");
}

#[test]
fn the_requester_approving_is_denied() {
    let mut e = approved_change();
    e.approvals[0].approver = verified("Alice", &["release-approver"]);
    let f = decide_on(&e, &req());
    assert_eq!(f.decision, DENY);
    assert!(codes(&f).contains(&rules::SELF_APPROVAL), "{f:?}");
}

#[test]
fn an_approver_without_the_role_is_denied() {
    let mut e = approved_change();
    e.approvals[0].approver = verified("carol", &["engineer"]);
    let f = decide_on(&e, &req());
    assert_eq!(f.decision, DENY);
    assert!(codes(&f).contains(&rules::APPROVER_NOT_AUTHORIZED), "{f:?}");
    // Without approver roles configured, roles are not tested: the same approval allows.
    let none = RuleContext::default();
    let xs = rules::change_exceptions(&e, &none);
    assert_eq!(
        decide(&req(), Some((&e, &xs)), &none, true, NOW, 1).decision,
        ALLOW
    );
}

#[test]
fn an_approval_token_bound_to_another_artifact_or_change_is_denied() {
    for (artifact, change) in [(Some("sha256:bb22"), None), (None, Some("CHG-2"))] {
        let mut e = approved_change();
        if let Some(Principal {
            established:
                Established::Verified {
                    bound_artifact,
                    bound_change,
                    ..
                },
            ..
        }) = &mut e.approvals[0].approver
        {
            *bound_artifact = artifact.map(str::to_owned);
            *bound_change = change.map(str::to_owned);
        }
        let f = decide_on(&e, &req());
        assert_eq!(f.decision, DENY);
        assert!(codes(&f).contains(&rules::APPROVAL_TOKEN_MISMATCH), "{f:?}");
    }
}

#[test]
fn an_approval_dated_after_now_does_not_count_yet() {
    let mut e = approved_change();
    e.approvals[0].decided_ns = Some(NOW + MIN);
    let f = decide_on(&e, &req());
    assert_eq!(f.decision, DENY);
    assert_eq!(codes(&f), [rules::NO_APPROVAL]);
}

#[test]
fn a_rejection_after_the_approval_denies() {
    let mut e = approved_change();
    e.approvals.push(approval(
        "rejected",
        verified("dave", &["release-approver"]),
        20 * MIN,
        9,
    ));
    let f = decide_on(&e, &req());
    assert_eq!(f.decision, DENY);
    assert!(codes(&f).contains(&reason::APPROVAL_REJECTED), "{f:?}");
}

#[test]
fn open_evidence_against_the_change_denies_despite_a_good_approval() {
    let e = approved_change();
    for code in DENYING {
        let xs = vec![Exception {
            code,
            evidence: "seen".into(),
        }];
        let f = decide(&req(), Some((&e, &xs)), &ctx(), true, NOW, 1);
        assert_eq!(f.decision, DENY, "{code}");
        assert_eq!(codes(&f), [code]);
    }
    // Exceptions only a deploy can produce (or settle) do not stop it.
    let xs = vec![Exception {
        code: rules::LATE_EVIDENCE,
        evidence: "late".into(),
    }];
    assert_eq!(
        decide(&req(), Some((&e, &xs)), &ctx(), true, NOW, 1).decision,
        ALLOW
    );
}

#[test]
fn a_non_production_environment_needs_no_approval() {
    let mut e = approved_change();
    e.change.environment = Some("staging".into());
    e.change.production = false;
    e.approvals.clear();
    let mut r = req();
    r.environment = "Staging".into();
    let f = decide(&r, Some((&e, &[])), &ctx(), false, NOW, 1);
    assert_eq!(
        (f.decision.as_str(), codes(&f)),
        (ALLOW, vec![reason::NOT_PRODUCTION])
    );
}

#[test]
fn the_fact_is_keyed_by_what_was_decided() {
    let intake = Intake::default();
    let a = gate_fact(&req(), decide_on(&approved_change(), &req()), NOW, &intake);
    let b = gate_fact(&req(), decide_on(&approved_change(), &req()), NOW, &intake);
    assert_eq!(a.key, b.key);
    assert!(a.key.starts_with("gate:CHG-1:"), "{}", a.key);
    assert_eq!(a.fact.entry_kind(), "gate.decided");
    assert_eq!(a.source, Source::Gate);
    let later = gate_fact(
        &req(),
        decide_on(&approved_change(), &req()),
        NOW + 1,
        &intake,
    );
    assert_ne!(a.key, later.key);
    // The fact reads back as it was written (what the ledger entry's payload holds).
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(serde_json::from_str::<FactRecord>(&json).unwrap(), a);
}

#[test]
fn a_shortened_subject_names_the_artifact_only_when_long_enough() {
    let full = "sha256:9b1f0c7d2e8a4b6f";
    assert!(names_artifact(full, full));
    assert!(names_artifact("sha256:9b1f0c7d2e8a...", full));
    // 48 bits at least: fewer could be matched by a build made to collide.
    assert!(!names_artifact("sha256:9b1f0c7d...", full));
    // A stub names nothing; nor does a prefix written without the ellipsis, or another digest.
    assert!(!names_artifact("sha256:9b...", full));
    assert!(!names_artifact("sha256:9b1f0c7d", full));
    assert!(!names_artifact("sha256:0000ffff...", full));
}

#[test]
fn a_rollback_needs_an_approval_like_any_change() {
    let mut e = approved_change();
    e.change.kind = "rollback".into();
    e.change.rollback_of = Some("CHG-0".into());
    e.judgement.rollback_target_known = Some(true);
    e.judgement.restores_seen_version = true;
    e.approvals.clear();
    let f = decide_on(&e, &req());
    assert_eq!(
        (f.decision.as_str(), codes(&f)),
        (DENY, vec![rules::NO_APPROVAL])
    );
}

#[test]
fn a_requester_no_token_proved_leaves_independence_unshown() {
    for requester in [
        None,
        Some(Principal {
            subject: Some("mallory".into()),
            established: Established::Asserted {
                reason: "no token".into(),
                token_sha256: None,
            },
        }),
    ] {
        let mut e = approved_change();
        e.requester = requester;
        let f = decide_on(&e, &req());
        assert_eq!(f.decision, DENY);
        assert!(codes(&f).contains(&rules::UNVERIFIED_IDENTITY), "{f:?}");
    }
    // A verified requester whose token the judgement discredited proves nothing either.
    let mut e = approved_change();
    e.judgement.discredited.push("sha-alice".into());
    assert!(codes(&decide_on(&e, &req())).contains(&rules::UNVERIFIED_IDENTITY));
}

#[test]
fn the_gate_itself_refuses_a_self_approval_the_rules_did_not_report() {
    let mut e = approved_change();
    e.approvals[0].approver = verified("alice", &["release-approver"]);
    // No exceptions handed in: the refusal is the gate's own.
    let f = decide(&req(), Some((&e, &[])), &ctx(), true, NOW, 1);
    assert_eq!(
        (f.decision.as_str(), codes(&f)),
        (DENY, vec![rules::SELF_APPROVAL])
    );
}

#[test]
fn a_backdated_or_late_approval_does_not_count() {
    let mut e = approved_change();
    e.change.requested_ns = Some(20 * MIN);
    let f = decide(&req(), Some((&e, &[])), &ctx(), true, NOW, 1);
    assert_eq!(codes(&f), [reason::APPROVAL_BEFORE_REQUEST]);

    let mut e = approved_change();
    e.judgement.late.push(crate::core::evidence::Receipt {
        what: "approval".into(),
        seq: 7,
        stated_ns: 10 * MIN,
        received_ns: 50 * MIN,
        max_lateness_ns: None,
    });
    let f = decide(&req(), Some((&e, &[])), &ctx(), true, NOW, 1);
    assert_eq!(codes(&f), [rules::LATE_EVIDENCE]);
}

#[test]
fn approving_again_after_a_rejection_counts_and_an_undated_rejection_does_not_pass() {
    let mut e = approved_change();
    e.approvals.push(approval(
        "rejected",
        verified("dave", &["release-approver"]),
        20 * MIN,
        9,
    ));
    e.approvals.push(approval(
        "approved",
        verified("erin", &["release-approver"]),
        30 * MIN,
        11,
    ));
    let f = decide(&req(), Some((&e, &[])), &ctx(), true, NOW, 1);
    assert_eq!(
        (f.decision.as_str(), f.approval_seq),
        (ALLOW, Some(11)),
        "{f:?}"
    );

    e.approvals[1].decided_ns = None;
    let f = decide(&req(), Some((&e, &[])), &ctx(), true, NOW, 1);
    assert_eq!(codes(&f), [reason::APPROVAL_REJECTED], "{f:?}");
}

#[test]
fn a_token_bound_to_the_changes_run_is_accepted() {
    let mut e = approved_change();
    e.change.runs = vec!["wf-1".into()];
    if let Some(Principal {
        established: Established::Verified { bound_change, .. },
        ..
    }) = &mut e.approvals[0].approver
    {
        *bound_change = Some("wf-1".into());
    }
    assert_eq!(decide_on(&e, &req()).decision, ALLOW);
}

#[test]
fn only_an_allow_for_what_the_change_deploys_is_a_pass() {
    use crate::core::evidence::{GateView, gate_outcome};
    let view = |decision: &str, environment: &str, seq: u64| GateView {
        decided: GateFact {
            decision: decision.into(),
            environment: environment.into(),
            artifact_digest: ART.into(),
            reasons: vec![],
            evidence_size: seq,
            approval_seq: None,
        },
        decided_ns: 0,
        seq,
        asked_by: None,
    };
    let mut e = approved_change();
    assert!(gate_outcome(&e).is_none());
    // Allowed while the change said staging: no pass for its production deploy.
    e.gates = vec![view(ALLOW, "staging", 3), view(DENY, "production", 5)];
    assert_eq!(gate_outcome(&e).map(|g| g.seq), Some(5));
    e.gates.push(view(ALLOW, "Production", 8));
    assert_eq!(gate_outcome(&e).map(|g| g.seq), Some(8));
    e.gates.truncate(1);
    assert!(gate_outcome(&e).is_none());
}
