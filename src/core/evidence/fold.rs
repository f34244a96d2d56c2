//! A change's facts folded into its evidence packet. Facts are put in a canonical order first,
//! so the result depends on the set of facts, never on their arrival order; facts that
//! contradict each other are all kept, as conflicts, and the fold picks the reading that asks
//! more of the change (a change any fact places in production is a production change).

use super::judge::Judgement;
use super::packet::{
    ApprovalView, AttemptView, ChangeView, Conflict, CredentialUse, Evidence, GateView,
    IdentityRole, Receipt, StatedValue, StepView, Timeline,
};
use super::{
    ApprovalFact, ChangeFact, Fact, Policy, Recorded, RunFinishedFact, SentBy, TaskFact, decision,
};
use crate::core::evidence::identity::Principal;
use std::collections::{BTreeMap, BTreeSet};

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
    let facts = canonical(facts);
    let mut f = Folding::default();
    let (change, requester) = f.change(change_id, &facts, policy);
    let steps = f.steps(&facts);
    let approvals = f.approvals(&facts);
    let attempts = || steps.iter().flat_map(|s| s.attempts.iter());
    let timeline = Timeline {
        requested_ns: change.requested_ns,
        approved_ns: approvals
            .iter()
            .filter(|a| a.decision == decision::APPROVED)
            .filter_map(|a| a.decided_ns)
            .min(),
        first_deploy_start_ns: attempts().map(|a| a.start_ns).min(),
        deploy_end_ns: attempts()
            .filter(|a| a.result == "success")
            .map(|a| a.end_ns)
            .max(),
        deploy_received_ns: attempts().map(|a| a.received_ns).min(),
    };
    let history_rewrites = facts
        .iter()
        .filter_map(|r| match &r.fact.fact {
            Fact::HistoryRewritten(h) => Some(h.clone()),
            _ => None,
        })
        .collect();
    let mut gates: Vec<GateView> = facts
        .iter()
        .filter_map(|r| match &r.fact.fact {
            Fact::Gate(g) => Some(GateView {
                decided: g.clone(),
                decided_ns: r.fact.time_ns,
                seq: r.seq,
                asked_by: r.fact.sent_by.clone(),
            }),
            _ => None,
        })
        .collect();
    gates.sort_by_key(|g| g.seq);
    // One comparison per change (its key has no digest); should a second exist, the first
    // recorded stands.
    let runtime = facts
        .iter()
        .filter_map(|r| match &r.fact.fact {
            Fact::RuntimeCompared(c) => Some((r.seq, c)),
            _ => None,
        })
        .min_by_key(|(seq, _)| *seq)
        .map(|(_, c)| c.clone());
    Evidence {
        timeline,
        runtime,
        change,
        requester,
        approvals,
        steps,
        history_rewrites,
        gates,
        rolled_back_by,
        conflicts: f.conflicts,
        deciding: f.deciding,
        credentials: f.credentials.into_values().collect(),
        judgement: Judgement::default(),
    }
}

/// The facts in the one order every fold reads them in: by stated time, then key, then entry.
fn canonical(facts: &[Recorded]) -> Vec<&Recorded> {
    let mut facts: Vec<&Recorded> = facts.iter().collect();
    facts.sort_by(|a, b| {
        (a.fact.time_ns, &a.fact.key, a.seq).cmp(&(b.fact.time_ns, &b.fact.key, b.seq))
    });
    facts
}

/// What the fold gathers across the change, its steps and its approvals.
#[derive(Default)]
struct Folding {
    conflicts: Vec<Conflict>,
    deciding: Vec<Receipt>,
    credentials: Credentials,
}

/// What the change.requested facts state about the change, field by field.
struct Described {
    environment: Stated,
    kind: Stated,
    service: Stated,
    version: Stated,
    artifact: Stated,
    revision: Stated,
    rollback_of: Stated,
    pipeline: Stated,
    justification: Stated,
    requester: Stated,
}

impl Described {
    fn new() -> Described {
        Described {
            environment: Stated::folding_case(),
            kind: Stated::folding_case(),
            service: Stated::default(),
            version: Stated::default(),
            artifact: Stated::default(),
            revision: Stated::default(),
            rollback_of: Stated::default(),
            pipeline: Stated::default(),
            justification: Stated::default(),
            requester: Stated::folding_case(),
        }
    }

    fn add(&mut self, c: &ChangeFact, r: &Recorded) {
        self.environment.add(c.environment.as_deref(), r);
        self.kind.add(c.kind.as_deref(), r);
        self.service.add(c.service.as_deref(), r);
        self.version.add(c.version.as_deref(), r);
        self.artifact.add(c.artifact.as_deref(), r);
        self.revision.add(c.revision.as_deref(), r);
        self.rollback_of.add(c.rollback_of.as_deref(), r);
        self.pipeline.add(c.pipeline.as_deref(), r);
        self.justification.add(c.justification.as_deref(), r);
        if let Some(p) = &c.requester {
            let norm = p.subject.as_deref().map(super::normalize_subject);
            self.requester.add(norm.as_deref(), r);
        }
    }

    fn conflicts(&self, out: &mut Vec<Conflict>) {
        self.environment.conflict("environment", out);
        self.kind.conflict("kind", out);
        self.service.conflict("service", out);
        self.version.conflict("version", out);
        self.artifact.conflict("artifact", out);
        self.revision.conflict("revision", out);
        self.rollback_of.conflict("rollback_of", out);
        self.pipeline.conflict("pipeline", out);
        self.justification.conflict("justification", out);
        self.requester.conflict("requester", out);
    }

    /// A change any fact places in production is judged as one: a fact saying "staging" must not
    /// take a production change out of the population.
    fn environment(&self, policy: &Policy) -> Option<String> {
        self.environment
            .values
            .iter()
            .find(|v| policy.is_production(&v.value))
            .map(|v| v.value.clone())
            .or_else(|| self.environment.first())
    }

    /// Kinds that contradict each other are judged by the one that asks most: a normal change
    /// needs its approval before the deploy, an emergency or a rollback less.
    fn kind(&self) -> String {
        let kind = &self.kind;
        if kind.values.len() > 1 && kind.values.iter().any(|v| v.value == "normal") {
            "normal".to_owned()
        } else {
            kind.first().unwrap_or_else(|| "normal".into())
        }
    }
}

impl Folding {
    /// What the change is and how its runs ended, and who requested it.
    fn change(
        &mut self,
        change_id: &str,
        facts: &[&Recorded],
        policy: &Policy,
    ) -> (ChangeView, Option<Principal>) {
        let mut described = Described::new();
        let mut requesters: Vec<&Principal> = Vec::new();
        let mut requested_ns: Option<i64> = None;
        let mut change_senders: BTreeSet<SentBy> = BTreeSet::new();
        let mut finished: Vec<&RunFinishedFact> = Vec::new();
        let mut run_result = Stated::default();
        let mut runs: BTreeSet<String> = BTreeSet::new();
        for r in facts {
            runs.extend(r.fact.run_id.clone());
            match &r.fact.fact {
                Fact::Change(c) => {
                    described.add(c, r);
                    if let Some(p) = &c.requester {
                        requesters.push(p);
                        use_credentials(&mut self.credentials, IdentityRole::Requester, Some(p), r);
                    }
                    requested_ns =
                        Some(requested_ns.map_or(c.requested_ns, |t| t.min(c.requested_ns)));
                    change_senders.extend(r.fact.sent_by.clone());
                    self.deciding.push(receipt("change.requested".into(), r));
                }
                Fact::RunFinished(f) => {
                    finished.push(f);
                    run_result.add(Some(&f.result), r);
                    self.deciding.push(receipt("change.finished".into(), r));
                }
                _ => {}
            }
        }
        described.conflicts(&mut self.conflicts);
        run_result.conflict("run result", &mut self.conflicts);
        let environment = described.environment(policy);
        let change = ChangeView {
            id: change_id.to_owned(),
            runs: runs.into_iter().collect(),
            kind: described.kind(),
            production: environment
                .as_deref()
                .is_some_and(|e| policy.is_production(e)),
            environment,
            pipeline: described.pipeline.first(),
            service: described.service.first(),
            version: described.version.first(),
            artifact: described.artifact.first(),
            revision: described.revision.first(),
            rollback_of: described.rollback_of.first(),
            justification: described.justification.first(),
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
        (change, requester)
    }

    /// Steps: attempts grouped by task, the same attempt from several sources merged. Statements
    /// of one attempt that disagree on its result or on who set it off are conflicts.
    fn steps(&mut self, facts: &[&Recorded]) -> Vec<StepView> {
        let mut by_task: BTreeMap<String, BTreeMap<String, AttemptView>> = BTreeMap::new();
        let mut task_types: BTreeMap<String, String> = BTreeMap::new();
        let mut results: BTreeMap<String, Stated> = BTreeMap::new();
        let mut triggers: BTreeMap<String, Stated> = BTreeMap::new();
        for r in facts {
            let Fact::Task(t) = &r.fact.fact else {
                continue;
            };
            self.deployer_credentials(t, r);
            results
                .entry(t.task_run_id.clone())
                .or_default()
                .add(Some(&t.result), r);
            triggers
                .entry(t.task_run_id.clone())
                .or_insert_with(Stated::folding_case)
                .add(t.triggered_by.as_deref(), r);
            self.deciding
                .push(receipt(format!("deploy attempt {}", t.task_run_id), r));
            task_types
                .entry(t.task.clone())
                .or_insert_with(|| t.task_type.clone());
            by_task
                .entry(t.task.clone())
                .or_default()
                .entry(t.task_run_id.clone())
                .or_insert_with(|| AttemptView::first(t, r))
                .merge(t, r);
        }
        for (task_run, stated) in &results {
            stated.conflict(&format!("task {task_run} result"), &mut self.conflicts);
        }
        for (task_run, stated) in &triggers {
            stated.conflict(
                &format!("task {task_run} triggered_by"),
                &mut self.conflicts,
            );
        }
        by_task
            .into_iter()
            .map(|(task, attempts)| {
                let task_type = task_types.get(&task).cloned().unwrap_or_default();
                StepView::new(task, task_type, attempts.into_values().collect())
            })
            .collect()
    }

    /// The credentials a deploy attempt shows: its identity's token and its stated credential.
    fn deployer_credentials(&mut self, t: &TaskFact, r: &Recorded) {
        use_credentials(
            &mut self.credentials,
            IdentityRole::Deployer,
            t.identity.as_ref(),
            r,
        );
        if let Some(id) = &t.credential_id {
            use_credential(
                &mut self.credentials,
                IdentityRole::Deployer,
                t.identity.as_ref().and_then(|p| p.subject.clone()),
                format!("key:{id}"),
                r.seq,
            );
        }
    }

    /// Approvals: one per statement. The same decision by the same approver about the same step
    /// (or, with no step named, at the same instant) from several sources is one approval: the
    /// first kept, or the verified account whole, with its own times and receipt (a verified
    /// approver never lends its verdict to another statement's times). Statements about one
    /// approval step that disagree on the decision or the approver are conflicts. A pending
    /// approval stands only until a decision is stated.
    fn approvals(&mut self, facts: &[&Recorded]) -> Vec<ApprovalView> {
        let mut approvals: Vec<ApprovalView> = Vec::new();
        let mut per_step: BTreeMap<String, (Stated, Stated)> = BTreeMap::new();
        for r in facts {
            let Fact::Approval(a) = &r.fact.fact else {
                continue;
            };
            let approver_subject = a
                .approver
                .as_ref()
                .and_then(|p| p.subject.as_deref())
                .map(super::normalize_subject);
            let pending = a.decision == decision::PENDING;
            if !pending {
                if let Some(step) = &a.task_run_id {
                    let (d, who) = per_step
                        .entry(step.clone())
                        .or_insert_with(|| (Stated::default(), Stated::folding_case()));
                    d.add(Some(&a.decision), r);
                    who.add(approver_subject.as_deref(), r);
                }
                self.approver_decided(a, approver_subject.as_deref(), r);
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
            if let Some(i) = same
                && !pending
            {
                approvals[i].merge(a, r);
                continue;
            }
            if pending && approvals.iter().any(|v| v.decision != decision::PENDING) {
                continue;
            }
            approvals.retain(|v| v.decision != decision::PENDING);
            approvals.push(ApprovalView::of(a, r));
        }
        for (step, (d, who)) in &per_step {
            d.conflict(&format!("approval {step} decision"), &mut self.conflicts);
            who.conflict(&format!("approval {step} approver"), &mut self.conflicts);
        }
        approvals
    }

    /// A decision is a deciding fact, and its approver's token a credential of the change.
    fn approver_decided(&mut self, a: &ApprovalFact, approver_subject: Option<&str>, r: &Recorded) {
        use_credentials(
            &mut self.credentials,
            IdentityRole::Approver,
            a.approver.as_ref(),
            r,
        );
        self.deciding.push(receipt(
            format!(
                "approval ({}) by {}",
                a.decision,
                approver_subject.unwrap_or("(unknown)")
            ),
            r,
        ));
    }
}

impl AttemptView {
    /// An attempt as its first statement (in canonical order) gives it.
    fn first(t: &TaskFact, r: &Recorded) -> AttemptView {
        AttemptView {
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
        }
    }

    /// Another statement of this attempt: its source and sender added, the earliest receipt
    /// kept, gaps filled, and a verified identity preferred.
    fn merge(&mut self, t: &TaskFact, r: &Recorded) {
        if !self.sources.contains(&r.fact.source) {
            self.sources.push(r.fact.source);
            self.sources.sort();
        }
        if let Some(s) = &r.fact.sent_by
            && !self.sent_by.contains(s)
        {
            self.sent_by.push(s.clone());
            self.sent_by.sort();
        }
        self.received_ns = self.received_ns.min(r.received_ns);
        self.retried_from = self.retried_from.clone().or(t.retried_from.clone());
        self.worker = self.worker.clone().or(t.worker.clone());
        self.trace_id = self.trace_id.clone().or(t.trace_id.clone());
        self.reason = self.reason.clone().or(t.reason.clone());
        self.credential_id = self.credential_id.clone().or(t.credential_id.clone());
        self.triggered_by = self.triggered_by.clone().or(t.triggered_by.clone());
        if t.identity
            .as_ref()
            .is_some_and(|i| i.established.is_verified())
            || self.identity.is_none()
        {
            self.identity = t.identity.clone().or(self.identity.clone());
        }
    }
}

impl StepView {
    /// A step from its attempts, in attempt order: its outcome is the last attempt's.
    fn new(task: String, task_type: String, mut attempts: Vec<AttemptView>) -> StepView {
        attempts.sort_by(|a, b| {
            (a.attempt, a.start_ns, &a.task_run_id).cmp(&(b.attempt, b.start_ns, &b.task_run_id))
        });
        let outcome = attempts
            .last()
            .map(|a| a.result.clone())
            .unwrap_or_default();
        let summary = summarize(&attempts);
        StepView {
            task_type,
            task,
            attempts,
            outcome,
            summary,
        }
    }
}

impl ApprovalView {
    fn of(a: &ApprovalFact, r: &Recorded) -> ApprovalView {
        ApprovalView {
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
        }
    }

    /// Another statement of this approval: a verified account replaces an asserted one whole;
    /// between equals the earliest receipt is kept.
    fn merge(&mut self, a: &ApprovalFact, r: &Recorded) {
        let verified =
            |p: &Option<Principal>| p.as_ref().is_some_and(|p| p.established.is_verified());
        if verified(&a.approver) && !verified(&self.approver) {
            *self = ApprovalView::of(a, r);
        } else if verified(&a.approver) == verified(&self.approver) {
            self.received_ns = self.received_ns.min(r.received_ns);
        }
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

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
