//! The SOC 2 report's rows re-derived from a ledger's signed entries alone: the population, the
//! exceptions, the control results and the credential rotation table, by the same fold, judgement
//! and rules the service uses — fed the entries of an offline bundle instead of the service's
//! derived tables. `verify-report --bundle` compares them with the report's files, so a report
//! built from a database whose derived tables were tampered with fails offline, although the
//! service signed it.
//!
//! Held in memory per fact is where to read it again (a locator into the bundle and the SHA-256
//! of its payload, 64 bytes), plus the small indexes judging needs (each credential's first use, run
//! claims, change ids, version sightings, each change's period and rollback link); the facts
//! themselves are read back from the bundle one change at a time, and a payload that no longer
//! matches its digest stops re-derivation. `verify-report --bundle` on a 100k-change ledger
//! (1,000,201 entries) peaks at about 660 MB this way, against 1.53 GB holding every fact parsed.

use super::report::{
    Catalogue, ControlResult, ExceptionRow, LedgerSpan, PopulationRow, Rotation, RotationRow,
    SpanTally, Tally, control_results,
};
use super::rules::{self, Exception, RuleContext};
use super::telemetry::SPANS_BOUND;
use crate::core::evidence::{
    self, Evidence, Fact, FactRecord, Neighbours, Policy, Recorded, sighting_key,
};
use crate::core::ledger::hash::Hash;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The entries about one subject below the checkpoint.
#[derive(Debug, Clone, Default)]
struct Subject {
    first: u64,
    last: u64,
    count: u64,
    last_leaf: Option<Hash>,
}

/// Where a fact's entry lies in the source the caller reads entries from (for a bundle, the
/// line's byte offset and length), and the digest of the payload seen on the first pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locator {
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy)]
struct FactRef {
    seq: u64,
    received_ns: i64,
    at: Locator,
    /// The whole SHA-256: the second read is checked by it alone, so it must resist collisions.
    digest: Hash,
}

/// A change.requested fact, as much of it as decides the population and version explanations.
#[derive(Debug, Clone)]
struct ChangeStub {
    subject: String,
    change_id: Option<String>,
    time_ns: i64,
    received_ns: i64,
    rollback_of: Option<String>,
    deploys: Option<(String, String, String)>,
}

/// Reads a fact's payload again, given where the first pass saw it.
pub trait PayloadSource {
    fn payload(&mut self, at: Locator) -> Result<String, String>;
}

/// Payloads kept in memory, by locator offset (for tests and small ledgers).
impl PayloadSource for HashMap<u64, String> {
    fn payload(&mut self, at: Locator) -> Result<String, String> {
        self.get(&at.offset)
            .cloned()
            .ok_or_else(|| format!("no payload at {}", at.offset))
    }
}

fn digest(payload: &str) -> Hash {
    Hash::of(&[payload.as_bytes()])
}

/// What the entries below a checkpoint hold, gathered as they stream past.
#[derive(Debug, Default)]
pub struct LedgerFacts {
    size: u64,
    facts: Vec<FactRef>,
    /// Change id → its facts (indexes into `facts`), in push order.
    by_change: HashMap<String, Vec<u32>>,
    /// Run id → the facts naming it and no change.
    by_run: HashMap<String, Vec<u32>>,
    changes: Vec<ChangeStub>,
    versions: Vec<(evidence::VersionFact, u64, i64)>,
    /// Each credential's first use below the checkpoint: all that reuse needs (a change reused
    /// a credential exactly when its first use belongs to another subject).
    first_uses: HashMap<String, (String, u64)>,
    known: std::collections::HashSet<String>,
    run_claims: HashMap<String, BTreeSet<String>>,
    subjects: HashMap<String, Subject>,
    spans: HashMap<String, SpanTally>,
    /// More facts than the index can name (2^32): re-derivation refuses rather than alias them.
    overflow: bool,
}

impl LedgerFacts {
    /// For a report built against checkpoint `size`: entries at or past it are ignored.
    pub fn new(size: u64) -> LedgerFacts {
        LedgerFacts {
            size,
            ..Default::default()
        }
    }

    /// One entry, in entry order; `at` is where it can be read again. Its payload, if present,
    /// is what the ledger signed.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        seq: u64,
        kind: &str,
        subject: &str,
        time_ns: i64,
        leaf: Hash,
        payload: Option<&str>,
        at: Locator,
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
            if let Ok(f) = serde_json::from_str::<FactRecord>(payload)
                && f.fact.entry_kind() == kind
                && f.subject() == subject
            {
                self.index(f, seq, time_ns, at, digest(payload));
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

    fn index(&mut self, f: FactRecord, seq: u64, received_ns: i64, at: Locator, d: Hash) {
        let Ok(i) = u32::try_from(self.facts.len()) else {
            self.overflow = true;
            return;
        };
        self.facts.push(FactRef {
            seq,
            received_ns,
            at,
            digest: d,
        });
        let subject = f.subject();
        if let Some(c) = &f.change_id {
            self.by_change.entry(c.clone()).or_default().push(i);
            // As `Store::run_claims`: a gate decision claims no run.
            if !matches!(f.fact, super::Fact::Gate(_)) {
                self.add_run_claim(c, c);
            }
            if let Some(run) = &f.run_id {
                self.add_run_claim(run, c);
            }
        } else if let Some(run) = &f.run_id {
            self.by_run.entry(run.clone()).or_default().push(i);
        }
        for c in f.credentials() {
            match self.first_uses.get_mut(&c) {
                Some(first) if first.1 <= seq => {}
                Some(first) => *first = (subject.clone(), seq),
                None => {
                    self.first_uses.insert(c, (subject.clone(), seq));
                }
            }
        }
        match f.fact {
            Fact::Change(c) => {
                self.known.extend(f.change_id.clone());
                self.known.extend(f.run_id.clone());
                self.changes.push(ChangeStub {
                    subject,
                    change_id: f.change_id,
                    time_ns: f.time_ns,
                    received_ns,
                    rollback_of: c.rollback_of,
                    deploys: match (c.service, c.environment, c.version) {
                        (Some(s), Some(e), Some(v)) => Some((s, e, v)),
                        _ => None,
                    },
                });
            }
            Fact::Version(v) => self.versions.push((v, seq, received_ns)),
            _ => {}
        }
    }

    fn add_run_claim(&mut self, run: &str, change: &str) {
        if let Some(set) = self.run_claims.get_mut(run) {
            if !set.contains(change) {
                set.insert(change.to_owned());
            }
        } else {
            self.run_claims
                .insert(run.to_owned(), BTreeSet::from([change.to_owned()]));
        }
    }

    /// The facts `ids` point at, read again from `src` and checked against the first pass.
    fn load(&self, ids: &[u32], src: &mut dyn PayloadSource) -> Result<Vec<Recorded>, String> {
        let mut out = Vec::with_capacity(ids.len());
        for &i in ids {
            let r = self.facts[i as usize];
            let payload = src.payload(r.at)?;
            if digest(&payload) != r.digest {
                return Err(format!(
                    "entry {}'s payload changed since it was verified: the bundle was modified while being read",
                    r.seq
                ));
            }
            let fact = serde_json::from_str::<FactRecord>(&payload)
                .map_err(|e| format!("entry {}: {e}", r.seq))?;
            out.push(Recorded {
                seq: r.seq,
                received_ns: r.received_ns,
                fact,
            });
        }
        Ok(out)
    }

    /// The neighbours judging looks up, from the whole ledger below the checkpoint (moved out:
    /// they are the largest indexes, and only judging reads them).
    fn take_neighbours(&mut self) -> Neighbours {
        let mut n = Neighbours {
            known: std::mem::take(&mut self.known),
            run_claims: std::mem::take(&mut self.run_claims),
            ..Default::default()
        };
        for (c, (subject, seq)) in std::mem::take(&mut self.first_uses) {
            n.credentials.insert(c, vec![(subject, seq)]);
        }
        for (v, _, _) in &self.versions {
            n.add_sighting(v);
        }
        n
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

/// Re-derives the report over `l`, reading each change's facts again from `src`.
/// `ledger_findings` are the verifier's findings (as exceptions, with the entry each names),
/// which the report lists as EVIDENCE_GAP rows. Fails only when a fact cannot be read again as
/// it was first seen.
pub fn rederive(
    mut l: LedgerFacts,
    src: &mut dyn PayloadSource,
    scope: &Scope,
    cat: &Catalogue,
    ledger_findings: &[(Exception, Option<u64>)],
) -> Result<Rederived, String> {
    if l.overflow {
        return Err("the ledger holds more facts than re-derivation indexes (2^32)".into());
    }
    let n = l.take_neighbours();
    let l = &l;
    let period = Period::of(l, scope);
    let mut sightings = Sightings::in_scope(l, scope);
    let folder = Folder {
        l,
        n: &n,
        rollbacks: &period.rollbacks,
        scope,
    };
    let mut rows = Rows::new();
    let processed = population(&folder, src, &period, cat, &mut sightings, &mut rows)?;
    unexplained_sightings(
        &folder, src, &period, &processed, &sightings, cat, &mut rows,
    )?;
    for (x, seq) in ledger_findings {
        rows.exception(ExceptionRow::new(cat, "", x, (*seq, *seq)));
    }
    rows.out.controls = control_results(
        cat,
        &rows.counts,
        rows.tally.changes,
        l.size,
        &scope.rules.untested_codes(),
    );
    rows.out.rotation = rows.rotation.rows().cloned().collect();
    Ok(rows.out)
}

/// Which changes the period holds, which changes roll back which, and which changes outside the
/// period deployed which version.
struct Period<'a> {
    in_period: BTreeSet<&'a str>,
    /// Change or run id → the changes that name it as what they roll back.
    rollbacks: HashMap<&'a str, BTreeSet<&'a str>>,
    deployers: HashMap<(String, String, String), BTreeSet<&'a str>>,
}

impl<'a> Period<'a> {
    fn of(l: &'a LedgerFacts, scope: &Scope) -> Period<'a> {
        let in_scope = |t: i64| t >= scope.from_ns && t < scope.to_ns;
        let mut p = Period {
            in_period: BTreeSet::new(),
            rollbacks: HashMap::new(),
            deployers: HashMap::new(),
        };
        for c in &l.changes {
            // In the period by the time it states or by when it arrived: history sent late into
            // a closed period shows in the period it arrived in too.
            let in_period_here = in_scope(c.time_ns) || in_scope(c.received_ns);
            if let Some(id) = &c.change_id
                && in_period_here
            {
                p.in_period.insert(id);
            }
            if let Some(of) = &c.rollback_of {
                p.rollbacks.entry(of).or_default().insert(&c.subject);
            }
            if !in_period_here && let Some((s, e, v)) = &c.deploys {
                p.deployers
                    .entry(sighting_key(s, e, v))
                    .or_default()
                    .insert(&c.subject);
            }
        }
        p
    }
}

/// The production version sightings the report covers, in time order, and which of them a
/// change has explained so far.
struct Sightings<'a> {
    versions: Vec<(&'a evidence::VersionFact, u64)>,
    /// Only sightings of the version a change deployed can be explained by it.
    of: HashMap<(String, String, String), Vec<usize>>,
    explained: Vec<bool>,
}

impl<'a> Sightings<'a> {
    fn in_scope(l: &'a LedgerFacts, scope: &Scope) -> Sightings<'a> {
        let in_scope = |t: i64| t >= scope.from_ns && t < scope.to_ns;
        let mut versions: Vec<(&evidence::VersionFact, u64)> = l
            .versions
            .iter()
            .filter(|(v, _, received_ns)| {
                scope.policy.is_production(&v.environment)
                    && (in_scope(v.first_seen_ns) || in_scope(*received_ns))
                    && scope
                        .environment
                        .as_ref()
                        .is_none_or(|e| e.eq_ignore_ascii_case(&v.environment))
                    && scope.service.as_ref().is_none_or(|s| s == &v.service)
            })
            .map(|(v, seq, _)| (v, *seq))
            .collect();
        versions.sort_by_key(|(v, seq)| (v.first_seen_ns, *seq));
        let mut of: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
        for (i, (v, _)) in versions.iter().enumerate() {
            of.entry(sighting_key(&v.service, &v.environment, &v.version))
                .or_default()
                .push(i);
        }
        Sightings {
            explained: vec![false; versions.len()],
            versions,
            of,
        }
    }

    /// Marks the sightings of the version this change deployed that it explains.
    fn explain(&mut self, ev: &Evidence, tolerance_ns: i64) {
        let c = &ev.change;
        let (Some(s), Some(e), Some(v)) = (&c.service, &c.environment, &c.version) else {
            return;
        };
        for &i in self.of.get(&sighting_key(s, e, v)).into_iter().flatten() {
            if !self.explained[i] && evidence::explains(ev, self.versions[i].0, tolerance_ns) {
                self.explained[i] = true;
            }
        }
    }
}

/// Folds and judges one change from its facts read again, as the service would.
struct Folder<'a> {
    l: &'a LedgerFacts,
    n: &'a Neighbours,
    rollbacks: &'a HashMap<&'a str, BTreeSet<&'a str>>,
    scope: &'a Scope,
}

impl Folder<'_> {
    fn fold(&self, id: &str, src: &mut dyn PayloadSource) -> Result<Evidence, String> {
        let l = self.l;
        let mut facts = l.load(l.by_change.get(id).map_or(&[][..], Vec::as_slice), src)?;
        let runs: BTreeSet<String> = facts.iter().filter_map(|r| r.fact.run_id.clone()).collect();
        for run in &runs {
            // A fact naming another change is that change's, whatever run it names.
            if let Some(ids) = l.by_run.get(run.as_str()) {
                facts.extend(l.load(ids, src)?);
            }
        }
        let mut rolled_back_by = BTreeSet::new();
        for k in std::iter::once(id).chain(runs.iter().map(String::as_str)) {
            if let Some(r) = self.rollbacks.get(k) {
                rolled_back_by.extend(r.iter().map(|s| (*s).to_owned()));
            }
        }
        let mut ev = evidence::evidence(
            id,
            &facts,
            rolled_back_by.into_iter().collect(),
            &self.scope.policy,
        );
        evidence::judge(&mut ev, self.n, &self.scope.judging);
        Ok(ev)
    }
}

/// The rows as they are derived, with what the control results and rotation table count.
struct Rows {
    out: Rederived,
    tally: Tally,
    rotation: Rotation,
    counts: BTreeMap<String, u64>,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            out: Rederived::default(),
            tally: Tally::new(),
            rotation: Rotation::default(),
            counts: BTreeMap::new(),
        }
    }

    fn exception(&mut self, row: ExceptionRow) {
        *self.counts.entry(row.code.clone()).or_default() += 1;
        self.out.exceptions.push(row);
    }
}

/// The population: each change of the period the report's scope holds, with its exceptions.
/// Returns the changes processed (so a sighting never folds one of them again).
fn population<'a>(
    folder: &Folder<'_>,
    src: &mut dyn PayloadSource,
    period: &Period<'a>,
    cat: &Catalogue,
    sightings: &mut Sightings<'_>,
    rows: &mut Rows,
) -> Result<BTreeSet<&'a str>, String> {
    let (l, scope) = (folder.l, folder.scope);
    let mut processed = BTreeSet::new();
    for &id in &period.in_period {
        let ev = folder.fold(id, src)?;
        if !scope.holds(&ev) {
            continue;
        }
        processed.insert(id);
        let spans = l.span_tally(&ev);
        let ledger = l.ledger_span(&ev);
        let xs = rules::judged_exceptions(&ev, &[], &scope.rules);
        rows.out
            .population
            .push(PopulationRow::new(&ev, &spans, &ledger, &xs));
        rows.tally.change(&ev, &xs);
        rows.rotation.change(&ev);
        for x in &xs {
            rows.exception(ExceptionRow::new(
                cat,
                id,
                x,
                (ledger.first_seq, ledger.last_seq),
            ));
        }
        sightings.explain(&ev, scope.tolerance_ns);
    }
    Ok(processed)
}

/// A sighting no change of the population explains may be explained by a change outside the
/// period (each folded once however many sightings ask about it); else it is an unlinked deploy.
fn unexplained_sightings(
    folder: &Folder<'_>,
    src: &mut dyn PayloadSource,
    period: &Period<'_>,
    processed: &BTreeSet<&str>,
    sightings: &Sightings<'_>,
    cat: &Catalogue,
    rows: &mut Rows,
) -> Result<(), String> {
    let tolerance_ns = folder.scope.tolerance_ns;
    let mut others: HashMap<&str, Evidence> = HashMap::new();
    for (i, (v, seq)) in sightings.versions.iter().enumerate() {
        if sightings.explained[i] {
            continue;
        }
        let mut by_other = false;
        for &c in period
            .deployers
            .get(&sighting_key(&v.service, &v.environment, &v.version))
            .into_iter()
            .flatten()
        {
            if processed.contains(c) {
                continue;
            }
            let ev = match others.entry(c) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(folder.fold(c, src)?)
                }
            };
            if evidence::explains(ev, v, tolerance_ns) {
                by_other = true;
                break;
            }
        }
        if !by_other {
            let x = rules::unlinked_deploy(v);
            rows.exception(ExceptionRow::new(cat, "", &x, (Some(*seq), Some(*seq))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACT: &str = r#"{"key":"run:wf:requested:span:ab","change_id":"CHG-1","run_id":"wf","source":"span","time_ns":5,"fact":"change","environment":"production","service":"pay","requested_ns":5}"#;

    fn scope() -> Scope {
        Scope {
            from_ns: 0,
            to_ns: 100,
            environment: None,
            service: None,
            policy: Policy::default(),
            rules: RuleContext::default(),
            judging: evidence::Settings::default(),
            tolerance_ns: 0,
        }
    }

    fn ledger() -> (LedgerFacts, HashMap<u64, String>) {
        let mut l = LedgerFacts::new(10);
        let at = Locator { offset: 7, len: 0 };
        l.push(
            0,
            "change.requested",
            "CHG-1",
            6,
            Hash([1; 32]),
            Some(FACT),
            at,
        );
        // Past the checkpoint: not part of the report.
        let late = Locator { offset: 8, len: 0 };
        l.push(
            10,
            "change.requested",
            "CHG-1",
            6,
            Hash([2; 32]),
            Some(FACT),
            late,
        );
        (l, HashMap::from([(7, FACT.to_owned())]))
    }

    #[test]
    fn the_facts_are_read_again_and_folded() {
        let cat = Catalogue::parse(super::super::report::SOC2_CATALOGUE).unwrap();
        let (l, mut src) = ledger();
        let r = rederive(l, &mut src, &scope(), &cat, &[]).unwrap();
        assert_eq!(r.population.len(), 1);
        assert_eq!(r.population[0].change_id, "CHG-1");
        assert_eq!(r.population[0].audit_entries, 1);
        assert_eq!(r.population[0].audit_seq_last, Some(0));
    }

    #[test]
    fn a_payload_that_changed_since_it_was_verified_stops_rederivation() {
        let cat = Catalogue::parse(super::super::report::SOC2_CATALOGUE).unwrap();
        let (l, mut src) = ledger();
        src.insert(7, FACT.replace("production", "staging"));
        let e = rederive(l, &mut src, &scope(), &cat, &[]).unwrap_err();
        assert!(e.contains("entry 0's payload changed"), "{e}");
    }
}
