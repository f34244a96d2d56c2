//! Unit tests of the rules: one judged change per case, and the codes it carries.

use super::*;
use crate::core::evidence::{
    ApprovalView, AttemptView, ChangeView, IdentityRole, Neighbours, RewriteFact, Settings, Source,
    StepView, Timeline, VersionFact, judge,
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
        approvers: vec![],
        emergency_review_window_ns: 24 * 60 * MIN,
        regressions_compared: true,
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
        ..Default::default()
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

#[test]
fn change_regression_is_untested_without_comparisons() {
    let mut c = ctx();
    assert!(!c.untested_codes().contains(&CHANGE_REGRESSION));
    c.regressions_compared = false;
    assert!(c.untested_codes().contains(&CHANGE_REGRESSION));
}
