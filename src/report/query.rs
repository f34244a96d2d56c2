//! The first phase: what the fold needs from storage. An index of every change (ids and times,
//! the rollbacks, who deployed which version outside the period), the period's version sightings,
//! then the period's changes in chunks, read ahead of the fold by a task of their own.

use super::{AbortOnDrop, Period, Query, ReportError};
use crate::core::evidence::report::SpanTally;
use crate::core::evidence::{Neighbours, Policy, VersionFact};
use crate::core::ledger::hash::Hash;
use crate::read::changes::{ChangeFacts, Rollbacks, fetch_facts};
use crate::storage::Store;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// Changes folded per round trip: large enough to amortise the queries, small enough that a
/// chunk's facts stay a few megabytes.
const CHUNK: usize = 400;

/// (service, environment lowercased, version).
pub(super) type VersionKey = (String, String, String);

/// A production version first seen in the period, the entry that records it, and whether a
/// change explains it yet.
pub(super) type PeriodVersion = (VersionFact, u64, bool);

/// What the report needs about the ledger's changes beyond the period's own.
pub(super) struct Index {
    /// rollback_of value → the changes naming it.
    pub(super) rollbacks: Rollbacks,
    /// (service, environment lowercased, version) → changes that declared deploying it.
    pub(super) deployers: HashMap<VersionKey, BTreeSet<String>>,
}

pub(super) fn version_key(service: &str, env: &str, version: &str) -> VersionKey {
    (
        service.to_owned(),
        env.to_ascii_lowercase(),
        version.to_owned(),
    )
}

/// The fields of a stored change.requested or version.observed fact that the index needs, read
/// flat: `FactRecord`'s flattened, tagged layout makes serde buffer each fact and parse it twice.
#[derive(Deserialize)]
struct FactHead {
    #[serde(default)]
    change_id: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    first_seen_ns: Option<i64>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    previous: Option<String>,
}

/// Production versions first seen in the period (and the filters), each with the entry that
/// records it, by first sighting.
pub(super) async fn period_versions(
    store: Store,
    size: u64,
    period: Period,
    query: Query,
    policy: Policy,
) -> Result<Vec<PeriodVersion>, ReportError> {
    let mut versions = Vec::new();
    let in_period = |t: i64| t >= period.from_ns && t < period.to_ns;
    for (payload, seq, received_ns) in store.facts_of_kind("version.observed", size).await? {
        let Ok(FactHead {
            service: Some(service),
            environment: Some(environment),
            version: Some(version),
            first_seen_ns: Some(first_seen_ns),
            trace_id,
            previous,
            ..
        }) = serde_json::from_str::<FactHead>(&payload)
        else {
            continue;
        };
        let in_scope = policy.is_production(&environment)
            && (in_period(first_seen_ns) || in_period(received_ns))
            && query
                .environment
                .as_ref()
                .is_none_or(|e| e.eq_ignore_ascii_case(&environment))
            && query.service.as_ref().is_none_or(|s| s == &service);
        if in_scope {
            let v = VersionFact {
                service,
                environment,
                version,
                first_seen_ns,
                trace_id,
                previous,
            };
            versions.push((v, seq, false));
        }
    }
    // Stored order is arbitrary; the report lists unlinked deploys by first sighting.
    versions.sort_by_key(|(v, seq, _)| (v.first_seen_ns, *seq));
    Ok(versions)
}

/// The index, and the ids of the changes requested in the period (sorted). Only what is small
/// crosses from storage: ids and times of every change, the few that roll something back, and
/// the changes outside the period (which may explain a version first seen inside it; a change
/// inside the period is checked against the versions as it is folded).
pub(super) async fn index(
    store: &Store,
    size: u64,
    period: &Period,
) -> Result<(Index, Vec<String>), ReportError> {
    let mut in_period = BTreeSet::new();
    let mut ix = Index {
        rollbacks: HashMap::new(),
        deployers: HashMap::new(),
    };
    let inside = |t: i64| t >= period.from_ns && t < period.to_ns;
    for (change_id, _, time_ns, received_ns) in store.change_heads(size).await? {
        // By the time it states, or by when it arrived: history sent late into a closed period
        // shows in the period it arrived in too.
        if let Some(c) = &change_id
            && (inside(time_ns) || inside(received_ns))
        {
            in_period.insert(c.clone());
        }
    }
    let heads = |payload: &str| serde_json::from_str::<FactHead>(payload).ok();
    let subject = |f: &FactHead| {
        f.change_id
            .clone()
            .or_else(|| f.run_id.clone())
            .unwrap_or_default()
    };
    ix.rollbacks = crate::read::changes::rollback_index(store, size).await?;
    let outside = store
        .change_facts_outside(period.from_ns, period.to_ns, size)
        .await?;
    for f in outside.iter().filter_map(|p| heads(p)) {
        if let (Some(s), Some(e), Some(v)) = (&f.service, &f.environment, &f.version) {
            ix.deployers
                .entry(version_key(s, e, v))
                .or_default()
                .insert(subject(&f));
        }
    }
    Ok((ix, in_period.into_iter().collect()))
}

/// What one chunk of changes needs from storage: facts, what judging them looks up, bound
/// spans, ledger ranges and leaves.
pub(super) struct Chunk {
    pub(super) facts: ChangeFacts,
    pub(super) neighbours: Neighbours,
    /// Spans bound to each change and run.
    pub(super) spans: HashMap<String, SpanTally>,
    /// The entries recording each change and run.
    pub(super) entries: HashMap<String, crate::storage::SubjectEntries>,
    /// The leaf hash of each change's last entry.
    pub(super) leaves: HashMap<u64, Hash>,
}

async fn fetch_chunk(store: &Store, ids: &[String], size: u64) -> Result<Chunk, ReportError> {
    let facts = fetch_facts(store, ids, size).await?;
    let neighbours = crate::read::changes::neighbours_of_facts(store, &facts, size).await?;
    let mut subjects: Vec<String> = ids.to_vec();
    for (_, records, _) in &facts {
        subjects.extend(records.iter().filter_map(|r| r.fact.run_id.clone()));
    }
    subjects.sort();
    subjects.dedup();
    let mut spans: HashMap<String, SpanTally> = HashMap::new();
    for (subject, trace, n) in store.span_counts(&subjects, size).await? {
        let t = spans.entry(subject).or_default();
        t.count += n;
        t.traces.insert(trace);
    }
    let entries = store.entries_of_subjects(&subjects, size).await?;
    let mut lasts: Vec<u64> = entries.iter().map(|e| e.last).collect();
    lasts.sort_unstable();
    lasts.dedup();
    let leaves = store
        .leaves(&lasts)
        .await?
        .into_iter()
        .map(|(s, h, _)| (s, h))
        .collect();
    Ok(Chunk {
        facts,
        neighbours,
        spans,
        entries: entries
            .into_iter()
            .map(|e| (e.subject.clone(), e))
            .collect(),
        leaves,
    })
}

/// Reads the changes `ids` names, CHUNK at a time, in a task of its own, at most two chunks
/// ahead of the fold. Dropping the handle stops it; a failed read is the last item sent.
pub(super) fn read_chunks(
    store: &Store,
    ids: Vec<String>,
    size: u64,
) -> (
    AbortOnDrop<()>,
    tokio::sync::mpsc::Receiver<Result<Chunk, ReportError>>,
) {
    let (chunk_tx, chunks) = tokio::sync::mpsc::channel::<Result<Chunk, ReportError>>(2);
    let store = store.clone();
    let reader = AbortOnDrop(tokio::spawn(async move {
        for chunk in ids.chunks(CHUNK) {
            let c = fetch_chunk(&store, chunk, size).await;
            let failed = c.is_err();
            if chunk_tx.send(c).await.is_err() || failed {
                break;
            }
        }
    }));
    (reader, chunks)
}
