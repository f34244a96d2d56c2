//! The per-change summary: every change folded and judged once, kept in `change_summary`, so
//! the change list filters, orders and counts any period by index instead of folding it.
//!
//! Kept by following the chain, not inside the append transaction: folding and judging a change
//! reads its facts and its neighbours (rollbacks naming it, other uses of its credentials, runs it
//! claims, sightings of the version it restores), which would hold the ledger's one write lock
//! for the duration. The summarizer reads the entries after its cursor and refreshes every change
//! whose fold or judgement they can move: the changes their facts name, the changes of the runs
//! they name, the changes a rollback names and those rolling it back, the other users of their
//! credentials, the rollbacks of a service a new version sighting concerns, and the changes whose
//! facts an erasure removed. It writes the rows and its new cursor in one transaction, only if no
//! other summarizer moved the cursor meanwhile, so several instances may run one each.
//!
//! The rows are judged under one set of correlation settings (`criteria_digest`); other settings
//! start the summary again. The list reads it only when it is caught up to within a step, and
//! folds the period itself otherwise; `verify --database-url` recomputes every row
//! (`audit_summary`).

use crate::core::evidence::{self, FactRecord};
use crate::core::ledger::verify::{Class, Finding};
use crate::read::changes::{
    Criteria, Judged, Rollbacks, exceptions, fetch_facts, fold_facts, judge_all, rollback_index,
};
use crate::storage::{StorageError, Store, SummaryQuery, SummaryRow, SummaryState};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;

/// Changes the rules judge differently from one version of changetrail to another start the
/// summary again: bump this when the fold, the judge or the rules change what they give.
const SUMMARY_VERSION: u32 = 2;

/// Entries followed per step.
const STEP_ENTRIES: u64 = 20_000;

/// Changes folded per query.
const CHUNK: usize = 400;

/// Steps a list request may take to bring the summary up to the head; further behind, it folds
/// the period itself while the summarizer catches up.
const REQUEST_STEPS: u32 = 2;

/// What the summary's rows were judged under.
pub fn criteria_digest(c: &Criteria) -> String {
    let h = Sha256::digest(format!("changetrail summary v{SUMMARY_VERSION} {c:?}").as_bytes());
    hex::encode(&h[..16])
}

fn padded(codes: impl IntoIterator<Item = &'static str>) -> String {
    let codes: BTreeSet<&str> = codes.into_iter().collect();
    if codes.is_empty() {
        return String::new();
    }
    let mut s = String::from(" ");
    for c in codes {
        s.push_str(c);
        s.push(' ');
    }
    s
}

/// The rows of `ids` as the entries below `size` fold and judge them (ids without facts have
/// none), with `rollbacks` the rollback index below `size`.
pub async fn rows_of(
    store: &Store,
    ids: &[String],
    size: u64,
    c: &Criteria,
    rollbacks: &Rollbacks,
) -> Result<Vec<SummaryRow>, StorageError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let facts: Vec<_> = fetch_facts(store, chunk, size)
            .await?
            .into_iter()
            .filter(|(_, records, broken)| !records.is_empty() || !broken.is_empty())
            .collect();
        // Which periods each change falls in: the request facts naming it, as the report
        // chooses its population.
        let requests = store.request_times(chunk, size).await?;
        let mut folded = fold_facts(facts, &c.policy, rollbacks);
        judge_all(store, &mut folded, size, &c.judging).await?;
        for (ev, broken) in &folded {
            let ch = &ev.change;
            let lower = |v: &Option<String>| v.as_deref().unwrap_or("").to_ascii_lowercase();
            let (first_request, last_request) = requests
                .get(&ch.id)
                .copied()
                .unwrap_or((i64::MAX, i64::MIN));
            out.push(SummaryRow {
                change_id: ch.id.clone(),
                requested_ns: ch.requested_ns.unwrap_or(i64::MIN),
                first_request,
                last_request,
                environment: lower(&ch.environment),
                service: lower(&ch.service),
                kind: ch.kind.to_ascii_lowercase(),
                version: ch.version.clone().unwrap_or_default(),
                exceptions: padded(exceptions(ev, broken, &c.rules).iter().map(|x| x.code)),
            });
        }
    }
    Ok(out)
}

/// What entries `after < seq <= upto` move: the changes to refresh, or (an erasure among them)
/// everything.
enum Moved {
    Changes(Vec<String>),
    /// An erasure removed facts and the credential uses they showed: what they named is gone
    /// from the tables, so every change is refreshed (erasures are rare).
    All,
}

/// The changes whose fold or judgement the facts of entries `after < seq <= upto` can move.
/// A new use of a credential is never another change's first use (it comes later), so new
/// credential uses move only their own change; what counts as a change's own comes through its
/// run claims, followed here.
async fn affected(
    store: &Store,
    after: Option<u64>,
    upto: u64,
    rollbacks: &Rollbacks,
) -> Result<Moved, StorageError> {
    if store.erasure_between(after, upto).await? {
        return Ok(Moved::All);
    }
    let mut ids = BTreeSet::new();
    let mut runs = BTreeSet::new();
    let mut services = BTreeSet::new();
    for (change, run, payload) in store.facts_after(after, upto).await? {
        // A change id is also looked up as a run: a run claim naming it is contested now.
        runs.extend(change.clone());
        ids.extend(change);
        runs.extend(run);
        let Ok(f) = serde_json::from_str::<FactRecord>(&payload) else {
            continue;
        };
        match &f.fact {
            evidence::Fact::Change(c) => {
                // The change it rolls back (and that change's runs) is judged with it.
                if let Some(t) = &c.rollback_of {
                    ids.insert(t.clone());
                    runs.insert(t.clone());
                }
            }
            evidence::Fact::Version(v) => {
                services.insert((
                    v.service.to_ascii_lowercase(),
                    v.environment.to_ascii_lowercase(),
                ));
            }
            _ => {}
        }
    }
    ids.extend(
        store
            .changes_of_runs(&runs.iter().cloned().collect::<Vec<_>>())
            .await?,
    );
    for (service, env) in services {
        ids.extend(store.summary_rollbacks_of(&service, &env).await?);
    }
    // Changes rolling back one of these (by id or by run): whether their target exists is part
    // of their judgement. (`rollbacks`: the index below `upto + 1`.)
    let named: Vec<String> = ids
        .iter()
        .chain(runs.iter())
        .filter_map(|id| rollbacks.get(id))
        .flatten()
        .cloned()
        .collect();
    ids.extend(named);
    Ok(Moved::Changes(ids.into_iter().collect()))
}

/// The changes whose fold or judgement entries `after < seq <= upto` can move, as the summary
/// refreshes them (rollback targets and rollers, run claims, services' rollbacks); `None` when an
/// erasure among them may have moved any change.
pub async fn moved_changes(
    store: &Store,
    after: Option<u64>,
    upto: u64,
) -> Result<Option<Vec<String>>, StorageError> {
    let rollbacks = rollback_index(store, upto.saturating_add(1)).await?;
    Ok(match affected(store, after, upto, &rollbacks).await? {
        Moved::Changes(c) => Some(c),
        Moved::All => None,
    })
}

/// Brings the summary up to the head, a step at a time, at most `max_steps` steps (`None`: until
/// caught up). Returns the state it leaves and whether that reaches the head it last read. A
/// summary judged under other settings is started again (only by the background summarizer: a
/// list request never deletes rows, see `page`).
pub async fn catch_up(
    store: &Store,
    c: &Criteria,
    max_steps: Option<u32>,
) -> Result<Option<(SummaryState, bool)>, StorageError> {
    catch_up_by(store, c, max_steps, STEP_ENTRIES, true).await
}

/// `catch_up` with steps of `step` entries (a test follows the chain an entry at a time, so that
/// every refresh the summary relies on is exercised), starting again under other settings only
/// if `may_reset`.
pub async fn catch_up_by(
    store: &Store,
    c: &Criteria,
    max_steps: Option<u32>,
    step: u64,
    may_reset: bool,
) -> Result<Option<(SummaryState, bool)>, StorageError> {
    let step = step.max(1);
    let digest = criteria_digest(c);
    let mut steps = 0u32;
    loop {
        let Some(head) = store.head().await? else {
            return Ok(None);
        };
        let last = head.head.size.saturating_sub(1);
        let state = store.summary_state().await?;
        let current = match &state {
            Some(s) if s.criteria == digest => s.clone(),
            _ if !may_reset => return Ok(None),
            _ => {
                // First run, or other settings: start again from the first entry. (Instances
                // on one database must share their correlation settings, or they take turns
                // at this.)
                if state.is_some() {
                    tracing::warn!(
                        "The correlation settings changed: the change summary is built again."
                    );
                }
                let fresh = SummaryState {
                    through: None,
                    criteria: digest.clone(),
                };
                store
                    .write_summary(state.as_ref(), &fresh, &[], &[], true)
                    .await?;
                continue;
            }
        };
        if current.through.is_some_and(|t| t >= last) {
            return Ok(Some((current, true)));
        }
        if max_steps.is_some_and(|m| steps >= m) {
            return Ok(Some((current, false)));
        }
        steps += 1;
        let upto = current.through.map_or(step, |t| t + step).min(last);
        let next = SummaryState {
            through: Some(upto),
            criteria: digest.clone(),
        };
        let rollbacks = rollback_index(store, upto + 1).await?;
        // False from a write: another summarizer got there first; go on from its state.
        match affected(store, current.through, upto, &rollbacks).await? {
            Moved::All => {
                let ids = store.change_ids_through(upto).await?;
                let rows = rows_of(store, &ids, upto + 1, c, &rollbacks).await?;
                store
                    .write_summary(Some(&current), &next, &rows, &[], true)
                    .await?;
            }
            Moved::Changes(ids) => {
                let rows = rows_of(store, &ids, upto + 1, c, &rollbacks).await?;
                // An affected change that folds to nothing any more loses its row.
                let kept: BTreeSet<&str> = rows.iter().map(|r| r.change_id.as_str()).collect();
                let gone: Vec<String> = ids
                    .iter()
                    .filter(|id| !kept.contains(id.as_str()))
                    .cloned()
                    .collect();
                store
                    .write_summary(Some(&current), &next, &rows, &gone, false)
                    .await?;
            }
        }
    }
}

/// Keeps the summary caught up in the background, every `interval`, until `stop`.
pub async fn run_summarizer(
    store: Store,
    c: Criteria,
    interval: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Err(e) = catch_up(&store, &c, None).await {
            tracing::warn!(error = %e, "The change summary could not catch up; retrying.");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One page of the list from the summary, if `REQUEST_STEPS` steps bring it up to the head as the
/// request found it: the ids of the page and the count by index, the page's changes folded and
/// judged as they stand. `None`: the caller folds the period itself.
pub async fn page(
    store: &Store,
    q: &SummaryQuery,
    c: &Criteria,
    offset: usize,
    limit: usize,
) -> Result<Option<(Vec<Judged>, usize)>, StorageError> {
    // What was committed when the request came is what it must see; entries committed while it
    // runs are concurrent with it (under steady ingest the head moves on during every step).
    let Some(asked_at) = store.head().await?.map(|h| h.head.size) else {
        return Ok(None);
    };
    match catch_up_by(store, c, Some(REQUEST_STEPS), STEP_ENTRIES, false).await? {
        Some((state, _)) if state.through.is_some_and(|t| t + 1 >= asked_at) => {}
        _ => return Ok(None),
    }
    let (ids, total) = store.summary_page(q, offset as u64, limit as u64).await?;
    let rollbacks = rollback_index(store, u64::MAX).await?;
    let facts = fetch_facts(store, &ids, u64::MAX).await?;
    let mut folded = fold_facts(facts, &c.policy, &rollbacks);
    judge_all(store, &mut folded, u64::MAX, &c.judging).await?;
    let list = folded
        .into_iter()
        .map(|(evidence, broken)| Judged {
            exceptions: exceptions(&evidence, &broken, &c.rules),
            evidence,
        })
        .collect();
    Ok(Some((list, usize::try_from(total).unwrap_or(usize::MAX))))
}

/// Recomputes every summary row from the facts (themselves checked against the signed entries)
/// and names each row that is missing, extra or different: DERIVED_MISMATCH. Rows a summarizer
/// may be refreshing while this runs (those the entries after its cursor move) are left out and
/// counted in the note. A summary this configuration cannot recompute (judged under other
/// settings, or rows without a cursor, or a cursor past the head) is itself a finding: the table
/// cannot be confirmed, and editing its state must not silence the check.
pub async fn audit_summary(
    store: &Store,
    c: &Criteria,
) -> Result<(Vec<Finding>, Option<String>), StorageError> {
    let general = |d: &str| vec![Finding::general(Class::DerivedMismatch, d.to_owned())];
    let state = store.summary_state().await?;
    let through = match &state {
        None | Some(SummaryState { through: None, .. }) => {
            if store.summary_has_rows().await? {
                return Ok((
                    general("change_summary holds rows but summary_state says none were made"),
                    None,
                ));
            }
            return Ok((Vec::new(), None));
        }
        Some(s) if s.criteria != criteria_digest(c) => {
            return Ok((
                general(
                    "change_summary was judged under other correlation settings than this \
                     configuration's, so it cannot be recomputed here: verify with the \
                     service's configuration (--config)",
                ),
                None,
            ));
        }
        Some(SummaryState {
            through: Some(t), ..
        }) => *t,
    };
    // Rows first, then the head: whatever a summarizer wrote meanwhile is among the changes the
    // entries after `through` move, which are left out.
    let mut stored = std::collections::BTreeMap::new();
    let mut after = String::new();
    loop {
        let page = store.summary_rows(&after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.change_id.clone();
        stored.extend(page.into_iter().map(|r| (r.change_id.clone(), r)));
    }
    let size = store.head().await?.map_or(0, |h| h.head.size);
    if through >= size {
        return Ok((
            general(&format!(
                "summary_state claims entries up to {through}; the ledger has {size}"
            )),
            None,
        ));
    }
    let moving: BTreeSet<String> = if through + 1 < size {
        let later = rollback_index(store, size).await?;
        match affected(store, Some(through), size - 1, &later).await? {
            Moved::All => {
                return Ok((
                    Vec::new(),
                    Some(format!(
                        "an erasure after entry {through} is not in change_summary yet: not compared"
                    )),
                ));
            }
            Moved::Changes(ids) => ids.into_iter().collect(),
        }
    } else {
        BTreeSet::new()
    };
    let mut findings = Vec::new();
    let mut mismatch = |detail: String| {
        if findings.len() < 1000 {
            findings.push(Finding::general(Class::DerivedMismatch, detail));
        }
    };
    let ids = store.change_ids_through(through).await?;
    let rollbacks = rollback_index(store, through + 1).await?;
    let wanted: Vec<String> = ids.into_iter().filter(|i| !moving.contains(i)).collect();
    for chunk in wanted.chunks(CHUNK) {
        for want in rows_of(store, chunk, through + 1, c, &rollbacks).await? {
            match stored.remove(&want.change_id) {
                Some(have) if have == want => {}
                Some(have) => mismatch(format!(
                    "change_summary {}: stored {have:?}, the facts give {want:?}",
                    want.change_id
                )),
                None => mismatch(format!("change_summary {}: missing", want.change_id)),
            }
        }
    }
    for extra in stored.into_values() {
        if !moving.contains(&extra.change_id) {
            mismatch(format!(
                "change_summary {}: a row for a change no fact names",
                extra.change_id
            ));
        }
    }
    let note = (!moving.is_empty()).then(|| {
        format!(
            "{} changes moved by entries after the summary's cursor ({through}) were not compared",
            moving.len()
        )
    });
    Ok((findings, note))
}
