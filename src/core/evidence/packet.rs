//! The evidence packet: what the fold (`fold`) gives for one change — what the change is, who
//! requested and approved it, its steps and their attempts, its timeline, every contradiction
//! and deciding fact — and the questions its readers ask of it.

use super::gate::GateFact;
use super::judge::Judgement;
use super::{RewriteFact, SentBy, Source};
use crate::core::evidence::identity::{Established, Principal};
use serde::Serialize;

/// What the change is, as its facts state it (contradictions resolved as `fold` says).
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
    /// Who sent what the change is (every sender of a change.requested fact).
    pub sent_by: Vec<SentBy>,
}

/// One attempt of a deploy step, merged from every source that reported it.
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
    pub credential_id: Option<String>,
    pub triggered_by: Option<String>,
    pub trace_id: Option<String>,
    pub reason: Option<String>,
    pub sources: Vec<Source>,
    /// When the service first received this attempt (its clock, signed with the entry).
    pub received_ns: i64,
    pub sent_by: Vec<SentBy>,
}

/// A deploy step and its attempts, in attempt order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    pub task: String,
    pub task_type: String,
    pub attempts: Vec<AttemptView>,
    pub outcome: String,
    /// e.g. "3 attempts: 2 timed out, then succeeded".
    pub summary: String,
}

/// One approval decision (or a pending request), with its receipt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalView {
    pub decision: String,
    /// What the sender wrote when it was no decision the model knows.
    pub stated_decision: Option<String>,
    pub approver: Option<Principal>,
    pub requested_ns: Option<i64>,
    pub decided_ns: Option<i64>,
    pub approved_subject: Option<String>,
    pub task_run_id: Option<String>,
    pub method: Source,
    /// Decided before the first deploy attempt started, by the stated times and by the
    /// receipts (None when there was no deploy); set by `judge`.
    pub before_first_deploy: Option<bool>,
    /// When the service received this decision, and the entry that records it.
    pub received_ns: i64,
    pub seq: u64,
    pub sent_by: Option<SentBy>,
}

/// The change's moments by the times its senders state (and the first deploy's receipt).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub requested_ns: Option<i64>,
    pub approved_ns: Option<i64>,
    pub first_deploy_start_ns: Option<i64>,
    pub deploy_end_ns: Option<i64>,
    /// When the service first received a deploy attempt of this change.
    pub deploy_received_ns: Option<i64>,
}

/// One statement of a field, with where and when it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatedValue {
    pub value: String,
    pub time_ns: i64,
    pub received_ns: i64,
    pub seq: u64,
    pub source: Source,
    pub sent_by: Option<SentBy>,
}

/// Facts about one change that say different things about the same field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// "environment", "approval appr-1 decision", "task t-7 result", ...
    pub field: String,
    /// Every distinct value, each with its first statement.
    pub values: Vec<StatedValue>,
}

/// A deciding fact (what the change is, an approval, a deploy attempt) with its receipt, for
/// judging lateness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// "change.requested", "approval by bob@example.com", "deploy attempt t-1", ...
    pub what: String,
    pub seq: u64,
    /// The latest time the sender states for it.
    pub stated_ns: i64,
    pub received_ns: i64,
    /// A wider allowance an import gave it.
    pub max_lateness_ns: Option<i64>,
}

/// One decision of the deploy gate about this change, with its entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateView {
    #[serde(flatten)]
    pub decided: GateFact,
    /// When the gate decided (its clock), and the entry that records it.
    pub decided_ns: i64,
    pub seq: u64,
    /// Who asked (the gate token's id and name).
    pub asked_by: Option<SentBy>,
}

/// Which part an identity played in a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityRole {
    Requester,
    Approver,
    Deployer,
}

impl IdentityRole {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityRole::Requester => "requester",
            IdentityRole::Approver => "approver",
            IdentityRole::Deployer => "deployer",
        }
    }
}

/// A credential an identity of this change used, and the first entry here that shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialUse {
    pub role: IdentityRole,
    pub subject: Option<String>,
    /// `sha256:<token digest>`, `jti:<issuer>#<jti>` or `key:<credential id>`.
    pub credential: String,
    pub seq: u64,
}

/// Everything one change's facts show, folded; `judge` fills in the judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub change: ChangeView,
    pub requester: Option<Principal>,
    pub approvals: Vec<ApprovalView>,
    pub timeline: Timeline,
    pub steps: Vec<StepView>,
    pub history_rewrites: Vec<RewriteFact>,
    /// The deploy gate's decisions, in entry order.
    pub gates: Vec<GateView>,
    /// Its service's runtime spans after the deploy against before it (the first comparison
    /// recorded), once the window has passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::core::runtime::Comparison>,
    /// Changes that roll this one back (found through their rollback_of).
    pub rolled_back_by: Vec<String>,
    /// Contradicting statements about this change, all kept.
    pub conflicts: Vec<Conflict>,
    /// The deciding facts with their receipts.
    pub deciding: Vec<Receipt>,
    pub credentials: Vec<CredentialUse>,
    /// What `judge` found looking beyond the change (empty until it runs).
    pub judgement: Judgement,
}

/// Whether the change put something in place: a deploy attempt that ran (a failed or cancelled
/// attempt may have applied part of it; only a skipped one did nothing), or, where no deploy
/// step was reported at all, a run that succeeded.
pub fn deployed(e: &Evidence) -> bool {
    let mut attempts = e.steps.iter().flat_map(|s| s.attempts.iter()).peekable();
    if attempts.peek().is_none() {
        return e.change.result.as_deref() == Some("success");
    }
    attempts.any(|a| a.result != "skip")
}

/// Whether the change's deploy completed: an attempt succeeded, or (no deploy step reported) the
/// run did.
pub fn deploy_succeeded(e: &Evidence) -> bool {
    let mut attempts = e.steps.iter().flat_map(|s| s.attempts.iter()).peekable();
    if attempts.peek().is_none() {
        return e.change.result.as_deref() == Some("success");
    }
    attempts.any(|a| a.result == "success")
}

/// The sightings a change can explain fall in this window (inclusive): its deploy (or its
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

/// Whether the change passed the deploy gate: the first decision that allowed what the change
/// (as its facts now stand) deploys, its environment and artifact; else the last denial (`None`:
/// no workflow asked, or only for another environment or artifact, which is no pass).
pub fn gate_outcome(e: &Evidence) -> Option<&GateView> {
    let c = &e.change;
    e.gates
        .iter()
        .find(|g| {
            g.decided.allowed()
                && c.environment
                    .as_deref()
                    .is_some_and(|env| env.eq_ignore_ascii_case(&g.decided.environment))
                && c.artifact.as_deref() == Some(g.decided.artifact_digest.as_str())
        })
        .or_else(|| e.gates.iter().rev().find(|g| !g.decided.allowed()))
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
