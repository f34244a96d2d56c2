//! What a Conductor execution (or a status-listener WorkflowSummary) states, as facts
//! (CONVENTIONS.md), and the history a later import of the same execution no longer holds (a
//! Conductor `restart` wipes it). `runtimeMetadata` is never read.

use super::statement::{About, Intake, normalize_decision, normalize_result};
use super::{
    ApprovalFact, ChangeFact, Fact, FactRecord, Policy, RewriteFact, RunFinishedFact, Source,
    TaskFact, decision,
};
use crate::core::evidence::identity::IdentityVerifier;
use crate::core::evidence::rules::human_duration;
use crate::core::ledger::hash::Hash;
use crate::core::time::parse_rfc3339;
use serde_json::Value;
use std::collections::BTreeSet;

/// A Conductor execution (or status-listener payload) mapped to facts, plus the task ids it holds
/// (to notice history that vanished on a later import).
#[derive(Debug, Clone, PartialEq)]
pub struct ConductorImport {
    pub run_id: String,
    pub change_id: String,
    pub facts: Vec<FactRecord>,
    pub task_ids: BTreeSet<String>,
}

/// A Conductor time: epoch milliseconds (executions) or an ISO 8601 string (status-listener
/// WorkflowSummary), as nanoseconds.
fn ms(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s
            .parse::<i64>()
            .ok()
            .map(|t| t.saturating_mul(1_000_000))
            .or_else(|| parse_rfc3339(s)),
        _ => v.as_i64().map(|t| t.saturating_mul(1_000_000)),
    }
    .filter(|t| *t > 0)
}

fn s(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr)
        .and_then(|x| x.as_str())
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
}

/// Maps `GET /api/workflow/{id}?includeTasks=true` output (or a status-listener message whose
/// `payload` is a WorkflowSummary) as CONVENTIONS.md says. An execution that states a time
/// further ahead of its receipt than the allowed clock skew is refused whole: its times cannot
/// be weighed.
pub fn conductor_facts(
    doc: &Value,
    policy: &Policy,
    ids: &IdentityVerifier,
    intake: &Intake,
) -> Result<ConductorImport, String> {
    let w = &workflow(doc);
    let run_id = s(w, "/workflowId").ok_or("not a Conductor workflow execution: no workflowId")?;
    // A failure workflow (the compensation Conductor starts when a run fails) is a change of its
    // own, a rollback of the change it was started for; its input holds that change's input.
    let compensation =
        w.pointer("/input/failedWorkflow").is_some() || w.pointer("/input/failureStatus").is_some();
    let change_id = if compensation {
        run_id.clone()
    } else {
        s(w, "/input/change/id")
            .or_else(|| s(w, "/correlationId"))
            .unwrap_or_else(|| run_id.clone())
    };
    let start = ms(w.get("startTime").unwrap_or(&Value::Null))
        .or_else(|| ms(w.get("createTime").unwrap_or(&Value::Null)))
        .ok_or("workflow has no startTime")?;
    let x = Execution {
        w,
        policy,
        ids,
        intake,
        run_id,
        change_id,
        compensation,
        start,
    };
    x.not_ahead(Some(start), "the start")?;
    let mut facts = vec![x.requested()];
    facts.extend(x.finished()?);
    let mut task_ids = BTreeSet::new();
    for t in w
        .get("tasks")
        .and_then(|t| t.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(task) = Task::read(t) else {
            continue;
        };
        task_ids.insert(task.id.clone());
        facts.extend(x.task(task)?);
    }
    Ok(ConductorImport {
        run_id: x.run_id,
        change_id: x.change_id,
        facts,
        task_ids,
    })
}

/// The execution a document holds: a status-listener message's `payload`, else the document,
/// with a WorkflowSummary's input and output (JSON text) parsed.
fn workflow(doc: &Value) -> Value {
    let mut w = match doc.get("payload") {
        Some(p) if p.get("workflowId").is_some() => p.clone(),
        _ => doc.clone(),
    };
    for k in ["input", "output"] {
        if let Some(Value::String(text)) = w.get(k)
            && let Ok(v) = serde_json::from_str::<Value>(text)
        {
            w[k] = v;
        }
    }
    w
}

/// An execution being mapped, with what every fact it states shares.
struct Execution<'a> {
    w: &'a Value,
    policy: &'a Policy,
    ids: &'a IdentityVerifier,
    intake: &'a Intake,
    run_id: String,
    change_id: String,
    /// A failure workflow started for another run.
    compensation: bool,
    start: i64,
}

/// One entry of an execution's `tasks`.
struct Task<'a> {
    t: &'a Value,
    id: String,
    task_type: String,
    status: String,
    /// The task's name in the workflow definition, else its type.
    reference: String,
    start_ns: Option<i64>,
    end_ns: Option<i64>,
}

impl<'a> Task<'a> {
    fn read(t: &'a Value) -> Option<Task<'a>> {
        let task_type = s(t, "/taskType").unwrap_or_default();
        Some(Task {
            t,
            id: s(t, "/taskId")?,
            status: s(t, "/status").unwrap_or_default(),
            reference: s(t, "/referenceTaskName").unwrap_or_else(|| task_type.clone()),
            task_type,
            start_ns: t.get("startTime").and_then(ms),
            end_ns: t.get("endTime").and_then(ms),
        })
    }

    fn s(&self, ptr: &str) -> Option<String> {
        s(self.t, ptr)
    }
}

/// Conductor task statuses after which the task no longer runs.
fn terminal(status: &str) -> bool {
    matches!(
        status,
        "COMPLETED"
            | "COMPLETED_WITH_ERRORS"
            | "FAILED"
            | "FAILED_WITH_TERMINAL_ERROR"
            | "TIMED_OUT"
            | "CANCELED"
            | "SKIPPED"
    )
}

/// What an approval task's status and stated decision (`outputData.decision`) come to.
fn approval_decision(status: &str, stated: Option<String>) -> (String, Option<String>) {
    match status {
        "SKIPPED" => (decision::SKIPPED.to_owned(), None),
        "IN_PROGRESS" | "SCHEDULED" => (decision::PENDING.to_owned(), None),
        status => match stated {
            Some(d) => normalize_decision(Some(&d)),
            // A completed step that says nothing is not an approval; a failed one is a
            // rejection; one that ran out of time was never decided.
            None => match status {
                "COMPLETED" => (decision::UNKNOWN.to_owned(), None),
                "TIMED_OUT" | "CANCELED" => (decision::EXPIRED.to_owned(), None),
                _ => (decision::REJECTED.to_owned(), None),
            },
        },
    }
}

impl Execution<'_> {
    fn s(&self, ptr: &str) -> Option<String> {
        s(self.w, ptr)
    }

    /// Refuses a time further ahead of the receipt than the allowed clock skew.
    fn not_ahead(&self, t: Option<i64>, what: &str) -> Result<(), String> {
        let received = self.intake.received_ns;
        match t {
            Some(t) if t > received.saturating_add(self.intake.max_clock_skew_ns) => Err(format!(
                "{what} of workflow {} is {} in the future of the receiver's clock \
                 (at most {} is accepted)",
                self.run_id,
                human_duration(t - received),
                human_duration(self.intake.max_clock_skew_ns)
            )),
            _ => Ok(()),
        }
    }

    fn fact(&self, base: String, time_ns: i64, fact: Fact) -> FactRecord {
        FactRecord::stated(
            About {
                base,
                change_id: Some(self.change_id.clone()),
                run_id: Some(self.run_id.clone()),
                source: Source::Conductor,
                time_ns,
                until_ns: time_ns,
            },
            self.intake,
            fact,
        )
    }

    /// What the change is, from the workflow's input and output.
    fn requested(&self) -> FactRecord {
        let (start, received) = (self.start, self.intake.received_ns);
        let requester_subject = self
            .s("/input/change/requestedBy")
            .or_else(|| self.s("/createdBy"));
        let requester_token = self.s("/input/change/requestToken");
        let requester = (requester_subject.is_some() || requester_token.is_some()).then(|| {
            self.ids.establish(
                requester_subject.as_deref(),
                requester_token.as_deref(),
                start,
                received,
            )
        });
        // A failure workflow's input names the workflow it compensates.
        let rollback_of = self.s("/input/change/rollbackOf").or_else(|| {
            self.compensation
                .then(|| {
                    self.s("/input/change/id")
                        .or_else(|| self.s("/input/workflowId"))
                })
                .flatten()
        });
        let image_tag = self
            .s("/input/artifact/image")
            .and_then(|i| i.rsplit_once(':').map(|(_, t)| t.to_owned()));
        // The compensation inherits the original's change type; it is a rollback all the same.
        let kind = if self.compensation {
            Some("rollback".to_owned())
        } else {
            self.s("/input/change/type")
                .map(|k| k.to_ascii_lowercase())
                .or_else(|| rollback_of.as_ref().map(|_| "rollback".into()))
        };
        self.fact(
            format!("run:{}:requested:conductor", self.run_id),
            start,
            Fact::Change(ChangeFact {
                pipeline: self.s("/workflowName").or_else(|| self.s("/workflowType")),
                environment: self.s("/input/environment"),
                kind,
                service: self.s("/input/service"),
                version: self.s("/output/deployedVersion").or(image_tag),
                artifact: self.s("/input/artifact/digest"),
                revision: self.s("/input/artifact/vcsRevision"),
                rollback_of,
                justification: self.s("/input/change/justification"),
                requester,
                requested_ns: start,
            }),
        )
    }

    /// How the run ended, once it has.
    fn finished(&self) -> Result<Option<FactRecord>, String> {
        let status = self.s("/status").unwrap_or_default();
        if !matches!(
            status.as_str(),
            "COMPLETED" | "FAILED" | "TIMED_OUT" | "TERMINATED"
        ) {
            return Ok(None);
        }
        let end = ms(self.w.get("endTime").unwrap_or(&Value::Null)).unwrap_or(self.start);
        self.not_ahead(Some(end), "the end")?;
        Ok(Some(self.fact(
            format!("run:{}:finished:conductor", self.run_id),
            end,
            Fact::RunFinished(RunFinishedFact {
                result: normalize_result(&status),
                end_ns: end,
                compensation_run: self.s("/output/conductor.failure_workflow"),
            }),
        )))
    }

    /// An approval step's decision, or a deploy step's finished attempt; other tasks state no
    /// fact.
    fn task(&self, task: Task<'_>) -> Result<Option<FactRecord>, String> {
        self.not_ahead(task.start_ns.max(task.end_ns), &format!("task {}", task.id))?;
        let is = |f: fn(&Policy, &str) -> bool| {
            f(self.policy, &task.task_type) || f(self.policy, &task.reference)
        };
        if is(Policy::is_approval) {
            return self.approval(task).map(Some);
        }
        if !terminal(&task.status) || !is(Policy::is_deploy) {
            return Ok(None);
        }
        Ok(Some(self.deploy_attempt(task)))
    }

    fn approval(&self, task: Task<'_>) -> Result<FactRecord, String> {
        let (decision, stated_decision) =
            approval_decision(&task.status, task.s("/outputData/decision"));
        let decided = task
            .s("/outputData/approvedAt")
            .and_then(|a| parse_rfc3339(&a))
            .or(task.end_ns);
        self.not_ahead(decided, &format!("the decision of task {}", task.id))?;
        let approver =
            (decision != decision::SKIPPED && decision != decision::PENDING).then(|| {
                self.ids.establish(
                    task.s("/outputData/approvedBy").as_deref(),
                    task.s("/outputData/approvalToken").as_deref(),
                    decided.unwrap_or(self.start),
                    self.intake.received_ns,
                )
            });
        Ok(self.fact(
            format!(
                "approval:{}:{}:{decision}:conductor",
                self.change_id, task.id
            ),
            decided.or(task.start_ns).unwrap_or(self.start),
            Fact::Approval(ApprovalFact {
                decision,
                stated_decision,
                approver,
                requested_ns: task.start_ns,
                decided_ns: if task.status == "IN_PROGRESS" {
                    None
                } else {
                    decided
                },
                approved_subject: task.s("/inputData/artifactDigest"),
                task_run_id: Some(task.id),
            }),
        ))
    }

    fn deploy_attempt(&self, task: Task<'_>) -> FactRecord {
        let end_ns = task.end_ns.or(task.start_ns).unwrap_or(self.start);
        self.fact(
            format!("task:{}:{}:conductor", self.run_id, task.id),
            end_ns,
            Fact::Task(TaskFact {
                attempt: task
                    .t
                    .get("retryCount")
                    .and_then(|r| r.as_u64())
                    .unwrap_or(0) as u32,
                retried_from: task.s("/retriedTaskId"),
                result: normalize_result(&task.status),
                start_ns: task.start_ns.unwrap_or(end_ns),
                end_ns,
                worker: task.s("/workerId"),
                identity: None,
                credential_id: None,
                triggered_by: task.s("/inputData/triggeredBy"),
                trace_id: task.s("/outputData/trace_id"),
                span_id: task.s("/outputData/span_id"),
                reason: task.s("/reasonForIncompletion"),
                task: task.reference,
                task_run_id: task.id,
                task_type: task.task_type,
            }),
        )
    }
}

/// History that vanished between imports of the same execution (Conductor `restart` wipes it).
pub fn rewritten(
    run_id: &str,
    change_id: &str,
    before: &BTreeSet<String>,
    now: &BTreeSet<String>,
    intake: &Intake,
) -> Option<FactRecord> {
    let vanished: Vec<String> = before.difference(now).cloned().collect();
    if vanished.is_empty() {
        return None;
    }
    let digest = Hash::of(&[vanished.join(",").as_bytes()]).to_hex();
    let detected_ns = intake.received_ns;
    Some(FactRecord {
        key: format!("rewrite:{run_id}:{}", &digest[..16]),
        change_id: Some(change_id.to_owned()),
        run_id: Some(run_id.to_owned()),
        source: Source::Conductor,
        time_ns: detected_ns,
        stated_until_ns: None,
        sent_by: intake.sent_by.clone(),
        max_lateness_ns: None,
        fact: Fact::HistoryRewritten(RewriteFact {
            operation: "restart".into(),
            vanished_tasks: vanished,
            detected_ns,
        }),
    })
}

#[cfg(test)]
mod tests {
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
        assert_eq!(imp.facts.len(), 2);
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
        assert_eq!(imp.facts.len(), 1);
        assert_eq!(imp.facts[0].fact.entry_kind(), "change.requested");
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
}
