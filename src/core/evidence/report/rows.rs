//! The report's rows: one population row per change, one exception row per exception, and the
//! credential rotation table, each with its columns in their stable order.

use super::{Catalogue, neutralise, time_cell};
use crate::core::evidence::identity::Principal;
use crate::core::evidence::rules::Exception;
use crate::core::evidence::{Evidence, IdentityRole, established_label, gate_outcome};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn flag(b: Option<bool>) -> String {
    b.map(|b| b.to_string()).unwrap_or_default()
}

fn subject(p: &Option<Principal>) -> String {
    p.as_ref()
        .and_then(|p| p.subject.clone())
        .unwrap_or_default()
}

fn verified(p: &Option<Principal>) -> String {
    match established_label(p) {
        "none" => String::new(),
        l => (l == "verified").to_string(),
    }
}

/// Where a change sits in the ledger: the entries about it, up to the report's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerSpan {
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub entries: u64,
    /// Leaf hash (hex) of the last entry: a verifier holding the ledger checks the row against it.
    pub last_leaf_hash: Option<String>,
}

/// The runtime spans bound to a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpanTally {
    pub count: u64,
    pub traces: BTreeSet<String>,
}

/// The population's columns, in their stable order (reports/README.md documents each).
pub const POPULATION_COLUMNS: [&str; 37] = [
    "change_id",
    "change_kind",
    "environment",
    "service",
    "version",
    "artifact_digest",
    "vcs_revision",
    "workflow_id",
    "workflow_name",
    "requested_by",
    "requested_by_verified",
    "requested_at",
    "approval_decision",
    "approved_by",
    "approved_by_verified",
    "approval_requested_at",
    "approved_at",
    "approved_before_deploy",
    "first_deploy_start",
    "deploy_end",
    "deploy_result",
    "deploy_attempts",
    "deployer_identity",
    "deployer_verified",
    "trace_ids",
    "linked_spans",
    "rollback_of",
    "rolled_back_by",
    "compensation_workflow_id",
    "emergency_justification",
    "gate_decision",
    "gate_seq",
    "exception_codes",
    "audit_seq_first",
    "audit_seq_last",
    "audit_entries",
    "audit_last_entry_hash",
];

/// One production change as the population lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopulationRow {
    pub change_id: String,
    pub change_kind: String,
    pub environment: String,
    pub service: String,
    pub version: String,
    pub artifact_digest: String,
    pub vcs_revision: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub requested_by: String,
    pub requested_by_verified: String,
    pub requested_at: String,
    pub approval_decision: String,
    pub approved_by: String,
    pub approved_by_verified: String,
    pub approval_requested_at: String,
    pub approved_at: String,
    pub approved_before_deploy: String,
    pub first_deploy_start: String,
    pub deploy_end: String,
    pub deploy_result: String,
    pub deploy_attempts: u64,
    pub deployer_identity: String,
    pub deployer_verified: String,
    pub trace_ids: String,
    pub linked_spans: u64,
    pub rollback_of: String,
    pub rolled_back_by: String,
    pub compensation_workflow_id: String,
    pub emergency_justification: String,
    /// Whether the change passed the deploy gate (`gate_outcome`): `allow`, `deny`, or empty.
    pub gate_decision: String,
    /// The entry of that decision.
    pub gate_seq: Option<u64>,
    pub exception_codes: String,
    pub audit_seq_first: Option<u64>,
    pub audit_seq_last: Option<u64>,
    pub audit_entries: u64,
    pub audit_last_entry_hash: String,
}

impl PopulationRow {
    pub fn new(
        e: &Evidence,
        spans: &SpanTally,
        ledger: &LedgerSpan,
        exceptions: &[Exception],
    ) -> PopulationRow {
        let c = &e.change;
        // The approval an auditor traces: the first that approved, else the last decision made.
        let approval = e
            .approvals
            .iter()
            .filter(|a| a.decision == "approved")
            .min_by_key(|a| a.decided_ns.unwrap_or(i64::MAX))
            .or_else(|| e.approvals.last());
        let deploys: Vec<_> = e.steps.iter().flat_map(|s| s.attempts.iter()).collect();
        let deployers: BTreeSet<String> = deploys
            .iter()
            .filter_map(|a| a.identity.as_ref()?.subject.clone())
            .collect();
        let deployer_verified = if deploys.iter().all(|a| a.identity.is_none()) {
            String::new()
        } else {
            deploys
                .iter()
                .all(|a| established_label(&a.identity) == "verified")
                .to_string()
        };
        let deploy_result = e
            .steps
            .last()
            .map(|s| s.outcome.clone())
            .or_else(|| c.result.clone())
            .unwrap_or_default();
        let codes: BTreeSet<&str> = exceptions.iter().map(|x| x.code).collect();
        let gate = gate_outcome(e);
        PopulationRow {
            change_id: c.id.clone(),
            change_kind: c.kind.clone(),
            environment: opt(&c.environment),
            service: opt(&c.service),
            version: opt(&c.version),
            artifact_digest: opt(&c.artifact),
            vcs_revision: opt(&c.revision),
            workflow_id: c.runs.join(";"),
            workflow_name: opt(&c.pipeline),
            requested_by: subject(&e.requester),
            requested_by_verified: verified(&e.requester),
            requested_at: time_cell(e.timeline.requested_ns.or(c.requested_ns)),
            approval_decision: approval.map(|a| a.decision.clone()).unwrap_or_default(),
            approved_by: approval.map(|a| subject(&a.approver)).unwrap_or_default(),
            approved_by_verified: approval.map(|a| verified(&a.approver)).unwrap_or_default(),
            approval_requested_at: time_cell(approval.and_then(|a| a.requested_ns)),
            approved_at: time_cell(approval.and_then(|a| a.decided_ns)),
            approved_before_deploy: flag(approval.and_then(|a| a.before_first_deploy)),
            first_deploy_start: time_cell(e.timeline.first_deploy_start_ns),
            deploy_end: time_cell(e.timeline.deploy_end_ns),
            deploy_result,
            deploy_attempts: deploys.len() as u64,
            deployer_identity: deployers.into_iter().collect::<Vec<_>>().join(";"),
            deployer_verified,
            trace_ids: spans.traces.iter().cloned().collect::<Vec<_>>().join(";"),
            linked_spans: spans.count,
            rollback_of: opt(&c.rollback_of),
            rolled_back_by: e.rolled_back_by.join(";"),
            compensation_workflow_id: c.compensation_runs.join(";"),
            emergency_justification: opt(&c.justification),
            gate_decision: gate.map(|g| g.decided.decision.clone()).unwrap_or_default(),
            gate_seq: gate.map(|g| g.seq),
            exception_codes: codes.into_iter().collect::<Vec<_>>().join(";"),
            audit_seq_first: ledger.first_seq,
            audit_seq_last: ledger.last_seq,
            audit_entries: ledger.entries,
            audit_last_entry_hash: ledger.last_leaf_hash.clone().unwrap_or_default(),
        }
    }

    /// The cells in `POPULATION_COLUMNS` order, neutralised for spreadsheets.
    pub fn cells(&self) -> Vec<String> {
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        [
            self.change_id.clone(),
            self.change_kind.clone(),
            self.environment.clone(),
            self.service.clone(),
            self.version.clone(),
            self.artifact_digest.clone(),
            self.vcs_revision.clone(),
            self.workflow_id.clone(),
            self.workflow_name.clone(),
            self.requested_by.clone(),
            self.requested_by_verified.clone(),
            self.requested_at.clone(),
            self.approval_decision.clone(),
            self.approved_by.clone(),
            self.approved_by_verified.clone(),
            self.approval_requested_at.clone(),
            self.approved_at.clone(),
            self.approved_before_deploy.clone(),
            self.first_deploy_start.clone(),
            self.deploy_end.clone(),
            self.deploy_result.clone(),
            self.deploy_attempts.to_string(),
            self.deployer_identity.clone(),
            self.deployer_verified.clone(),
            self.trace_ids.clone(),
            self.linked_spans.to_string(),
            self.rollback_of.clone(),
            self.rolled_back_by.clone(),
            self.compensation_workflow_id.clone(),
            self.emergency_justification.clone(),
            self.gate_decision.clone(),
            n(self.gate_seq),
            self.exception_codes.clone(),
            n(self.audit_seq_first),
            n(self.audit_seq_last),
            self.audit_entries.to_string(),
            self.audit_last_entry_hash.clone(),
        ]
        .into_iter()
        .map(|c| neutralise(&c).into_owned())
        .collect()
    }
}

pub const EXCEPTION_COLUMNS: [&str; 6] = [
    "code",
    "change_id",
    "controls",
    "evidence",
    "audit_seq_first",
    "audit_seq_last",
];

/// One exception as exceptions.csv lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionRow {
    pub code: String,
    /// Empty for findings about no change (an unlinked deploy, a ledger gap).
    pub change_id: String,
    pub controls: Vec<String>,
    pub evidence: String,
    pub audit_seq_first: Option<u64>,
    pub audit_seq_last: Option<u64>,
}

impl ExceptionRow {
    pub fn new(
        cat: &Catalogue,
        change_id: &str,
        x: &Exception,
        seqs: (Option<u64>, Option<u64>),
    ) -> ExceptionRow {
        ExceptionRow {
            code: x.code.to_owned(),
            change_id: change_id.to_owned(),
            controls: cat
                .controls_of(x.code)
                .into_iter()
                .map(String::from)
                .collect(),
            evidence: x.evidence.clone(),
            audit_seq_first: seqs.0,
            audit_seq_last: seqs.1,
        }
    }

    pub fn cells(&self) -> Vec<String> {
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        [
            self.code.clone(),
            self.change_id.clone(),
            self.controls.join(";"),
            self.evidence.clone(),
            n(self.audit_seq_first),
            n(self.audit_seq_last),
        ]
        .into_iter()
        .map(|c| neutralise(&c).into_owned())
        .collect()
    }
}

pub const ROTATION_COLUMNS: [&str; 7] = [
    "service",
    "credential",
    "changes",
    "first_change",
    "first_seq",
    "last_change",
    "last_seq",
];

/// One deploying credential of one service, as rotation.csv lists it: a credential on more than
/// one change was not rotated between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationRow {
    pub service: String,
    pub credential: String,
    pub changes: u64,
    pub first_change: String,
    pub first_seq: u64,
    pub last_change: String,
    pub last_seq: u64,
}

impl RotationRow {
    pub fn cells(&self) -> Vec<String> {
        [
            self.service.clone(),
            self.credential.clone(),
            self.changes.to_string(),
            self.first_change.clone(),
            self.first_seq.to_string(),
            self.last_change.clone(),
            self.last_seq.to_string(),
        ]
        .into_iter()
        .map(|c| neutralise(&c).into_owned())
        .collect()
    }
}

/// The deploying credentials of the population's changes, per service, gathered as rows stream.
#[derive(Debug, Clone, Default)]
pub struct Rotation {
    rows: BTreeMap<(String, String), RotationRow>,
}

impl Rotation {
    pub fn change(&mut self, e: &Evidence) {
        let service = e.change.service.clone().unwrap_or_default();
        for u in e
            .credentials
            .iter()
            .filter(|u| u.role == IdentityRole::Deployer)
        {
            let r = self
                .rows
                .entry((service.clone(), u.credential.clone()))
                .or_insert_with(|| RotationRow {
                    service: service.clone(),
                    credential: u.credential.clone(),
                    changes: 0,
                    first_change: e.change.id.clone(),
                    first_seq: u.seq,
                    last_change: e.change.id.clone(),
                    last_seq: u.seq,
                });
            r.changes += 1;
            if u.seq < r.first_seq {
                (r.first_change, r.first_seq) = (e.change.id.clone(), u.seq);
            }
            if u.seq >= r.last_seq {
                (r.last_change, r.last_seq) = (e.change.id.clone(), u.seq);
            }
        }
    }

    /// By service, then credential.
    pub fn rows(&self) -> impl Iterator<Item = &RotationRow> {
        self.rows.values()
    }

    /// Per service: (credentials, changes, credentials on more than one change).
    pub fn summary(&self) -> BTreeMap<String, (u64, u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for r in self.rows.values() {
            let s = out.entry(r.service.clone()).or_default();
            s.0 += 1;
            s.1 += r.changes;
            s.2 += u64::from(r.changes > 1);
        }
        out
    }
}
