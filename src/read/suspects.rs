//! Suspect changes (`GET /v1/suspects`) and the per-change runtime comparison, both read from the
//! signed `runtime.minute` entries (`core::runtime`):
//!
//! - `suspects` ranks the production changes deployed in (or one window before) a period by how
//!   likely they caused a service's errors or latency in it;
//! - `run_comparer` follows the deploy attempts in the chain and, once a production change's
//!   window after its deploy has passed (plus `settle`, by its stated end and by its receipt),
//!   records its `runtime.compared` fact: CHANGE_REGRESSION when the rise is clear. One fact per
//!   change (its key carries no digest), so instances comparing at once record it once.

use crate::core::evidence::identity::Principal;
use crate::core::evidence::{
    Evidence, Fact, FactRecord, SentBy, Source, decision, deploy_succeeded,
};
use crate::core::runtime::suspects::{Candidate, Query, Ranked, rank};
use crate::core::runtime::{self, Minute, Thresholds};
use crate::pipeline::{Appender, Telemetry};
use crate::read::changes::{Criteria, Rollbacks, exceptions, fetch_facts, fold_facts, judge_all};
use crate::storage::{StorageError, Store};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Minute entries read for one question at most (a day and a half of 50 services' minutes); the
/// latest are kept, and more is reported as truncated.
const MAX_MINUTES: u64 = 100_000;
/// Deploys read, of any environment, the latest first; and production deploys of the asked
/// environment ranked, at most.
const MAX_ATTEMPTED: u64 = 1_000;
const MAX_CANDIDATES: usize = 100;
/// Suspects returned at most.
const MAX_SUSPECTS: usize = 20;
/// How long after its receipt a deploy attempt's change may still be described (its run span
/// arriving, naming its service and environment) and be compared.
const DESCRIBE_WITHIN_NS: i64 = 3_600_000_000_000;
/// What reading the minutes needs besides the thresholds.
#[derive(Debug, Clone)]
pub struct Reading {
    pub thresholds: Thresholds,
    /// `[suspects] max_age`: how long after its minute a minute's entry may be appended.
    pub max_age_ns: i64,
    /// `[evidence] max_clock_skew`: how far ahead of its receipt a span may end, so how long
    /// before its minute a minute's entry may be appended.
    pub max_skew_ns: i64,
}

/// A service's minutes in an environment, by service.
#[derive(Debug, Default)]
pub struct Series {
    pub by_service: BTreeMap<String, Vec<Minute>>,
    /// Entries whose payload was erased or is not a minute this code writes.
    pub unreadable: u64,
    /// More minutes than `MAX_MINUTES`: the rest were not read.
    pub truncated: bool,
}

/// The minutes of `environment` (of `service` only, when given) starting in [from, to).
pub async fn series(
    store: &Store,
    environment: &str,
    service: Option<&str>,
    (from_ns, to_ns): (i64, i64),
    r: &Reading,
) -> Result<Series, StorageError> {
    let env = environment.to_ascii_lowercase();
    let size = store.head().await?.map_or(0, |h| h.head.size);
    let first = store
        .first_seq_at(from_ns.saturating_sub(r.max_skew_ns), size)
        .await?;
    // A minute is appended up to max_age after it, plus a flush; a minute of slack covers that.
    let late = to_ns
        .saturating_add(r.max_age_ns)
        .saturating_add(runtime::MINUTE_NS);
    let last = store.first_seq_at(late, size).await?;
    let subject = service.map(|s| runtime::subject(&env, s));
    let prefix = format!("runtime:{env}/");
    let mut rows = store
        .runtime_minutes(subject.as_deref(), &prefix, (first, last), MAX_MINUTES + 1)
        .await?;
    let mut out = Series {
        truncated: rows.len() as u64 > MAX_MINUTES,
        ..Series::default()
    };
    // The latest first came back: the after-windows nearest `to` are the ones kept.
    rows.truncate(MAX_MINUTES as usize);
    for (_, subject, payload) in rows {
        let m = payload.and_then(|p| serde_json::from_str::<Minute>(&p).ok());
        match m {
            // The subject is signed with the entry; the payload must agree with it, and with
            // what was asked (a name holding '/' could otherwise pass for another's subject).
            Some(m)
                if m.is_valid()
                    && runtime::subject(&m.environment, &m.service) == subject
                    && m.environment == env
                    && service.is_none_or(|s| s == m.service) =>
            {
                if m.minute_ns >= from_ns && m.minute_ns < to_ns {
                    out.by_service.entry(m.service.clone()).or_default().push(m);
                }
            }
            _ => out.unreadable += 1,
        }
    }
    Ok(out)
}

/// When a production change's deploy completed, and when the service received that: the latest
/// successful attempt (or, with no step reported, the run's end).
fn deployed_at(e: &Evidence) -> Option<(i64, i64)> {
    if !e.change.production || !deploy_succeeded(e) {
        return None;
    }
    let ok = e
        .steps
        .iter()
        .flat_map(|s| s.attempts.iter())
        .filter(|a| a.result == "success");
    let end = ok.clone().map(|a| a.end_ns).max();
    let received = ok.map(|a| a.received_ns).max();
    match (end, received) {
        (Some(e), Some(r)) => Some((e, r)),
        _ => e.change.finished_ns.map(|t| (t, t)),
    }
}

fn candidate(e: &Evidence) -> Option<Candidate> {
    let (deployed_ns, _) = deployed_at(e)?;
    Some(Candidate {
        change_id: e.change.id.clone(),
        service: e.change.service.clone()?,
        version: e.change.version.clone(),
        deployed_ns,
    })
}

/// A suspect with the change's people and attempts.
#[derive(Debug, Serialize)]
pub struct Suspect {
    #[serde(flatten)]
    pub ranked: Ranked,
    pub requester: Option<String>,
    pub approvers: Vec<String>,
    /// "2 attempts: 1 failed, then succeeded".
    pub attempts: Vec<String>,
    pub exceptions: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SuspectsView {
    pub service: String,
    pub environment: String,
    pub from_ns: i64,
    pub to_ns: i64,
    pub suspects: Vec<Suspect>,
    /// Candidates looked at (production changes deployed in the period or a window before it).
    pub candidates: usize,
    pub minutes_read: usize,
    pub unreadable_minutes: u64,
    pub truncated: bool,
    /// More candidates than could be looked at: the latest deploys were.
    pub candidates_truncated: bool,
}

fn subject_of(p: &Option<Principal>) -> Option<String> {
    p.as_ref().and_then(|p| p.subject.clone())
}

/// The changes most likely behind `service`'s errors or latency in `environment` in [from, to].
pub async fn suspects(
    store: &Store,
    c: &Criteria,
    r: &Reading,
    (service, environment): (&str, &str),
    (from_ns, to_ns): (i64, i64),
) -> Result<SuspectsView, StorageError> {
    let th = &r.thresholds;
    // An attempt is stated at its end, when the version is in place; the latest attempts first,
    // so the deploys nearest the question are the ones kept if there are too many.
    let ids = store
        .changes_attempting_between(from_ns.saturating_sub(th.window_ns), to_ns, MAX_ATTEMPTED)
        .await?;
    let mut candidates_truncated = ids.len() as u64 >= MAX_ATTEMPTED;
    let folded = fold_facts(
        fetch_facts(store, &ids, u64::MAX).await?,
        &c.policy,
        &Rollbacks::default(),
    );
    let mut by_id: BTreeMap<String, (Evidence, Vec<u64>)> = BTreeMap::new();
    let mut candidates = Vec::new();
    for (e, broken) in folded {
        let env_ok = e
            .change
            .environment
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(environment));
        if let Some(cand) = candidate(&e).filter(|_| env_ok) {
            if candidates.len() >= MAX_CANDIDATES {
                candidates_truncated = true;
                continue;
            }
            candidates.push(cand);
            by_id.insert(e.change.id.clone(), (e, broken));
        }
    }
    let span = (
        from_ns
            .saturating_sub(th.window_ns)
            .saturating_sub(th.baseline_ns)
            .saturating_sub(runtime::MINUTE_NS),
        to_ns.saturating_add(th.window_ns),
    );
    let series = series(store, environment, None, span, r).await?;
    // Ranking is CPU work over every minute read: off the async workers.
    let by_service = series.by_service;
    let (ranked, candidates, by_service) = {
        let th = th.clone();
        let (service, environment) = (service.to_owned(), environment.to_owned());
        tokio::task::spawn_blocking(move || {
            let q = Query {
                service: &service,
                environment: &environment,
                from_ns,
                to_ns,
            };
            (
                rank(&q, &candidates, &by_service, &th),
                candidates,
                by_service,
            )
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("ranking suspects failed: {e}")))?
    };
    let mut top: Vec<(Evidence, Vec<u64>)> = Vec::new();
    let mut order = Vec::new();
    for s in ranked.into_iter().take(MAX_SUSPECTS) {
        if let Some(e) = by_id.remove(&s.change_id) {
            top.push(e);
            order.push(s);
        }
    }
    judge_all(store, &mut top, u64::MAX, &c.judging).await?;
    let suspects = order
        .into_iter()
        .zip(top)
        .map(|(ranked, (e, broken))| Suspect {
            requester: subject_of(&e.requester),
            approvers: e
                .approvals
                .iter()
                .filter(|a| a.decision == decision::APPROVED)
                .filter_map(|a| subject_of(&a.approver))
                .collect(),
            attempts: e.steps.iter().map(|s| s.summary.clone()).collect(),
            exceptions: exceptions(&e, &broken, &c.rules)
                .into_iter()
                .map(|x| x.code.to_owned())
                .collect(),
            ranked,
        })
        .collect();
    Ok(SuspectsView {
        service: service.to_owned(),
        environment: environment.to_owned(),
        from_ns,
        to_ns,
        suspects,
        candidates: candidates.len(),
        minutes_read: by_service.values().map(Vec::len).sum(),
        candidates_truncated,
        unreadable_minutes: series.unreadable,
        truncated: series.truncated,
    })
}

/// `[suspects]` as the comparer applies it.
#[derive(Debug, Clone)]
pub struct Comparer {
    pub reading: Reading,
    pub settle_ns: i64,
    pub interval: Duration,
}

/// What one look at the deploy attempts did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compared {
    pub recorded: u64,
    pub regressions: u64,
    /// A deploy whose window has not passed yet stopped the look there.
    pub waiting: bool,
}

/// The `runtime.compared` fact of a change.
fn comparison_fact(e: &Evidence, cmp: runtime::Comparison) -> FactRecord {
    FactRecord {
        key: format!("change:{}:runtime", e.change.id),
        change_id: Some(e.change.id.clone()),
        run_id: None,
        source: Source::Runtime,
        time_ns: cmp.deployed_ns.saturating_add(cmp.window_ns),
        stated_until_ns: None,
        sent_by: Some(SentBy {
            token_id: None,
            name: "changetrail runtime comparison".into(),
        }),
        max_lateness_ns: None,
        fact: Fact::RuntimeCompared(cmp),
    }
}

/// Starts the comparer's cursor at the head the first time comparisons are switched on, so every
/// deploy recorded from here on is compared (history is not replayed). Called before any
/// listener takes a request.
pub async fn start(store: &Store) -> Result<(), StorageError> {
    if store.runtime_cursor().await?.is_none() {
        let head = store
            .head()
            .await?
            .map_or(-1, |h| i64::try_from(h.head.size).unwrap_or(i64::MAX) - 1);
        store.move_runtime_cursor(None, head).await?;
    }
    Ok(())
}

/// Whether every deploy attempt recorded so far has been compared or skipped.
pub async fn caught_up(store: &Store) -> Result<bool, StorageError> {
    let cursor = store.runtime_cursor().await?.unwrap_or(-1);
    Ok(store.attempts_after(cursor, 1).await?.is_empty())
}

/// Compares the deploys recorded since the cursor whose window has passed, in chain order.
pub async fn compare_due(
    store: &Store,
    appender: &Appender,
    c: &Criteria,
    k: &Comparer,
    now_ns: i64,
) -> Result<Compared, StorageError> {
    let mut done = Compared::default();
    let Some(cursor) = store.runtime_cursor().await? else {
        start(store).await?;
        return Ok(done);
    };
    let mut through = cursor;
    // A row that must wait (its change not described yet, or its window not passed) holds the
    // cursor there; later rows are still looked at (a comparison is recorded once, so looking
    // again later costs a fold, nothing more).
    let mut held = false;
    for (seq, change, received) in store.attempts_after(cursor, 200).await? {
        match compare_row(store, appender, c, k, (change, received), now_ns).await? {
            Row::Wait => {
                held = true;
                done.waiting = true;
            }
            Row::Done(recorded, regressions) => {
                done.recorded += recorded;
                done.regressions += regressions;
                if !held {
                    through = i64::try_from(seq).unwrap_or(i64::MAX);
                }
            }
            // Tried again at the next look, from the same place.
            Row::Retry => break,
        }
    }
    if through != cursor {
        store.move_runtime_cursor(Some(cursor), through).await?;
    }
    Ok(done)
}

/// What looking at one deploy attempt came to.
enum Row {
    /// Its change is not described yet, or its window has not passed.
    Wait,
    /// Compared (how many recorded here, how many regressions), or nothing to compare.
    Done(u64, u64),
    /// The comparison could not be appended now.
    Retry,
}

/// Compares the change of one deploy attempt (received at `received`), if it is due.
async fn compare_row(
    store: &Store,
    appender: &Appender,
    c: &Criteria,
    k: &Comparer,
    (change, received): (Option<String>, i64),
    now_ns: i64,
) -> Result<Row, StorageError> {
    let th = &k.reading.thresholds;
    // A deploy whose change is not described yet (its run span ends after the deploy task, and
    // is exported then) is waited for, this long after its receipt, rather than passed over.
    let describing = now_ns < received.saturating_add(DESCRIBE_WITHIN_NS);
    let Some(id) = change else {
        return Ok(if describing {
            Row::Wait
        } else {
            Row::Done(0, 0)
        });
    };
    let facts = fetch_facts(store, std::slice::from_ref(&id), u64::MAX).await?;
    let mut out = (0, 0);
    for (e, _) in &fold_facts(facts, &c.policy, &Rollbacks::default()) {
        if e.runtime.is_some() {
            continue;
        }
        if (e.change.service.is_none() || e.change.environment.is_none()) && describing {
            return Ok(Row::Wait);
        }
        // Not production, not deployed (yet: a later attempt's row comes back to it).
        let Some(cand) = candidate(e) else {
            continue;
        };
        let (_, deploy_received) = deployed_at(e).unwrap_or_default();
        let due = cand
            .deployed_ns
            .saturating_add(th.window_ns)
            .max(deploy_received)
            .saturating_add(k.settle_ns);
        if due > now_ns {
            return Ok(Row::Wait);
        }
        let env = e
            .change
            .environment
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let span = (
            runtime::minute_of(cand.deployed_ns).saturating_sub(th.baseline_ns),
            cand.deployed_ns.saturating_add(th.window_ns),
        );
        let mut s = series(store, &env, Some(&cand.service), span, &k.reading).await?;
        let minutes = s.by_service.remove(&cand.service).unwrap_or_default();
        let cmp = runtime::compare(
            &minutes,
            (&env, &cand.service),
            cand.deployed_ns,
            cand.version.as_deref(),
            th,
        );
        let regression = cmp.regression;
        let appended = appender
            .append_telemetry(Telemetry {
                spans: Vec::new(),
                logs: Vec::new(),
                facts: vec![comparison_fact(e, cmp)],
            })
            .await;
        match appended {
            // Another instance recorded this change's comparison first: its stands.
            Ok(a) if a.facts_duplicate > 0 => {}
            Ok(_) => {
                out.0 += 1;
                out.1 += u64::from(regression);
            }
            Err(e) if e.is_transient() => return Ok(Row::Retry),
            // Refused for good (it cannot become acceptable by waiting): passed over, said so.
            Err(err) => {
                tracing::warn!(change = %e.change.id, error = %err, "A deploy's runtime comparison could not be recorded; it is passed over.");
            }
        }
    }
    Ok(Row::Done(out.0, out.1))
}

/// Compares due deploys every `interval` until shutdown.
pub async fn run_comparer(
    store: Store,
    appender: Appender,
    c: Criteria,
    k: Comparer,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(k.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match compare_due(&store, &appender, &c, &k, crate::sys::now_ns()).await {
            Ok(d) if d.recorded > 0 => tracing::info!(
                compared = d.recorded,
                regressions = d.regressions,
                "Deploys compared with what ran before them."
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Deploys could not be compared; trying again."),
        }
    }
}
