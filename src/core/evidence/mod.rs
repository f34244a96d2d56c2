//! The evidence model: facts about changes extracted from spans, log records and Conductor
//! executions (src/ingest/CONVENTIONS.md), and the evidence packet folded from them.
//!
//! - `spans` and `conductor`: what a span or log record, or a Conductor execution, states, as
//!   facts (`statement` holds what they share). A fact's key names what it is about plus a digest
//!   of what it states, so a retry or re-import is one fact and a contradicting statement is a
//!   fact of its own: nothing a sender says is dropped.
//! - `fold`: a change's facts, in a canonical order, folded into its evidence (`packet`), with
//!   every contradiction kept as a conflict. The same facts give the same evidence whatever order
//!   they arrived in.
//! - `judge`: what the fold cannot know alone: the other changes (token and credential reuse,
//!   rollback targets, earlier versions) and the settings that turn times into verdicts (receipt
//!   tolerance, lateness, bound approval tokens).
//!
//! Every fact is recorded by one ledger entry; the entry's time (the sequencer's clock, signed)
//! is the fact's receipt, which the rules weigh against the times the sender states.

mod conductor;
pub mod contract;
pub mod delivery;
pub mod derived;
mod fold;
pub mod gate;
pub mod identity;
mod judge;
mod packet;
pub mod rederive;
pub mod report;
pub mod rewrite;
pub mod rules;
mod spans;
mod statement;
pub mod telemetry;

pub use conductor::{ConductorImport, conductor_facts, rewritten, valid_run_id};
pub use fold::evidence;
pub use judge::{
    Judgement, Neighbours, Reuse, Settings, TokenMismatch, explains, judge, normalize_subject,
    sighting_key,
};
pub use packet::{
    ApprovalView, AttemptView, ChangeView, Conflict, CredentialUse, Evidence, GateView,
    IdentityRole, Receipt, StatedValue, StepView, Timeline, deploy_succeeded, deployed,
    established_label, explained_window, gate_outcome,
};
pub use rewrite::{ObservedRun, ObservedTask, TaskChange};
pub use spans::{ItemInfo, facts_from_item, service_key_prefix, version_fact, version_key_prefix};
pub use statement::Intake;

use identity::Principal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// What kind of item stated a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Span,
    Log,
    Conductor,
    /// changetrail's own comparison of runtime spans around a deploy (`runtime.compared`).
    Runtime,
    /// changetrail's deploy gate deciding a workflow's request (`gate.decided`).
    Gate,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Span => "span",
            Source::Log => "log",
            Source::Conductor => "conductor",
            Source::Runtime => "runtime",
            Source::Gate => "gate",
        }
    }
}

/// Who handed a fact to the service: the API token that sent it (its id and name; never the
/// secret), or the operator whose command imported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SentBy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    pub name: String,
}

impl SentBy {
    /// "collector (token ab12cd)", "cli import by root".
    pub fn label(&self) -> String {
        match &self.token_id {
            Some(id) => format!("{} (token {id})", self.name),
            None => self.name.clone(),
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

/// The decisions an approval can carry. Anything a sender states that is not one of them is
/// `unknown` (and the stated text is kept): an approval is never assumed.
pub mod decision {
    pub const APPROVED: &str = "approved";
    pub const REJECTED: &str = "rejected";
    /// The approval step was skipped (bypassed), not decided.
    pub const SKIPPED: &str = "skipped";
    /// Requested, not decided yet.
    pub const PENDING: &str = "pending";
    /// The step timed out or was cancelled before anyone decided.
    pub const EXPIRED: &str = "expired";
    /// No decision stated, or one that is none of the above.
    pub const UNKNOWN: &str = "unknown";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalFact {
    /// One of `decision::*`.
    pub decision: String,
    /// What the sender wrote, when it was not a decision this model knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stated_decision: Option<String>,
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
    /// An id of the credential the deploying workload used (an access key id, a certificate
    /// serial), as its sender states it: seen on two changes, the credential was not rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// The person who set this attempt off, when the sender says (segregation of duties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A workflow's recorded history changed (`rewrite`). Entries signed before rewrites carried
/// a diff hold only `operation`, `vanished_tasks` and `detected_ns`; the other fields are
/// omitted when empty so those entries parse and re-serialize unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewriteFact {
    /// The most drastic of `kinds` (the only one older entries state).
    pub operation: String,
    pub vanished_tasks: Vec<String>,
    pub detected_ns: i64,
    /// Every kind of rewrite seen (`rewrite::kind`), most drastic first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Each task that changed: before, after, and which fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_status_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_status_after: Option<String>,
    /// Digests of the two observations compared (`ObservedRun::digest`); no `after` for a
    /// deleted run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_digest: Option<String>,
}

/// A production version seen running: the first sighting of a (service, environment, version),
/// or its return after another version ran (a downgrade or a redeploy of an old version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionFact {
    pub service: String,
    pub environment: String,
    pub version: String,
    pub first_seen_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The version that ran before, as far as the receiver knew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    Change(ChangeFact),
    RunFinished(RunFinishedFact),
    Approval(ApprovalFact),
    Task(TaskFact),
    HistoryRewritten(RewriteFact),
    /// What one full import of a Conductor execution saw (status, a digest per task): the
    /// baseline a later import is compared with to notice rewritten history.
    RunObserved(ObservedRun),
    Version(VersionFact),
    /// The change's service after its deploy against before it (`core::runtime`), stated by
    /// changetrail itself once the window has passed; one per change (its key has no digest).
    RuntimeCompared(crate::core::runtime::Comparison),
    /// The deploy gate's decision on a workflow's request (`gate`), stated by changetrail
    /// itself from the evidence committed before it.
    Gate(gate::GateFact),
}

/// The ledger entry kinds that record facts.
pub const FACT_KINDS: [&str; 10] = [
    "change.requested",
    "change.finished",
    "approval.requested",
    "approval.decided",
    "task.finished",
    "history.rewritten",
    "run.observed",
    "version.observed",
    "runtime.compared",
    "gate.decided",
];

impl Fact {
    /// The ledger entry kind that records this fact.
    pub fn entry_kind(&self) -> &'static str {
        match self {
            Fact::Change(_) => "change.requested",
            Fact::RunFinished(_) => "change.finished",
            Fact::Approval(a) if a.decision == decision::PENDING => "approval.requested",
            Fact::Approval(_) => "approval.decided",
            Fact::Task(_) => "task.finished",
            Fact::HistoryRewritten(_) => "history.rewritten",
            Fact::RunObserved(_) => "run.observed",
            Fact::Version(_) => "version.observed",
            Fact::RuntimeCompared(_) => "runtime.compared",
            Fact::Gate(_) => "gate.decided",
        }
    }

    /// The identities this fact names.
    pub fn principals(&self) -> Vec<&Principal> {
        match self {
            Fact::Change(c) => c.requester.iter().collect(),
            Fact::Approval(a) => a.approver.iter().collect(),
            Fact::Task(t) => t.identity.iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// A fact with what identifies it, what it is about, and who sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactRecord {
    /// What the fact is about and a digest of what it states: a repeat (a retry, a re-import)
    /// has the same key and is stored once; a different statement is another fact.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub source: Source,
    /// When it happened, by the sender's clock.
    pub time_ns: i64,
    /// When the item stating it ended, by the sender's clock, if later (a span is exported when
    /// it ends): the fact could not have been sent before, so lateness is counted from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stated_until_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<SentBy>,
    /// How late this fact may arrive without being late, when an import allowed more than
    /// `[evidence] max_lateness` (a backfill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lateness_ns: Option<i64>,
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

    /// The latest time the sender states for the item that carried this fact.
    pub fn stated_ns(&self) -> i64 {
        self.stated_until_ns
            .unwrap_or(self.time_ns)
            .max(self.time_ns)
    }

    /// Every credential this fact shows (verified tokens by digest and `jti`, and a deploying
    /// workload's stated credential id): what the credential index records per subject.
    pub fn credentials(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .fact
            .principals()
            .into_iter()
            .flat_map(|p| p.established.credentials())
            .collect();
        if let Fact::Task(t) = &self.fact
            && let Some(id) = &t.credential_id
        {
            c.push(format!("key:{id}"));
        }
        c.sort();
        c.dedup();
        c
    }
}

/// A fact as the ledger recorded it: the entry's sequence number and time. The entry time is
/// the sequencer's clock, signed with the entry: the fact's receipt, which no sender chooses.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub seq: u64,
    pub received_ns: i64,
    pub fact: FactRecord,
}
