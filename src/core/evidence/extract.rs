//! What a span, log record or Conductor execution states, as facts (src/ingest/CONVENTIONS.md).
//! Tokens are verified here and never leave: a fact holds only the verdict and the token's digest.

use super::{
    ApprovalFact, AttrValue, Attrs, ChangeFact, Fact, FactRecord, Policy, RewriteFact,
    RunFinishedFact, SentBy, Source, TaskFact, VersionFact, decision,
};
use crate::core::evidence::identity::IdentityVerifier;
use crate::core::ledger::hash::Hash;
use crate::core::time::parse_rfc3339;
use std::collections::BTreeSet;

/// How an item reached the service: when (the receiver's clock), from whom, and how late it may
/// be (an import may allow more than the default).
#[derive(Debug, Clone, Default)]
pub struct Intake {
    pub received_ns: i64,
    pub sent_by: Option<SentBy>,
    /// A lateness allowance wider than `[evidence] max_lateness`, recorded in each fact.
    pub max_lateness_ns: Option<i64>,
    /// Event times further than this ahead of the receipt are refused (imports).
    pub max_clock_skew_ns: i64,
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

fn text(a: &Attrs, k: &str) -> Option<String> {
    a.get(k)
        .and_then(AttrValue::text)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn time_attr(a: &Attrs, k: &str) -> Option<i64> {
    match a.get(k)? {
        AttrValue::Int(i) => Some(*i),
        AttrValue::Str(s) => s.parse::<i64>().ok().or_else(|| parse_rfc3339(s)),
        _ => None,
    }
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

/// A stated decision as one of `decision::*`, and the stated text when it is none of them.
fn normalize_decision(stated: Option<&str>) -> (String, Option<String>) {
    let Some(s) = stated.map(str::trim).filter(|s| !s.is_empty()) else {
        return (decision::UNKNOWN.into(), None);
    };
    let known = match s.to_ascii_lowercase().as_str() {
        "approved" | "approve" => decision::APPROVED,
        "rejected" | "reject" | "denied" => decision::REJECTED,
        "skipped" => decision::SKIPPED,
        "pending" => decision::PENDING,
        _ => {
            return (
                decision::UNKNOWN.into(),
                Some(s.chars().take(200).collect()),
            );
        }
    };
    (known.into(), None)
}

/// What a fact is about and when its sender says it happened.
struct About {
    /// The key before the statement's digest: what the fact is about.
    base: String,
    change_id: Option<String>,
    run_id: Option<String>,
    source: Source,
    time_ns: i64,
    /// When the item stating it ended.
    until_ns: i64,
}

impl FactRecord {
    /// A fact under `about.base` with its statement's digest appended, so a repeat is the same
    /// key and a contradiction is a new one.
    fn stated(about: About, intake: &Intake, fact: Fact) -> FactRecord {
        let About {
            base,
            change_id,
            run_id,
            source,
            time_ns,
            until_ns,
        } = about;
        let mut f = FactRecord {
            key: base,
            change_id,
            run_id,
            source,
            time_ns,
            stated_until_ns: (until_ns > time_ns).then_some(until_ns),
            sent_by: intake.sent_by.clone(),
            max_lateness_ns: intake.max_lateness_ns,
            fact,
        };
        f.key = format!("{}:{}", f.key, f.statement_digest());
        f
    }

    /// A digest of what the sender stated: not who sent it, how late it may be, or how a token
    /// verified (that depends on when it arrived): a token is named by its digest alone.
    fn statement_digest(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for k in ["key", "sent_by", "max_lateness_ns"] {
                o.remove(k);
            }
        }
        reduce_principals(&mut v);
        let text = v.to_string();
        Hash::of(&[b"changetrail/fact-statement/v1\n", text.as_bytes()]).to_hex()[..16].to_owned()
    }
}

/// A principal as stated (subject and token digest) and whether its token verified — not why
/// or when: a statement re-sent after the issuer's keys arrived is a new fact (verified), one
/// re-sent unchanged is the same fact.
fn reduce_principals(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.contains_key("established") {
                o.retain(|k, _| k == "subject" || k == "token_sha256" || k == "established");
            } else {
                o.values_mut().for_each(reduce_principals);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(reduce_principals),
        _ => {}
    }
}

/// Facts a kept span or log record states, by the ingest contract.
pub fn facts_from_item(
    info: &ItemInfo,
    a: &Attrs,
    policy: &Policy,
    ids: &IdentityVerifier,
    intake: &Intake,
) -> Vec<FactRecord> {
    let mut out = Vec::new();
    let run_id = text(a, "cicd.pipeline.run.id");
    let change_id = text(a, "changetrail.change.id");
    let task_run_id = text(a, "cicd.pipeline.task.run.id");
    let task_type = text(a, "cicd.pipeline.task.type").unwrap_or_default();
    let src = info.source.as_str();
    let scope = change_id.clone().or_else(|| run_id.clone());
    let received = intake.received_ns;
    let approval_event =
        text(a, "event.name").as_deref() == Some(crate::core::evidence::contract::APPROVAL_EVENT);
    let stated_decision = text(a, "changetrail.approval.decision");
    if stated_decision.is_some()
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
            received,
        );
        let key_part = task_run_id.clone().unwrap_or_else(|| {
            format!("{}@{decided}", approver.subject.clone().unwrap_or_default())
        });
        let (decision, stated_decision) = normalize_decision(stated_decision.as_deref());
        out.push(FactRecord::stated(
            About {
                base: format!(
                    "approval:{}:{key_part}:{src}",
                    scope.clone().unwrap_or_default()
                ),
                change_id: change_id.clone(),
                run_id: run_id.clone(),
                source: info.source,
                time_ns: decided,
                until_ns: info.end_ns,
            },
            intake,
            Fact::Approval(ApprovalFact {
                decision,
                stated_decision,
                approver: Some(approver),
                requested_ns: time_attr(a, "changetrail.approval.requested_at")
                    .or((info.source == Source::Span).then_some(info.start_ns)),
                decided_ns: Some(decided),
                approved_subject: text(a, "changetrail.approval.subject"),
                task_run_id: task_run_id.clone(),
            }),
        ));
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
            (p, t) => Some(ids.establish(p.as_deref(), t.as_deref(), info.end_ns, received)),
        };
        out.push(FactRecord::stated(
            About {
                base: format!(
                    "task:{}:{task_run}:{src}",
                    run_id.clone().or(change_id.clone()).unwrap_or_default()
                ),
                change_id,
                run_id,
                source: info.source,
                time_ns: info.end_ns,
                until_ns: info.end_ns,
            },
            intake,
            Fact::Task(TaskFact {
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
                credential_id: text(a, "changetrail.identity.credential_id"),
                triggered_by: text(a, "changetrail.task.triggered_by"),
                trace_id: info.trace_id.clone(),
                span_id: info.span_id.clone(),
                reason: None,
            }),
        ));
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
        (r, t) => Some(ids.establish(r.as_deref(), t.as_deref(), info.start_ns, received)),
    };
    let run_key = run_id.clone().unwrap_or_else(|| id.clone());
    out.push(FactRecord::stated(
        About {
            base: format!("run:{run_key}:requested:{src}"),
            change_id: change_id.clone().or_else(|| run_id.clone()),
            run_id: run_id.clone(),
            source: info.source,
            time_ns: info.start_ns,
            until_ns: info.end_ns,
        },
        intake,
        Fact::Change(ChangeFact {
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
    ));
    if let Some(result) = text(a, "cicd.pipeline.result") {
        out.push(FactRecord::stated(
            About {
                base: format!("run:{run_key}:finished:{src}"),
                change_id: change_id.or(run_id.clone()),
                run_id,
                source: info.source,
                time_ns: info.end_ns,
                until_ns: info.end_ns,
            },
            intake,
            Fact::RunFinished(RunFinishedFact {
                result: normalize_result(&result),
                end_ns: info.end_ns,
                compensation_run: None,
            }),
        ));
    }
    out
}

/// A production version seen running: its first sighting, or its return after another version
/// ran (`previous`). Sightings of the same return by several receivers within one `window_ns`
/// share a key and are stored once.
pub fn version_fact(v: VersionFact, window_ns: i64, intake: &Intake) -> FactRecord {
    let bucket = v.first_seen_ns.div_euclid(window_ns.max(1));
    FactRecord {
        key: format!(
            "{}@{bucket}",
            version_key_prefix(&v.service, &v.environment, &v.version)
        ),
        change_id: None,
        run_id: None,
        source: Source::Span,
        time_ns: v.first_seen_ns,
        stated_until_ns: None,
        sent_by: intake.sent_by.clone(),
        max_lateness_ns: None,
        fact: Fact::Version(v),
    }
}

/// The key prefix of every sighting of (service, environment, version), the environment in
/// lower case (as the rules compare it): what "was this version seen before" looks up.
pub fn version_key_prefix(service: &str, environment: &str, version: &str) -> String {
    format!(
        "{}{version}",
        service_key_prefix(service, &environment.to_ascii_lowercase())
    )
}

/// The key prefix of every sighting of any version of (service, environment), as given.
pub fn service_key_prefix(service: &str, environment: &str) -> String {
    format!("version:{service}\u{1f}{environment}\u{1f}")
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
            .or_else(|| parse_rfc3339(s)),
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
/// `payload` is a WorkflowSummary) as src/ingest/CONVENTIONS.md says. `runtimeMetadata` is never
/// read. An execution that states a time further ahead of its receipt than the allowed clock skew
/// is refused whole: its times cannot be weighed.
pub fn conductor_facts(
    doc: &serde_json::Value,
    policy: &Policy,
    ids: &IdentityVerifier,
    intake: &Intake,
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
    let received = intake.received_ns;
    let future = |t: Option<i64>, what: &str| -> Result<(), String> {
        match t {
            Some(t) if t > received.saturating_add(intake.max_clock_skew_ns) => Err(format!(
                "{what} of workflow {run_id} is {} in the future of the receiver's clock \
                 (at most {} is accepted)",
                crate::core::evidence::rules::human_duration(t - received),
                crate::core::evidence::rules::human_duration(intake.max_clock_skew_ns)
            )),
            _ => Ok(()),
        }
    };
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
    future(Some(start), "the start")?;
    let status = s(w, "/status").unwrap_or_default();
    let mut facts = Vec::new();
    let requester_subject = s(w, "/input/change/requestedBy").or_else(|| s(w, "/createdBy"));
    let requester_token = s(w, "/input/change/requestToken");
    let requester = (requester_subject.is_some() || requester_token.is_some()).then(|| {
        ids.establish(
            requester_subject.as_deref(),
            requester_token.as_deref(),
            start,
            received,
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
    let fact = |base: String, time_ns: i64, fact: Fact| {
        FactRecord::stated(
            About {
                base,
                change_id: Some(change_id.clone()),
                run_id: Some(run_id.clone()),
                source: Source::Conductor,
                time_ns,
                until_ns: time_ns,
            },
            intake,
            fact,
        )
    };
    facts.push(fact(
        format!("run:{run_id}:requested:conductor"),
        start,
        Fact::Change(ChangeFact {
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
    ));
    if matches!(
        status.as_str(),
        "COMPLETED" | "FAILED" | "TIMED_OUT" | "TERMINATED"
    ) {
        let end = ms(w.get("endTime").unwrap_or(&serde_json::Value::Null)).unwrap_or(start);
        future(Some(end), "the end")?;
        facts.push(fact(
            format!("run:{run_id}:finished:conductor"),
            end,
            Fact::RunFinished(RunFinishedFact {
                result: normalize_result(&status),
                end_ns: end,
                compensation_run: s(w, "/output/conductor.failure_workflow"),
            }),
        ));
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
        future(start_t.max(end_t), &format!("task {task_id}"))?;
        if policy.is_approval(&task_type) || policy.is_approval(&reference) {
            let (decision, stated_decision) = match task_status.as_str() {
                "SKIPPED" => (decision::SKIPPED.to_owned(), None),
                "IN_PROGRESS" | "SCHEDULED" => (decision::PENDING.to_owned(), None),
                status => match s(t, "/outputData/decision") {
                    Some(d) => normalize_decision(Some(&d)),
                    // A completed step that says nothing is not an approval; a failed one
                    // is a rejection; one that ran out of time was never decided.
                    None => match status {
                        "COMPLETED" => (decision::UNKNOWN.to_owned(), None),
                        "TIMED_OUT" | "CANCELED" => (decision::EXPIRED.to_owned(), None),
                        _ => (decision::REJECTED.to_owned(), None),
                    },
                },
            };
            let decided = s(t, "/outputData/approvedAt")
                .and_then(|a| parse_rfc3339(&a))
                .or(end_t);
            future(decided, &format!("the decision of task {task_id}"))?;
            let approver =
                (decision != decision::SKIPPED && decision != decision::PENDING).then(|| {
                    ids.establish(
                        s(t, "/outputData/approvedBy").as_deref(),
                        s(t, "/outputData/approvalToken").as_deref(),
                        decided.unwrap_or(start),
                        received,
                    )
                });
            facts.push(fact(
                format!("approval:{change_id}:{task_id}:{decision}:conductor"),
                decided.or(start_t).unwrap_or(start),
                Fact::Approval(ApprovalFact {
                    decision,
                    stated_decision,
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
            ));
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
        facts.push(fact(
            format!("task:{run_id}:{task_id}:conductor"),
            end_ns,
            Fact::Task(TaskFact {
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
                credential_id: None,
                triggered_by: s(t, "/inputData/triggeredBy"),
                trace_id: s(t, "/outputData/trace_id"),
                span_id: s(t, "/outputData/span_id"),
                reason: s(t, "/reasonForIncompletion"),
            }),
        ));
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

    /// Ingest copies only attributes in the rules' namespaces for the rules; every attribute
    /// name this file reads must be among them, or the rules would silently never see it.
    #[test]
    fn every_key_the_rules_read_is_copied_for_them() {
        let src = include_str!("extract.rs");
        let mut checked = 0;
        for lit in src.split('"').skip(1).step_by(2) {
            let dotted = !lit.ends_with(".rs")
                && lit.contains('.')
                && lit.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                });
            if dotted {
                assert!(crate::core::evidence::contract::is_rule_key(lit), "{lit}");
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
    }
    use super::*;
    use crate::core::evidence::identity::IdentityVerifier;

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttrValue::Str(v.to_string())))
            .collect()
    }

    fn info(start: i64, end: i64) -> ItemInfo {
        ItemInfo {
            source: Source::Span,
            start_ns: start,
            end_ns: end,
            error: false,
            trace_id: None,
            span_id: None,
        }
    }

    fn intake(name: &str) -> Intake {
        Intake {
            received_ns: 100,
            sent_by: Some(SentBy {
                token_id: Some("t1".into()),
                name: name.into(),
            }),
            max_lateness_ns: None,
            max_clock_skew_ns: 0,
        }
    }

    fn run(env: &str) -> Attrs {
        attrs(&[
            ("cicd.pipeline.run.id", "wf-1"),
            ("changetrail.change.id", "CHG-1"),
            ("cicd.pipeline.name", "deploy"),
            ("deployment.environment.name", env),
        ])
    }

    #[test]
    fn a_repeat_is_one_key_and_a_contradiction_another() {
        let (p, ids) = (Policy::default(), IdentityVerifier::default());
        let a = facts_from_item(&info(1, 2), &run("production"), &p, &ids, &intake("a"));
        // The same statement from another sender, later: the same fact.
        let mut later = intake("b");
        later.received_ns = 500;
        let b = facts_from_item(&info(1, 2), &run("production"), &p, &ids, &later);
        assert_eq!(a[0].key, b[0].key);
        let c = facts_from_item(&info(1, 2), &run("staging"), &p, &ids, &intake("a"));
        assert_ne!(a[0].key, c[0].key);
        assert!(
            a[0].key.starts_with("run:wf-1:requested:span:"),
            "{}",
            a[0].key
        );
        assert_eq!(a[0].sent_by.as_ref().unwrap().name, "a");
        assert_eq!(a[0].stated_until_ns, Some(2));
        assert_eq!(a[0].stated_ns(), 2);
    }

    #[test]
    fn an_approval_without_a_decision_is_unknown_never_approved() {
        let (p, ids) = (Policy::default(), IdentityVerifier::default());
        let mut a = attrs(&[
            ("changetrail.change.id", "CHG-1"),
            ("cicd.pipeline.task.run.id", "t-appr"),
            ("cicd.pipeline.task.type", "approval"),
            ("changetrail.approval.approver", "bob"),
        ]);
        let f = facts_from_item(&info(1, 2), &a, &p, &ids, &intake("a"));
        let Fact::Approval(x) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(x.decision, decision::UNKNOWN);
        assert_eq!(x.stated_decision, None);
        a.insert(
            "changetrail.approval.decision".into(),
            AttrValue::Str("LGTM".into()),
        );
        let f = facts_from_item(&info(1, 2), &a, &p, &ids, &intake("a"));
        let Fact::Approval(x) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(x.decision, decision::UNKNOWN);
        assert_eq!(x.stated_decision.as_deref(), Some("LGTM"));
        a.insert(
            "changetrail.approval.decision".into(),
            AttrValue::Str("Approved".into()),
        );
        let f = facts_from_item(&info(1, 2), &a, &p, &ids, &intake("a"));
        let Fact::Approval(x) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(x.decision, decision::APPROVED);
    }

    #[test]
    fn a_conductor_execution_from_the_future_is_refused() {
        let (p, ids) = (Policy::default(), IdentityVerifier::default());
        let doc = serde_json::json!({"workflowId": "wf", "startTime": 10_000, "status": "RUNNING"});
        let mut i = intake("imp");
        i.received_ns = 10_000 * 1_000_000 - 1;
        i.max_clock_skew_ns = 0;
        let e = conductor_facts(&doc, &p, &ids, &i).unwrap_err();
        assert!(e.contains("in the future"), "{e}");
        i.max_clock_skew_ns = 1;
        assert!(conductor_facts(&doc, &p, &ids, &i).is_ok());
    }

    #[test]
    fn a_completed_human_task_without_a_decision_is_not_an_approval() {
        let (p, ids) = (Policy::default(), IdentityVerifier::default());
        let doc = serde_json::json!({"workflowId": "wf", "startTime": 1, "status": "RUNNING",
        "tasks": [
            {"taskId": "h1", "taskType": "HUMAN", "status": "COMPLETED", "startTime": 2, "endTime": 3},
            {"taskId": "h2", "taskType": "HUMAN", "status": "TIMED_OUT", "startTime": 2, "endTime": 3},
            {"taskId": "h3", "taskType": "HUMAN", "status": "COMPLETED", "startTime": 2, "endTime": 3,
             "outputData": {"decision": "APPROVED", "approvedBy": "bob"}}
        ]});
        let mut i = intake("imp");
        i.received_ns = i64::MAX / 2;
        let imp = conductor_facts(&doc, &p, &ids, &i).unwrap();
        let decisions: Vec<String> = imp
            .facts
            .iter()
            .filter_map(|f| match &f.fact {
                Fact::Approval(a) => Some(a.decision.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(decisions, ["unknown", "expired", "approved"]);
    }
}
