//! What an import of a Conductor execution observed (its status and a digest of each task's
//! content), and how a later observation of the same run differs from an earlier one: the
//! history-rewriting operations Conductor offers (restart, rerun, retry, skip, task removal,
//! in-place edits, deletion) told apart from a run that merely advanced.
//!
//! Growth is not a rewrite: a task moving SCHEDULED → IN_PROGRESS → COMPLETED, tasks appended
//! to a running run, an automatic retry appended as a new task. What was already finished and
//! recorded changing or vanishing is.

use super::statement::Intake;
use super::{Fact, FactRecord, RewriteFact, Source};
use crate::core::ledger::hash::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One rewrite kind per Conductor operation that changes recorded history.
pub mod kind {
    /// Every earlier task is gone (Conductor `restart`, or a rerun from the first task).
    pub const RESTART: &str = "restart";
    /// Earlier tasks from some point on were replaced (Conductor `rerun` from a task).
    pub const RERUN: &str = "rerun";
    /// A finished run (or task) is running again with its history kept (Conductor `retry`).
    pub const RETRY: &str = "retry";
    /// A task was changed to SKIPPED, or added already skipped (Conductor `skip`).
    pub const SKIP: &str = "skip";
    /// A task vanished while earlier and later ones stayed.
    pub const REMOVE: &str = "remove";
    /// A finished task's (or run's) recorded status, output or timing changed in place.
    pub const EDIT: &str = "edit";
    /// The execution no longer exists (Conductor `DELETE /api/workflow/{id}`).
    pub const DELETE: &str = "delete";
}

/// The state of one execution as one full import (a document with `tasks`) saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedRun {
    /// The workflow's `status`.
    pub status: String,
    /// Its tasks in Conductor's order.
    pub tasks: Vec<ObservedTask>,
    /// The execution's `updateTime` (epoch ms), capped at the receipt so a value stated in the
    /// future cannot make one observation outrank every later one: which of two observations
    /// is the fresher, when fetches race. Absent from observations recorded before it was (so
    /// those still serialize as signed) and from documents that state none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time_ms: Option<i64>,
}

/// One task execution as observed, with a digest of its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedTask {
    pub task_id: String,
    pub reference: String,
    pub task_type: String,
    pub status: String,
    #[serde(default)]
    pub retry_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<i64>,
    /// SHA-256 (hex) of `outputData` in canonical JSON (sorted keys).
    pub output_digest: String,
    /// SHA-256 (hex) of the task's recorded content: status, outputData, times, retry count and
    /// `reasonForIncompletion`, in canonical JSON.
    pub digest: String,
}

/// One task's part in a rewrite: what it was and what it is now (absent when it vanished or
/// is new), and which of its recorded fields changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskChange {
    /// One of `kind::*`.
    pub kind: String,
    pub task_id: String,
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<ObservedTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ObservedTask>,
    /// `status`, `outputData`, `timing`, `retryCount`, `reasonForIncompletion`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

/// Conductor task statuses after which the task no longer runs.
pub(super) fn task_terminal(status: &str) -> bool {
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

/// Conductor workflow statuses after which the run no longer runs.
fn run_terminal(status: &str) -> bool {
    matches!(status, "COMPLETED" | "FAILED" | "TIMED_OUT" | "TERMINATED")
}

/// JSON with every object's keys sorted, so equal content has one spelling whatever order
/// Conductor (or a proxy) wrote it in.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            v => v.clone(),
        }
    }
    sort(v).to_string()
}

fn digest(label: &str, v: &Value) -> String {
    Hash::of(&[label.as_bytes(), b"\n", canonical(v).as_bytes()]).to_hex()
}

impl ObservedTask {
    /// Reads one entry of an execution's `tasks` (`None` without a `taskId`). `ms` turns a
    /// Conductor time into nanoseconds.
    pub(super) fn read(t: &Value, ms: fn(&Value) -> Option<i64>) -> Option<ObservedTask> {
        let text = |k: &str| {
            t.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let task_id = text("taskId");
        if task_id.is_empty() {
            return None;
        }
        let task_type = text("taskType");
        let reference = Some(text("referenceTaskName"))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| task_type.clone());
        let null = Value::Null;
        let output = t.get("outputData").unwrap_or(&null);
        let start_ns = t.get("startTime").and_then(ms);
        let end_ns = t.get("endTime").and_then(ms);
        let retry_count = t.get("retryCount").and_then(Value::as_u64).unwrap_or(0);
        let content = serde_json::json!({
            "status": text("status"),
            "outputData": output,
            "startTime": start_ns,
            "endTime": end_ns,
            "retryCount": retry_count,
            "reasonForIncompletion": t.get("reasonForIncompletion").unwrap_or(&null),
        });
        Some(ObservedTask {
            status: text("status"),
            output_digest: digest("changetrail/conductor-output/v1", output),
            digest: digest("changetrail/conductor-task/v1", &content),
            task_id,
            reference,
            task_type,
            retry_count,
            start_ns,
            end_ns,
        })
    }

    /// The recorded fields that differ from `other`.
    fn changed_fields(&self, other: &ObservedTask) -> Vec<String> {
        let mut out = Vec::new();
        if self.status != other.status {
            out.push("status");
        }
        if self.output_digest != other.output_digest {
            out.push("outputData");
        }
        if (self.start_ns, self.end_ns) != (other.start_ns, other.end_ns) {
            out.push("timing");
        }
        if self.retry_count != other.retry_count {
            out.push("retryCount");
        }
        if out.is_empty() && self.digest != other.digest {
            out.push("reasonForIncompletion");
        }
        out.into_iter().map(str::to_owned).collect()
    }
}

impl ObservedRun {
    /// A digest of the whole observation (what two imports compare first).
    pub fn digest(&self) -> String {
        // The content alone: an update that changed nothing is the same state, and the digests
        // rewrites recorded before `update_time_ms` existed stay what they were.
        let content = ObservedRun {
            update_time_ms: None,
            ..self.clone()
        };
        let v = serde_json::to_value(&content).unwrap_or_default();
        digest("changetrail/conductor-run/v1", &v)
    }

    /// Whether this is an older state of the run than `baseline`: both state an updateTime and
    /// this one's is earlier. Such a fetch lost a race with a fresher one; comparing it would
    /// show the fresher state's progress as history that vanished.
    pub fn older_than(&self, baseline: &ObservedRun) -> bool {
        matches!(
            (self.update_time_ms, baseline.update_time_ms),
            (Some(now), Some(then)) if now < then
        )
    }
}

/// What changed between two observations of one run, if any of it rewrites history.
pub fn compare(before: &ObservedRun, now: &ObservedRun) -> Option<RewriteFact> {
    let mut changes = Vec::new();
    let kept: Vec<&ObservedTask> = before
        .tasks
        .iter()
        .filter(|b| now.tasks.iter().any(|n| n.task_id == b.task_id))
        .collect();
    // Where each earlier task stood, to tell a replaced tail (rerun) from a hole (remove).
    let last_kept = before
        .tasks
        .iter()
        .rposition(|b| kept.iter().any(|k| k.task_id == b.task_id));
    for (i, b) in before.tasks.iter().enumerate() {
        match now.tasks.iter().find(|n| n.task_id == b.task_id) {
            None => {
                let k = match last_kept {
                    None => kind::RESTART,
                    Some(last) if i > last => kind::RERUN,
                    Some(_) => kind::REMOVE,
                };
                changes.push(change(k, Some(b), None));
            }
            Some(n) if n.digest != b.digest => {
                let k = if n.status == "SKIPPED" && b.status != "SKIPPED" {
                    kind::SKIP
                } else if task_terminal(&b.status) && !task_terminal(&n.status) {
                    kind::RETRY
                } else if task_terminal(&b.status) {
                    kind::EDIT
                } else {
                    continue; // a running task advancing
                };
                changes.push(change(k, Some(b), Some(n)));
            }
            Some(_) => {}
        }
    }
    let added: Vec<&ObservedTask> = now
        .tasks
        .iter()
        .filter(|n| !before.tasks.iter().any(|b| b.task_id == n.task_id))
        .collect();
    for n in &added {
        if n.status == "SKIPPED" {
            changes.push(change(kind::SKIP, None, Some(n)));
        }
    }
    // A finished run that runs again, or grew, with its earlier tasks kept, was retried; one
    // whose final status changed with nothing else happening was edited.
    let mut run_kind = None;
    let vanished = changes.iter().any(|c| c.after.is_none());
    if run_terminal(&before.status) && !vanished {
        if !run_terminal(&now.status) || !added.is_empty() {
            run_kind = Some(kind::RETRY);
        } else if now.status != before.status {
            run_kind = Some(kind::EDIT);
        }
    }
    if changes.is_empty() && run_kind.is_none() {
        return None;
    }
    let mut kinds: Vec<String> = changes.iter().map(|c| c.kind.clone()).collect();
    kinds.extend(run_kind.map(str::to_owned));
    kinds.sort_by_key(|k| order(k));
    kinds.dedup();
    Some(RewriteFact {
        operation: kinds[0].clone(),
        vanished_tasks: vanished_ids(&changes),
        detected_ns: 0,
        kinds,
        tasks: changes,
        run_status_before: (before.status != now.status).then(|| before.status.clone()),
        run_status_after: (before.status != now.status).then(|| now.status.clone()),
        before_digest: Some(before.digest()),
        after_digest: Some(now.digest()),
    })
}

/// The run as last observed, now gone from Conductor: every task it held vanished.
pub fn deleted(before: &ObservedRun) -> RewriteFact {
    let tasks: Vec<TaskChange> = before
        .tasks
        .iter()
        .map(|b| change(kind::DELETE, Some(b), None))
        .collect();
    RewriteFact {
        operation: kind::DELETE.into(),
        vanished_tasks: vanished_ids(&tasks),
        detected_ns: 0,
        kinds: vec![kind::DELETE.into()],
        tasks,
        run_status_before: Some(before.status.clone()),
        run_status_after: None,
        before_digest: Some(before.digest()),
        after_digest: None,
    }
}

/// The most drastic first: what the rule's evidence text leads with.
fn order(kind: &str) -> usize {
    [
        kind::DELETE,
        kind::RESTART,
        kind::RERUN,
        kind::REMOVE,
        kind::EDIT,
        kind::SKIP,
        kind::RETRY,
    ]
    .iter()
    .position(|k| *k == kind)
    .unwrap_or(usize::MAX)
}

fn vanished_ids(changes: &[TaskChange]) -> Vec<String> {
    let mut v: Vec<String> = changes
        .iter()
        .filter(|c| c.after.is_none())
        .map(|c| c.task_id.clone())
        .collect();
    v.sort();
    v
}

fn change(kind: &str, before: Option<&ObservedTask>, after: Option<&ObservedTask>) -> TaskChange {
    let either = before.or(after);
    TaskChange {
        kind: kind.into(),
        task_id: either.map(|t| t.task_id.clone()).unwrap_or_default(),
        reference: either.map(|t| t.reference.clone()).unwrap_or_default(),
        changed: match (before, after) {
            (Some(b), Some(a)) => b.changed_fields(a),
            _ => Vec::new(),
        },
        before: before.cloned(),
        after: after.cloned(),
    }
}

/// A rewrite as a fact about the run, noticed at the intake's receipt. The key names the two
/// observations compared, so noticing the same difference again is the same fact.
pub fn rewrite_fact(
    run_id: &str,
    change_id: &str,
    rewrite: RewriteFact,
    intake: &Intake,
) -> FactRecord {
    let id = Hash::of(&[
        rewrite.before_digest.as_deref().unwrap_or("").as_bytes(),
        b"\n",
        rewrite
            .after_digest
            .as_deref()
            .unwrap_or("deleted")
            .as_bytes(),
    ]);
    record(run_id, change_id, &id, rewrite, intake)
}

/// The fact recording `rewrite` of run `run_id`, keyed `rewrite:RUN:` and the first 16 hex
/// digits of `id` (what makes two notices of one rewrite the same fact).
pub(super) fn record(
    run_id: &str,
    change_id: &str,
    id: &Hash,
    mut rewrite: RewriteFact,
    intake: &Intake,
) -> FactRecord {
    let detected_ns = intake.received_ns;
    rewrite.detected_ns = detected_ns;
    FactRecord {
        key: format!("rewrite:{run_id}:{}", &id.to_hex()[..16]),
        change_id: Some(change_id.to_owned()),
        run_id: Some(run_id.to_owned()),
        source: Source::Conductor,
        time_ns: detected_ns,
        stated_until_ns: None,
        sent_by: intake.sent_by.clone(),
        max_lateness_ns: None,
        fact: Fact::HistoryRewritten(rewrite),
    }
}

/// One line saying what a rewrite did, for the HISTORY_REWRITTEN evidence.
pub fn describe(r: &RewriteFact) -> String {
    if r.tasks.is_empty() && r.kinds.is_empty() {
        // Recorded before rewrites carried a diff: only the vanished ids are known.
        return format!(
            "{}: {} earlier task records vanished",
            r.operation,
            r.vanished_tasks.len()
        );
    }
    let mut parts: Vec<String> = r
        .tasks
        .iter()
        .map(|c| {
            let name = format!("{} ({})", c.reference, c.task_id);
            match (&c.before, &c.after) {
                (Some(b), None) => format!("{} {name} {} vanished", c.kind, b.status),
                (None, Some(a)) => format!("{} {name} added {}", c.kind, a.status),
                (Some(b), Some(a)) => format!(
                    "{} {name} {}→{} ({} changed)",
                    c.kind,
                    b.status,
                    a.status,
                    c.changed.join(", ")
                ),
                (None, None) => format!("{} {name}", c.kind),
            }
        })
        .collect();
    if let Some(b) = &r.run_status_before {
        let after = r.run_status_after.as_deref().unwrap_or("gone");
        parts.insert(0, format!("run {b}→{after}"));
    }
    format!("{}: {}", r.kinds.join(", "), parts.join("; "))
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
