//! The evidence model: facts about changes extracted from spans, log records and Conductor
//! executions (CONVENTIONS.md), and the evidence packet folded from them.
//!
//! Facts are keyed so that the same fact from a retry or a re-import is one fact; each new fact
//! becomes one ledger entry. The packet is a pure fold over a change's facts in a canonical order,
//! so the same facts give the same evidence whatever order they arrived in.

use super::identity::{Established, IdentityVerifier, Principal};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Attribute values as the rules read them.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    List(Vec<String>),
}

impl AttrValue {
    pub fn text(&self) -> Option<String> {
        match self {
            AttrValue::Str(s) => Some(s.clone()),
            AttrValue::Int(i) => Some(i.to_string()),
            AttrValue::Double(d) => Some(d.to_string()),
            AttrValue::Bool(b) => Some(b.to_string()),
            AttrValue::List(l) => Some(l.join(",")),
        }
    }
}

/// A span's or log record's attributes with its resource's underneath (the item's value wins).
pub type Attrs = BTreeMap<String, AttrValue>;

fn text(a: &Attrs, k: &str) -> Option<String> {
    a.get(k)
        .and_then(AttrValue::text)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Which environments, task types and names the rules treat specially (configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    pub production_environments: Vec<String>,
    pub deploy_task_types: Vec<String>,
    pub approval_task_types: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            production_environments: vec!["production".into(), "prod".into()],
            deploy_task_types: vec!["deploy".into(), "k8s_deploy".into(), "helm_deploy".into()],
            approval_task_types: vec!["approval".into(), "HUMAN".into()],
        }
    }
}

impl Policy {
    pub fn is_production(&self, env: &str) -> bool {
        self.production_environments
            .iter()
            .any(|e| e.eq_ignore_ascii_case(env))
    }

    fn is_deploy(&self, task_type: &str) -> bool {
        self.deploy_task_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(task_type))
    }

    fn is_approval(&self, task_type: &str) -> bool {
        self.approval_task_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(task_type))
    }
}

/// Where a fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Span,
    Log,
    Conductor,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Span => "span",
            Source::Log => "log",
            Source::Conductor => "conductor",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeFact {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester: Option<Principal>,
    pub requested_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinishedFact {
    pub result: String,
    pub end_ns: i64,
    /// The compensation (failure) workflow started for this run, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation_run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalFact {
    /// approved, rejected, skipped (bypassed) or pending.
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<Principal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_run_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFact {
    pub task: String,
    pub task_run_id: String,
    pub task_type: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_from: Option<String>,
    pub result: String,
    pub start_ns: i64,
    pub end_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Principal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewriteFact {
    pub operation: String,
    pub vanished_tasks: Vec<String>,
    pub detected_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionFact {
    pub service: String,
    pub environment: String,
    pub version: String,
    pub first_seen_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    Change(ChangeFact),
    RunFinished(RunFinishedFact),
    Approval(ApprovalFact),
    Task(TaskFact),
    HistoryRewritten(RewriteFact),
    Version(VersionFact),
}

impl Fact {
    /// The ledger entry kind that records this fact.
    pub fn entry_kind(&self) -> &'static str {
        match self {
            Fact::Change(_) => "change.requested",
            Fact::RunFinished(_) => "change.finished",
            Fact::Approval(a) if a.decision == "pending" => "approval.requested",
            Fact::Approval(_) => "approval.decided",
            Fact::Task(_) => "task.finished",
            Fact::HistoryRewritten(_) => "history.rewritten",
            Fact::Version(_) => "version.observed",
        }
    }
}

/// A fact with what identifies it and what it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactRecord {
    /// Same key, same fact: repeats (retries, re-imports) are stored once.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub source: Source,
    pub time_ns: i64,
    #[serde(flatten)]
    pub fact: Fact,
}

impl FactRecord {
    /// The ledger subject: the change id when known, else the run id.
    pub fn subject(&self) -> String {
        self.change_id
            .clone()
            .or_else(|| self.run_id.clone())
            .unwrap_or_default()
    }
}

/// Where a span or log record sits, for the facts it yields.
#[derive(Debug, Clone)]
pub struct ItemInfo {
    pub source: Source,
    pub start_ns: i64,
    pub end_ns: i64,
    /// The span's status is an error.
    pub error: bool,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
}

fn time_attr(a: &Attrs, k: &str) -> Option<i64> {
    match a.get(k)? {
        AttrValue::Int(i) => Some(*i),
        AttrValue::Str(s) => s.parse::<i64>().ok().or_else(|| rfc3339_ns(s)),
        _ => None,
    }
}

/// RFC 3339 to nanoseconds, without a clock (time parsing is pure).
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

fn normalize_result(r: &str) -> String {
    match r.to_ascii_lowercase().as_str() {
        "completed" | "completed_with_errors" | "success" | "succeeded" => "success".into(),
        "failed" | "failed_with_terminal_error" | "failure" => "failure".into(),
        "timed_out" | "timeout" => "timeout".into(),
        "canceled" | "cancelled" | "cancellation" | "terminated" => "cancellation".into(),
        "skipped" | "skip" => "skip".into(),
        "error" => "error".into(),
        other => other.to_owned(),
    }
}

/// Facts a kept span or log record states, by the ingest contract. Tokens are verified here (at the
/// item's time) and never leave: the facts hold only the result.
pub fn facts_from_item(
    info: &ItemInfo,
    a: &Attrs,
    policy: &Policy,
    ids: &IdentityVerifier,
) -> Vec<FactRecord> {
    let mut out = Vec::new();
    let run_id = text(a, "cicd.pipeline.run.id");
    let change_id = text(a, "changetrail.change.id");
    let task_run_id = text(a, "cicd.pipeline.task.run.id");
    let task_type = text(a, "cicd.pipeline.task.type").unwrap_or_default();
    let src = info.source.as_str();
    let scope = change_id.clone().or_else(|| run_id.clone());
    let approval_event = text(a, "event.name").as_deref() == Some(super::contract::APPROVAL_EVENT);
    let decision = text(a, "changetrail.approval.decision").map(|d| d.to_ascii_lowercase());
    if decision.is_some()
        || approval_event
        || (task_run_id.is_some() && policy.is_approval(&task_type))
    {
        let decided = if info.source == Source::Log {
            info.start_ns
        } else {
            info.end_ns
        };
        let approver = ids.establish(
            text(a, "changetrail.approval.approver").as_deref(),
            text(a, "changetrail.approval.token").as_deref(),
            decided,
        );
        let key_part = task_run_id.clone().unwrap_or_else(|| {
            format!("{}@{decided}", approver.subject.clone().unwrap_or_default())
        });
        out.push(FactRecord {
            key: format!(
                "approval:{}:{key_part}:{src}",
                scope.clone().unwrap_or_default()
            ),
            change_id: change_id.clone(),
            run_id: run_id.clone(),
            source: info.source,
            time_ns: decided,
            fact: Fact::Approval(ApprovalFact {
                decision: decision.unwrap_or_else(|| "approved".into()),
                approver: Some(approver),
                requested_ns: time_attr(a, "changetrail.approval.requested_at")
                    .or((info.source == Source::Span).then_some(info.start_ns)),
                decided_ns: Some(decided),
                approved_subject: text(a, "changetrail.approval.subject"),
                task_run_id: task_run_id.clone(),
            }),
        });
        return out;
    }
    if let Some(task_run) = task_run_id {
        if !policy.is_deploy(&task_type) {
            return out; // builds and tests are kept as spans, but are not decisions or outcomes
        }
        let result = text(a, "cicd.pipeline.task.run.result")
            .map(|r| normalize_result(&r))
            .unwrap_or_else(|| {
                if info.error {
                    "failure".into()
                } else {
                    "success".into()
                }
            });
        let identity = match (
            text(a, "changetrail.identity.principal"),
            text(a, "changetrail.identity.token"),
        ) {
            (None, None) => None,
            (p, t) => Some(ids.establish(p.as_deref(), t.as_deref(), info.end_ns)),
        };
        out.push(FactRecord {
            key: format!(
                "task:{}:{task_run}:{src}",
                run_id.clone().or(change_id.clone()).unwrap_or_default()
            ),
            change_id,
            run_id,
            source: info.source,
            time_ns: info.end_ns,
            fact: Fact::Task(TaskFact {
                task: text(a, "cicd.pipeline.task.name").unwrap_or_else(|| task_type.clone()),
                task_run_id: task_run,
                task_type,
                attempt: text(a, "changetrail.task.attempt")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                retried_from: text(a, "changetrail.task.retried_from"),
                result,
                start_ns: info.start_ns,
                end_ns: info.end_ns,
                worker: text(a, "cicd.worker.id"),
                identity,
                trace_id: info.trace_id.clone(),
                span_id: info.span_id.clone(),
                reason: None,
            }),
        });
        return out;
    }
    // The run's own span: it says what the change is (a plain runtime span that only carries the
    // run id as a binding attribute says nothing of the kind).
    let describes_run = [
        "cicd.pipeline.name",
        "cicd.pipeline.result",
        "changetrail.change.kind",
        "changetrail.change.requester",
        "changetrail.target.service",
    ]
    .iter()
    .any(|k| a.contains_key(*k));
    let Some(id) = scope.filter(|_| describes_run) else {
        return out;
    };
    let requester = match (
        text(a, "changetrail.change.requester"),
        text(a, "changetrail.change.requester.token"),
    ) {
        (None, None) => None,
        (r, t) => Some(ids.establish(r.as_deref(), t.as_deref(), info.start_ns)),
    };
    let run_key = run_id.clone().unwrap_or_else(|| id.clone());
    out.push(FactRecord {
        key: format!("run:{run_key}:requested:{src}"),
        change_id: change_id.clone().or_else(|| run_id.clone()),
        run_id: run_id.clone(),
        source: info.source,
        time_ns: info.start_ns,
        fact: Fact::Change(ChangeFact {
            pipeline: text(a, "cicd.pipeline.name"),
            environment: text(a, "deployment.environment.name"),
            kind: text(a, "changetrail.change.kind").map(|k| k.to_ascii_lowercase()),
            service: text(a, "changetrail.target.service"),
            version: text(a, "changetrail.target.version"),
            artifact: text(a, "artifact.hash"),
            revision: text(a, "vcs.ref.head.revision"),
            rollback_of: text(a, "changetrail.change.rollback_of"),
            justification: text(a, "changetrail.change.justification"),
            requester,
            requested_ns: info.start_ns,
        }),
    });
    if let Some(result) = text(a, "cicd.pipeline.result") {
        out.push(FactRecord {
            key: format!("run:{run_key}:finished:{src}"),
            change_id: change_id.or(run_id.clone()),
            run_id,
            source: info.source,
            time_ns: info.end_ns,
            fact: Fact::RunFinished(RunFinishedFact {
                result: normalize_result(&result),
                end_ns: info.end_ns,
                compensation_run: None,
            }),
        });
    }
    out
}

/// The first sighting of a (service, environment, version) in production runtime telemetry.
pub fn version_fact(
    service: &str,
    environment: &str,
    version: &str,
    first_seen_ns: i64,
    trace_id: Option<String>,
) -> FactRecord {
    FactRecord {
        key: format!("version:{service}\u{1f}{environment}\u{1f}{version}"),
        change_id: None,
        run_id: None,
        source: Source::Span,
        time_ns: first_seen_ns,
        fact: Fact::Version(VersionFact {
            service: service.to_owned(),
            environment: environment.to_owned(),
            version: version.to_owned(),
            first_seen_ns,
            trace_id,
        }),
    }
}

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
fn ms(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::String(s) => s
            .parse::<i64>()
            .ok()
            .map(|t| t.saturating_mul(1_000_000))
            .or_else(|| rfc3339_ns(s)),
        _ => v.as_i64().map(|t| t.saturating_mul(1_000_000)),
    }
    .filter(|t| *t > 0)
}

fn s(v: &serde_json::Value, ptr: &str) -> Option<String> {
    v.pointer(ptr)
        .and_then(|x| x.as_str())
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
}

/// Maps `GET /api/workflow/{id}?includeTasks=true` output (or a status-listener message whose
/// `payload` is a WorkflowSummary) as CONVENTIONS.md says. `runtimeMetadata` is never read.
pub fn conductor_facts(
    doc: &serde_json::Value,
    policy: &Policy,
    ids: &IdentityVerifier,
) -> Result<ConductorImport, String> {
    let mut w = match doc.get("payload") {
        Some(p) if p.get("workflowId").is_some() => p.clone(),
        _ => doc.clone(),
    };
    // A WorkflowSummary carries input and output as JSON text.
    for k in ["input", "output"] {
        if let Some(serde_json::Value::String(text)) = w.get(k)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
        {
            w[k] = v;
        }
    }
    let w = &w;
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
    let start = ms(w.get("startTime").unwrap_or(&serde_json::Value::Null))
        .or_else(|| ms(w.get("createTime").unwrap_or(&serde_json::Value::Null)))
        .ok_or("workflow has no startTime")?;
    let status = s(w, "/status").unwrap_or_default();
    let mut facts = Vec::new();
    let requester_subject = s(w, "/input/change/requestedBy").or_else(|| s(w, "/createdBy"));
    let requester_token = s(w, "/input/change/requestToken");
    let requester = (requester_subject.is_some() || requester_token.is_some()).then(|| {
        ids.establish(
            requester_subject.as_deref(),
            requester_token.as_deref(),
            start,
        )
    });
    // A failure workflow's input names the workflow it compensates.
    let rollback_of = s(w, "/input/change/rollbackOf").or_else(|| {
        compensation
            .then(|| s(w, "/input/change/id").or_else(|| s(w, "/input/workflowId")))
            .flatten()
    });
    let image_tag =
        s(w, "/input/artifact/image").and_then(|i| i.rsplit_once(':').map(|(_, t)| t.to_owned()));
    // The compensation inherits the original's change type; it is a rollback all the same.
    let kind = if compensation {
        Some("rollback".to_owned())
    } else {
        s(w, "/input/change/type")
            .map(|k| k.to_ascii_lowercase())
            .or_else(|| rollback_of.as_ref().map(|_| "rollback".into()))
    };
    facts.push(FactRecord {
        key: format!("run:{run_id}:requested:conductor"),
        change_id: Some(change_id.clone()),
        run_id: Some(run_id.clone()),
        source: Source::Conductor,
        time_ns: start,
        fact: Fact::Change(ChangeFact {
            pipeline: s(w, "/workflowName").or_else(|| s(w, "/workflowType")),
            environment: s(w, "/input/environment"),
            kind,
            service: s(w, "/input/service"),
            version: s(w, "/output/deployedVersion").or(image_tag),
            artifact: s(w, "/input/artifact/digest"),
            revision: s(w, "/input/artifact/vcsRevision"),
            rollback_of,
            justification: s(w, "/input/change/justification"),
            requester,
            requested_ns: start,
        }),
    });
    if matches!(
        status.as_str(),
        "COMPLETED" | "FAILED" | "TIMED_OUT" | "TERMINATED"
    ) {
        let end = ms(w.get("endTime").unwrap_or(&serde_json::Value::Null)).unwrap_or(start);
        facts.push(FactRecord {
            key: format!("run:{run_id}:finished:conductor"),
            change_id: Some(change_id.clone()),
            run_id: Some(run_id.clone()),
            source: Source::Conductor,
            time_ns: end,
            fact: Fact::RunFinished(RunFinishedFact {
                result: normalize_result(&status),
                end_ns: end,
                compensation_run: s(w, "/output/conductor.failure_workflow"),
            }),
        });
    }
    let mut task_ids = BTreeSet::new();
    for t in w
        .get("tasks")
        .and_then(|t| t.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(task_id) = s(t, "/taskId") else {
            continue;
        };
        task_ids.insert(task_id.clone());
        let task_type = s(t, "/taskType").unwrap_or_default();
        let task_status = s(t, "/status").unwrap_or_default();
        let reference = s(t, "/referenceTaskName").unwrap_or_else(|| task_type.clone());
        let start_t = t.get("startTime").and_then(ms);
        let end_t = t.get("endTime").and_then(ms);
        if policy.is_approval(&task_type) || policy.is_approval(&reference) {
            let decision = match task_status.as_str() {
                "SKIPPED" => "skipped".to_owned(),
                "IN_PROGRESS" | "SCHEDULED" => "pending".to_owned(),
                _ => s(t, "/outputData/decision")
                    .map(|d| d.to_ascii_lowercase())
                    .unwrap_or_else(|| {
                        if task_status == "COMPLETED" {
                            "approved".into()
                        } else {
                            "rejected".into()
                        }
                    }),
            };
            let decided = s(t, "/outputData/approvedAt")
                .and_then(|a| rfc3339_ns(&a))
                .or(end_t);
            let approver = (decision != "skipped" && decision != "pending").then(|| {
                ids.establish(
                    s(t, "/outputData/approvedBy").as_deref(),
                    s(t, "/outputData/approvalToken").as_deref(),
                    decided.unwrap_or(start),
                )
            });
            facts.push(FactRecord {
                key: format!("approval:{change_id}:{task_id}:{decision}:conductor"),
                change_id: Some(change_id.clone()),
                run_id: Some(run_id.clone()),
                source: Source::Conductor,
                time_ns: decided.or(start_t).unwrap_or(start),
                fact: Fact::Approval(ApprovalFact {
                    decision,
                    approver,
                    requested_ns: start_t,
                    decided_ns: if task_status == "IN_PROGRESS" {
                        None
                    } else {
                        decided
                    },
                    approved_subject: s(t, "/inputData/artifactDigest"),
                    task_run_id: Some(task_id),
                }),
            });
            continue;
        }
        let terminal = matches!(
            task_status.as_str(),
            "COMPLETED"
                | "COMPLETED_WITH_ERRORS"
                | "FAILED"
                | "FAILED_WITH_TERMINAL_ERROR"
                | "TIMED_OUT"
                | "CANCELED"
                | "SKIPPED"
        );
        if !terminal || !(policy.is_deploy(&task_type) || policy.is_deploy(&reference)) {
            continue;
        }
        let end_ns = end_t.or(start_t).unwrap_or(start);
        facts.push(FactRecord {
            key: format!("task:{run_id}:{task_id}:conductor"),
            change_id: Some(change_id.clone()),
            run_id: Some(run_id.clone()),
            source: Source::Conductor,
            time_ns: end_ns,
            fact: Fact::Task(TaskFact {
                task: reference,
                task_run_id: task_id,
                task_type,
                attempt: t.get("retryCount").and_then(|r| r.as_u64()).unwrap_or(0) as u32,
                retried_from: s(t, "/retriedTaskId"),
                result: normalize_result(&task_status),
                start_ns: start_t.unwrap_or(end_ns),
                end_ns,
                worker: s(t, "/workerId"),
                identity: None,
                trace_id: s(t, "/outputData/trace_id"),
                span_id: s(t, "/outputData/span_id"),
                reason: s(t, "/reasonForIncompletion"),
            }),
        });
    }
    Ok(ConductorImport {
        run_id,
        change_id,
        facts,
        task_ids,
    })
}

/// History that vanished between imports of the same execution (Conductor `restart` wipes it).
pub fn rewritten(
    run_id: &str,
    change_id: &str,
    before: &BTreeSet<String>,
    now: &BTreeSet<String>,
    detected_ns: i64,
) -> Option<FactRecord> {
    let vanished: Vec<String> = before.difference(now).cloned().collect();
    if vanished.is_empty() {
        return None;
    }
    let digest = super::hash::Hash::of(&[vanished.join(",").as_bytes()]).to_hex();
    Some(FactRecord {
        key: format!("rewrite:{run_id}:{}", &digest[..16]),
        change_id: Some(change_id.to_owned()),
        run_id: Some(run_id.to_owned()),
        source: Source::Conductor,
        time_ns: detected_ns,
        fact: Fact::HistoryRewritten(RewriteFact {
            operation: "restart".into(),
            vanished_tasks: vanished,
            detected_ns,
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// The evidence packet.

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChangeView {
    pub id: String,
    pub runs: Vec<String>,
    pub kind: String,
    pub environment: Option<String>,
    pub production: bool,
    pub pipeline: Option<String>,
    pub service: Option<String>,
    pub version: Option<String>,
    pub artifact: Option<String>,
    pub revision: Option<String>,
    pub rollback_of: Option<String>,
    pub justification: Option<String>,
    pub requested_ns: Option<i64>,
    pub result: Option<String>,
    pub finished_ns: Option<i64>,
    pub compensation_runs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub task_run_id: String,
    pub retried_from: Option<String>,
    pub result: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub worker: Option<String>,
    pub identity: Option<Principal>,
    pub trace_id: Option<String>,
    pub reason: Option<String>,
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    pub task: String,
    pub task_type: String,
    pub attempts: Vec<AttemptView>,
    pub outcome: String,
    /// e.g. "3 attempts: 2 timed out, then succeeded".
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalView {
    pub decision: String,
    pub approver: Option<Principal>,
    pub requested_ns: Option<i64>,
    pub decided_ns: Option<i64>,
    pub approved_subject: Option<String>,
    pub method: Source,
    /// Decided before the first deploy attempt started (None when there was no deploy).
    pub before_first_deploy: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub requested_ns: Option<i64>,
    pub approved_ns: Option<i64>,
    pub first_deploy_start_ns: Option<i64>,
    pub deploy_end_ns: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub change: ChangeView,
    pub requester: Option<Principal>,
    pub approvals: Vec<ApprovalView>,
    pub timeline: Timeline,
    pub steps: Vec<StepView>,
    pub history_rewrites: Vec<RewriteFact>,
    /// Changes that roll this one back (found through their rollback_of).
    pub rolled_back_by: Vec<String>,
}

fn first<T: Clone>(items: impl Iterator<Item = Option<T>>) -> Option<T> {
    items.flatten().next()
}

/// Folds a change's facts into its evidence. Facts are put in a canonical order first, so the
/// result depends on the set of facts, never on their arrival order.
pub fn evidence(
    change_id: &str,
    facts: &[FactRecord],
    rolled_back_by: Vec<String>,
    policy: &Policy,
) -> Evidence {
    let mut facts: Vec<&FactRecord> = facts.iter().collect();
    facts.sort_by(|a, b| (a.time_ns, &a.key).cmp(&(b.time_ns, &b.key)));
    let changes: Vec<&ChangeFact> = facts
        .iter()
        .filter_map(|f| match &f.fact {
            Fact::Change(c) => Some(c),
            _ => None,
        })
        .collect();
    let mut runs: Vec<String> = facts
        .iter()
        .filter_map(|f| f.run_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    runs.sort();
    let environment = first(changes.iter().map(|c| c.environment.clone()));
    let finished: Vec<&RunFinishedFact> = facts
        .iter()
        .filter_map(|f| match &f.fact {
            Fact::RunFinished(r) => Some(r),
            _ => None,
        })
        .collect();
    let change = ChangeView {
        id: change_id.to_owned(),
        runs,
        kind: first(changes.iter().map(|c| c.kind.clone())).unwrap_or_else(|| "normal".into()),
        production: environment
            .as_deref()
            .is_some_and(|e| policy.is_production(e)),
        environment,
        pipeline: first(changes.iter().map(|c| c.pipeline.clone())),
        service: first(changes.iter().map(|c| c.service.clone())),
        version: first(changes.iter().map(|c| c.version.clone())),
        artifact: first(changes.iter().map(|c| c.artifact.clone())),
        revision: first(changes.iter().map(|c| c.revision.clone())),
        rollback_of: first(changes.iter().map(|c| c.rollback_of.clone())),
        justification: first(changes.iter().map(|c| c.justification.clone())),
        requested_ns: changes.iter().map(|c| c.requested_ns).min(),
        result: finished.last().map(|r| r.result.clone()),
        finished_ns: finished.iter().map(|r| r.end_ns).max(),
        compensation_runs: finished
            .iter()
            .filter_map(|r| r.compensation_run.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    // A verified requester wins over an asserted one; otherwise the first stated.
    let requester = changes
        .iter()
        .filter_map(|c| c.requester.clone())
        .max_by_key(|p| p.established.is_verified())
        .or_else(|| changes.iter().find_map(|c| c.requester.clone()));

    // Steps: attempts grouped by task, the same attempt from several sources merged.
    let mut by_task: BTreeMap<String, BTreeMap<String, AttemptView>> = BTreeMap::new();
    let mut task_types: BTreeMap<String, String> = BTreeMap::new();
    for f in &facts {
        let Fact::Task(t) = &f.fact else { continue };
        task_types
            .entry(t.task.clone())
            .or_insert_with(|| t.task_type.clone());
        let attempts = by_task.entry(t.task.clone()).or_default();
        let a = attempts
            .entry(t.task_run_id.clone())
            .or_insert_with(|| AttemptView {
                attempt: t.attempt,
                task_run_id: t.task_run_id.clone(),
                retried_from: t.retried_from.clone(),
                result: t.result.clone(),
                start_ns: t.start_ns,
                end_ns: t.end_ns,
                worker: t.worker.clone(),
                identity: t.identity.clone(),
                trace_id: t.trace_id.clone(),
                reason: t.reason.clone(),
                sources: Vec::new(),
            });
        if !a.sources.contains(&f.source) {
            a.sources.push(f.source);
            a.sources.sort();
        }
        a.retried_from = a.retried_from.clone().or(t.retried_from.clone());
        a.worker = a.worker.clone().or(t.worker.clone());
        a.trace_id = a.trace_id.clone().or(t.trace_id.clone());
        a.reason = a.reason.clone().or(t.reason.clone());
        if t.identity
            .as_ref()
            .is_some_and(|i| i.established.is_verified())
            || a.identity.is_none()
        {
            a.identity = t.identity.clone().or(a.identity.clone());
        }
    }
    let steps: Vec<StepView> = by_task
        .into_iter()
        .map(|(task, attempts)| {
            let mut attempts: Vec<AttemptView> = attempts.into_values().collect();
            attempts.sort_by(|a, b| {
                (a.attempt, a.start_ns, &a.task_run_id).cmp(&(
                    b.attempt,
                    b.start_ns,
                    &b.task_run_id,
                ))
            });
            let outcome = attempts
                .last()
                .map(|a| a.result.clone())
                .unwrap_or_default();
            let summary = summarize(&attempts);
            StepView {
                task_type: task_types.get(&task).cloned().unwrap_or_default(),
                task,
                attempts,
                outcome,
                summary,
            }
        })
        .collect();
    let first_deploy_start = steps
        .iter()
        .flat_map(|s| s.attempts.iter().map(|a| a.start_ns))
        .min();
    let deploy_end = steps
        .iter()
        .flat_map(|s| {
            s.attempts
                .iter()
                .filter(|a| a.result == "success")
                .map(|a| a.end_ns)
        })
        .max();

    // Approvals: one per decision; the same decision from several sources once (first kept).
    let mut approvals: Vec<ApprovalView> = Vec::new();
    for f in &facts {
        let Fact::Approval(a) = &f.fact else { continue };
        let same = approvals.iter().any(|v| {
            v.decision == a.decision
                && v.approver.as_ref().and_then(|p| p.subject.clone())
                    == a.approver.as_ref().and_then(|p| p.subject.clone())
        });
        if same && a.decision != "pending" {
            // Prefer the verified account of the same decision.
            let verified =
                |p: &Option<Principal>| p.as_ref().is_some_and(|p| p.established.is_verified());
            if let Some(v) = approvals.iter_mut().find(|v| v.decision == a.decision)
                && verified(&a.approver)
                && !verified(&v.approver)
            {
                v.approver = a.approver.clone();
            }
            continue;
        }
        if a.decision == "pending" && approvals.iter().any(|v| v.decision != "pending") {
            continue;
        }
        approvals.retain(|v| v.decision != "pending");
        approvals.push(ApprovalView {
            decision: a.decision.clone(),
            approver: a.approver.clone(),
            requested_ns: a.requested_ns,
            decided_ns: a.decided_ns,
            approved_subject: a.approved_subject.clone(),
            method: f.source,
            before_first_deploy: match (a.decided_ns, first_deploy_start) {
                (Some(d), Some(s)) => Some(d < s),
                _ => None,
            },
        });
    }
    let approved_ns = approvals
        .iter()
        .filter(|a| a.decision == "approved")
        .filter_map(|a| a.decided_ns)
        .min();
    let history_rewrites = facts
        .iter()
        .filter_map(|f| match &f.fact {
            Fact::HistoryRewritten(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    Evidence {
        timeline: Timeline {
            requested_ns: change.requested_ns,
            approved_ns,
            first_deploy_start_ns: first_deploy_start,
            deploy_end_ns: deploy_end,
        },
        change,
        requester,
        approvals,
        steps,
        history_rewrites,
        rolled_back_by,
    }
}

fn summarize(attempts: &[AttemptView]) -> String {
    let n = attempts.len();
    let Some(last) = attempts.last() else {
        return String::new();
    };
    let verb = |r: &str| {
        match r {
            "success" => "succeeded",
            "failure" => "failed",
            "timeout" => "timed out",
            "cancellation" => "was cancelled",
            "skip" => "was skipped",
            "error" => "errored",
            other => other,
        }
        .to_owned()
    };
    if n == 1 {
        return format!("1 attempt, {}", verb(&last.result));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in &attempts[..n - 1] {
        *counts.entry(verb(&a.result)).or_default() += 1;
    }
    let earlier: Vec<String> = counts.iter().map(|(v, c)| format!("{c} {v}")).collect();
    format!(
        "{n} attempts: {}, then {}",
        earlier.join(", "),
        verb(&last.result)
    )
}

/// Whether a deploy of `service` `version` into `environment` explains a version first seen at
/// `seen_ns`: the change deployed it and its deploy ran within `tolerance_ns` of the sighting.
pub fn explains(
    e: &Evidence,
    service: &str,
    environment: &str,
    version: &str,
    seen_ns: i64,
    tolerance_ns: i64,
) -> bool {
    let c = &e.change;
    let (from, to) = explained_window(e, tolerance_ns);
    c.service.as_deref() == Some(service)
        && c.version.as_deref() == Some(version)
        && c.environment
            .as_deref()
            .is_some_and(|env| env.eq_ignore_ascii_case(environment))
        && seen_ns >= from
        && seen_ns <= to
}

/// The first sightings a change can explain fall in this window (inclusive): its deploy (or its
/// request and finish) widened by the tolerance. Lets a caller read only those sightings.
pub fn explained_window(e: &Evidence, tolerance_ns: i64) -> (i64, i64) {
    let c = &e.change;
    let start = e
        .timeline
        .first_deploy_start_ns
        .or(c.requested_ns)
        .unwrap_or(i64::MIN);
    let end = e.timeline.deploy_end_ns.or(c.finished_ns).unwrap_or(start);
    (
        start.saturating_sub(tolerance_ns),
        end.saturating_add(tolerance_ns),
    )
}

/// Identity display helper for reports and the API.
pub fn established_label(p: &Option<Principal>) -> &'static str {
    match p {
        Some(Principal {
            established: Established::Verified { .. },
            ..
        }) => "verified",
        Some(_) => "asserted",
        None => "none",
    }
}
