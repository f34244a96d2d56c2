//! A change's facts folded into its evidence packet. Facts are put in a canonical order first,
//! so the result depends on the set of facts, never on their arrival order; facts that
//! contradict each other are all kept, as conflicts, and the fold picks the reading that asks
//! more of the change (a change any fact places in production is a production change).

use super::judge::Judgement;
use super::{Fact, Policy, Recorded, RewriteFact, RunFinishedFact, SentBy, Source, decision};
use crate::core::evidence::identity::{Established, Principal};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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

impl StatedValue {
    fn of(value: &str, r: &Recorded) -> StatedValue {
        StatedValue {
            value: value.to_owned(),
            time_ns: r.fact.time_ns,
            received_ns: r.received_ns,
            seq: r.seq,
            source: r.fact.source,
            sent_by: r.fact.sent_by.clone(),
        }
    }
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
    /// Contradicting statements about this change, all kept.
    pub conflicts: Vec<Conflict>,
    /// The deciding facts with their receipts.
    pub deciding: Vec<Receipt>,
    pub credentials: Vec<CredentialUse>,
    /// What `judge` found looking beyond the change (empty until it runs).
    pub judgement: Judgement,
}

/// Distinct values of one field, in canonical fact order, each with its first statement.
#[derive(Default)]
struct Stated {
    values: Vec<StatedValue>,
    /// Compare without case (environment, kind): "Production" is not a contradiction.
    fold_case: bool,
}

impl Stated {
    fn folding_case() -> Stated {
        Stated {
            values: Vec::new(),
            fold_case: true,
        }
    }

    fn add(&mut self, value: Option<&str>, r: &Recorded) {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return;
        };
        let same = |a: &str| {
            if self.fold_case {
                a.eq_ignore_ascii_case(v)
            } else {
                a == v
            }
        };
        if !self.values.iter().any(|s| same(&s.value)) {
            self.values.push(StatedValue::of(v, r));
        }
    }

    fn first(&self) -> Option<String> {
        self.values.first().map(|s| s.value.clone())
    }

    fn conflict(&self, field: &str, out: &mut Vec<Conflict>) {
        if self.values.len() > 1 {
            out.push(Conflict {
                field: field.to_owned(),
                values: self.values.clone(),
            });
        }
    }
}

/// Folds a change's facts into its evidence (the judgement left empty: see `judge`).
pub fn evidence(
    change_id: &str,
    facts: &[Recorded],
    rolled_back_by: Vec<String>,
    policy: &Policy,
) -> Evidence {
    let mut facts: Vec<&Recorded> = facts.iter().collect();
    facts.sort_by(|a, b| {
        (a.fact.time_ns, &a.fact.key, a.seq).cmp(&(b.fact.time_ns, &b.fact.key, b.seq))
    });
    let mut conflicts = Vec::new();
    let mut deciding = Vec::new();
    let mut credentials: Credentials = BTreeMap::new();

    let (mut environment, mut kind) = (Stated::folding_case(), Stated::folding_case());
    let (mut service, mut version, mut artifact, mut revision, mut rollback_of) = (
        Stated::default(),
        Stated::default(),
        Stated::default(),
        Stated::default(),
        Stated::default(),
    );
    let (mut pipeline, mut justification) = (Stated::default(), Stated::default());
    let mut requester_subjects = Stated::folding_case();
    let mut requesters: Vec<&Principal> = Vec::new();
    let mut requested_ns: Option<i64> = None;
    let mut change_senders: BTreeSet<SentBy> = BTreeSet::new();
    let mut finished: Vec<&RunFinishedFact> = Vec::new();
    let mut run_result = Stated::default();
    let mut runs: BTreeSet<String> = BTreeSet::new();
    for r in &facts {
        runs.extend(r.fact.run_id.clone());
        match &r.fact.fact {
            Fact::Change(c) => {
                environment.add(c.environment.as_deref(), r);
                kind.add(c.kind.as_deref(), r);
                service.add(c.service.as_deref(), r);
                version.add(c.version.as_deref(), r);
                artifact.add(c.artifact.as_deref(), r);
                revision.add(c.revision.as_deref(), r);
                rollback_of.add(c.rollback_of.as_deref(), r);
                pipeline.add(c.pipeline.as_deref(), r);
                justification.add(c.justification.as_deref(), r);
                if let Some(p) = &c.requester {
                    let norm = p.subject.as_deref().map(super::normalize_subject);
                    requester_subjects.add(norm.as_deref(), r);
                    requesters.push(p);
                    use_credentials(&mut credentials, IdentityRole::Requester, Some(p), r);
                }
                requested_ns = Some(requested_ns.map_or(c.requested_ns, |t| t.min(c.requested_ns)));
                change_senders.extend(r.fact.sent_by.clone());
                deciding.push(receipt("change.requested".into(), r));
            }
            Fact::RunFinished(f) => {
                finished.push(f);
                run_result.add(Some(&f.result), r);
                deciding.push(receipt("change.finished".into(), r));
            }
            _ => {}
        }
    }
    environment.conflict("environment", &mut conflicts);
    kind.conflict("kind", &mut conflicts);
    service.conflict("service", &mut conflicts);
    version.conflict("version", &mut conflicts);
    artifact.conflict("artifact", &mut conflicts);
    revision.conflict("revision", &mut conflicts);
    rollback_of.conflict("rollback_of", &mut conflicts);
    pipeline.conflict("pipeline", &mut conflicts);
    justification.conflict("justification", &mut conflicts);
    requester_subjects.conflict("requester", &mut conflicts);
    run_result.conflict("run result", &mut conflicts);
    // A change any fact places in production is judged as one: a fact saying "staging" must not
    // take a production change out of the population.
    let environment = environment
        .values
        .iter()
        .find(|v| policy.is_production(&v.value))
        .map(|v| v.value.clone())
        .or_else(|| environment.first());
    // Kinds that contradict each other are judged by the one that asks most: a normal change
    // needs its approval before the deploy, an emergency or a rollback less.
    let kind = if kind.values.len() > 1 && kind.values.iter().any(|v| v.value == "normal") {
        "normal".to_owned()
    } else {
        kind.first().unwrap_or_else(|| "normal".into())
    };
    let change = ChangeView {
        id: change_id.to_owned(),
        runs: runs.into_iter().collect(),
        kind,
        production: environment
            .as_deref()
            .is_some_and(|e| policy.is_production(e)),
        environment,
        pipeline: pipeline.first(),
        service: service.first(),
        version: version.first(),
        artifact: artifact.first(),
        revision: revision.first(),
        rollback_of: rollback_of.first(),
        justification: justification.first(),
        requested_ns,
        result: finished.last().map(|r| r.result.clone()),
        finished_ns: finished.iter().map(|r| r.end_ns).max(),
        compensation_runs: finished
            .iter()
            .filter_map(|r| r.compensation_run.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        sent_by: change_senders.into_iter().collect(),
    };
    // A verified requester wins over an asserted one; otherwise the first stated.
    let requester = requesters
        .iter()
        .copied()
        .find(|p| p.established.is_verified())
        .or(requesters.first().copied())
        .cloned();

    // Steps: attempts grouped by task, the same attempt from several sources merged.
    let mut by_task: BTreeMap<String, BTreeMap<String, AttemptView>> = BTreeMap::new();
    let mut task_types: BTreeMap<String, String> = BTreeMap::new();
    let mut results: BTreeMap<String, Stated> = BTreeMap::new();
    let mut triggers: BTreeMap<String, Stated> = BTreeMap::new();
    for r in &facts {
        let Fact::Task(t) = &r.fact.fact else {
            continue;
        };
        use_credentials(
            &mut credentials,
            IdentityRole::Deployer,
            t.identity.as_ref(),
            r,
        );
        if let Some(id) = &t.credential_id {
            use_credential(
                &mut credentials,
                IdentityRole::Deployer,
                t.identity.as_ref().and_then(|p| p.subject.clone()),
                format!("key:{id}"),
                r.seq,
            );
        }
        results
            .entry(t.task_run_id.clone())
            .or_default()
            .add(Some(&t.result), r);
        triggers
            .entry(t.task_run_id.clone())
            .or_insert_with(Stated::folding_case)
            .add(t.triggered_by.as_deref(), r);
        deciding.push(receipt(format!("deploy attempt {}", t.task_run_id), r));
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
                credential_id: t.credential_id.clone(),
                triggered_by: t.triggered_by.clone(),
                trace_id: t.trace_id.clone(),
                reason: t.reason.clone(),
                sources: Vec::new(),
                received_ns: r.received_ns,
                sent_by: Vec::new(),
            });
        if !a.sources.contains(&r.fact.source) {
            a.sources.push(r.fact.source);
            a.sources.sort();
        }
        if let Some(s) = &r.fact.sent_by
            && !a.sent_by.contains(s)
        {
            a.sent_by.push(s.clone());
            a.sent_by.sort();
        }
        a.received_ns = a.received_ns.min(r.received_ns);
        a.retried_from = a.retried_from.clone().or(t.retried_from.clone());
        a.worker = a.worker.clone().or(t.worker.clone());
        a.trace_id = a.trace_id.clone().or(t.trace_id.clone());
        a.reason = a.reason.clone().or(t.reason.clone());
        a.credential_id = a.credential_id.clone().or(t.credential_id.clone());
        a.triggered_by = a.triggered_by.clone().or(t.triggered_by.clone());
        if t.identity
            .as_ref()
            .is_some_and(|i| i.established.is_verified())
            || a.identity.is_none()
        {
            a.identity = t.identity.clone().or(a.identity.clone());
        }
    }
    for (task_run, stated) in &results {
        stated.conflict(&format!("task {task_run} result"), &mut conflicts);
    }
    for (task_run, stated) in &triggers {
        stated.conflict(&format!("task {task_run} triggered_by"), &mut conflicts);
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
    let attempts = || steps.iter().flat_map(|s| s.attempts.iter());
    let first_deploy_start = attempts().map(|a| a.start_ns).min();
    let deploy_end = attempts()
        .filter(|a| a.result == "success")
        .map(|a| a.end_ns)
        .max();
    let deploy_received = attempts().map(|a| a.received_ns).min();

    // Approvals: one per statement. The same decision by the same approver about the same step
    // (or, with no step named, at the same instant) from several sources is one approval: the
    // first kept, or the verified account whole, with its own times and receipt (a verified
    // approver never lends its verdict to another statement's times). Statements about one
    // approval step that disagree on the decision or the approver are conflicts.
    let mut approvals: Vec<ApprovalView> = Vec::new();
    let mut per_step: BTreeMap<String, (Stated, Stated)> = BTreeMap::new();
    for r in &facts {
        let Fact::Approval(a) = &r.fact.fact else {
            continue;
        };
        let approver_subject = a
            .approver
            .as_ref()
            .and_then(|p| p.subject.as_deref())
            .map(super::normalize_subject);
        if let Some(step) = &a.task_run_id
            && a.decision != decision::PENDING
        {
            let (d, who) = per_step
                .entry(step.clone())
                .or_insert_with(|| (Stated::default(), Stated::folding_case()));
            d.add(Some(&a.decision), r);
            who.add(approver_subject.as_deref(), r);
        }
        if a.decision != decision::PENDING {
            use_credentials(
                &mut credentials,
                IdentityRole::Approver,
                a.approver.as_ref(),
                r,
            );
            deciding.push(receipt(
                format!(
                    "approval ({}) by {}",
                    a.decision,
                    approver_subject.as_deref().unwrap_or("(unknown)")
                ),
                r,
            ));
        }
        let same = approvals.iter().position(|v| {
            v.decision == a.decision
                && v.task_run_id == a.task_run_id
                && (a.task_run_id.is_some() || v.decided_ns == a.decided_ns)
                && v.approver
                    .as_ref()
                    .and_then(|p| p.subject.as_deref())
                    .map(super::normalize_subject)
                    == approver_subject
        });
        let view = ApprovalView {
            decision: a.decision.clone(),
            stated_decision: a.stated_decision.clone(),
            approver: a.approver.clone(),
            requested_ns: a.requested_ns,
            decided_ns: a.decided_ns,
            approved_subject: a.approved_subject.clone(),
            task_run_id: a.task_run_id.clone(),
            method: r.fact.source,
            before_first_deploy: None,
            received_ns: r.received_ns,
            seq: r.seq,
            sent_by: r.fact.sent_by.clone(),
        };
        if let Some(i) = same
            && a.decision != decision::PENDING
        {
            let v = &mut approvals[i];
            let verified =
                |p: &Option<Principal>| p.as_ref().is_some_and(|p| p.established.is_verified());
            if verified(&a.approver) && !verified(&v.approver) {
                *v = view;
            } else if verified(&a.approver) == verified(&v.approver) {
                v.received_ns = v.received_ns.min(r.received_ns);
            }
            continue;
        }
        if a.decision == decision::PENDING
            && approvals.iter().any(|v| v.decision != decision::PENDING)
        {
            continue;
        }
        approvals.retain(|v| v.decision != decision::PENDING);
        approvals.push(view);
    }
    for (step, (d, who)) in &per_step {
        d.conflict(&format!("approval {step} decision"), &mut conflicts);
        who.conflict(&format!("approval {step} approver"), &mut conflicts);
    }
    let approved_ns = approvals
        .iter()
        .filter(|a| a.decision == decision::APPROVED)
        .filter_map(|a| a.decided_ns)
        .min();
    let history_rewrites = facts
        .iter()
        .filter_map(|r| match &r.fact.fact {
            Fact::HistoryRewritten(h) => Some(h.clone()),
            _ => None,
        })
        .collect();
    Evidence {
        timeline: Timeline {
            requested_ns: change.requested_ns,
            approved_ns,
            first_deploy_start_ns: first_deploy_start,
            deploy_end_ns: deploy_end,
            deploy_received_ns: deploy_received,
        },
        change,
        requester,
        approvals,
        steps,
        history_rewrites,
        rolled_back_by,
        conflicts,
        deciding,
        credentials: credentials.into_values().collect(),
        judgement: Judgement::default(),
    }
}

type Credentials = BTreeMap<(IdentityRole, String), CredentialUse>;

/// Notes a credential used in `role`, keeping the first entry that shows it.
fn use_credential(
    out: &mut Credentials,
    role: IdentityRole,
    subject: Option<String>,
    credential: String,
    seq: u64,
) {
    let u = out
        .entry((role, credential.clone()))
        .or_insert_with(|| CredentialUse {
            role,
            subject,
            credential,
            seq,
        });
    u.seq = u.seq.min(seq);
}

/// Notes every credential a principal's token shows.
fn use_credentials(out: &mut Credentials, role: IdentityRole, p: Option<&Principal>, r: &Recorded) {
    let Some(p) = p else { return };
    for c in p.established.credentials() {
        use_credential(out, role, p.subject.clone(), c, r.seq);
    }
}

fn receipt(what: String, r: &Recorded) -> Receipt {
    Receipt {
        what,
        seq: r.seq,
        stated_ns: r.fact.stated_ns(),
        received_ns: r.received_ns,
        max_lateness_ns: r.fact.max_lateness_ns,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::identity::Established;
    use crate::core::evidence::{
        ApprovalFact, ChangeFact, FactRecord, Neighbours, RunFinishedFact, Settings, TaskFact,
        judge,
    };

    const MIN: i64 = 60_000_000_000;

    fn record(seq: u64, received: i64, time: i64, fact: Fact) -> Recorded {
        Recorded {
            seq,
            received_ns: received,
            fact: FactRecord {
                key: format!("k{seq}"),
                change_id: Some("CHG-1".into()),
                run_id: Some("wf-1".into()),
                source: Source::Span,
                time_ns: time,
                stated_until_ns: None,
                sent_by: None,
                max_lateness_ns: None,
                fact,
            },
        }
    }

    fn change(env: &str, kind: &str) -> Fact {
        Fact::Change(ChangeFact {
            environment: Some(env.into()),
            kind: Some(kind.into()),
            ..Default::default()
        })
    }

    fn approval(who: Principal, decided: i64) -> Fact {
        Fact::Approval(ApprovalFact {
            decision: "approved".into(),
            stated_decision: None,
            approver: Some(who),
            requested_ns: Some(0),
            decided_ns: Some(decided),
            approved_subject: None,
            task_run_id: Some("appr-1".into()),
        })
    }

    fn bob(verified: bool) -> Principal {
        Principal {
            subject: Some("bob".into()),
            established: if verified {
                Established::Verified {
                    issuer: "idp".into(),
                    roles: vec![],
                    expires_ns: None,
                    token_sha256: "t".into(),
                    signed_sha256: String::new(),
                    jti: None,
                    bound_change: None,
                    bound_artifact: None,
                }
            } else {
                Established::Asserted {
                    reason: "no token".into(),
                    token_sha256: None,
                }
            },
        }
    }

    fn deploy(received: i64) -> Recorded {
        record(
            9,
            received,
            25 * MIN,
            Fact::Task(TaskFact {
                task: "deploy".into(),
                task_run_id: "t1".into(),
                task_type: "deploy".into(),
                attempt: 0,
                retried_from: None,
                result: "success".into(),
                start_ns: 20 * MIN,
                end_ns: 25 * MIN,
                worker: None,
                identity: None,
                credential_id: None,
                triggered_by: None,
                trace_id: None,
                span_id: None,
                reason: None,
            }),
        )
    }

    #[test]
    fn a_fact_placing_the_change_in_production_wins_and_the_contradiction_is_kept() {
        let e = evidence(
            "CHG-1",
            &[
                record(1, 0, 0, change("staging", "emergency")),
                record(2, 0, 1, change("production", "normal")),
            ],
            vec![],
            &Policy::default(),
        );
        assert!(e.change.production);
        assert_eq!(e.change.kind, "normal", "the reading that asks more");
        let fields: Vec<&str> = e.conflicts.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["environment", "kind"]);
        assert_eq!(e.conflicts[0].values[1].seq, 2);
    }

    #[test]
    fn contradicting_run_results_are_a_conflict() {
        let done = |r: &str| {
            Fact::RunFinished(RunFinishedFact {
                result: r.into(),
                end_ns: 30 * MIN,
                compensation_run: None,
            })
        };
        let e = evidence(
            "CHG-1",
            &[
                record(1, 0, 0, done("success")),
                record(2, 0, 0, done("failure")),
            ],
            vec![],
            &Policy::default(),
        );
        assert_eq!(e.conflicts[0].field, "run result");
        assert_eq!(e.deciding.len(), 2, "run outcomes are deciding facts");
    }

    #[test]
    fn a_verified_approver_does_not_lend_its_verdict_to_another_statements_times() {
        // Asserted "bob approved" sent early, dated before the deploy; bob's real, verified
        // approval of the same step arrives after the deploy.
        let facts = [
            record(1, MIN, 10 * MIN, approval(bob(false), 10 * MIN)),
            deploy(26 * MIN),
            record(3, 40 * MIN, 30 * MIN, approval(bob(true), 30 * MIN)),
        ];
        let mut e = evidence("CHG-1", &facts, vec![], &Policy::default());
        judge(&mut e, &Neighbours::default(), &Settings::default());
        assert_eq!(e.approvals.len(), 1);
        let a = &e.approvals[0];
        assert!(a.approver.as_ref().unwrap().established.is_verified());
        assert_eq!(
            (a.decided_ns, a.received_ns, a.seq),
            (Some(30 * MIN), 40 * MIN, 3)
        );
        assert_eq!(a.before_first_deploy, Some(false));
    }

    #[test]
    fn the_same_facts_in_another_order_fold_to_the_same_evidence() {
        let facts = vec![
            record(1, 0, 0, change("production", "normal")),
            record(2, MIN, 10 * MIN, approval(bob(true), 10 * MIN)),
            deploy(26 * MIN),
        ];
        let mut reversed = facts.clone();
        reversed.reverse();
        let p = Policy::default();
        assert_eq!(
            evidence("CHG-1", &facts, vec![], &p),
            evidence("CHG-1", &reversed, vec![], &p)
        );
    }
}
