//! The SOC 2 report's rows re-derived from a ledger's signed entries alone: the population, the
//! exceptions, the control results and the credential rotation table, by the same fold, judgement
//! and rules the service uses — fed the entries of an offline bundle instead of the service's
//! derived tables. `verify-report --bundle` compares them with the report's files, so a report
//! built from a database whose derived tables were tampered with fails offline, although the
//! service signed it.
//!
//! Everything below the report's checkpoint is held in memory (the facts as parsed, per change;
//! per subject, its entry range and bound spans): re-derivation trades memory for needing nothing
//! but the bundle.

use super::evidence::{
    self, Evidence, Fact, FactRecord, Neighbours, Policy, Recorded, sighting_key,
};
use super::hash::Hash;
use super::report::{
    Catalogue, ControlResult, ExceptionRow, LedgerSpan, PopulationRow, Rotation, RotationRow,
    SpanTally, Tally, control_results,
};
use super::rules::{self, Exception, RuleContext};
use super::telemetry::SPANS_BOUND;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The entries about one subject below the checkpoint.
#[derive(Debug, Clone, Default)]
struct Subject {
    first: u64,
    last: u64,
    count: u64,
    last_leaf: Option<Hash>,
}

/// What the entries below a checkpoint hold, gathered as they stream past.
#[derive(Debug, Default)]
pub struct LedgerFacts {
    size: u64,
    facts: Vec<Recorded>,
    subjects: HashMap<String, Subject>,
    spans: HashMap<String, SpanTally>,
}

impl LedgerFacts {
    /// For a report built against checkpoint `size`: entries at or past it are ignored.
    pub fn new(size: u64) -> LedgerFacts {
        LedgerFacts {
            size,
            ..Default::default()
        }
    }

    /// One entry, in any order. Its payload, if present, is what the ledger signed.
    pub fn push(
        &mut self,
        seq: u64,
        kind: &str,
        subject: &str,
        time_ns: i64,
        leaf: Hash,
        payload: Option<&str>,
    ) {
        if seq >= self.size {
            return;
        }
        let s = self.subjects.entry(subject.to_owned()).or_insert(Subject {
            first: seq,
            last: seq,
            count: 0,
            last_leaf: None,
        });
        s.count += 1;
        s.first = s.first.min(seq);
        if seq >= s.last || s.last_leaf.is_none() {
            s.last = seq;
            s.last_leaf = Some(leaf);
        }
        let Some(payload) = payload else {
            return;
        };
        if evidence::FACT_KINDS.contains(&kind) {
            // What the writer would have stored as a fact: a fact record about this subject.
            if let Ok(fact) = serde_json::from_str::<FactRecord>(payload)
                && fact.fact.entry_kind() == kind
                && fact.subject() == subject
            {
                self.facts.push(Recorded {
                    seq,
                    received_ns: time_ns,
                    fact,
                });
            }
        } else if kind == SPANS_BOUND
            && let Ok(d) = super::derived::derive(seq, kind, subject, time_ns, payload)
        {
            let t = self.spans.entry(subject.to_owned()).or_default();
            for r in d.spans {
                t.count += 1;
                t.traces.insert(r.trace_id);
            }
        }
    }

    /// The ledger span of a change: the entries about it and its runs.
    fn ledger_span(&self, ev: &Evidence) -> LedgerSpan {
        let mut l = LedgerSpan::default();
        for s in std::iter::once(&ev.change.id).chain(ev.change.runs.iter()) {
            if let Some(e) = self.subjects.get(s) {
                l.entries += e.count;
                l.first_seq = Some(l.first_seq.map_or(e.first, |f| f.min(e.first)));
                if l.last_seq.is_none_or(|x| e.last > x) {
                    l.last_seq = Some(e.last);
                    l.last_leaf_hash = e.last_leaf.map(|h| h.to_hex());
                }
            }
        }
        l
    }

    fn span_tally(&self, ev: &Evidence) -> SpanTally {
        let mut t = SpanTally::default();
        for s in std::iter::once(&ev.change.id).chain(ev.change.runs.iter()) {
            if let Some(x) = self.spans.get(s) {
                t.count += x.count;
                t.traces.extend(x.traces.iter().cloned());
            }
        }
        t
    }
}

/// What the report was asked for and how it judges: the manifest's query and settings.
#[derive(Debug, Clone)]
pub struct Scope {
    pub from_ns: i64,
    pub to_ns: i64,
    pub environment: Option<String>,
    pub service: Option<String>,
    pub policy: Policy,
    pub rules: RuleContext,
    pub judging: evidence::Settings,
    /// The version match tolerance.
    pub tolerance_ns: i64,
}

impl Scope {
    /// Whether a change is in the report's population: a production change of the asked
    /// environment and service.
    pub fn holds(&self, e: &Evidence) -> bool {
        let c = &e.change;
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        c.production && eq(&self.environment, &c.environment) && eq(&self.service, &c.service)
    }
}

/// The report's rows as the entries give them.
#[derive(Debug, Clone, Default)]
pub struct Rederived {
    pub population: Vec<PopulationRow>,
    pub exceptions: Vec<ExceptionRow>,
    pub controls: Vec<ControlResult>,
    pub rotation: Vec<RotationRow>,
}

/// Re-derives the report over `l`. `ledger_findings` are the verifier's findings (as exceptions,
/// with the entry each names), which the report lists as EVIDENCE_GAP rows.
pub fn rederive(
    l: &LedgerFacts,
    scope: &Scope,
    cat: &Catalogue,
    ledger_findings: &[(Exception, Option<u64>)],
) -> Rederived {
    // The indexes the service reads from storage, from the facts themselves.
    let mut by_change: HashMap<&str, Vec<&Recorded>> = HashMap::new();
    let mut by_run: HashMap<&str, Vec<&Recorded>> = HashMap::new();
    let mut in_period: BTreeSet<String> = BTreeSet::new();
    let mut rollbacks: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut deployers: HashMap<(String, String, String), BTreeSet<String>> = HashMap::new();
    let mut n = Neighbours::default();
    let mut versions: Vec<(evidence::VersionFact, u64)> = Vec::new();
    let in_scope = |t: i64| t >= scope.from_ns && t < scope.to_ns;
    for r in &l.facts {
        let f = &r.fact;
        if let Some(c) = &f.change_id {
            by_change.entry(c).or_default().push(r);
            n.add_run_claim(c, c);
            if let Some(run) = &f.run_id {
                n.add_run_claim(run, c);
            }
        }
        if let Some(run) = &f.run_id {
            by_run.entry(run).or_default().push(r);
        }
        for c in f.credentials() {
            n.add_credential(&c, &f.subject(), r.seq);
        }
        match &f.fact {
            Fact::Change(c) => {
                n.known.extend(f.change_id.clone());
                n.known.extend(f.run_id.clone());
                let subject = f.subject();
                // In the period by the time it states or by when it arrived: history sent late
                // into a closed period shows in the period it arrived in too.
                let in_period_here = in_scope(f.time_ns) || in_scope(r.received_ns);
                if let Some(id) = &f.change_id
                    && in_period_here
                {
                    in_period.insert(id.clone());
                }
                if let Some(of) = &c.rollback_of {
                    rollbacks
                        .entry(of.clone())
                        .or_default()
                        .insert(subject.clone());
                }
                if !in_period_here
                    && let (Some(s), Some(e), Some(v)) = (&c.service, &c.environment, &c.version)
                {
                    deployers
                        .entry(sighting_key(s, e, v))
                        .or_default()
                        .insert(subject);
                }
            }
            Fact::Version(v) => {
                n.add_sighting(v);
                let in_scope = scope.policy.is_production(&v.environment)
                    && (in_scope(v.first_seen_ns) || in_scope(r.received_ns))
                    && scope
                        .environment
                        .as_ref()
                        .is_none_or(|e| e.eq_ignore_ascii_case(&v.environment))
                    && scope.service.as_ref().is_none_or(|s| s == &v.service);
                if in_scope {
                    versions.push((v.clone(), r.seq));
                }
            }
            _ => {}
        }
    }
    versions.sort_by_key(|(v, seq)| (v.first_seen_ns, *seq));

    let fold = |id: &str| -> Evidence {
        let mut facts: Vec<Recorded> = by_change
            .get(id)
            .map(|v| v.iter().map(|r| (*r).clone()).collect())
            .unwrap_or_default();
        let runs: BTreeSet<String> = facts.iter().filter_map(|r| r.fact.run_id.clone()).collect();
        for run in &runs {
            // A fact naming another change is that change's, whatever run it names.
            for r in by_run.get(run.as_str()).into_iter().flatten() {
                if r.fact.change_id.is_none() {
                    facts.push((*r).clone());
                }
            }
        }
        let mut rolled_back_by = BTreeSet::new();
        for k in std::iter::once(id).chain(runs.iter().map(String::as_str)) {
            if let Some(r) = rollbacks.get(k) {
                rolled_back_by.extend(r.iter().cloned());
            }
        }
        let mut ev = evidence::evidence(
            id,
            &facts,
            rolled_back_by.into_iter().collect(),
            &scope.policy,
        );
        evidence::judge(&mut ev, &n, &scope.judging);
        ev
    };

    let mut out = Rederived::default();
    let mut tally = Tally::new();
    let mut rotation = Rotation::default();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut processed: BTreeSet<String> = BTreeSet::new();
    let mut explained = vec![false; versions.len()];
    let mut exception = |code_row: ExceptionRow, out: &mut Rederived| {
        *counts.entry(code_row.code.clone()).or_default() += 1;
        out.exceptions.push(code_row);
    };
    for id in &in_period {
        let ev = fold(id);
        if !scope.holds(&ev) {
            continue;
        }
        processed.insert(id.clone());
        let spans = l.span_tally(&ev);
        let ledger = l.ledger_span(&ev);
        let xs = rules::judged_exceptions(&ev, &[], &scope.rules);
        out.population
            .push(PopulationRow::new(&ev, &spans, &ledger, &xs));
        tally.change(&ev, &xs);
        rotation.change(&ev);
        for x in &xs {
            exception(
                ExceptionRow::new(cat, id, x, (ledger.first_seq, ledger.last_seq)),
                &mut out,
            );
        }
        for (i, (v, _)) in versions.iter().enumerate() {
            if !explained[i] && evidence::explains(&ev, v, scope.tolerance_ns) {
                explained[i] = true;
            }
        }
    }
    for (i, (v, seq)) in versions.iter().enumerate() {
        if explained[i] {
            continue;
        }
        let by_other = deployers
            .get(&sighting_key(&v.service, &v.environment, &v.version))
            .into_iter()
            .flatten()
            .filter(|c| !processed.contains(*c))
            .any(|c| evidence::explains(&fold(c), v, scope.tolerance_ns));
        if !by_other {
            let x = rules::unlinked_deploy(v);
            exception(
                ExceptionRow::new(cat, "", &x, (Some(*seq), Some(*seq))),
                &mut out,
            );
        }
    }
    for (x, seq) in ledger_findings {
        exception(ExceptionRow::new(cat, "", x, (*seq, *seq)), &mut out);
    }
    out.controls = control_results(
        cat,
        &counts,
        tally.changes,
        l.size,
        &scope.rules.untested_codes(),
    );
    out.rotation = rotation.rows().cloned().collect();
    out
}
