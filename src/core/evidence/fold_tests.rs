//! Unit tests of `fold`: known facts and the evidence they fold to.

use super::*;
use crate::core::evidence::identity::Established;
use crate::core::evidence::{
    FactRecord, Neighbours, RewriteFact, Settings, Source, deploy_succeeded, deployed,
    established_label, explained_window, judge,
};
use proptest::prelude::*;

const MIN: i64 = 60_000_000_000;

fn record(seq: u64, received: i64, time: i64, fact: Fact) -> Recorded {
    Recorded {
        seq,
        received_ns: received,
        fact: FactRecord {
            key: format!("k{seq}"),
            change_id: Some("CHG-1".into()),
            run_id: Some("wf-1".into()),
            source: Source::Span,
            time_ns: time,
            stated_until_ns: None,
            sent_by: None,
            max_lateness_ns: None,
            fact,
        },
    }
}

fn change(env: &str, kind: &str) -> Fact {
    Fact::Change(ChangeFact {
        environment: Some(env.into()),
        kind: Some(kind.into()),
        ..Default::default()
    })
}

fn approval(who: Principal, decided: i64) -> Fact {
    Fact::Approval(ApprovalFact {
        decision: "approved".into(),
        stated_decision: None,
        approver: Some(who),
        requested_ns: Some(0),
        decided_ns: Some(decided),
        approved_subject: None,
        task_run_id: Some("appr-1".into()),
    })
}

fn bob(verified: bool) -> Principal {
    Principal {
        subject: Some("bob".into()),
        established: if verified {
            Established::Verified {
                issuer: "idp".into(),
                roles: vec![],
                expires_ns: None,
                token_sha256: "t".into(),
                signed_sha256: String::new(),
                jti: None,
                bound_change: None,
                bound_artifact: None,
            }
        } else {
            Established::Asserted {
                reason: "no token".into(),
                token_sha256: None,
            }
        },
    }
}

fn deploy(received: i64) -> Recorded {
    record(
        9,
        received,
        25 * MIN,
        Fact::Task(TaskFact {
            task: "deploy".into(),
            task_run_id: "t1".into(),
            task_type: "deploy".into(),
            attempt: 0,
            retried_from: None,
            result: "success".into(),
            start_ns: 20 * MIN,
            end_ns: 25 * MIN,
            worker: None,
            identity: None,
            credential_id: None,
            triggered_by: None,
            trace_id: None,
            span_id: None,
            reason: None,
        }),
    )
}

#[test]
fn a_fact_placing_the_change_in_production_wins_and_the_contradiction_is_kept() {
    let e = evidence(
        "CHG-1",
        &[
            record(1, 0, 0, change("staging", "emergency")),
            record(2, 0, 1, change("production", "normal")),
        ],
        vec![],
        &Policy::default(),
    );
    assert!(e.change.production);
    assert_eq!(e.change.kind, "normal", "the reading that asks more");
    let fields: Vec<&str> = e.conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["environment", "kind"]);
    assert_eq!(e.conflicts[0].values[1].seq, 2);
}

#[test]
fn contradicting_run_results_are_a_conflict() {
    let done = |r: &str| {
        Fact::RunFinished(RunFinishedFact {
            result: r.into(),
            end_ns: 30 * MIN,
            compensation_run: None,
        })
    };
    let e = evidence(
        "CHG-1",
        &[
            record(1, 0, 0, done("success")),
            record(2, 0, 0, done("failure")),
        ],
        vec![],
        &Policy::default(),
    );
    assert_eq!(e.conflicts[0].field, "run result");
    assert_eq!(e.deciding.len(), 2, "run outcomes are deciding facts");
}

#[test]
fn a_verified_approver_does_not_lend_its_verdict_to_another_statements_times() {
    // Asserted "bob approved" sent early, dated before the deploy; bob's real, verified
    // approval of the same step arrives after the deploy.
    let facts = [
        record(1, MIN, 10 * MIN, approval(bob(false), 10 * MIN)),
        deploy(26 * MIN),
        record(3, 40 * MIN, 30 * MIN, approval(bob(true), 30 * MIN)),
    ];
    let mut e = evidence("CHG-1", &facts, vec![], &Policy::default());
    judge(&mut e, &Neighbours::default(), &Settings::default());
    assert_eq!(e.approvals.len(), 1);
    let a = &e.approvals[0];
    assert!(a.approver.as_ref().unwrap().established.is_verified());
    assert_eq!(
        (a.decided_ns, a.received_ns, a.seq),
        (Some(30 * MIN), 40 * MIN, 3)
    );
    assert_eq!(a.before_first_deploy, Some(false));
}

#[test]
fn the_same_facts_in_another_order_fold_to_the_same_evidence() {
    let facts = vec![
        record(1, 0, 0, change("production", "normal")),
        record(2, MIN, 10 * MIN, approval(bob(true), 10 * MIN)),
        deploy(26 * MIN),
    ];
    let mut reversed = facts.clone();
    reversed.reverse();
    let p = Policy::default();
    assert_eq!(
        evidence("CHG-1", &facts, vec![], &p),
        evidence("CHG-1", &reversed, vec![], &p)
    );
}

fn sender(name: &str) -> Option<SentBy> {
    Some(SentBy {
        token_id: None,
        name: name.into(),
    })
}

/// A deploy attempt `id` of the step "deploy" (attempt `n`) from `start` to `end`.
fn attempt(id: &str, n: u32, result: &str, start: i64, end: i64) -> TaskFact {
    TaskFact {
        task: "deploy".into(),
        task_run_id: id.into(),
        task_type: "deploy".into(),
        attempt: n,
        retried_from: None,
        result: result.into(),
        start_ns: start,
        end_ns: end,
        worker: None,
        identity: None,
        credential_id: None,
        triggered_by: None,
        trace_id: None,
        span_id: None,
        reason: None,
    }
}

fn decided(decision: &str, who: Principal, step: Option<&str>, at: i64) -> Fact {
    Fact::Approval(ApprovalFact {
        decision: decision.into(),
        stated_decision: None,
        approver: Some(who),
        requested_ns: None,
        decided_ns: (decision != "pending").then_some(at),
        approved_subject: None,
        task_run_id: step.map(Into::into),
    })
}

fn fold(facts: &[Recorded]) -> Evidence {
    evidence("CHG-1", facts, vec![], &Policy::default())
}

#[test]
fn retried_attempts_are_one_step_in_attempt_order() {
    let e = fold(&[
        record(
            3,
            0,
            30 * MIN,
            Fact::Task(attempt("t3", 2, "success", 25 * MIN, 30 * MIN)),
        ),
        record(
            1,
            0,
            10 * MIN,
            Fact::Task(attempt("t1", 0, "timeout", 5 * MIN, 10 * MIN)),
        ),
        record(
            2,
            0,
            20 * MIN,
            Fact::Task(attempt("t2", 1, "timeout", 15 * MIN, 20 * MIN)),
        ),
    ]);
    assert_eq!(e.steps.len(), 1);
    let step = &e.steps[0];
    let ids: Vec<&str> = step
        .attempts
        .iter()
        .map(|a| a.task_run_id.as_str())
        .collect();
    assert_eq!(ids, ["t1", "t2", "t3"]);
    assert_eq!(step.outcome, "success");
    assert_eq!(step.summary, "3 attempts: 2 timed out, then succeeded");
    assert_eq!(e.timeline.first_deploy_start_ns, Some(5 * MIN));
    assert_eq!(
        e.timeline.deploy_end_ns,
        Some(30 * MIN),
        "only a success ends the deploy"
    );
    assert!(e.conflicts.is_empty(), "retries are not contradictions");
    let what: Vec<&str> = e.deciding.iter().map(|r| r.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "deploy attempt t1",
            "deploy attempt t2",
            "deploy attempt t3"
        ]
    );
}

#[test]
fn one_attempt_from_several_sources_is_merged() {
    let mut from_span = attempt("t1", 0, "success", 20 * MIN, 25 * MIN);
    from_span.trace_id = Some("tr".into());
    from_span.identity = Some(bob(false));
    let mut from_conductor = attempt("t1", 0, "success", 20 * MIN, 25 * MIN);
    from_conductor.worker = Some("w-1".into());
    from_conductor.identity = Some(bob(true));
    let mut span = record(1, 40 * MIN, 25 * MIN, Fact::Task(from_span));
    span.fact.sent_by = sender("collector");
    let mut conductor = record(2, 30 * MIN, 25 * MIN, Fact::Task(from_conductor));
    conductor.fact.source = Source::Conductor;
    conductor.fact.sent_by = sender("cli import by root");
    let e = fold(&[span, conductor]);
    let [a] = &e.steps[0].attempts[..] else {
        panic!("{:?}", e.steps)
    };
    assert_eq!(a.sources, [Source::Span, Source::Conductor]);
    assert_eq!(a.received_ns, 30 * MIN, "the first receipt");
    let names: Vec<&str> = a.sent_by.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cli import by root", "collector"]);
    assert_eq!(
        (a.trace_id.as_deref(), a.worker.as_deref()),
        (Some("tr"), Some("w-1"))
    );
    assert!(a.identity.as_ref().unwrap().established.is_verified());
    assert_eq!(e.steps[0].summary, "1 attempt, succeeded");
    assert_eq!(e.timeline.deploy_received_ns, Some(30 * MIN));
}

#[test]
fn an_attempt_stated_with_two_results_is_a_conflict() {
    let mut a = attempt("t1", 0, "success", 0, MIN);
    a.triggered_by = Some("Alice".into());
    let mut b = attempt("t1", 0, "failure", 0, MIN);
    b.triggered_by = Some("alice".into());
    let e = fold(&[
        record(1, 0, MIN, Fact::Task(a)),
        record(2, 0, MIN, Fact::Task(b)),
    ]);
    let fields: Vec<&str> = e.conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        ["task t1 result"],
        "who set it off differs only in case"
    );
    let values: Vec<(&str, u64)> = e.conflicts[0]
        .values
        .iter()
        .map(|v| (v.value.as_str(), v.seq))
        .collect();
    assert_eq!(values, [("success", 1), ("failure", 2)]);
    assert_eq!(e.steps[0].attempts[0].result, "success", "the first stated");
}

#[test]
fn a_pending_approval_stands_only_until_a_decision() {
    let pending = record(1, 0, MIN, decided("pending", bob(false), Some("a1"), 0));
    let e = fold(std::slice::from_ref(&pending));
    assert_eq!(e.approvals.len(), 1);
    assert_eq!(e.approvals[0].decision, "pending");
    assert!(e.deciding.is_empty(), "a request decides nothing");
    assert_eq!(e.timeline.approved_ns, None);

    let approved = record(
        2,
        0,
        2 * MIN,
        decided("approved", bob(false), Some("a1"), 2 * MIN),
    );
    // A request stated after the decision (a late re-export) does not bring it back.
    let again = record(3, 0, 3 * MIN, decided("pending", bob(false), Some("a1"), 0));
    let e = fold(&[pending, approved, again]);
    let decisions: Vec<&str> = e.approvals.iter().map(|a| a.decision.as_str()).collect();
    assert_eq!(decisions, ["approved"]);
    assert_eq!(e.timeline.approved_ns, Some(2 * MIN));
    assert_eq!(e.deciding.len(), 1);
    assert_eq!(e.deciding[0].what, "approval (approved) by bob");
}

#[test]
fn contradicting_decisions_on_one_step_are_both_kept_and_a_conflict() {
    let alice = Principal {
        subject: Some("Alice@Example.com".into()),
        ..bob(false)
    };
    let e = fold(&[
        record(1, 0, MIN, decided("approved", bob(false), Some("a1"), MIN)),
        record(
            2,
            0,
            2 * MIN,
            decided("rejected", alice, Some("a1"), 2 * MIN),
        ),
    ]);
    let decisions: Vec<&str> = e.approvals.iter().map(|a| a.decision.as_str()).collect();
    assert_eq!(decisions, ["approved", "rejected"]);
    let fields: Vec<&str> = e.conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["approval a1 decision", "approval a1 approver"]);
    assert_eq!(e.conflicts[1].values[1].value, "alice@example.com");
}

#[test]
fn approvals_without_a_step_are_told_apart_by_their_instant() {
    let mut early = record(1, 5 * MIN, MIN, decided("approved", bob(false), None, MIN));
    early.fact.source = Source::Log;
    let repeat = record(2, 3 * MIN, MIN, decided("approved", bob(false), None, MIN));
    let later = record(
        3,
        0,
        2 * MIN,
        decided("approved", bob(false), None, 2 * MIN),
    );
    let e = fold(&[early, repeat, later]);
    let seen: Vec<(Option<i64>, i64, u64, Source)> = e
        .approvals
        .iter()
        .map(|a| (a.decided_ns, a.received_ns, a.seq, a.method))
        .collect();
    assert_eq!(
        seen,
        [
            (Some(MIN), 3 * MIN, 1, Source::Log),
            (Some(2 * MIN), 0, 3, Source::Span)
        ]
    );
}

#[test]
fn what_the_change_is_comes_from_every_statement_of_it() {
    let described = |env: &str, requested: i64, who: Principal, by: &str| {
        let mut r = record(
            requested as u64,
            0,
            requested,
            Fact::Change(ChangeFact {
                environment: Some(env.into()),
                service: Some("pay".into()),
                requester: Some(who),
                requested_ns: requested,
                ..Default::default()
            }),
        );
        r.fact.sent_by = sender(by);
        r
    };
    let finished = |seq: u64, result: &str, end: i64, compensation: Option<&str>| {
        let mut r = record(
            seq,
            0,
            end,
            Fact::RunFinished(RunFinishedFact {
                result: result.into(),
                end_ns: end,
                compensation_run: compensation.map(Into::into),
            }),
        );
        r.fact.run_id = Some(format!("wf-{seq}"));
        r
    };
    let e = fold(&[
        described("Production", 7, bob(false), "b"),
        described("production", 3, bob(true), "a"),
        finished(20, "failure", 50, Some("wf-comp")),
        finished(21, "success", 40, Some("wf-comp")),
    ]);
    let c = &e.change;
    let fields: Vec<&str> = e.conflicts.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        ["run result"],
        "an environment's case is no contradiction"
    );
    assert_eq!(
        c.environment.as_deref(),
        Some("production"),
        "the first stated"
    );
    assert_eq!((c.requested_ns, c.finished_ns), (Some(3), Some(50)));
    assert_eq!(
        c.result.as_deref(),
        Some("failure"),
        "the last in canonical order"
    );
    assert_eq!(c.compensation_runs, ["wf-comp"]);
    assert_eq!(c.runs, ["wf-1", "wf-20", "wf-21"]);
    assert_eq!(c.kind, "normal", "no kind stated is a normal change");
    let by: Vec<&str> = c.sent_by.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(by, ["a", "b"]);
    assert!(e.requester.unwrap().established.is_verified());
    assert_eq!(
        e.credentials,
        [CredentialUse {
            role: IdentityRole::Requester,
            subject: Some("bob".into()),
            credential: "sha256:t".into(),
            seq: 3,
        }]
    );
}

#[test]
fn a_deployers_stated_credential_is_a_credential_of_the_change() {
    let mut t = attempt("t1", 0, "success", 0, MIN);
    t.credential_id = Some("AKIA1".into());
    t.identity = Some(bob(false));
    let e = fold(&[record(4, 0, MIN, Fact::Task(t))]);
    assert_eq!(
        e.credentials,
        [CredentialUse {
            role: IdentityRole::Deployer,
            subject: Some("bob".into()),
            credential: "key:AKIA1".into(),
            seq: 4,
        }],
        "an asserted identity shows no token"
    );
}

#[test]
fn history_rewrites_and_rollbacks_are_carried() {
    let rewrite = RewriteFact {
        operation: "restart".into(),
        vanished_tasks: vec!["t1".into()],
        detected_ns: 9,
        ..Default::default()
    };
    let e = evidence(
        "CHG-1",
        &[record(1, 0, 9, Fact::HistoryRewritten(rewrite.clone()))],
        vec!["CHG-2".into()],
        &Policy::default(),
    );
    assert_eq!(e.history_rewrites, [rewrite]);
    assert_eq!(e.rolled_back_by, ["CHG-2"]);
    assert_eq!(e.judgement, Judgement::default());
}

#[test]
fn what_a_change_deployed_and_when() {
    let done = |r: &str| {
        Fact::RunFinished(RunFinishedFact {
            result: r.into(),
            end_ns: 30 * MIN,
            compensation_run: None,
        })
    };
    // No deploy step reported: the run's result says.
    let run_only = fold(&[
        record(1, 0, 0, change("production", "normal")),
        record(2, 0, 30 * MIN, done("success")),
    ]);
    assert!(deployed(&run_only) && deploy_succeeded(&run_only));
    assert_eq!(explained_window(&run_only, MIN), (-MIN, 31 * MIN));
    let failed_run = fold(&[record(2, 0, 30 * MIN, done("failure"))]);
    assert!(!deployed(&failed_run) && !deploy_succeeded(&failed_run));
    // A failed attempt may have applied part of it; a skipped one did nothing.
    let failed = fold(&[record(
        1,
        0,
        MIN,
        Fact::Task(attempt("t1", 0, "failure", 0, MIN)),
    )]);
    assert!(deployed(&failed) && !deploy_succeeded(&failed));
    let skipped = fold(&[
        record(1, 0, MIN, Fact::Task(attempt("t1", 0, "skip", 0, MIN))),
        record(2, 0, 30 * MIN, done("success")),
    ]);
    assert!(!deployed(&skipped) && !deploy_succeeded(&skipped));
    let e = fold(&[deploy(0)]);
    assert_eq!(explained_window(&e, MIN), (19 * MIN, 26 * MIN));
    assert_eq!(explained_window(&fold(&[]), 0), (i64::MIN, i64::MIN));
    assert_eq!(established_label(&Some(bob(true))), "verified");
    assert_eq!(established_label(&Some(bob(false))), "asserted");
    assert_eq!(established_label(&None), "none");
}

/// Facts of every kind, several at one instant (so the order within an instant matters), with
/// contradictions, retries, merged sources and a pending approval overtaken by decisions.
fn many_facts() -> Vec<Recorded> {
    let mut from_conductor = record(
        6,
        9,
        25 * MIN,
        Fact::Task(attempt("t2", 1, "success", 20 * MIN, 25 * MIN)),
    );
    from_conductor.fact.source = Source::Conductor;
    from_conductor.fact.sent_by = sender("import");
    let mut verified_deploy = attempt("t2", 1, "failure", 20 * MIN, 25 * MIN);
    verified_deploy.identity = Some(bob(true));
    verified_deploy.credential_id = Some("AKIA1".into());
    vec![
        record(1, 0, 0, change("production", "normal")),
        record(2, 1, 0, change("staging", "emergency")),
        record(3, 2, MIN, decided("pending", bob(false), Some("a1"), 0)),
        record(
            4,
            3,
            10 * MIN,
            decided("approved", bob(false), Some("a1"), 10 * MIN),
        ),
        record(
            5,
            4,
            10 * MIN,
            decided("approved", bob(true), Some("a1"), 10 * MIN),
        ),
        record(
            7,
            5,
            10 * MIN,
            decided("rejected", bob(false), None, 10 * MIN),
        ),
        record(
            8,
            6,
            15 * MIN,
            Fact::Task(attempt("t1", 0, "timeout", 11 * MIN, 15 * MIN)),
        ),
        from_conductor,
        record(9, 7, 25 * MIN, Fact::Task(verified_deploy)),
        record(
            10,
            8,
            30 * MIN,
            Fact::RunFinished(RunFinishedFact {
                result: "success".into(),
                end_ns: 30 * MIN,
                compensation_run: Some("wf-c".into()),
            }),
        ),
        record(
            11,
            8,
            30 * MIN,
            Fact::RunFinished(RunFinishedFact {
                result: "failure".into(),
                end_ns: 30 * MIN,
                compensation_run: None,
            }),
        ),
    ]
}

#[test]
fn the_rich_fixture_folds_to_what_it_states() {
    let e = fold(&many_facts());
    let fields: Vec<&str> = e.conflicts.iter().map(|c| c.field.as_str()).collect();
    // The two approvals of step a1 agree (one asserted, one verified): no conflict there.
    assert_eq!(
        fields,
        ["environment", "kind", "run result", "task t2 result"]
    );
    assert!(e.change.production);
    assert_eq!(
        e.steps[0].summary,
        "2 attempts: 1 timed out, then succeeded"
    );
    let decisions: Vec<&str> = e.approvals.iter().map(|a| a.decision.as_str()).collect();
    assert_eq!(decisions, ["approved", "rejected"]);
    assert!(
        e.approvals[0]
            .approver
            .as_ref()
            .unwrap()
            .established
            .is_verified()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// The fold reads a set of facts: whatever order they arrive in, the evidence is the same.
    #[test]
    fn shuffled_facts_fold_to_the_same_evidence(
        order in Just((0..many_facts().len()).collect::<Vec<usize>>()).prop_shuffle()
    ) {
        let facts = many_facts();
        let shuffled: Vec<Recorded> = order.iter().map(|&i| facts[i].clone()).collect();
        prop_assert_eq!(fold(&shuffled), fold(&facts));
    }
}
