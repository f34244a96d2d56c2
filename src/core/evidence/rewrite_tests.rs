//! Unit tests of `rewrite`: each kind of rewrite Conductor can make, told apart from growth.

use super::*;
use crate::core::evidence::SentBy;
use serde_json::json;

fn ms(v: &Value) -> Option<i64> {
    v.as_i64().map(|t| t * 1_000_000)
}

fn task(id: &str, reference: &str, status: &str, output: Value) -> Value {
    json!({"taskId": id, "referenceTaskName": reference, "taskType": "SIMPLE",
           "status": status, "startTime": 2_000, "endTime": 3_000, "outputData": output})
}

fn run(status: &str, tasks: &[Value]) -> ObservedRun {
    ObservedRun {
        status: status.into(),
        tasks: tasks
            .iter()
            .map(|t| ObservedTask::read(t, ms).unwrap())
            .collect(),
        update_time_ms: None,
    }
}

fn three(status: &str) -> Vec<Value> {
    vec![
        task("a", "build", "COMPLETED", json!({"ok": true})),
        task("b", "approve", "COMPLETED", json!({"decision": "approved"})),
        task("c", "deploy", status, json!({"version": "1.4.0"})),
    ]
}

fn kinds_of(r: &RewriteFact) -> Vec<&str> {
    r.tasks.iter().map(|c| c.kind.as_str()).collect()
}

#[test]
fn digests_ignore_key_order_and_see_content() {
    let a = ObservedTask::read(&task("a", "x", "COMPLETED", json!({"p": 1, "q": 2})), ms).unwrap();
    let b = ObservedTask::read(&task("a", "x", "COMPLETED", json!({"q": 2, "p": 1})), ms).unwrap();
    assert_eq!(a, b);
    let c = ObservedTask::read(&task("a", "x", "COMPLETED", json!({"p": 1, "q": 3})), ms).unwrap();
    assert_ne!(a.digest, c.digest);
    assert_ne!(a.output_digest, c.output_digest);
    assert_eq!(a.digest.len(), 64);
    // No taskId, no task.
    assert!(ObservedTask::read(&json!({"status": "COMPLETED"}), ms).is_none());
}

#[test]
fn growth_is_no_rewrite() {
    let scheduled = run("RUNNING", &[task("a", "build", "SCHEDULED", Value::Null)]);
    let running = run("RUNNING", &[task("a", "build", "IN_PROGRESS", Value::Null)]);
    let done = run("RUNNING", &three("IN_PROGRESS")[..1]);
    let grown = run("COMPLETED", &three("COMPLETED"));
    assert_eq!(compare(&scheduled, &running), None);
    assert_eq!(compare(&running, &done), None);
    assert_eq!(compare(&done, &grown), None);
    assert_eq!(compare(&grown, &grown.clone()), None);
    // An automatic retry of a failed task, appended while the run still runs, is growth.
    let failed = run(
        "RUNNING",
        &[task("a", "deploy", "FAILED", json!({"error": "boom"}))],
    );
    let mut again = failed.clone();
    again.tasks.push(
        ObservedTask::read(
            &json!({"taskId": "a2", "referenceTaskName": "deploy", "status": "COMPLETED",
                    "retryCount": 1, "retriedTaskId": "a"}),
            ms,
        )
        .unwrap(),
    );
    assert_eq!(compare(&failed, &again), None);
}

#[test]
fn restart_every_task_gone() {
    let before = run("COMPLETED", &three("COMPLETED"));
    let now = run(
        "RUNNING",
        &[task("n1", "build", "IN_PROGRESS", Value::Null)],
    );
    let r = compare(&before, &now).unwrap();
    assert_eq!(r.operation, kind::RESTART);
    assert_eq!(r.kinds, vec![kind::RESTART]);
    assert_eq!(r.vanished_tasks, vec!["a", "b", "c"]);
    assert_eq!(kinds_of(&r), vec![kind::RESTART; 3]);
    assert_eq!(r.run_status_before.as_deref(), Some("COMPLETED"));
    assert_eq!(r.run_status_after.as_deref(), Some("RUNNING"));
    assert!(
        r.tasks
            .iter()
            .all(|c| c.before.is_some() && c.after.is_none())
    );
}

#[test]
fn rerun_replaces_a_tail() {
    let before = run("FAILED", &three("FAILED"));
    let mut tasks = three("FAILED");
    tasks[2] = task("c2", "deploy", "SCHEDULED", Value::Null);
    let r = compare(&before, &run("RUNNING", &tasks)).unwrap();
    assert_eq!(r.kinds, vec![kind::RERUN]);
    assert_eq!(r.vanished_tasks, vec!["c"]);
    assert_eq!(r.tasks[0].before.as_ref().unwrap().status, "FAILED");
}

#[test]
fn remove_leaves_a_hole() {
    let before = run("COMPLETED", &three("COMPLETED"));
    let tasks = [three("COMPLETED")[0].clone(), three("COMPLETED")[2].clone()];
    let r = compare(&before, &run("COMPLETED", &tasks)).unwrap();
    assert_eq!(r.kinds, vec![kind::REMOVE]);
    assert_eq!(r.vanished_tasks, vec!["b"]);
    assert_eq!(r.tasks[0].reference, "approve");
}

#[test]
fn retry_of_a_finished_run_keeps_history() {
    let before = run("FAILED", &three("FAILED"));
    let mut tasks = three("FAILED");
    tasks.push(task("c2", "deploy", "SCHEDULED", Value::Null));
    let r = compare(&before, &run("RUNNING", &tasks)).unwrap();
    assert_eq!(r.kinds, vec![kind::RETRY]);
    assert!(r.tasks.is_empty() && r.vanished_tasks.is_empty());
    assert_eq!(
        (
            r.run_status_before.as_deref(),
            r.run_status_after.as_deref()
        ),
        (Some("FAILED"), Some("RUNNING"))
    );
    // A finished task reset to run again in place is a retry of that task.
    let mut tasks = three("FAILED");
    tasks[2] = task("c", "deploy", "SCHEDULED", json!({"version": "1.4.0"}));
    let r = compare(&before, &run("RUNNING", &tasks)).unwrap();
    assert_eq!(r.kinds, vec![kind::RETRY]);
    assert_eq!(r.tasks[0].changed, vec!["status"]);
}

#[test]
fn skip_in_place_or_added_skipped() {
    let before = run(
        "RUNNING",
        &[
            task("a", "build", "COMPLETED", Value::Null),
            task("b", "approve", "SCHEDULED", Value::Null),
        ],
    );
    let now = run(
        "RUNNING",
        &[
            task("a", "build", "COMPLETED", Value::Null),
            task("b", "approve", "SKIPPED", Value::Null),
        ],
    );
    let r = compare(&before, &now).unwrap();
    assert_eq!(r.kinds, vec![kind::SKIP]);
    assert_eq!(r.tasks[0].task_id, "b");
    let added = run(
        "RUNNING",
        &[
            task("a", "build", "COMPLETED", Value::Null),
            task("b", "approve", "SCHEDULED", Value::Null),
            task("s", "security_scan", "SKIPPED", Value::Null),
        ],
    );
    let r = compare(&before, &added).unwrap();
    assert_eq!(r.kinds, vec![kind::SKIP]);
    assert!(r.tasks[0].before.is_none());
    assert_eq!(r.tasks[0].after.as_ref().unwrap().task_id, "s");
}

#[test]
fn edit_of_a_finished_task_names_the_fields() {
    let before = run("COMPLETED", &three("COMPLETED"));
    let mut tasks = three("COMPLETED");
    tasks[2] = task("c", "deploy", "COMPLETED", json!({"version": "9.9.9"}));
    let r = compare(&before, &run("COMPLETED", &tasks)).unwrap();
    assert_eq!(r.kinds, vec![kind::EDIT]);
    let c = &r.tasks[0];
    assert_eq!(c.changed, vec!["outputData"]);
    assert_ne!(
        c.before.as_ref().unwrap().digest,
        c.after.as_ref().unwrap().digest
    );
    assert_eq!(r.run_status_before, None);
    // Status edited in place: FAILED turned COMPLETED, and the run with it.
    let failed = run("FAILED", &three("FAILED"));
    let r = compare(&failed, &run("COMPLETED", &three("COMPLETED"))).unwrap();
    assert_eq!(r.kinds, vec![kind::EDIT]);
    assert_eq!(r.tasks[0].changed, vec!["status"]);
    assert_eq!(r.run_status_after.as_deref(), Some("COMPLETED"));
    // Only the reason changed.
    let mut reason = three("FAILED");
    reason[2]["reasonForIncompletion"] = json!("edited");
    let r = compare(&failed, &run("FAILED", &reason)).unwrap();
    assert_eq!(r.tasks[0].changed, vec!["reasonForIncompletion"]);
}

#[test]
fn several_kinds_lead_with_the_most_drastic() {
    let before = run("COMPLETED", &three("COMPLETED"));
    let tasks = [
        task("a", "build", "COMPLETED", json!({"ok": false})),
        three("COMPLETED")[2].clone(),
    ];
    let r = compare(&before, &run("COMPLETED", &tasks)).unwrap();
    assert_eq!(r.kinds, vec![kind::REMOVE, kind::EDIT]);
    assert_eq!(r.operation, kind::REMOVE);
    let text = describe(&r);
    assert!(text.starts_with("remove, edit: "), "{text}");
    assert!(
        text.contains("remove approve (b) COMPLETED vanished"),
        "{text}"
    );
    assert!(
        text.contains("edit build (a) COMPLETED→COMPLETED (outputData changed)"),
        "{text}"
    );
}

#[test]
fn deletion_lists_everything_and_its_fact_key_is_stable() {
    let before = run("COMPLETED", &three("COMPLETED"));
    let r = deleted(&before);
    assert_eq!(r.kinds, vec![kind::DELETE]);
    assert_eq!(r.vanished_tasks, vec!["a", "b", "c"]);
    assert_eq!(r.after_digest, None);
    assert_eq!(
        describe(&r),
        "delete: run COMPLETED→gone; delete build (a) COMPLETED vanished; delete approve (b) COMPLETED vanished; delete deploy (c) COMPLETED vanished"
    );
    let intake = |received_ns| Intake {
        received_ns,
        sent_by: Some(SentBy {
            token_id: None,
            name: "conductor reconciler".into(),
        }),
        max_lateness_ns: None,
        max_clock_skew_ns: 0,
    };
    let f = rewrite_fact("wf-1", "CHG-7", r.clone(), &intake(5));
    let again = rewrite_fact("wf-1", "CHG-7", r, &intake(9));
    assert_eq!(f.key, again.key);
    assert!(f.key.starts_with("rewrite:wf-1:"));
    match &again.fact {
        Fact::HistoryRewritten(h) => assert_eq!(h.detected_ns, 9),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_old_rewrite_entry_parses_and_serializes_unchanged() {
    let old = r#"{"operation":"restart","vanished_tasks":["a","b"],"detected_ns":7}"#;
    let r: RewriteFact = serde_json::from_str(old).unwrap();
    assert_eq!(serde_json::to_string(&r).unwrap(), old);
    assert_eq!(describe(&r), "restart: 2 earlier task records vanished");
}

#[test]
fn an_old_observation_parses_and_serializes_unchanged_and_keeps_its_digest() {
    let old = r#"{"status":"COMPLETED","tasks":[]}"#;
    let o: ObservedRun = serde_json::from_str(old).unwrap();
    assert_eq!(o.update_time_ms, None);
    assert_eq!(serde_json::to_string(&o).unwrap(), old);
    // The updateTime is not content: the digest is the one recorded before it was carried.
    let stamped = ObservedRun {
        update_time_ms: Some(5),
        ..o.clone()
    };
    assert_eq!(stamped.digest(), o.digest());
}

#[test]
fn only_an_earlier_update_time_is_older() {
    let at = |t: Option<i64>| ObservedRun {
        update_time_ms: t,
        ..run("COMPLETED", &three("COMPLETED"))
    };
    assert!(at(Some(1)).older_than(&at(Some(2))));
    assert!(!at(Some(2)).older_than(&at(Some(2))));
    assert!(!at(Some(3)).older_than(&at(Some(2))));
    // Without both times nothing can be told: compared as before.
    assert!(!at(None).older_than(&at(Some(2))));
    assert!(!at(Some(1)).older_than(&at(None)));
}
