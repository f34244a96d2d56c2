//! Unit tests of `conductor`: known executions and the facts they state.

use super::*;
use crate::core::evidence::SentBy;
use serde_json::json;

/// Far enough ahead of every time in these documents.
const RECEIVED: i64 = i64::MAX / 2;

fn intake() -> Intake {
    Intake {
        received_ns: RECEIVED,
        sent_by: Some(SentBy {
            token_id: None,
            name: "cli import by root".into(),
        }),
        max_lateness_ns: None,
        max_clock_skew_ns: 0,
    }
}

fn import(doc: &Value) -> ConductorImport {
    conductor_facts(
        doc,
        &Policy::default(),
        &IdentityVerifier::default(),
        &intake(),
    )
    .unwrap()
}

fn execution(status: &str, tasks: Value) -> Value {
    json!({
        "workflowId": "wf-1", "workflowName": "deploy_payments", "status": status,
        "startTime": 1_000, "endTime": 9_000, "correlationId": "CHG-7",
        "input": {"environment": "production", "service": "pay",
                  "artifact": {"image": "registry/pay:1.4.0", "digest": "sha256:ab",
                               "vcsRevision": "c0ffee"},
                  "change": {"type": "Normal", "requestedBy": "alice"}},
        "tasks": tasks,
    })
}

fn task(id: &str, task_type: &str, status: &str) -> Value {
    json!({"taskId": id, "taskType": task_type, "referenceTaskName": format!("{task_type}_ref"),
           "status": status, "startTime": 2_000, "endTime": 3_000})
}

fn tasks(imp: &ConductorImport) -> Vec<&TaskFact> {
    imp.facts
        .iter()
        .filter_map(|f| match &f.fact {
            Fact::Task(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn approvals(imp: &ConductorImport) -> Vec<&ApprovalFact> {
    imp.facts
        .iter()
        .filter_map(|f| match &f.fact {
            Fact::Approval(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn an_execution_states_its_change_and_how_it_ended() {
    let imp = import(&execution("TERMINATED", json!([])));
    assert_eq!(
        (imp.run_id.as_str(), imp.change_id.as_str()),
        ("wf-1", "CHG-7")
    );
    // The change, how it ended, and what the import observed (an empty `tasks` is a full
    // execution with no tasks yet).
    assert_eq!(imp.facts.len(), 3);
    assert_eq!(imp.facts[2].fact.entry_kind(), "run.observed");
    let requested = &imp.facts[0];
    assert!(requested.key.starts_with("run:wf-1:requested:conductor:"));
    assert_eq!(requested.source, Source::Conductor);
    assert_eq!(requested.time_ns, 1_000_000_000);
    assert_eq!(
        requested.sent_by.as_ref().unwrap().name,
        "cli import by root"
    );
    let Fact::Change(c) = &requested.fact else {
        panic!("{requested:?}")
    };
    assert_eq!(c.pipeline.as_deref(), Some("deploy_payments"));
    assert_eq!(c.environment.as_deref(), Some("production"));
    assert_eq!(c.kind.as_deref(), Some("normal"));
    assert_eq!(c.service.as_deref(), Some("pay"));
    // No deployed version in the output: the image's tag.
    assert_eq!(c.version.as_deref(), Some("1.4.0"));
    assert_eq!(c.artifact.as_deref(), Some("sha256:ab"));
    assert_eq!(c.revision.as_deref(), Some("c0ffee"));
    assert_eq!(c.rollback_of, None);
    assert_eq!(
        c.requester.as_ref().unwrap().subject.as_deref(),
        Some("alice")
    );
    assert_eq!(
        imp.facts[1].fact,
        Fact::RunFinished(RunFinishedFact {
            result: "cancellation".into(),
            end_ns: 9_000_000_000,
            compensation_run: None,
        })
    );
    assert!(imp.facts[1].key.starts_with("run:wf-1:finished:conductor:"));
}

#[test]
fn a_running_execution_has_not_finished() {
    let imp = import(&execution("RUNNING", json!([])));
    let kinds: Vec<&str> = imp.facts.iter().map(|f| f.fact.entry_kind()).collect();
    assert_eq!(kinds, ["change.requested", "run.observed"]);
}

#[test]
fn a_re_import_is_the_same_facts_and_a_changed_statement_a_new_one() {
    let doc = execution("COMPLETED", json!([task("t-1", "deploy", "COMPLETED")]));
    let a = import(&doc);
    let b = conductor_facts(
        &doc,
        &Policy::default(),
        &IdentityVerifier::default(),
        &Intake {
            sent_by: None,
            ..intake()
        },
    )
    .unwrap();
    let keys = |i: &ConductorImport| i.facts.iter().map(|f| f.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b));
    let failed = import(&execution(
        "COMPLETED",
        json!([task("t-1", "deploy", "FAILED")]),
    ));
    assert_eq!(keys(&a)[..2], keys(&failed)[..2]);
    assert_ne!(keys(&a)[2], keys(&failed)[2]);
    assert!(keys(&a)[2].starts_with("task:wf-1:t-1:conductor:"));
}

#[test]
fn task_statuses_are_normalised_and_only_finished_deploys_are_attempts() {
    let doc = execution(
        "COMPLETED",
        json!([
            task("d1", "deploy", "COMPLETED_WITH_ERRORS"),
            task("d2", "k8s_deploy", "FAILED_WITH_TERMINAL_ERROR"),
            task("d3", "helm_deploy", "TIMED_OUT"),
            task("d4", "deploy", "CANCELED"),
            task("d5", "deploy", "SKIPPED"),
            task("d6", "deploy", "IN_PROGRESS"),
            task("b1", "SIMPLE", "COMPLETED"),
            {"taskType": "deploy", "status": "COMPLETED"},
        ]),
    );
    let imp = import(&doc);
    let results: Vec<(&str, &str)> = tasks(&imp)
        .iter()
        .map(|t| (t.task_run_id.as_str(), t.result.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            ("d1", "success"),
            ("d2", "failure"),
            ("d3", "timeout"),
            ("d4", "cancellation"),
            ("d5", "skip"),
        ]
    );
    // Every task with an id is history a later import must still hold, fact or not.
    assert_eq!(
        imp.task_ids.iter().collect::<Vec<_>>(),
        ["b1", "d1", "d2", "d3", "d4", "d5", "d6"]
    );
}

#[test]
fn a_deploy_attempt_carries_its_retry_and_where_it_ran() {
    let mut t = task("d2", "SIMPLE", "COMPLETED");
    t["referenceTaskName"] = json!("deploy");
    t["retryCount"] = json!(2);
    t["retriedTaskId"] = json!("d1");
    t["workerId"] = json!("w-4");
    t["inputData"] = json!({"triggeredBy": "carol"});
    t["outputData"] = json!({"trace_id": "tr", "span_id": "sp"});
    t["reasonForIncompletion"] = json!("flaky");
    let imp = import(&execution("COMPLETED", json!([t])));
    let [t] = tasks(&imp)[..] else {
        panic!("{imp:?}")
    };
    assert_eq!(
        (t.task.as_str(), t.task_type.as_str()),
        ("deploy", "SIMPLE")
    );
    assert_eq!((t.attempt, t.retried_from.as_deref()), (2, Some("d1")));
    assert_eq!((t.start_ns, t.end_ns), (2_000_000_000, 3_000_000_000));
    assert_eq!(t.worker.as_deref(), Some("w-4"));
    assert_eq!(t.triggered_by.as_deref(), Some("carol"));
    assert_eq!(
        (t.trace_id.as_deref(), t.span_id.as_deref()),
        (Some("tr"), Some("sp"))
    );
    assert_eq!(t.reason.as_deref(), Some("flaky"));
}

#[test]
fn a_completed_human_task_without_a_decision_is_not_an_approval() {
    let doc = json!({"workflowId": "wf", "startTime": 1, "status": "RUNNING",
    "tasks": [
        {"taskId": "h1", "taskType": "HUMAN", "status": "COMPLETED", "startTime": 2, "endTime": 3},
        {"taskId": "h2", "taskType": "HUMAN", "status": "TIMED_OUT", "startTime": 2, "endTime": 3},
        {"taskId": "h3", "taskType": "HUMAN", "status": "COMPLETED", "startTime": 2, "endTime": 3,
         "outputData": {"decision": "APPROVED", "approvedBy": "bob"}}
    ]});
    let decisions: Vec<String> = approvals(&import(&doc))
        .iter()
        .map(|a| a.decision.clone())
        .collect();
    assert_eq!(decisions, ["unknown", "expired", "approved"]);
}

#[test]
fn approval_task_statuses_are_decisions() {
    let mut approved = task("a5", "approval", "COMPLETED");
    approved["outputData"] = json!({"decision": "approve", "approvedBy": "bob",
                                    "approvedAt": "1970-01-01T00:00:02.500Z"});
    approved["inputData"] = json!({"artifactDigest": "sha256:ab"});
    let doc = execution(
        "RUNNING",
        json!([
            task("a1", "approval", "SKIPPED"),
            task("a2", "HUMAN", "IN_PROGRESS"),
            task("a3", "approval", "FAILED"),
            task("a4", "approval", "CANCELED"),
            approved,
        ]),
    );
    let imp = import(&doc);
    let a = approvals(&imp);
    let decisions: Vec<&str> = a.iter().map(|a| a.decision.as_str()).collect();
    assert_eq!(
        decisions,
        ["skipped", "pending", "rejected", "expired", "approved"]
    );
    // Skipped and pending steps name nobody who decided; a pending one has no decision time.
    assert_eq!(
        (a[0].approver.as_ref(), a[1].approver.as_ref()),
        (None, None)
    );
    assert_eq!(a[1].decided_ns, None);
    assert_eq!(a[0].decided_ns, Some(3_000_000_000));
    assert!(a[2].approver.is_some());
    assert_eq!(
        a[4].approver.as_ref().unwrap().subject.as_deref(),
        Some("bob")
    );
    assert_eq!(
        a[4].decided_ns,
        Some(2_500_000_000),
        "the stated approval time wins"
    );
    assert_eq!(a[4].requested_ns, Some(2_000_000_000));
    assert_eq!(a[4].approved_subject.as_deref(), Some("sha256:ab"));
    assert_eq!(a[4].task_run_id.as_deref(), Some("a5"));
    let keys: Vec<&str> = imp.facts.iter().map(|f| f.key.as_str()).collect();
    assert!(
        keys[5].starts_with("approval:CHG-7:a5:approved:conductor:"),
        "{keys:?}"
    );
    assert_eq!(imp.facts[2].fact.entry_kind(), "approval.requested");
    assert_eq!(imp.facts[5].time_ns, 2_500_000_000);
}

#[test]
fn a_status_listener_summary_is_read_like_an_execution() {
    let doc = json!({"payload": {
        "workflowId": "wf-2", "workflowType": "deploy_payments", "status": "FAILED",
        "startTime": "2026-01-01T10:00:00Z", "endTime": "2026-01-01T10:05:00Z",
        "input": "{\"change\":{\"id\":\"CHG-8\"},\"environment\":\"prod\"}",
        "output": "{\"deployedVersion\":\"2.0.0\",\"conductor.failure_workflow\":\"wf-3\"}",
    }});
    let imp = import(&doc);
    assert_eq!(
        (imp.run_id.as_str(), imp.change_id.as_str()),
        ("wf-2", "CHG-8")
    );
    assert!(imp.task_ids.is_empty(), "a summary lists no tasks");
    let Fact::Change(c) = &imp.facts[0].fact else {
        panic!("{imp:?}")
    };
    assert_eq!(c.pipeline.as_deref(), Some("deploy_payments"));
    assert_eq!(c.environment.as_deref(), Some("prod"));
    assert_eq!(c.version.as_deref(), Some("2.0.0"));
    assert_eq!(c.requested_ns, 1_767_261_600_000_000_000);
    assert_eq!(
        imp.facts[1].fact,
        Fact::RunFinished(RunFinishedFact {
            result: "failure".into(),
            end_ns: 1_767_261_900_000_000_000,
            compensation_run: Some("wf-3".into()),
        })
    );
}

#[test]
fn a_failure_workflow_is_a_rollback_of_the_run_it_compensates() {
    let doc = json!({"workflowId": "wf-comp", "startTime": 5, "status": "RUNNING",
        "input": {"failedWorkflow": "wf-1", "workflowId": "wf-1", "failureStatus": "FAILED",
                  "change": {"type": "normal"}}});
    let imp = import(&doc);
    assert_eq!(imp.change_id, "wf-comp", "a change of its own");
    let Fact::Change(c) = &imp.facts[0].fact else {
        panic!("{imp:?}")
    };
    assert_eq!(c.kind.as_deref(), Some("rollback"));
    assert_eq!(c.rollback_of.as_deref(), Some("wf-1"));
    // A plain execution that names what it rolls back is a rollback too.
    let doc = json!({"workflowId": "wf-r", "createTime": 5, "status": "RUNNING",
        "input": {"change": {"rollbackOf": "CHG-1"}}});
    let imp = import(&doc);
    let Fact::Change(c) = &imp.facts[0].fact else {
        panic!("{imp:?}")
    };
    assert_eq!(
        imp.change_id, "wf-r",
        "no change id or correlation id: the run's"
    );
    assert_eq!(
        (c.kind.as_deref(), c.rollback_of.as_deref()),
        (Some("rollback"), Some("CHG-1"))
    );
    assert_eq!(
        c.requested_ns, 5_000_000,
        "the creation time when it has not started"
    );
}

#[test]
fn a_document_that_is_no_execution_is_refused() {
    let refuse = |doc: Value| {
        conductor_facts(
            &doc,
            &Policy::default(),
            &IdentityVerifier::default(),
            &intake(),
        )
        .unwrap_err()
    };
    assert_eq!(
        refuse(json!({"status": "RUNNING"})),
        "not a Conductor workflow execution: no workflowId"
    );
    assert_eq!(
        refuse(json!({"workflowId": "wf", "startTime": 0})),
        "workflow has no startTime"
    );
}

#[test]
fn a_conductor_execution_from_the_future_is_refused() {
    let (p, ids) = (Policy::default(), IdentityVerifier::default());
    let doc = json!({"workflowId": "wf", "startTime": 10_000, "status": "RUNNING"});
    let mut i = intake();
    i.received_ns = 10_000 * 1_000_000 - 1;
    i.max_clock_skew_ns = 0;
    let e = conductor_facts(&doc, &p, &ids, &i).unwrap_err();
    assert!(e.contains("in the future"), "{e}");
    i.max_clock_skew_ns = 1;
    assert!(conductor_facts(&doc, &p, &ids, &i).is_ok());
    // A task's times are weighed too, and name the task.
    let doc = json!({"workflowId": "wf", "startTime": 1, "status": "RUNNING",
        "tasks": [{"taskId": "t9", "taskType": "SIMPLE", "status": "SCHEDULED",
                   "startTime": 20_000}]});
    let e = conductor_facts(&doc, &p, &ids, &i).unwrap_err();
    assert!(e.starts_with("task t9 of workflow wf is"), "{e}");
}

#[test]
fn history_that_vanished_is_a_rewrite_and_nothing_vanished_is_none() {
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let i = intake();
    assert_eq!(
        rewritten("wf-1", "CHG-7", &set(&["a"]), &set(&["a", "b"]), &i),
        None
    );
    assert_eq!(rewritten("wf-1", "CHG-7", &set(&[]), &set(&[]), &i), None);
    let r = rewritten("wf-1", "CHG-7", &set(&["c", "a", "b"]), &set(&["b"]), &i).unwrap();
    assert!(r.key.starts_with("rewrite:wf-1:"), "{}", r.key);
    assert_eq!((r.time_ns, r.source), (RECEIVED, Source::Conductor));
    assert_eq!(r.change_id.as_deref(), Some("CHG-7"));
    assert_eq!(
        r.fact,
        Fact::HistoryRewritten(RewriteFact {
            operation: "restart".into(),
            vanished_tasks: vec!["a".into(), "c".into()],
            detected_ns: RECEIVED,
            ..Default::default()
        })
    );
    // The same loss noticed again (another import, later) is the same fact.
    let later = Intake {
        received_ns: RECEIVED + 1,
        ..intake()
    };
    let again = rewritten("wf-1", "CHG-7", &set(&["a", "c"]), &set(&[]), &later).unwrap();
    assert_eq!(r.key, again.key);
}

#[test]
fn a_full_execution_states_what_it_observed_and_a_summary_does_not() {
    let doc = execution(
        "COMPLETED",
        json!([
            task("t1", "deploy", "COMPLETED"),
            task("t2", "SIMPLE", "IN_PROGRESS")
        ]),
    );
    let imp = import(&doc);
    let observed = imp.observed.clone().unwrap();
    assert_eq!(observed.status, "COMPLETED");
    let ids: Vec<&str> = observed.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2"]);
    let fact = imp
        .facts
        .iter()
        .find(|f| matches!(f.fact, Fact::RunObserved(_)))
        .unwrap();
    assert!(
        fact.key.starts_with("run:wf-1:observed:conductor:"),
        "{}",
        fact.key
    );
    // Stated at the latest time the execution names (its endTime, 9 s), not at receipt.
    assert_eq!(fact.time_ns, 9_000 * 1_000_000);
    // The same execution again is the same observation; different content is another.
    assert_eq!(import(&doc).facts, imp.facts);
    let edited = execution(
        "COMPLETED",
        json!([
            task("t1", "deploy", "FAILED"),
            task("t2", "SIMPLE", "IN_PROGRESS")
        ]),
    );
    let other = import(&edited);
    let key = |i: &ConductorImport| {
        i.facts
            .iter()
            .find(|f| matches!(f.fact, Fact::RunObserved(_)))
            .map(|f| f.key.clone())
    };
    assert_ne!(key(&other), key(&imp));
    // A status-listener summary lists no tasks: nothing observed, nothing to compare.
    let mut summary = execution("COMPLETED", json!(null));
    summary.as_object_mut().unwrap().remove("tasks");
    let s = import(&json!({"payload": summary}));
    assert_eq!(s.observed, None);
    assert!(
        !s.facts
            .iter()
            .any(|f| matches!(f.fact, Fact::RunObserved(_)))
    );
}

#[test]
fn the_observation_carries_update_time_capped_at_receipt() {
    let mut doc = execution("COMPLETED", json!([task("t1", "deploy", "COMPLETED")]));
    doc["updateTime"] = json!(12_000);
    let o = import(&doc).observed.unwrap();
    assert_eq!(o.update_time_ms, Some(12_000));
    // A lying future updateTime cannot pin the baseline: it counts as the receipt.
    doc["updateTime"] = json!(i64::MAX / 1_000_000);
    let o = import(&doc).observed.unwrap();
    assert_eq!(o.update_time_ms, Some(RECEIVED / 1_000_000));
    doc.as_object_mut().unwrap().remove("updateTime");
    assert_eq!(import(&doc).observed.unwrap().update_time_ms, None);
}

#[test]
fn workflow_ids_a_reconciler_could_not_fetch_are_refused() {
    for good in [
        "wf-1",
        "3f2a9c1e-0b7d-4e55-9a61-2c8f0d7b4e10",
        "a.b_c:d",
        &"x".repeat(128),
    ] {
        assert_eq!(valid_run_id(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a b",
        "a%2Fb",
        "wf?x=1",
        "é",
        &"x".repeat(129),
    ] {
        assert!(valid_run_id(bad).is_err(), "{bad:?}");
        let mut doc = execution("COMPLETED", json!([]));
        doc["workflowId"] = json!(bad);
        let refused = conductor_facts(
            &doc,
            &Policy::default(),
            &IdentityVerifier::default(),
            &intake(),
        );
        assert!(refused.is_err(), "{bad:?}");
    }
}
