//! What a Conductor execution (or a status-listener WorkflowSummary) states, as facts
//! (src/ingest/CONVENTIONS.md), and the history a later import of the same execution no longer holds (a
//! Conductor `restart` wipes it). `runtimeMetadata` is never read.

use super::rewrite::{ObservedRun, ObservedTask, task_terminal};
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
/// and, for a full execution (one with `tasks`), what it observed (to notice rewritten history
/// on a later import).
#[derive(Debug, Clone, PartialEq)]
pub struct ConductorImport {
    pub run_id: String,
    pub change_id: String,
    pub facts: Vec<FactRecord>,
    pub task_ids: BTreeSet<String>,
    /// `None` for a status-listener WorkflowSummary: it lists no tasks, so it cannot show any
    /// vanished.
    pub observed: Option<ObservedRun>,
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
/// `payload` is a WorkflowSummary) as src/ingest/CONVENTIONS.md says. An execution that states a time
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
    valid_run_id(&run_id)?;
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
    let listed = w.get("tasks").and_then(|t| t.as_array());
    let mut task_ids = BTreeSet::new();
    for t in listed.map(Vec::as_slice).unwrap_or(&[]) {
        let Some(task) = Task::read(t) else {
            continue;
        };
        task_ids.insert(task.id.clone());
        facts.extend(x.task(task)?);
    }
    let observed = listed.map(|tasks| ObservedRun {
        status: x.s("/status").unwrap_or_default(),
        tasks: tasks
            .iter()
            .filter_map(|t| ObservedTask::read(t, ms))
            .collect(),
        update_time_ms: w
            .get("updateTime")
            .and_then(ms)
            .map(|t| t.min(intake.received_ns) / 1_000_000),
    });
    if let Some(o) = &observed {
        facts.push(x.observed(o));
    }
    Ok(ConductorImport {
        run_id: x.run_id,
        change_id: x.change_id,
        facts,
        task_ids,
        observed,
    })
}

/// The longest workflow id accepted (Conductor's are 36-character UUIDs).
const MAX_RUN_ID: usize = 128;

/// Refuses a workflow id a reconciler could not fetch again: the id becomes a URL path segment
/// (`.` and `..` vanish from it, other characters make Conductor answer 4xx), and a run that
/// cannot be fetched cannot be re-checked. Conductor's own ids are UUIDs.
pub fn valid_run_id(id: &str) -> Result<(), String> {
    let shown: String = id.chars().take(40).collect();
    if id.is_empty()
        || id.len() > MAX_RUN_ID
        || id == "."
        || id == ".."
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(format!(
            "workflowId {shown:?} is not 1-{MAX_RUN_ID} characters of A-Z, a-z, 0-9, '.', '_', ':' \
             or '-' (nor '.' or '..')"
        ));
    }
    Ok(())
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

    /// What this full import saw, stated at the latest time the execution names (its content,
    /// not the receipt or `updateTime`, so an identical re-import is the same fact; the
    /// observation carries `updateTime`, which an identical re-import repeats).
    fn observed(&self, o: &ObservedRun) -> FactRecord {
        let latest = o
            .tasks
            .iter()
            .flat_map(|t| [t.start_ns, t.end_ns])
            .chain([ms(self.w.get("endTime").unwrap_or(&Value::Null))])
            .flatten()
            .fold(self.start, i64::max);
        self.fact(
            format!("run:{}:observed:conductor", self.run_id),
            latest,
            Fact::RunObserved(o.clone()),
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
        if !task_terminal(&task.status) || !is(Policy::is_deploy) {
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

/// History that vanished between imports of the same execution (Conductor `restart` wipes it),
/// from task ids alone: for runs whose earlier imports recorded no observation (`run.observed`),
/// made before those existed.
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
    let id = Hash::of(&[vanished.join(",").as_bytes()]);
    Some(super::rewrite::record(
        run_id,
        change_id,
        &id,
        RewriteFact {
            operation: "restart".into(),
            vanished_tasks: vanished,
            ..RewriteFact::default()
        },
        intake,
    ))
}

#[cfg(test)]
#[path = "conductor_tests.rs"]
mod tests;
