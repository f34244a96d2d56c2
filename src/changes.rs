//! Reading changes back: the evidence packet of one change (facts folded, spans, versions, the
//! ledger entries with inclusion proofs) and the list of changes in a period, each judged by the
//! SOC 2 report's exception rules. Shared by the API and the reports.

use crate::core::evidence::{self, Evidence, FactRecord, Policy, VersionFact};
use crate::core::hash::b64;
use crate::core::rules::{self, Exception, RuleContext};
use crate::export;
use crate::storage::{StorageError, Store};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
}

/// A change folded from its facts (every entry, not only what a checkpoint covers), by the same
/// rule and code the report and the list use, with the entry seqs of its facts that would not
/// parse; `None` for an unknown change.
pub async fn evidence_of(
    store: &Store,
    change_id: &str,
    policy: &Policy,
) -> Result<Option<(Evidence, Vec<u64>)>, StorageError> {
    let facts = fetch_facts(store, &[change_id.to_owned()], u64::MAX).await?;
    if facts
        .iter()
        .all(|(_, records, broken)| records.is_empty() && broken.is_empty())
    {
        return Ok(None);
    }
    let rollbacks = rollback_index(store, u64::MAX).await?;
    Ok(fold_facts(facts, policy, &rollbacks).into_iter().next())
}

/// Of the changes these roll back, the ones that exist (a change or run id some change.requested
/// fact names): all a rollback's rule needs to know, looked up by id instead of reading every
/// change in the ledger. Everything stored counts, not only what a checkpoint covers: the console
/// shows the ledger as it is.
pub async fn known_targets<'a>(
    store: &Store,
    evs: impl IntoIterator<Item = &'a Evidence>,
) -> Result<HashSet<String>, StorageError> {
    let targets: Vec<String> = evs
        .into_iter()
        .filter_map(|e| e.change.rollback_of.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut known = HashSet::new();
    for chunk in targets.chunks(FOLD_CHUNK) {
        known.extend(store.existing_changes(chunk).await?);
    }
    Ok(known)
}

/// The exceptions the SOC 2 report's rules find in a change. Only production changes are judged,
/// as the report's population holds only those: a staging change carries none, so the console
/// and the report never disagree about what is an exception.
pub fn exceptions(ev: &Evidence, ctx: &RuleContext, known: &HashSet<String>) -> Vec<Exception> {
    if !ev.change.production {
        return Vec::new();
    }
    rules::change_exceptions(ev, ctx, &|id| known.contains(id))
}

pub async fn packet(
    store: &Store,
    change_id: &str,
    policy: &Policy,
    tolerance_ns: i64,
    rules: &RuleContext,
) -> Result<Option<Packet>, export::ExportError> {
    let Some((ev, broken)) = evidence_of(store, change_id, policy).await? else {
        return Ok(None);
    };
    let mut exceptions = exceptions(&ev, rules, &known_targets(store, [&ev]).await?);
    exceptions.extend(broken.iter().map(|seq| rules::unreadable_fact(*seq)));
    let mut subjects = vec![change_id.to_owned()];
    subjects.extend(ev.change.runs.iter().cloned());
    subjects.sort();
    subjects.dedup();
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
        .filter(|v| {
            evidence::explains(
                &ev,
                &v.service,
                &v.environment,
                &v.version,
                v.first_seen_ns,
                tolerance_ns,
            )
        })
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

/// Changes requested in the period that match the filter, folded and judged; with `exception`,
/// only those the rules give that code.
pub async fn list_judged(
    store: &Store,
    f: &ChangeFilter,
    policy: &Policy,
    ctx: &RuleContext,
    exception: Option<&str>,
) -> Result<Vec<Judged>, StorageError> {
    let listed = list(store, f, policy).await?;
    let known = known_targets(store, listed.iter().map(|(e, _)| e)).await?;
    Ok(listed
        .into_iter()
        .map(|(evidence, broken)| {
            let mut exceptions = exceptions(&evidence, ctx, &known);
            // As the report says it: a fact the ledger holds but that cannot be read.
            exceptions.extend(broken.iter().map(|seq| rules::unreadable_fact(*seq)));
            Judged {
                exceptions,
                evidence,
            }
        })
        .filter(|j| exception.is_none_or(|code| j.exceptions.iter().any(|x| x.code == code)))
        .collect())
}

/// One page of `items`: at most `limit` from `offset` on, and how many there are in all.
pub fn page<T>(items: Vec<T>, offset: usize, limit: usize) -> (Vec<T>, usize) {
    let total = items.len();
    (items.into_iter().skip(offset).take(limit).collect(), total)
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
pub type ChangeFacts = Vec<(String, Vec<FactRecord>, Vec<u64>)>;

/// The facts of many changes in one query (see `Store::facts_of_changes` for which belong to a change).
pub async fn fetch_facts(
    store: &Store,
    ids: &[String],
    size: u64,
) -> Result<ChangeFacts, StorageError> {
    let mut facts: HashMap<String, Vec<FactRecord>> = HashMap::new();
    let mut broken: HashMap<String, Vec<u64>> = HashMap::new();
    for raw in store.facts_of_changes(ids, size).await? {
        match serde_json::from_str::<FactRecord>(&raw.payload) {
            Ok(f) => facts.entry(raw.change_id).or_default().push(f),
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
            let runs: BTreeSet<&String> =
                records.iter().filter_map(|f| f.run_id.as_ref()).collect();
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

/// Changes requested in the period that match the filter, folded, each with the entry seqs of
/// its facts that would not parse. Facts are read a chunk of changes per query and rollbacks
/// from one index, so a long period costs a few queries per 400 changes, not several per change.
pub async fn list(
    store: &Store,
    f: &ChangeFilter,
    policy: &Policy,
) -> Result<Vec<(Evidence, Vec<u64>)>, StorageError> {
    // Everything stored, not only what a checkpoint covers: the console shows the ledger as it is.
    let all = u64::MAX;
    let ids = store.changes_between(f.from_ns, f.to_ns).await?;
    let rollbacks = rollback_index(store, all).await?;
    let mut out = Vec::new();
    for chunk in ids.chunks(FOLD_CHUNK) {
        for (ev, broken) in fold_facts(fetch_facts(store, chunk, all).await?, policy, &rollbacks) {
            let c = &ev.change;
            let eq = |want: &Option<String>, have: &Option<String>| {
                want.as_ref()
                    .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
            };
            if eq(&f.environment, &c.environment)
                && eq(&f.service, &c.service)
                && eq(&f.kind, &Some(c.kind.clone()))
            {
                out.push((ev, broken));
            }
        }
    }
    out.sort_by(|(a, _), (b, _)| {
        (a.change.requested_ns, &a.change.id).cmp(&(b.change.requested_ns, &b.change.id))
    });
    Ok(out)
}

/// Production versions no change explains: the unlinked deploys.
pub async fn unlinked_versions(
    store: &Store,
    policy: &Policy,
    tolerance_ns: i64,
) -> Result<Vec<VersionFact>, StorageError> {
    let versions: Vec<VersionFact> = store
        .version_facts()
        .await?
        .into_iter()
        .filter_map(|f| match f.fact {
            evidence::Fact::Version(v) if policy.is_production(&v.environment) => Some(v),
            _ => None,
        })
        .collect();
    if versions.is_empty() {
        return Ok(versions);
    }
    let all = list(
        store,
        &ChangeFilter {
            from_ns: i64::MIN,
            to_ns: i64::MAX,
            ..Default::default()
        },
        policy,
    )
    .await?;
    Ok(versions
        .into_iter()
        .filter(|v| {
            !all.iter().any(|(e, _)| {
                evidence::explains(
                    e,
                    &v.service,
                    &v.environment,
                    &v.version,
                    v.first_seen_ns,
                    tolerance_ns,
                )
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn pages_cover_the_list_once() {
        let items: Vec<u32> = (0..7).collect();
        assert_eq!(page(items.clone(), 0, 3), (vec![0, 1, 2], 7));
        assert_eq!(page(items.clone(), 6, 3), (vec![6], 7));
        assert_eq!(page(items.clone(), 7, 3), (vec![], 7));
        assert_eq!(page(items, 100, 3), (vec![], 7));
    }
}
