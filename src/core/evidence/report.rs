//! The SOC 2 report as plain data: the control catalogue, one population row per change, exception
//! rows, control results, the reproducible sample, the charts and the manifest's signing message.
//! The edge (`crate::report`) feeds it evidence from storage and writes the files.

use super::identity::Principal;
use super::rules::{self, Exception};
use super::{Evidence, established_label};
use crate::core::ledger::hash::Hash;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The catalogue shipped with the binary (`reports/soc2.toml`).
pub const SOC2_CATALOGUE: &str = include_str!("../../../reports/soc2.toml");
/// The HTML template shipped with the binary (`reports/soc2.html`).
pub const SOC2_TEMPLATE: &str = include_str!("../../../reports/soc2.html");

/// The format tag of the manifest; a change to any file's layout is a new version.
pub const MANIFEST_FORMAT: &str = "changetrail-report/v1";
/// Domain separation for the manifest signature (Ed25519 over this prefix and the manifest bytes).
pub const MANIFEST_SIG_CONTEXT: &[u8] = b"changetrail/report-manifest/v1\n";

/// What the manifest signature signs: the context string and the exact bytes of manifest.json.
pub fn manifest_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MANIFEST_SIG_CONTEXT.len() + manifest.len());
    m.extend_from_slice(MANIFEST_SIG_CONTEXT);
    m.extend_from_slice(manifest);
    m
}

// ---------------------------------------------------------------------------------------------
// The catalogue.

/// A control catalogue (`reports/soc2.toml`): which exception codes test which control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub title: String,
    pub framework: String,
    pub controls: Vec<Control>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub id: String,
    pub title: String,
    pub description: String,
    /// "changes" (the production changes of the period) or "ledger" (the evidence itself).
    pub population: String,
    pub codes: Vec<String>,
}

impl Catalogue {
    /// Parses and checks a catalogue: unique ids, known populations, and only codes the rules make
    /// (a misspelt code would otherwise make a control pass that was never tested).
    pub fn parse(text: &str) -> Result<Catalogue, String> {
        let c: Catalogue = toml::from_str(text).map_err(|e| format!("catalogue: {e}"))?;
        let mut ids = BTreeSet::new();
        for ctl in &c.controls {
            if !ids.insert(ctl.id.as_str()) {
                return Err(format!("catalogue: control {:?} appears twice", ctl.id));
            }
            if ctl.population != "changes" && ctl.population != "ledger" {
                return Err(format!(
                    "catalogue: control {:?} has population {:?}; use \"changes\" or \"ledger\"",
                    ctl.id, ctl.population
                ));
            }
            for code in &ctl.codes {
                if !rules::ALL.contains(&code.as_str()) {
                    return Err(format!(
                        "catalogue: control {:?} names {code:?}, which no rule produces (known: {})",
                        ctl.id,
                        rules::ALL.join(", ")
                    ));
                }
            }
        }
        if c.controls.is_empty() {
            return Err("catalogue: no controls".into());
        }
        Ok(c)
    }

    /// The ids of the controls a code tests, in catalogue order.
    pub fn controls_of(&self, code: &str) -> Vec<&str> {
        self.controls
            .iter()
            .filter(|c| c.codes.iter().any(|k| k == code))
            .map(|c| c.id.as_str())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Cells.

/// UTC RFC 3339 with milliseconds (`2026-01-01T10:15:00.000Z`): approval and deploy times a second
/// apart must not print the same.
pub fn time_cell(ns: Option<i64>) -> String {
    let Some(ns) = ns else {
        return String::new();
    };
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns));
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("@{ns}"))
}

/// A cell that a spreadsheet would run as a formula (`= + - @`, or a tab or carriage return that
/// some importers strip before looking) gets a leading apostrophe, the OWASP-recommended guard.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

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

// ---------------------------------------------------------------------------------------------
// Rows.

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
pub const POPULATION_COLUMNS: [&str; 35] = [
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

// ---------------------------------------------------------------------------------------------
// Credential rotation.

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
            .filter(|u| u.role == super::IdentityRole::Deployer)
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

// ---------------------------------------------------------------------------------------------
// Control results.

pub const CONTROL_COLUMNS: [&str; 7] = [
    "control_id",
    "title",
    "population",
    "population_tested",
    "exceptions",
    "codes",
    "result",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlResult {
    pub id: String,
    pub title: String,
    pub description: String,
    pub population: String,
    pub population_tested: u64,
    pub exceptions: u64,
    /// Exceptions per code this control is tested by (zero counts included).
    pub by_code: BTreeMap<String, u64>,
    /// `pass` (no exceptions noted), `exceptions` (noted), `not_tested` (empty population, or
    /// settings under which its codes test nothing).
    pub result: String,
}

impl ControlResult {
    pub fn cells(&self) -> Vec<String> {
        let codes: Vec<String> = self
            .by_code
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        [
            self.id.clone(),
            self.title.clone(),
            self.population.clone(),
            self.population_tested.to_string(),
            self.exceptions.to_string(),
            codes.join(";"),
            self.result.clone(),
        ]
        .into_iter()
        .map(|c| neutralise(&c).into_owned())
        .collect()
    }
}

/// Each control's result from the exception counts and the sizes of the two populations. A
/// control whose every code is `untested` under the report's settings (approver roles with none
/// configured) is "not_tested", never "pass".
pub fn control_results(
    cat: &Catalogue,
    counts: &BTreeMap<String, u64>,
    changes: u64,
    ledger_entries: u64,
    untested: &[&str],
) -> Vec<ControlResult> {
    cat.controls
        .iter()
        .map(|c| {
            let by_code: BTreeMap<String, u64> = c
                .codes
                .iter()
                .map(|k| (k.clone(), counts.get(k).copied().unwrap_or(0)))
                .collect();
            let exceptions = by_code.values().sum();
            let tested = if c.population == "ledger" {
                ledger_entries
            } else {
                changes
            };
            let tests_nothing = c.codes.iter().all(|k| untested.contains(&k.as_str()));
            let tested = if tests_nothing { 0 } else { tested };
            let result = if exceptions > 0 {
                "exceptions"
            } else if tested == 0 {
                "not_tested"
            } else {
                "pass"
            };
            ControlResult {
                id: c.id.clone(),
                title: c.title.clone(),
                description: c.description.clone(),
                population: c.population.clone(),
                population_tested: tested,
                exceptions,
                by_code,
                result: result.into(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sampling.

/// How the sample is drawn, in the words the manifest records so an auditor can re-draw it.
pub const SAMPLE_METHOD: &str = "rank every population row by SHA-256(\"changetrail/sample/v1\\n\" || seed || \"\\n\" || change_id) \
     as lowercase hex, ascending; the sample is the first N rows";

/// A change's place in the sample order for `seed`: lower is drawn first. It depends only on the
/// seed and the change id, so the draw does not depend on row order and anyone can repeat it.
pub fn sample_rank(seed: &str, change_id: &str) -> String {
    Hash::of(&[
        b"changetrail/sample/v1\n",
        seed.as_bytes(),
        b"\n",
        change_id.as_bytes(),
    ])
    .to_hex()
}

/// Keeps the `n` lowest-ranked rows seen, in rank order, without holding the population.
#[derive(Debug)]
pub struct Sampler {
    n: usize,
    seed: String,
    kept: BTreeMap<String, PopulationRow>,
}

impl Sampler {
    pub fn new(n: usize, seed: &str) -> Sampler {
        Sampler {
            n,
            seed: seed.to_owned(),
            kept: BTreeMap::new(),
        }
    }

    pub fn offer(&mut self, row: &PopulationRow) {
        if self.n == 0 {
            return;
        }
        let rank = sample_rank(&self.seed, &row.change_id);
        if self.kept.len() < self.n {
            self.kept.insert(rank, row.clone());
        } else if self.kept.last_key_value().is_some_and(|(k, _)| rank < *k) {
            self.kept.insert(rank, row.clone());
            self.kept.pop_last();
        }
    }

    /// The sample in draw order, each row with its rank.
    pub fn finish(self) -> Vec<(String, PopulationRow)> {
        self.kept.into_iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregates for the summary and the charts.

const DAY_NS: i64 = 86_400_000_000_000;

/// The Monday (UTC) of the week holding `ns`, as YYYY-MM-DD.
pub fn week_of(ns: i64) -> String {
    let day = ns.div_euclid(DAY_NS);
    // 1970-01-01 was a Thursday: Monday-based weekday index is (day + 3) mod 7.
    let monday = day - (day + 3).rem_euclid(7);
    time_cell(Some(monday * DAY_NS))
        .get(..10)
        .unwrap_or_default()
        .to_owned()
}

/// Buckets for "how long from request to approval".
pub const LEAD_TIME_BUCKETS: [(&str, i64); 6] = [
    ("< 1 h", 3_600_000_000_000),
    ("1–4 h", 4 * 3_600_000_000_000),
    ("4–24 h", DAY_NS),
    ("1–3 d", 3 * DAY_NS),
    ("3–7 d", 7 * DAY_NS),
    ("> 7 d", i64::MAX),
];

/// What the summary, the charts and the control results are computed from, gathered as rows
/// stream past.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub changes: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub changes_with_exceptions: u64,
    pub exceptions_by_code: BTreeMap<String, u64>,
    pub per_week: BTreeMap<String, u64>,
    pub lead_time: Vec<u64>,
    pub retried_deploys: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            lead_time: vec![0; LEAD_TIME_BUCKETS.len()],
            ..Default::default()
        }
    }

    pub fn seqs(&mut self, first: Option<u64>, last: Option<u64>) {
        if let Some(f) = first {
            self.first_seq = Some(self.first_seq.map_or(f, |s| s.min(f)));
        }
        if let Some(l) = last {
            self.last_seq = Some(self.last_seq.map_or(l, |s| s.max(l)));
        }
    }

    pub fn change(&mut self, e: &Evidence, exceptions: &[Exception]) {
        self.changes += 1;
        *self.by_kind.entry(e.change.kind.clone()).or_default() += 1;
        if let Some(t) = e.change.requested_ns.or(e.timeline.requested_ns) {
            *self.per_week.entry(week_of(t)).or_default() += 1;
        }
        if let (Some(r), Some(a)) = (e.timeline.requested_ns, e.timeline.approved_ns) {
            let lead = a.saturating_sub(r).max(0);
            let i = LEAD_TIME_BUCKETS
                .iter()
                .position(|(_, lim)| lead < *lim)
                .unwrap_or(LEAD_TIME_BUCKETS.len() - 1);
            self.lead_time[i] += 1;
        }
        if e.steps.iter().any(|s| s.attempts.len() > 1) {
            self.retried_deploys += 1;
        }
        if !exceptions.is_empty() {
            self.changes_with_exceptions += 1;
        }
        for x in exceptions {
            self.exception(x.code);
        }
    }

    pub fn exception(&mut self, code: &str) {
        *self.exceptions_by_code.entry(code.to_owned()).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Charts: inline SVG, no script, prints as it shows.

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A vertical bar chart (one bar per label) with value labels, `id` for tests and links.
pub fn bar_chart(id: &str, title: &str, bars: &[(String, u64)], accent: bool) -> String {
    let (w, h, left, bottom, top) = (720.0_f64, 260.0_f64, 40.0, 70.0, 28.0);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let n = bars.len().max(1) as f64;
    let slot = (w - left - 10.0) / n;
    let bar_w = (slot * 0.7).max(1.0);
    let plot_h = h - bottom - top;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{y}" x2="{x2}" y2="{y}" stroke="#555" stroke-width="1"/>"##,
        y = h - bottom,
        x2 = w - 10.0
    );
    if bars.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{x}" y="{y}" text-anchor="middle" fill="#555" font-size="13">no data in the period</text>"##,
            x = w / 2.0,
            y = h / 2.0
        );
    }
    // Long label lists (many weeks) print every k-th label so they stay legible.
    let every = (bars.len() / 16).max(1);
    for (i, (label, v)) in bars.iter().enumerate() {
        let bh = (*v as f64 / max) * plot_h;
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let y = h - bottom - bh;
        let fill = if accent && *v > 0 {
            "#b3261e"
        } else {
            "#2f5d8a"
        };
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{bh:.1}" fill="{fill}"><title>{l}: {v}</title></rect>"#,
            l = esc(label)
        );
        if *v > 0 && bars.len() <= 40 {
            let _ = write!(
                s,
                r##"<text x="{cx:.1}" y="{ty:.1}" text-anchor="middle" font-size="11" fill="#222">{v}</text>"##,
                cx = x + bar_w / 2.0,
                ty = y - 4.0
            );
        }
        if i % every == 0 {
            let _ = write!(
                s,
                r##"<text x="{cx:.1}" y="{ly:.1}" font-size="11" fill="#333" text-anchor="end" transform="rotate(-40 {cx:.1} {ly:.1})">{l}</text>"##,
                cx = x + bar_w / 2.0,
                ly = h - bottom + 14.0,
                l = esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart: long labels (exception codes) stay readable in print and at 800 px.
pub fn hbar_chart(id: &str, title: &str, bars: &[(String, u64)], accent: bool) -> String {
    let (w, row, label_w, top) = (720.0_f64, 22.0_f64, 250.0_f64, 8.0_f64);
    let h = top * 2.0 + row * bars.len().max(1) as f64;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let plot_w = w - label_w - 50.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let bw = (*v as f64 / max) * plot_w;
        let fill = if accent && *v > 0 {
            "#b3261e"
        } else {
            "#2f5d8a"
        };
        let _ = write!(
            s,
            r##"<text x="{lx:.1}" y="{ty:.1}" text-anchor="end" font-size="12" fill="#333">{l}</text><rect class="bar" x="{label_w}" y="{ry:.1}" width="{bw:.1}" height="{bh:.1}" fill="{fill}"><title>{l}: {v}</title></rect><text x="{vx:.1}" y="{ty:.1}" font-size="12" fill="#222">{v}</text>"##,
            lx = label_w - 8.0,
            ty = y + row * 0.68,
            l = esc(label),
            ry = y + 3.0,
            bh = row - 6.0,
            vx = label_w + bw + 6.0,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_parses_and_covers_every_code() {
        let c = Catalogue::parse(SOC2_CATALOGUE).unwrap();
        for code in rules::ALL {
            assert!(
                !c.controls_of(code).is_empty(),
                "{code} tests no control in reports/soc2.toml"
            );
        }
        assert_eq!(c.controls_of("SELF_APPROVAL"), vec!["CC8.1", "CC6.3"]);
    }

    #[test]
    fn a_catalogue_with_an_unknown_code_or_a_repeated_id_is_refused() {
        let bad = SOC2_CATALOGUE.replace("\"NO_APPROVAL\"", "\"NO_APROVAL\"");
        assert!(Catalogue::parse(&bad).unwrap_err().contains("NO_APROVAL"));
        let twice = format!(
            "{SOC2_CATALOGUE}\n[[controls]]\nid = \"CC8.1\"\ntitle = \"x\"\ndescription = \"x\"\npopulation = \"changes\"\ncodes = []\n"
        );
        assert!(Catalogue::parse(&twice).unwrap_err().contains("twice"));
        let pop = SOC2_CATALOGUE.replace("population = \"ledger\"", "population = \"logs\"");
        assert!(Catalogue::parse(&pop).unwrap_err().contains("logs"));
    }

    #[test]
    fn formula_cells_are_neutralised_and_others_left_alone() {
        for bad in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(bad), format!("'{bad}"));
        }
        for ok in ["alice@example.com", "CHG-1", "", "1.0-rc", "sha256:ab"] {
            assert_eq!(neutralise(ok), ok);
        }
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(
            time_cell(Some(1_767_261_600_123_456_789)),
            "2026-01-01T10:00:00.123Z"
        );
        assert_eq!(time_cell(None), "");
        // 2026-01-01 is a Thursday; its week starts Monday 2025-12-29.
        assert_eq!(week_of(1_767_261_600_000_000_000), "2025-12-29");
        assert_eq!(week_of(0), "1969-12-29");
    }

    #[test]
    fn controls_pass_fail_or_go_untested() {
        let c = Catalogue::parse(SOC2_CATALOGUE).unwrap();
        let mut counts = BTreeMap::new();
        counts.insert("SELF_APPROVAL".to_string(), 2);
        let r = control_results(&c, &counts, 10, 100, &[]);
        let by: BTreeMap<&str, &ControlResult> = r.iter().map(|r| (r.id.as_str(), r)).collect();
        assert_eq!(by["CC8.1"].result, "exceptions");
        assert_eq!(by["CC8.1"].exceptions, 2);
        assert_eq!(by["CC6.3"].result, "exceptions");
        assert_eq!(by["CC6.1"].result, "pass");
        assert_eq!(by["CC2.1 / CC4.1"].population_tested, 100);
        let empty = control_results(&c, &BTreeMap::new(), 0, 100, &[]);
        assert_eq!(empty[0].result, "not_tested");
        // No approver roles configured: CC6.2 tested nothing; CC6.3 still tests self-approval.
        let r = control_results(&c, &BTreeMap::new(), 10, 100, &["APPROVER_NOT_AUTHORIZED"]);
        let by: BTreeMap<&str, &ControlResult> = r.iter().map(|r| (r.id.as_str(), r)).collect();
        assert_eq!(by["CC6.2"].result, "not_tested");
        assert_eq!(by["CC6.2"].population_tested, 0);
        assert_eq!(by["CC6.3"].result, "pass");
    }

    fn row(id: &str) -> PopulationRow {
        let e = Evidence {
            change: crate::core::evidence::ChangeView {
                id: id.into(),
                ..Default::default()
            },
            requester: None,
            approvals: vec![],
            timeline: crate::core::evidence::Timeline {
                requested_ns: None,
                approved_ns: None,
                first_deploy_start_ns: None,
                deploy_end_ns: None,
                deploy_received_ns: None,
            },
            steps: vec![],
            history_rewrites: vec![],
            rolled_back_by: vec![],
            conflicts: vec![],
            deciding: vec![],
            credentials: vec![],
            judgement: Default::default(),
        };
        PopulationRow::new(&e, &SpanTally::default(), &LedgerSpan::default(), &[])
    }

    #[test]
    fn the_sample_is_the_lowest_ranks_whatever_the_order() {
        let ids: Vec<String> = (0..200).map(|i| format!("CHG-{i}")).collect();
        let draw = |order: &mut dyn Iterator<Item = &String>| {
            let mut s = Sampler::new(25, "audit-2026");
            for id in order {
                s.offer(&row(id));
            }
            s.finish()
                .into_iter()
                .map(|(_, r)| r.change_id)
                .collect::<Vec<_>>()
        };
        let forward = draw(&mut ids.iter());
        let backward = draw(&mut ids.iter().rev());
        assert_eq!(forward.len(), 25);
        assert_eq!(forward, backward);
        let mut by_rank: Vec<(String, &String)> = ids
            .iter()
            .map(|i| (sample_rank("audit-2026", i), i))
            .collect();
        by_rank.sort();
        let expect: Vec<String> = by_rank[..25].iter().map(|(_, i)| (*i).clone()).collect();
        assert_eq!(forward, expect);
        let mut other = Sampler::new(25, "another-seed");
        ids.iter().for_each(|i| other.offer(&row(i)));
        let other: Vec<String> = other
            .finish()
            .into_iter()
            .map(|(_, r)| r.change_id)
            .collect();
        assert_ne!(forward, other, "a different seed draws a different sample");
    }

    #[test]
    fn charts_escape_labels_and_draw_one_bar_per_value() {
        let svg = bar_chart(
            "c",
            "t<&>",
            &[("<x>".into(), 3), ("y".into(), 0), ("z".into(), 7)],
            false,
        );
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        assert!(svg.contains("t&lt;&amp;&gt;"));
        assert!(bar_chart("e", "empty", &[], false).contains("no data"));
        let h = hbar_chart(
            "h",
            "codes",
            &[("NO_APPROVAL".into(), 2), ("<b>".into(), 0)],
            true,
        );
        assert_eq!(h.matches("<rect class=\"bar\"").count(), 2);
        assert!(h.contains("#b3261e") && h.contains("&lt;b&gt;"));
    }
}
