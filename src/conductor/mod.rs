//! Conductor reconciliation (`[conductor]`): the listener's events can be lost, so changetrail
//! also asks Conductor itself. Each round pages `GET /api/workflow/search` for executions
//! updated since a durable cursor, fetches each with its tasks, imports it through the same path
//! as `POST /v1/import/conductor` (so a rewrite shows the same way), and moves the cursor only
//! over what committed. It then re-fetches a few runs it imported before (round-robin within
//! `recheck_window`), which is how a deleted workflow (404) or an edit that left `updateTime`
//! alone is noticed.
//!
//! The parts: `client` (HTTP, retries, tokens), `cursor` (plain paging rules), and here the
//! rounds and the loop `serve` spawns. A Conductor that is down costs this loop only: it backs
//! off and nothing else waits on it.

mod client;
pub mod cursor;

pub use client::{Client, ClientSettings, FetchError, KeySecret};
pub use cursor::Cursor;

use crate::core::evidence::identity::IdentityVerifier;
use crate::core::evidence::{Intake, Policy, SentBy};
use crate::ingest::conductor::{self as import, ImportError};
use crate::pipeline::Appender;
use crate::read::history::History;
use crate::storage::Store;
use crate::sys::metrics::Registry;
use crate::sys::now_ns;
use cursor::Summary;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// What a reconciler does, besides how it talks to Conductor.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client: ClientSettings,
    /// Only these workflow types (all when empty).
    pub workflow_names: Vec<String>,
    pub poll_interval: Duration,
    pub page_size: u32,
    /// Where a reconciler with no stored cursor starts: this long before now.
    pub lookback: Duration,
    /// Runs imported before that each round fetches again (to notice deletions).
    pub recheck_per_round: u32,
    /// Only runs observed within this long are fetched again.
    pub recheck_window: Duration,
    /// How long Conductor's search index may take to show an update: executions updated more
    /// recently are left to the next round, so the cursor never passes one not yet indexed.
    pub index_lag: Duration,
}

/// Where its imports go, and what they are weighed with.
pub struct Sinks {
    pub appender: Appender,
    pub store: Store,
    pub policy: Policy,
    pub identity: IdentityVerifier,
    pub max_clock_skew_ns: i64,
    pub metrics: Arc<Registry>,
}

/// One round's work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub pages: u64,
    /// Executions the search named as updated, fetched and imported.
    pub imported: u64,
    pub facts_recorded: u64,
    pub rewrites: u64,
    pub refused: u64,
    /// Runs imported before, fetched again (not counted in `imported`).
    pub rechecked: u64,
    pub cursor: Cursor,
}

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("importing {run}: {error}")]
    Import { run: String, error: ImportError },
    #[error("the reconciler's cursor: {0}")]
    Cursor(String),
}

impl RoundError {
    fn kind(&self) -> &'static str {
        match self {
            RoundError::Fetch(e) => e.kind(),
            RoundError::Import { .. } => "import",
            RoundError::Cursor(_) => "cursor",
        }
    }
}

pub struct Reconciler {
    client: Client,
    settings: Settings,
    sinks: Sinks,
    history: History,
    /// The cursor's key: the server URL as it may be shown.
    server: String,
    sent_by: SentBy,
    /// A backfill (`conductor sync --since`): its start and lateness allowance; it leaves the
    /// durable cursor alone.
    backfill: Option<(i64, i64)>,
    recheck_after: Mutex<String>,
    /// Rounds begun, numbering them.
    rounds: AtomicU64,
    /// Runs that answered 404, with the round that first saw it: a deletion is recorded only
    /// on a 404 in a later round, so one bad answer (a proxy, a Conductor mid-failover) does
    /// not rewrite history. Held in memory: a restart just restarts the count.
    missing: std::sync::Mutex<HashMap<String, u64>>,
    /// When the last complete round began (ns): everything updated before is imported.
    complete_ns: AtomicI64,
}

/// The most search pages one round reads.
const MAX_PAGES: u64 = 1000;

const POLLS: &str = "changetrail_conductor_polls_total";
const IMPORTED: &str = "changetrail_conductor_executions_imported_total";
const RECHECKED: &str = "changetrail_conductor_rechecks_total";
const FACTS: &str = "changetrail_conductor_facts_recorded_total";
const REWRITES: &str = "changetrail_conductor_rewrites_total";
const ERRORS: &str = "changetrail_conductor_errors_total";
const LAG: &str = "changetrail_conductor_cursor_lag_seconds";
const CURSOR: &str = "changetrail_conductor_cursor_update_time_seconds";

/// What `/metrics` shows of reconciliation: (name, type, help).
const METRICS: [(&str, &str, &str); 8] = [
    (
        POLLS,
        "counter",
        "Conductor reconciliation rounds, by outcome.",
    ),
    (
        IMPORTED,
        "counter",
        "Conductor executions the search named as updated, fetched and imported (each update of one counts).",
    ),
    (
        RECHECKED,
        "counter",
        "Runs imported before that the reconciler fetched again (to notice deletions and quiet edits).",
    ),
    (
        FACTS,
        "counter",
        "Facts new to the ledger from reconciled Conductor executions.",
    ),
    (
        REWRITES,
        "counter",
        "Rewritten Conductor history the reconciler recorded, by kind.",
    ),
    (
        ERRORS,
        "counter",
        "Conductor reconciliation errors, by kind (timeout, unavailable, rate_limited, unauthorized, invalid_answer, refused, import, cursor).",
    ),
    (
        LAG,
        "gauge",
        "Seconds since the start of the last complete reconciliation round: Conductor updates older than this are imported.",
    ),
    (
        CURSOR,
        "gauge",
        "The reconciler's cursor: the updateTime (epoch seconds) through which every execution is imported.",
    ),
];

/// `http://user:pw@host:8080/x?y` → `http://host:8080/x`: a URL with nothing secret in it.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

impl Reconciler {
    pub fn new(settings: Settings, sinks: Sinks) -> Result<Reconciler, String> {
        let server = shown_url(&settings.client.url);
        for (name, kind, help) in METRICS {
            sinks.metrics.describe(name, kind, help);
        }
        Ok(Reconciler {
            client: Client::new(settings.client.clone())?,
            history: History::new(sinks.store.clone()),
            sent_by: SentBy {
                token_id: None,
                name: format!("conductor reconciler ({server})"),
            },
            server,
            settings,
            sinks,
            backfill: None,
            recheck_after: Mutex::new(String::new()),
            rounds: AtomicU64::new(0),
            missing: std::sync::Mutex::new(HashMap::new()),
            complete_ns: AtomicI64::new(0),
        })
    }

    /// A one-off backfill from `since_ns`: facts may be as late as their age, and the durable
    /// cursor is neither read nor moved (the poller keeps its own place).
    pub fn backfill_from(mut self, since_ns: i64, now_ns: i64) -> Reconciler {
        self.backfill = Some((since_ns, now_ns.saturating_sub(since_ns).max(0)));
        self.sent_by.name = format!("conductor sync ({})", self.server);
        self
    }

    /// Polls until `stop`: a round, then `poll_interval`; after a failed round, a wait that
    /// doubles up to `max_backoff` (or what a 429 asked).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let wait = match self.round(&stop, |_| {}).await {
                Ok(_) => {
                    failures = 0;
                    self.settings.poll_interval
                }
                Err(RoundError::Fetch(FetchError::Stopped)) => return,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "Conductor reconciliation round failed; backing off.");
                    let doubled = self
                        .settings
                        .poll_interval
                        .saturating_mul(1 << failures.saturating_sub(1).min(16))
                        .min(
                            self.settings
                                .client
                                .max_backoff
                                .max(self.settings.poll_interval),
                        );
                    match e {
                        RoundError::Fetch(FetchError::RateLimited(d)) => {
                            doubled.max(d.min(client::MAX_RETRY_AFTER))
                        }
                        _ => doubled,
                    }
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: every execution updated since the cursor, then the re-checks. `progress`
    /// hears of each page.
    pub async fn round(
        &self,
        stop: &CancellationToken,
        progress: impl Fn(&Round),
    ) -> Result<Round, RoundError> {
        let began = now_ns();
        self.rounds.fetch_add(1, Ordering::Relaxed);
        let result = self.pages(stop, &progress).await;
        let result = match result {
            Ok(mut r) => match self.recheck(stop, &mut r).await {
                Ok(()) => Ok(r),
                Err(e) => Err(e),
            },
            e => e,
        };
        let m = &self.sinks.metrics;
        match &result {
            Ok(r) => {
                m.add(POLLS, &[("outcome", "ok")], 1);
                self.complete_ns.store(began, Ordering::Relaxed);
                m.set(CURSOR, &[], (r.cursor.update_time_ms / 1000).max(0) as u64);
            }
            Err(RoundError::Fetch(FetchError::Stopped)) => {}
            Err(e) => {
                m.add(POLLS, &[("outcome", "failed")], 1);
                m.add(ERRORS, &[("kind", e.kind())], 1);
            }
        }
        let complete = self.complete_ns.load(Ordering::Relaxed);
        if complete > 0 {
            m.set(
                LAG,
                &[],
                (now_ns().saturating_sub(complete) / 1_000_000_000).max(0) as u64,
            );
        }
        result
    }

    /// The cursor to start from, and what is stored (to move it compare-and-swap).
    async fn start(&self) -> Result<(Cursor, Option<(i64, String)>), RoundError> {
        if let Some((since_ns, _)) = self.backfill {
            return Ok((
                Cursor {
                    update_time_ms: since_ns / 1_000_000,
                    ..Cursor::default()
                },
                None,
            ));
        }
        let stored = self
            .sinks
            .store
            .conductor_cursor(&self.server)
            .await
            .map_err(|e| RoundError::Cursor(e.to_string()))?;
        Ok(match &stored {
            Some(s) => (Cursor::from_stored(s).map_err(RoundError::Cursor)?, stored),
            None => {
                let lookback =
                    i64::try_from(self.settings.lookback.as_millis()).unwrap_or(i64::MAX);
                let from = (now_ns() / 1_000_000).saturating_sub(lookback);
                (
                    Cursor {
                        update_time_ms: from,
                        ..Cursor::default()
                    },
                    None,
                )
            }
        })
    }

    async fn pages(
        &self,
        stop: &CancellationToken,
        progress: &impl Fn(&Round),
    ) -> Result<Round, RoundError> {
        let (mut cursor, mut stored) = self.start().await?;
        let mut round = Round::default();
        let mut start = 0u64;
        loop {
            let query = cursor.query(&self.settings.workflow_names);
            let doc = self
                .client
                .search(&query, start, self.settings.page_size.max(1), stop)
                .await?;
            let mut page = cursor::page(&doc).map_err(FetchError::Invalid)?;
            // A server that answers more than asked is held to the page size, so a round's
            // work per page stays what the settings say.
            page.results
                .truncate(self.settings.page_size.max(1) as usize);
            round.pages += 1;
            let lag = i64::try_from(self.settings.index_lag.as_millis()).unwrap_or(i64::MAX);
            let horizon = (now_ns() / 1_000_000).saturating_sub(lag);
            // Sorted by updateTime: past the first one beyond the horizon, all are.
            let beyond = page.results.iter().any(|s| s.update_time_ms > horizon);
            let mut wanted: Vec<&Summary> = page
                .results
                .iter()
                .filter(|s| cursor.wants(s) && s.update_time_ms <= horizon)
                .collect();
            // Oldest first, so a failure leaves everything before it imported and the cursor
            // can move up to it (Conductor sorts so already; a proxy might not).
            wanted.sort_by_key(|s| s.update_time_ms);
            let mut done = Vec::new();
            let mut failure = None;
            for s in wanted {
                match self
                    .import_one(&s.workflow_id, stop, &mut round, false)
                    .await
                {
                    Ok(()) => done.push(s.clone()),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let next = cursor.advanced(&done);
            if next != cursor {
                if self.backfill.is_none() {
                    let to = next.to_stored();
                    let moved = self
                        .sinks
                        .store
                        .move_conductor_cursor(&self.server, stored.as_ref(), &to, now_ns())
                        .await
                        .map_err(|e| RoundError::Cursor(e.to_string()))?;
                    if !moved {
                        // Another instance sharing the database moved it: it has this round.
                        tracing::info!(
                            "Another instance moved the Conductor cursor; this round ends."
                        );
                        round.cursor = next;
                        return Ok(round);
                    }
                    stored = Some(to);
                }
                cursor = next;
            }
            round.cursor = cursor.clone();
            progress(&round);
            if let Some(e) = failure {
                return Err(e);
            }
            let seen = start + page.results.len() as u64;
            // Past MAX_PAGES the round ends: the next continues from the cursor, so one
            // round's length stays bounded whatever the backlog.
            if beyond
                || page.results.is_empty()
                || seen >= page.total_hits
                || round.pages >= MAX_PAGES
            {
                return Ok(round);
            }
            // After progress the query itself moved on; a full page of nothing new (many runs
            // at one timestamp) is stepped over by offset.
            start = if done.is_empty() { seen } else { 0 };
        }
    }

    fn intake(&self) -> Intake {
        Intake {
            received_ns: now_ns(),
            sent_by: Some(self.sent_by.clone()),
            max_lateness_ns: self.backfill.map(|(_, lateness)| lateness),
            max_clock_skew_ns: self.sinks.max_clock_skew_ns,
        }
    }

    /// Fetches one execution and imports it. One changetrail can never record (it does not
    /// map, or an entry it makes is over the ledger's limits) is counted, logged and passed:
    /// it is looked at again when Conductor updates it, and must not stall the cursor for
    /// good. Anything else fails the round before the cursor passes it.
    async fn import_one(
        &self,
        run: &str,
        stop: &CancellationToken,
        round: &mut Round,
        recheck: bool,
    ) -> Result<(), RoundError> {
        // A search (or an ingest token, via an earlier import) may name an id that cannot be
        // fetched; asking anyway would fail every round at the same run.
        if let Err(why) = crate::core::evidence::valid_run_id(run) {
            self.refused(run, &ImportError::Invalid(why), round);
            return Ok(());
        }
        let fetched = match self.client.execution(run, stop).await {
            // A run too large to read is a document that can never be recorded: passed, not
            // a round that fails for good.
            Err(FetchError::TooLarge(why)) => {
                self.refused(run, &ImportError::Invalid(why), round);
                return Ok(());
            }
            r => r?,
        };
        if fetched.is_some() {
            self.missing_map().remove(run);
        }
        let Some(doc) = fetched else {
            return match self.deleted(run, round).await {
                Err(RoundError::Import { error, .. }) if error.is_refusal() => {
                    self.refused(run, &error, round);
                    Ok(())
                }
                r => r,
            };
        };
        let s = &self.sinks;
        match import::import(
            &s.appender,
            &self.history,
            &doc,
            &s.policy,
            &s.identity,
            &self.intake(),
        )
        .await
        {
            Ok(done) => {
                if !recheck {
                    round.imported += 1;
                    s.metrics.add(IMPORTED, &[], 1);
                }
                round.facts_recorded += done.facts_stored;
                s.metrics.add(FACTS, &[], done.facts_stored);
                if let Some(r) = done.prepared.rewrite.filter(|_| done.facts_stored > 0) {
                    round.rewrites += 1;
                    for k in &r.kinds {
                        s.metrics.add(REWRITES, &[("kind", k)], 1);
                    }
                }
                Ok(())
            }
            Err(error) if error.is_refusal() => {
                self.refused(run, &error, round);
                Ok(())
            }
            Err(error) => Err(RoundError::Import {
                run: run.to_owned(),
                error,
            }),
        }
    }

    /// Counts and logs an execution changetrail can never record, which the round passes.
    fn refused(&self, run: &str, why: &ImportError, round: &mut Round) {
        round.refused += 1;
        self.sinks.metrics.add(ERRORS, &[("kind", "refused")], 1);
        tracing::warn!(workflow_id = ?run, %why, "Conductor execution not imported: changetrail cannot record it.");
    }

    /// Run `run` answered 404: when it was imported before, its deletion is not recorded yet
    /// and it answered 404 in an earlier round too, that is a rewrite (`delete`); a run never
    /// imported is nothing to record.
    async fn deleted(&self, run: &str, round: &mut Round) -> Result<(), RoundError> {
        let fail = |error| RoundError::Import {
            run: run.to_owned(),
            error,
        };
        let Some(last) = self
            .history
            .last_observation(run)
            .await
            .map_err(|e| fail(e.into()))?
        else {
            return Ok(());
        };
        if last.deleted || !self.missing_twice(run) {
            return Ok(());
        }
        let done = import::deleted(
            &self.sinks.appender,
            run,
            &last.change_id,
            &last.run,
            &self.intake(),
        )
        .await
        .map_err(fail)?;
        if done.facts_stored > 0 {
            round.rewrites += 1;
            self.sinks.metrics.add(REWRITES, &[("kind", "delete")], 1);
            tracing::warn!(run, change = %last.change_id, "Conductor no longer has an execution changetrail imported: recorded as deleted.");
        }
        Ok(())
    }

    fn missing_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic while holding it cannot leave the map inconsistent: use it as it is.
        self.missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that `run` answered 404 in this round; true when a 404 was already seen in an
    /// earlier round (then the sighting is used up).
    fn missing_twice(&self, run: &str) -> bool {
        let this = self.rounds.load(Ordering::Relaxed);
        let mut missing = self.missing_map();
        match missing.get(run) {
            Some(first) if *first < this => {
                missing.remove(run);
                true
            }
            Some(_) => false,
            None => {
                // Bounded: past this many runs missing at once, the count starts again.
                if missing.len() >= 100_000 {
                    missing.clear();
                }
                missing.insert(run.to_owned(), this);
                tracing::info!(workflow_id = ?run, "Conductor answered 404 for a run changetrail imported; recorded as deleted if it still does next round.");
                false
            }
        }
    }

    /// Fetches again a few runs this reconciler imported before, round-robin by id: a 404 in
    /// two rounds is a deletion, and an edit that left `updateTime` alone is imported like any
    /// other.
    async fn recheck(&self, stop: &CancellationToken, round: &mut Round) -> Result<(), RoundError> {
        let n = self.settings.recheck_per_round;
        if n == 0 || self.backfill.is_some() {
            return Ok(());
        }
        let window = i64::try_from(self.settings.recheck_window.as_nanos()).unwrap_or(i64::MAX);
        let since = now_ns().saturating_sub(window);
        let mut after = self.recheck_after.lock().await;
        let fail = |error: crate::read::ReadError| RoundError::Import {
            run: String::new(),
            error: error.into(),
        };
        let mut runs = self
            .history
            .observed_runs(&self.sent_by.name, &after, since, n)
            .await
            .map_err(fail)?;
        if runs.is_empty() && !after.is_empty() {
            // Wrapped around: start again from the first id.
            runs = self
                .history
                .observed_runs(&self.sent_by.name, "", since, n)
                .await
                .map_err(fail)?;
        }
        for run in &runs {
            match self.history.last_observation(run).await.map_err(fail)? {
                Some(last) if !last.deleted => {}
                _ => continue,
            }
            match self.import_one(run, stop, round, true).await {
                Ok(()) => {
                    round.rechecked += 1;
                    self.sinks.metrics.add(RECHECKED, &[], 1);
                }
                // What concerns every request (stopping, a wait Conductor asked for, the
                // credentials) ends the round as before.
                Err(
                    e @ RoundError::Fetch(
                        FetchError::Stopped
                        | FetchError::RateLimited(_)
                        | FetchError::Unauthorized(_),
                    ),
                ) => return Err(e),
                // One run failing must not fail every round: the round-robin would never move
                // past it. Counted, and the next run is re-checked.
                Err(e) => {
                    self.sinks.metrics.add(ERRORS, &[("kind", e.kind())], 1);
                    tracing::warn!(workflow_id = ?run, error = %e, "Re-checking a Conductor run failed; moving on to the next.");
                }
            }
        }
        *after = runs.last().cloned().unwrap_or_default();
        Ok(())
    }
}
