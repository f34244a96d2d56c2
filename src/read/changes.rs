//! Reading changes back: the evidence packet of one change (facts folded, spans, versions, the
//! ledger entries with inclusion proofs) and the list of changes in a period, each judged by the
//! SOC 2 report's exception rules. Shared by the API and the reports.

use crate::core::evidence::rules::{self, Exception, RuleContext};
use crate::core::evidence::{
    self, Evidence, FactRecord, Neighbours, Policy, Recorded, VersionFact,
};
use crate::core::ledger::hash::b64;
use crate::read::export;
use crate::storage::{StorageError, Store};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

#[derive(Debug, Clone, Serialize)]
pub struct SpanStats {
    pub count: usize,
    pub traces: Vec<String>,
    pub services: Vec<String>,
    pub errors: usize,
    pub by_rule: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryProof {
    pub seq: u64,
    pub kind: String,
    pub leaf_hash: String,
    /// Inclusion proof against `Packet::checkpoint`; none while no checkpoint covers the entry yet.
    pub inclusion_proof: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Packet {
    #[serde(flatten)]
    pub evidence: Evidence,
    /// What the SOC 2 report would list against this change (see `exceptions`).
    pub exceptions: Vec<Exception>,
    pub spans: SpanStats,
    pub versions: Vec<VersionFact>,
    pub entries: Vec<EntryProof>,
    /// The checkpoint the inclusion proofs are against (C2SP signed note).
    pub checkpoint: Option<String>,
    pub checkpoint_size: Option<u64>,
    /// Each trace id the packet names (bound spans, deploy attempts, versions) → its page in the
    /// team's tracing UI (`[links] trace_url`); empty when no template is configured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub trace_links: BTreeMap<String, String>,
}

impl Packet {
    /// Fills `trace_links` for every trace id the packet names that the template accepts.
    pub fn link_traces(&mut self, url: &crate::core::links::TraceUrl) {
        let attempts = self
            .evidence
            .steps
            .iter()
            .flat_map(|s| s.attempts.iter().filter_map(|a| a.trace_id.as_ref()));
        let versions = self.versions.iter().filter_map(|v| v.trace_id.as_ref());
        let ids: BTreeSet<&String> = self
            .spans
            .traces
            .iter()
            .chain(attempts)
            .chain(versions)
            .collect();
        self.trace_links = ids
            .into_iter()
            .filter_map(|t| Some((t.clone(), url.to(t)?)))
            .collect();
    }
}

/// How changes are folded and judged: the correlation policy, the exception rules and the
/// judging settings of the report this process signs, so the console judges as the report does.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    pub policy: Policy,
    pub rules: RuleContext,
    pub judging: evidence::Settings,
    /// How far a version sighting may be from a deploy that explains it.
    pub tolerance_ns: i64,
}

/// A change folded from its facts (every entry, not only what a checkpoint covers) and judged,
/// by the same rule and code the report and the list use, with the entry seqs of its facts that
/// would not parse; `None` for an unknown change.
pub async fn evidence_of(
    store: &Store,
    change_id: &str,
    c: &Criteria,
) -> Result<Option<(Evidence, Vec<u64>)>, StorageError> {
    let facts = fetch_facts(store, &[change_id.to_owned()], u64::MAX).await?;
    if facts
        .iter()
        .all(|(_, records, broken)| records.is_empty() && broken.is_empty())
    {
        return Ok(None);
    }
    let rollbacks = rollback_index(store, u64::MAX).await?;
    let mut folded = fold_facts(facts, &c.policy, &rollbacks);
    judge_all(store, &mut folded, u64::MAX, &c.judging).await?;
    Ok(folded.into_iter().next())
}

/// What judging these changes needs from the rest of the ledger below `size`: the rollback
/// targets that exist, every use of their credentials, earlier sightings of the versions their
/// rollbacks restore. Looked up by id and key, a few queries per chunk, never the whole ledger.
pub async fn neighbours<'a>(
    store: &Store,
    evs: impl IntoIterator<Item = &'a Evidence>,
    size: u64,
) -> Result<Neighbours, StorageError> {
    let mut targets = BTreeSet::new();
    let mut credentials = BTreeSet::new();
    let mut versions = BTreeSet::new();
    let mut runs = BTreeSet::new();
    for e in evs {
        let c = &e.change;
        runs.extend(c.runs.iter().cloned());
        targets.extend(c.rollback_of.clone());
        credentials.extend(e.credentials.iter().map(|u| u.credential.clone()));
        if c.kind == "rollback"
            && let (Some(s), Some(env), Some(v)) = (&c.service, &c.environment, &c.version)
        {
            versions.insert((s.clone(), env.clone(), v.clone()));
        }
    }
    lookup(store, targets, credentials, versions, runs, size).await
}

/// The same lookups as `neighbours`, found from the facts before they are folded (the report
/// reads a chunk's neighbours beside the fold, which runs elsewhere).
pub async fn neighbours_of_facts(
    store: &Store,
    facts: &ChangeFacts,
    size: u64,
) -> Result<Neighbours, StorageError> {
    let mut targets = BTreeSet::new();
    let mut credentials = BTreeSet::new();
    let mut versions = BTreeSet::new();
    let mut runs = BTreeSet::new();
    for (_, records, _) in facts {
        // Only a rollback asks whether its version ran before: one lookup per rollback, not per
        // change. Its service, environment and version may come from different facts, so every
        // combination they state is looked up.
        let changes = || {
            records.iter().filter_map(|r| match &r.fact.fact {
                evidence::Fact::Change(c) => Some(c),
                _ => None,
            })
        };
        if changes().any(|c| c.kind.as_deref() == Some("rollback")) {
            for s in changes().filter_map(|c| c.service.as_ref()) {
                for env in changes().filter_map(|c| c.environment.as_ref()) {
                    for v in changes().filter_map(|c| c.version.as_ref()) {
                        versions.insert((s.clone(), env.clone(), v.clone()));
                    }
                }
            }
        }
        for r in records {
            credentials.extend(r.fact.credentials());
            runs.extend(r.fact.run_id.clone());
            if let evidence::Fact::Change(c) = &r.fact.fact {
                targets.extend(c.rollback_of.clone());
            }
        }
    }
    lookup(store, targets, credentials, versions, runs, size).await
}

/// Fills neighbours from the ids, credentials and versions asked about.
async fn lookup(
    store: &Store,
    targets: BTreeSet<String>,
    credentials: BTreeSet<String>,
    versions: BTreeSet<(String, String, String)>,
    runs: BTreeSet<String>,
    size: u64,
) -> Result<Neighbours, StorageError> {
    let mut n = Neighbours::default();
    let runs: Vec<String> = runs.into_iter().collect();
    for chunk in runs.chunks(FOLD_CHUNK) {
        for (run, change) in store.run_claims(chunk, size).await? {
            n.add_run_claim(&run, &change);
        }
    }
    let targets: Vec<String> = targets.into_iter().collect();
    for chunk in targets.chunks(FOLD_CHUNK) {
        n.known.extend(store.existing_changes(chunk, size).await?);
    }
    let credentials: Vec<String> = credentials.into_iter().collect();
    for (cred, subject, seq) in store.credential_uses(&credentials, size).await? {
        n.add_credential(&cred, &subject, seq);
    }
    let versions: Vec<(String, String, String)> = versions.into_iter().collect();
    for f in store.sightings_of(&versions, size).await? {
        if let evidence::Fact::Version(v) = &f.fact {
            n.add_sighting(v);
        }
    }
    Ok(n)
}

/// Judges folded changes against their neighbours below `size`.
pub async fn judge_all(
    store: &Store,
    folded: &mut [(Evidence, Vec<u64>)],
    size: u64,
    settings: &evidence::Settings,
) -> Result<(), StorageError> {
    let n = neighbours(store, folded.iter().map(|(e, _)| e), size).await?;
    for (e, _) in folded.iter_mut() {
        evidence::judge(e, &n, settings);
    }
    Ok(())
}

/// The exceptions the SOC 2 report's rules find in a judged change (`rules::judged_exceptions`).
pub fn exceptions(ev: &Evidence, broken: &[u64], ctx: &RuleContext) -> Vec<Exception> {
    rules::judged_exceptions(ev, broken, ctx)
}

/// The ledger subjects a change's entries are filed under: its id and its runs' ids.
pub fn subjects_of(ev: &Evidence, change_id: &str) -> Vec<String> {
    let mut subjects = vec![change_id.to_owned()];
    subjects.extend(ev.change.runs.iter().cloned());
    subjects.sort();
    subjects.dedup();
    subjects
}

pub async fn packet(
    store: &Store,
    change_id: &str,
    c: &Criteria,
) -> Result<Option<Packet>, export::ExportError> {
    let Some((ev, broken)) = evidence_of(store, change_id, c).await? else {
        return Ok(None);
    };
    let tolerance_ns = c.tolerance_ns;
    let exceptions = exceptions(&ev, &broken, &c.rules);
    let subjects = subjects_of(&ev, change_id);
    let spans = store.spans_about(&subjects).await?;
    let mut stats = SpanStats {
        count: spans.len(),
        traces: Vec::new(),
        services: Vec::new(),
        errors: 0,
        by_rule: BTreeMap::new(),
    };
    let mut traces = BTreeSet::new();
    let mut services = BTreeSet::new();
    for s in &spans {
        traces.insert(s.trace_id.clone());
        services.insert(s.service.clone());
        *stats.by_rule.entry(s.rule.clone()).or_default() += 1;
        let error = ResourceSpans::decode(s.body.as_slice())
            .ok()
            .and_then(|r| r.scope_spans.first()?.spans.first()?.status.clone())
            .is_some_and(|st| st.code == 2);
        stats.errors += usize::from(error);
    }
    stats.traces = traces.into_iter().collect();
    stats.services = services.into_iter().collect();
    // Only sightings inside the window the change could explain (an indexed range read).
    let (from, to) = evidence::explained_window(&ev, tolerance_ns);
    let versions = store
        .version_facts_between(from, to)
        .await?
        .into_iter()
        .filter_map(|f| match f.fact {
            evidence::Fact::Version(v) => Some(v),
            _ => None,
        })
        .filter(|v| evidence::explains(&ev, v, tolerance_ns))
        .collect();
    let checkpoint = store.latest_checkpoint().await?;
    let size = checkpoint.as_ref().map(|c| c.size);
    let mut entries = Vec::new();
    for e in store.entries_about(&subjects).await? {
        let proof = match size {
            Some(n) if e.seq < n => Some(
                export::inclusion_proof(store, e.seq, n)
                    .await?
                    .iter()
                    .map(|h| h.to_b64())
                    .collect(),
            ),
            _ => None,
        };
        entries.push(EntryProof {
            seq: e.seq,
            kind: e.kind,
            leaf_hash: b64(&e.leaf_hash.0),
            inclusion_proof: proof,
        });
    }
    Ok(Some(Packet {
        evidence: ev,
        exceptions,
        spans: stats,
        versions,
        entries,
        checkpoint: checkpoint.map(|c| c.note),
        checkpoint_size: size,
        trace_links: BTreeMap::new(),
    }))
}

/// Filters for the list of changes.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub from_ns: i64,
    pub to_ns: i64,
    pub environment: Option<String>,
    pub service: Option<String>,
    pub kind: Option<String>,
}

/// A change in the list: its evidence and what the report's rules find in it.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    #[serde(flatten)]
    pub evidence: Evidence,
    pub exceptions: Vec<Exception>,
}

/// One page of the changes requested in the period that match the filter, folded and judged
/// (with `exception`, only those the rules give that code), in request order, and how many
/// there are in all. Filtered, ordered and counted from the per-change summary when it is caught
/// up (`read::summary`), with only the page folded; otherwise the period is folded a chunk at a
/// time and only the first `offset + limit` changes are kept, so memory follows the page asked
/// for, not the period.
pub async fn list_judged(
    store: &Store,
    f: &ChangeFilter,
    c: &Criteria,
    exception: Option<&str>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<Judged>, usize), StorageError> {
    let q = crate::storage::SummaryQuery {
        from_ns: f.from_ns,
        to_ns: f.to_ns,
        environment: f.environment.as_ref().map(|v| v.to_ascii_lowercase()),
        service: f.service.as_ref().map(|v| v.to_ascii_lowercase()),
        kind: f.kind.as_ref().map(|v| v.to_ascii_lowercase()),
        exception: exception.map(str::to_owned),
    };
    // An empty filter value matches nothing when folding (a change without an environment has
    // none, not ""); the summary stores "" for none, so such a request folds.
    let empty = [&q.environment, &q.service, &q.kind]
        .iter()
        .any(|v| v.as_deref() == Some(""));
    if !empty && let Some(page) = crate::read::summary::page(store, &q, c, offset, limit).await? {
        return Ok(page);
    }
    list_folded(store, f, c, exception, offset, limit).await
}

/// `list_judged` without the summary: the period folded a chunk at a time (while the summary
/// catches up, and what the summary is checked against).
pub async fn list_folded(
    store: &Store,
    f: &ChangeFilter,
    c: &Criteria,
    exception: Option<&str>,
    offset: usize,
    limit: usize,
) -> Result<(Vec<Judged>, usize), StorageError> {
    let mut folder = Folder::open(store, f, c).await?;
    let mut window = FirstN::new(offset.saturating_add(limit));
    while let Some(chunk) = folder.next_chunk().await? {
        for (evidence, broken) in chunk {
            let exceptions = exceptions(&evidence, &broken, &c.rules);
            if exception.is_none_or(|code| exceptions.iter().any(|x| x.code == code)) {
                let key = (evidence.change.requested_ns, evidence.change.id.clone());
                window.push(
                    key,
                    Judged {
                        exceptions,
                        evidence,
                    },
                );
            }
        }
    }
    Ok(window.page(offset))
}

/// The first `n` items of a stream in key order, and how many went by: a page of a sorted list
/// without holding the list (a max-heap of the `n` smallest keys seen so far).
struct FirstN<K: Ord, T> {
    n: usize,
    seen: usize,
    heap: BinaryHeap<Keyed<K, T>>,
}

/// An item ordered by its key alone.
struct Keyed<K, T>(K, T);

impl<K: Ord, T> PartialEq for Keyed<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<K: Ord, T> Eq for Keyed<K, T> {}
impl<K: Ord, T> PartialOrd for Keyed<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, T> Ord for Keyed<K, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl<K: Ord, T> FirstN<K, T> {
    fn new(n: usize) -> Self {
        Self {
            n,
            seen: 0,
            heap: BinaryHeap::new(),
        }
    }

    fn push(&mut self, key: K, item: T) {
        self.seen += 1;
        if self.heap.len() < self.n {
            self.heap.push(Keyed(key, item));
        } else if self.heap.peek().is_some_and(|top| key < top.0) {
            self.heap.pop();
            self.heap.push(Keyed(key, item));
        }
    }

    /// The kept items from `offset` on, in key order, and how many were pushed in all.
    fn page(self, offset: usize) -> (Vec<T>, usize) {
        let items = self
            .heap
            .into_sorted_vec()
            .into_iter()
            .skip(offset)
            .map(|k| k.1)
            .collect();
        (items, self.seen)
    }
}

/// rollback_of value → the changes (or runs) naming it.
pub type Rollbacks = HashMap<String, BTreeSet<String>>;

/// Every change.requested fact below `size` that names what it rolls back, as an index: one
/// scan, instead of a scan per change asked about.
pub async fn rollback_index(store: &Store, size: u64) -> Result<Rollbacks, StorageError> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        change_id: Option<String>,
        #[serde(default)]
        run_id: Option<String>,
        #[serde(default)]
        rollback_of: Option<String>,
    }
    let mut index = Rollbacks::new();
    for payload in store.rollback_facts(size).await? {
        let Ok(h) = serde_json::from_str::<Head>(&payload) else {
            continue;
        };
        if let (Some(of), Some(by)) = (h.rollback_of, h.change_id.or(h.run_id)) {
            index.entry(of).or_default().insert(by);
        }
    }
    Ok(index)
}

/// Each change's stored facts below `size` (in `ids` order), with the entry seqs of stored facts
/// that would not parse (a ledger problem the caller reports, not a reason to stop).
pub type ChangeFacts = Vec<(String, Vec<Recorded>, Vec<u64>)>;

/// The facts of many changes in one query (see `Store::facts_of_changes` for which belong to a change).
pub async fn fetch_facts(
    store: &Store,
    ids: &[String],
    size: u64,
) -> Result<ChangeFacts, StorageError> {
    let mut facts: HashMap<String, Vec<Recorded>> = HashMap::new();
    let mut broken: HashMap<String, Vec<u64>> = HashMap::new();
    for raw in store.facts_of_changes(ids, size).await? {
        match serde_json::from_str::<FactRecord>(&raw.payload) {
            Ok(fact) => facts.entry(raw.change_id).or_default().push(Recorded {
                seq: raw.entry_seq,
                received_ns: raw.received_ns,
                fact,
            }),
            Err(_) => broken.entry(raw.change_id).or_default().push(raw.entry_seq),
        }
    }
    Ok(ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                facts.remove(id).unwrap_or_default(),
                broken.remove(id).unwrap_or_default(),
            )
        })
        .collect())
}

/// Folds each change's facts into its evidence, with the rollbacks that name it or its runs.
pub fn fold_facts(
    facts: ChangeFacts,
    policy: &Policy,
    rollbacks: &Rollbacks,
) -> Vec<(Evidence, Vec<u64>)> {
    facts
        .into_iter()
        .map(|(id, records, broken)| {
            let runs: BTreeSet<&String> = records
                .iter()
                .filter_map(|r| r.fact.run_id.as_ref())
                .collect();
            let mut rolled_back_by: BTreeSet<String> = BTreeSet::new();
            for k in std::iter::once(&id).chain(runs) {
                if let Some(r) = rollbacks.get(k) {
                    rolled_back_by.extend(r.iter().cloned());
                }
            }
            let ev =
                evidence::evidence(&id, &records, rolled_back_by.into_iter().collect(), policy);
            (ev, broken)
        })
        .collect()
}

/// Changes folded per query: bounds both the query's parameter list and the memory in flight.
const FOLD_CHUNK: usize = 400;

/// The changes requested in the period that match the filter, folded a chunk at a time, each
/// with the entry seqs of its facts that would not parse. Facts are read 400 changes per query
/// and rollbacks from one index, so a long period costs a few queries per chunk, not several per
/// change, and only one chunk is in memory at a time, not the period.
struct Folder<'a> {
    store: &'a Store,
    criteria: &'a Criteria,
    filter: &'a ChangeFilter,
    ids: Vec<String>,
    next: usize,
    rollbacks: Rollbacks,
}

impl<'a> Folder<'a> {
    async fn open(
        store: &'a Store,
        filter: &'a ChangeFilter,
        criteria: &'a Criteria,
    ) -> Result<Folder<'a>, StorageError> {
        Ok(Folder {
            store,
            criteria,
            filter,
            ids: store.changes_between(filter.from_ns, filter.to_ns).await?,
            next: 0,
            // Everything stored, not only what a checkpoint covers: the console shows the
            // ledger as it is.
            rollbacks: rollback_index(store, u64::MAX).await?,
        })
    }

    /// The next chunk's changes that match the filter (possibly none), judged; `None` once all
    /// are read.
    async fn next_chunk(&mut self) -> Result<Option<Vec<(Evidence, Vec<u64>)>>, StorageError> {
        if self.next >= self.ids.len() {
            return Ok(None);
        }
        let end = (self.next + FOLD_CHUNK).min(self.ids.len());
        let facts = fetch_facts(self.store, &self.ids[self.next..end], u64::MAX).await?;
        self.next = end;
        let f = self.filter;
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        let mut chunk: Vec<(Evidence, Vec<u64>)> =
            fold_facts(facts, &self.criteria.policy, &self.rollbacks)
                .into_iter()
                .filter(|(ev, _)| {
                    let c = &ev.change;
                    eq(&f.environment, &c.environment)
                        && eq(&f.service, &c.service)
                        && eq(&f.kind, &Some(c.kind.clone()))
                })
                .collect();
        judge_all(self.store, &mut chunk, u64::MAX, &self.criteria.judging).await?;
        Ok(Some(chunk))
    }
}

/// Calls `f` with every change requested in the filter's period that matches it, folded and
/// judged, with the seqs of its facts that would not parse; a chunk in memory at a time.
pub async fn for_each_change(
    store: &Store,
    filter: &ChangeFilter,
    c: &Criteria,
    mut f: impl FnMut(&Evidence, &[u64]),
) -> Result<(), StorageError> {
    let mut folder = Folder::open(store, filter, c).await?;
    while let Some(chunk) = folder.next_chunk().await? {
        for (ev, broken) in &chunk {
            f(ev, broken);
        }
    }
    Ok(())
}

/// Production versions no change explains: the unlinked deploys.
pub async fn unlinked_versions(
    store: &Store,
    c: &Criteria,
) -> Result<Vec<VersionFact>, StorageError> {
    let (policy, tolerance_ns) = (&c.policy, c.tolerance_ns);
    let versions: Vec<VersionFact> = store
        .version_facts()
        .await?
        .into_iter()
        .filter_map(|f| match f.fact {
            evidence::Fact::Version(v) if policy.is_production(&v.environment) => Some(v),
            _ => None,
        })
        .collect();
    let mut unexplained = versions;
    if unexplained.is_empty() {
        // Nothing to explain: no need to read the changes at all.
        return Ok(unexplained);
    }
    let everything = ChangeFilter {
        from_ns: i64::MIN,
        to_ns: i64::MAX,
        ..Default::default()
    };
    let mut folder = Folder::open(store, &everything, c).await?;
    // Every change is read once, a chunk at a time; the versions are few and stay in memory.
    while !unexplained.is_empty()
        && let Some(chunk) = folder.next_chunk().await?
    {
        unexplained.retain(|v| {
            !chunk
                .iter()
                .any(|(e, _)| evidence::explains(e, v, tolerance_ns))
        });
    }
    Ok(unexplained)
}

#[cfg(test)]
mod tests {
    use super::FirstN;
    use proptest::prelude::*;

    /// The indexes of `keys` on the page, and the total.
    fn first_n(keys: &[(i64, u8)], offset: usize, limit: usize) -> (Vec<usize>, usize) {
        let mut w = FirstN::new(offset + limit);
        for (i, k) in keys.iter().enumerate() {
            w.push(*k, i);
        }
        w.page(offset)
    }

    #[test]
    fn pages_cover_the_list_once() {
        let keys: Vec<(i64, u8)> = [5, 1, 4, 2, 6, 0, 3].iter().map(|&t| (t, 0)).collect();
        assert_eq!(first_n(&keys, 0, 3), (vec![5, 1, 3], 7));
        assert_eq!(first_n(&keys, 3, 3), (vec![6, 2, 0], 7));
        assert_eq!(first_n(&keys, 6, 3), (vec![4], 7));
        assert_eq!(first_n(&keys, 7, 3), (vec![], 7));
        assert_eq!(first_n(&keys, 100, 3), (vec![], 7));
    }

    proptest! {
        /// The same page as sorting everything, then skipping and taking.
        #[test]
        fn a_page_is_that_of_the_sorted_list(
            keys in proptest::collection::vec((0i64..20, 0u8..3), 0..60),
            offset in 0usize..70,
            limit in 1usize..20,
        ) {
            let mut sorted = keys.clone();
            sorted.sort();
            let want: Vec<(i64, u8)> = sorted.into_iter().skip(offset).take(limit).collect();
            let (got, total) = first_n(&keys, offset, limit);
            prop_assert_eq!(total, keys.len());
            let got: Vec<(i64, u8)> = got.iter().map(|&i| keys[i]).collect();
            prop_assert_eq!(got, want);
        }
    }
}
