//! Alerts (`[alerts]`): production changes' exceptions raised once per (change, code), into the
//! ledger and out to every configured destination.
//!
//! Two duties per tick. **Look**: follow the committed chain with a cursor (`alert_state`), fold
//! and judge each change the new facts name (as the console does), and hand the changes whose
//! codes differ from their open alerts to the writer, which decides again under the head lock
//! (so two instances raise a code once) and appends `alert.raised` / `alert.resolved` with one
//! outbox row per destination in the same transaction. **Deliver**: claim due outbox rows (a
//! random token and a deadline), send each in the destination's format, and on success append
//! `alert.delivered` only if the claim is still ours (the writer checks under the lock), which
//! marks the row delivered. A failure puts the row back with a backoff that survives restarts;
//! a refusal closes it. An event waits while an earlier event of the same change is still
//! undelivered to that destination, so a resolution never overtakes its raise.

use super::http::ExportError;
use super::otlp::{LogsExporter, kv, text};
use super::webhook::Webhook;
use crate::core::alerts::{
    self, AlertCode, AlertEvent, Delivered, FIRING, Look, Notice, RAISED, RESOLVED, RESOLVED_STATUS,
};
use crate::core::evidence::Evidence;
use crate::core::evidence::identity::Principal;
use crate::pipeline::{AppendError, LedgerWriter};
use crate::read::changes::{Criteria, evidence_of, exceptions};
use crate::storage::{Delivery, StorageError, Store};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, any_value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Entries looked at per step.
const STEP: i64 = 5_000;
/// Changes handed to the writer per transaction.
const LOOKS_PER_APPEND: usize = 100;
/// Deliveries claimed per tick.
const CLAIM: u64 = 50;
/// The first wait after a failed attempt; it doubles up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// An exception's own words are kept to this many characters in an alert.
const EVIDENCE_CHARS: usize = 2_000;
/// The OTLP log record's event name.
pub const EVENT_NAME: &str = "changetrail.alert";

/// Why a tick stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Where alerts go.
pub enum Destination {
    Webhook(Box<Webhook>),
    Otlp(LogsExporter),
}

impl Destination {
    pub fn name(&self) -> &str {
        match self {
            Destination::Webhook(w) => &w.name,
            Destination::Otlp(_) => "otlp",
        }
    }

    /// The address as it may be logged (never a webhook's path: it may be its credential).
    pub fn shown(&self) -> String {
        match self {
            Destination::Webhook(w) => w.shown_url(),
            Destination::Otlp(x) => x.shown_url(),
        }
    }
}

/// The alerter's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub raised: AtomicU64,
    pub resolved: AtomicU64,
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed: AtomicU64,
    /// Deliveries a destination refused for good.
    pub refused: AtomicU64,
    /// Committed entries after the cursor at the end of the last look.
    pub lag_entries: AtomicU64,
}

pub struct Alerter {
    pub store: Store,
    pub writer: Arc<LedgerWriter>,
    pub criteria: Criteria,
    pub destinations: Vec<Destination>,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_backoff: Duration,
    /// `{console_url}` for links to a change's page.
    pub console_url: Option<String>,
    /// How long after its receipt a production version sighting is judged for UNLINKED_DEPLOY
    /// (the change that deployed it may be imported later).
    pub unlinked_after: Duration,
    pub stats: Arc<Stats>,
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// "alice (verified)", "bob (unverified)"; `None` when nobody is named.
fn who(p: Option<&Principal>) -> Option<String> {
    let p = p?;
    let s = p.subject.as_deref()?;
    Some(if p.established.is_verified() {
        format!("{s} (verified)")
    } else {
        format!("{s} (unverified)")
    })
}

/// A change id in a URL fragment: unreserved characters as they are, the rest percent-encoded.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The change as an alert describes it, with its exception codes now (production changes only:
/// elsewhere a code is not an alert). One entry per code, the first exception's words.
pub fn look(ev: &Evidence, found: &[crate::core::evidence::rules::Exception]) -> AlertEvent {
    let c = &ev.change;
    let mut codes: Vec<AlertCode> = Vec::new();
    if c.production {
        for x in found {
            if !codes.iter().any(|have| have.code == x.code) {
                codes.push(AlertCode {
                    code: x.code.to_owned(),
                    evidence: x.evidence.chars().take(EVIDENCE_CHARS).collect(),
                });
            }
        }
    }
    let approval = ev.approvals.iter().max_by_key(|a| (a.decided_ns, a.seq));
    AlertEvent {
        change_id: c.id.clone(),
        codes,
        open: Vec::new(),
        service: c.service.clone(),
        environment: c.environment.clone(),
        version: c.version.clone(),
        requested_by: who(ev.requester.as_ref()),
        approved_by: who(approval.and_then(|a| a.approver.as_ref())),
        first_seen_ns: None,
    }
}

use alerts::parse_events as parsed;

impl Alerter {
    /// Runs until `stop`; a failed tick is logged and tried again at the next interval.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        let shown: Vec<String> = self
            .destinations
            .iter()
            .map(|d| format!("{} ({})", d.name(), d.shown()))
            .collect();
        tracing::info!(
            destinations = shown.join(", "),
            "Alerts go to these destinations."
        );
        // Raising and delivering apart: a destination that is slow to answer never holds
        // back new alerts.
        let looking = async {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = async { self.look().await?; self.look_unlinked().await } => if let Err(e) = r {
                        tracing::warn!(error = %e, "Alerts could not catch up; retrying.");
                    },
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
        };
        let delivering = async {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = self.deliver() => if let Err(e) = r {
                        tracing::warn!(error = %e, "Alerts could not be delivered; retrying.");
                    },
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
        };
        tokio::join!(looking, delivering);
    }

    fn names(&self) -> Vec<String> {
        self.destinations
            .iter()
            .map(|d| d.name().to_owned())
            .collect()
    }

    /// The entries after the cursor up to the head as it stood when the look began, a step at
    /// a time; alerts for the changes they name.
    pub async fn look(&self) -> Result<(), AlertError> {
        let head = self
            .store
            .head()
            .await?
            .map_or(-1, |h| i64::try_from(h.head.size).unwrap_or(i64::MAX) - 1);
        let Some(mut cursor) = self.store.alert_cursor().await? else {
            self.store.move_alert_cursor(None, head).await?;
            return Ok(());
        };
        let lag = |cursor: i64| u64::try_from(head - cursor).unwrap_or_default();
        let names = self.names();
        while cursor < head {
            self.stats.lag_entries.store(lag(cursor), Ordering::Relaxed);
            let upto = head.min(cursor + STEP);
            let (after, through) = (u64::try_from(cursor).ok(), u64::try_from(upto).unwrap_or(0));
            // Every change these entries can move (rollback targets and rollers too); after an
            // erasure, the ones they name.
            let changes =
                match crate::read::summary::moved_changes(&self.store, after, through).await? {
                    Some(c) => c,
                    None => super::changes_between(&self.store, cursor, upto)
                        .await?
                        .into_iter()
                        .collect(),
                };
            let mut looks = Vec::new();
            for change in changes {
                looks.extend(self.differs(&change, upto).await?);
            }
            self.append(&looks, &names).await?;
            if !self.store.move_alert_cursor(Some(cursor), upto).await? {
                // Another instance moved it: it looks at what follows.
                cursor = self.store.alert_cursor().await?.unwrap_or(cursor);
                break;
            }
            cursor = upto;
        }
        self.stats.lag_entries.store(lag(cursor), Ordering::Relaxed);
        Ok(())
    }

    async fn append(&self, looks: &[Look], names: &[String]) -> Result<(), AlertError> {
        for chunk in looks.chunks(LOOKS_PER_APPEND) {
            let appended = self.writer.alerts(chunk, names).await?;
            self.count_events(&appended.seqs).await?;
        }
        Ok(())
    }

    /// The looks `change` calls for: its own when its codes now differ from its open alerts,
    /// and the resolution of the unlinked deploy of its version it now explains (the writer
    /// decides again under the lock).
    async fn differs(&self, change: &str, as_of: i64) -> Result<Vec<Look>, AlertError> {
        // A sender may name a change anything, even like an unlinked deploy's subject: such a
        // change must not speak for (and resolve) that subject's alerts.
        if change.starts_with(alerts::UNLINKED_PREFIX) {
            return Ok(Vec::new());
        }
        let folded = match evidence_of(&self.store, change, &self.criteria).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(Vec::new()),
            // A storage error that may pass keeps the cursor: the step is tried again.
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(change, error = %e, "A change could not be folded for alerts; skipped until a new fact names it.");
                return Ok(Vec::new());
            }
        };
        let (ev, broken) = &folded;
        let mut out = Vec::new();
        let now = look(ev, &exceptions(ev, broken, &self.criteria.rules));
        if self.changes_open_codes(&now).await? {
            out.push(Look {
                event: now,
                as_of: Some(as_of),
            });
        }
        let c = &ev.change;
        if let (true, Some(env), Some(svc), Some(ver)) =
            (c.production, &c.environment, &c.service, &c.version)
        {
            let subject = alerts::unlinked_subject(env, svc, ver);
            let before = parsed(&self.store.alert_events(&subject).await?);
            let open = alerts::open_codes(before.iter().map(|(s, k, _, e)| (*s, k.as_str(), e)));
            let raised = before.iter().rev().find_map(|(seq, kind, _, e)| {
                (kind == RAISED && open.values().any(|s| s == seq)).then_some(e)
            });
            if let Some(e) = raised
                && crate::core::evidence::explains(ev, &sighting(e), self.criteria.tolerance_ns)
            {
                out.push(Look {
                    event: AlertEvent {
                        codes: Vec::new(),
                        ..e.clone()
                    },
                    as_of: None,
                });
            }
        }
        Ok(out)
    }

    /// Whether a look's codes differ from its subject's open alerts.
    async fn changes_open_codes(&self, now: &AlertEvent) -> Result<bool, AlertError> {
        let before = parsed(&self.store.alert_events(&now.change_id).await?);
        let before: Vec<(u64, &str, &AlertEvent)> = before
            .iter()
            .map(|(s, k, _, e)| (*s, k.as_str(), e))
            .collect();
        Ok(!alerts::events_for(&before, now).is_empty())
    }

    /// Production version sightings received `unlinked_after` ago or more, in chain order up
    /// to what the change summary reflects (its rows find the changes that may explain each):
    /// UNLINKED_DEPLOY for each that no change explains.
    pub async fn look_unlinked(&self) -> Result<(), AlertError> {
        let Some(mut after) = self.store.alert_unlinked_cursor().await? else {
            return Ok(());
        };
        let Some(summarised) = self.store.summary_state().await?.and_then(|s| s.through) else {
            return Ok(());
        };
        // Only once the summary holds every change the entry look has judged: a change whose
        // facts it has not summarised yet would be missed as an explanation here, and the entry
        // look, having judged it already, would not come back to resolve the alert.
        let looked = self.store.alert_cursor().await?.unwrap_or(i64::MAX);
        if i64::try_from(summarised).unwrap_or(i64::MAX) < looked {
            return Ok(());
        }
        let cutoff = crate::sys::now_ns().saturating_sub(ns(self.unlinked_after));
        let names = self.names();
        loop {
            let due = self
                .store
                .sightings_due(after, summarised, cutoff, 200)
                .await?;
            let Some(&(last, _)) = due.last() else {
                return Ok(());
            };
            let mut looks = Vec::new();
            for (_, payload) in &due {
                let Ok(rec) = serde_json::from_str::<crate::core::evidence::FactRecord>(payload)
                else {
                    continue;
                };
                if let crate::core::evidence::Fact::Version(v) = rec.fact
                    && self.criteria.policy.is_production(&v.environment)
                {
                    looks.extend(self.unlinked_look(&v).await?);
                }
            }
            self.append(&looks, &names).await?;
            let last = i64::try_from(last).unwrap_or(i64::MAX);
            if !self.store.move_alert_unlinked_cursor(after, last).await? {
                // Another instance judged these: it goes on from there.
                return Ok(());
            }
            after = last;
        }
    }

    /// UNLINKED_DEPLOY for a sighting no change explains (or its resolution when one now does),
    /// if that differs from what is open.
    async fn unlinked_look(
        &self,
        v: &crate::core::evidence::VersionFact,
    ) -> Result<Option<Look>, AlertError> {
        let mut explained = false;
        for change in self
            .store
            .changes_deploying(
                &v.service.to_ascii_lowercase(),
                &v.version,
                &v.environment.to_ascii_lowercase(),
            )
            .await?
        {
            let folded = match evidence_of(&self.store, &change, &self.criteria).await {
                Ok(f) => f,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(_) => None,
            };
            if let Some((ev, _)) = folded
                && crate::core::evidence::explains(&ev, v, self.criteria.tolerance_ns)
            {
                explained = true;
                break;
            }
        }
        let x = crate::core::evidence::rules::unlinked_deploy(v);
        let now = AlertEvent {
            codes: if explained {
                Vec::new()
            } else {
                vec![AlertCode {
                    code: x.code.to_owned(),
                    evidence: x.evidence,
                }]
            },
            service: Some(v.service.clone()),
            environment: Some(v.environment.clone()),
            version: Some(v.version.clone()),
            first_seen_ns: Some(v.first_seen_ns),
            ..AlertEvent::about(&alerts::unlinked_subject(
                &v.environment,
                &v.service,
                &v.version,
            ))
        };
        Ok(self.changes_open_codes(&now).await?.then_some(Look {
            event: now,
            as_of: None,
        }))
    }

    async fn count_events(&self, seqs: &[u64]) -> Result<(), AlertError> {
        for seq in seqs {
            if let Some(e) = self.store.entry(*seq).await? {
                let counter = if e.kind == RAISED {
                    &self.stats.raised
                } else {
                    &self.stats.resolved
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::info!(change = e.subject, kind = e.kind, seq, "Alert recorded.");
            }
        }
        Ok(())
    }

    /// A claim's deadline from now: long enough to send once and record it.
    fn deadline(&self) -> i64 {
        crate::sys::now_ns()
            .saturating_add(ns(self.timeout))
            .saturating_add(ns(Duration::from_secs(10)))
    }

    /// Claims due deliveries to this instance's destinations and makes them: each destination's
    /// in event order, the destinations side by side (one slow to answer delays only its own).
    pub async fn deliver(&self) -> Result<(), AlertError> {
        let token = i64::from_le_bytes(crate::sys::random_bytes::<8>());
        let now = crate::sys::now_ns();
        let due = self
            .store
            .claim_alert_deliveries(&self.names(), now, token, self.deadline(), CLAIM)
            .await?;
        let mut by_destination: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
        for d in &due {
            by_destination.entry(&d.destination).or_default().push(d);
        }
        let runs = by_destination.into_values().map(|ds| async move {
            for d in ds {
                self.deliver_one(d, token).await?;
            }
            Ok::<(), AlertError>(())
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    fn backoff(&self, attempts: u32, asked: Option<Duration>) -> i64 {
        let doubled = FIRST_BACKOFF.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let wait = asked.unwrap_or(doubled).min(self.max_backoff);
        crate::sys::now_ns().saturating_add(ns(wait))
    }

    async fn release(
        &self,
        d: &Delivery,
        token: i64,
        refused: bool,
        next_ns: i64,
        why: &str,
    ) -> Result<(), AlertError> {
        self.store
            .release_alert_delivery(d, token, refused, true, next_ns, why)
            .await?;
        Ok(())
    }

    async fn deliver_one(&self, d: &Delivery, token: i64) -> Result<(), AlertError> {
        let Some(dest) = self.destinations.iter().find(|x| x.name() == d.destination) else {
            return Ok(());
        };
        let entry = self.store.entry(d.event_seq).await?;
        let Some((entry, ev)) = entry.and_then(|e| {
            let ev: AlertEvent = serde_json::from_str(e.payload.as_deref()?).ok()?;
            Some((e, ev))
        }) else {
            return self
                .release(
                    d,
                    token,
                    true,
                    0,
                    "the alert entry's payload is gone (erased)",
                )
                .await;
        };
        let status = if entry.kind == RESOLVED {
            RESOLVED_STATUS
        } else {
            FIRING
        };
        let history = parsed(&self.store.alert_events(&ev.change_id).await?);
        if self
            .store
            .alert_undelivered_before(&ev.change_id, d.event_seq, &d.destination)
            .await?
        {
            // The earlier event goes first (a resolution must not overtake its raise); this
            // was no attempt.
            self.store
                .release_alert_delivery(
                    d,
                    token,
                    false,
                    false,
                    self.backoff(1, None),
                    "waiting for an earlier alert of the change",
                )
                .await?;
            return Ok(());
        }
        let raised_ns = raised_times(&history, &ev, d.event_seq, entry.time_ns);
        // An unlinked deploy has no change page to link to.
        let link = self
            .console_url
            .as_ref()
            .zip(ev.change())
            .map(|(u, id)| format!("{u}/#/changes/{}", encode(id)));
        let notice = Notice {
            event_seq: d.event_seq,
            time_ns: entry.time_ns,
            status,
            event: &ev,
            raised_ns: &raised_ns,
            link: link.as_deref(),
        };
        let delivery = format!("{}/{}", d.event_seq, d.destination);
        // Renewed right before the send: a claim that lapsed while earlier ones were sent is
        // someone else's now, and is not sent here.
        if !self
            .store
            .renew_alert_claim(d, token, self.deadline())
            .await?
        {
            return Ok(());
        }
        let sent = match dest {
            Destination::Webhook(w) => w.send(&notice, &delivery).await,
            Destination::Otlp(x) => {
                x.export_once(&record(&notice, &delivery, crate::sys::now_ns()))
                    .await
            }
        };
        match sent {
            Ok(()) => {
                let done = Delivered {
                    event_seq: d.event_seq,
                    destination: d.destination.clone(),
                    status: status.to_owned(),
                };
                let appended = self
                    .writer
                    .alert_delivered(&ev.change_id, &done, token)
                    .await?;
                if appended.seqs.is_empty() {
                    tracing::warn!(
                        delivery,
                        "An alert was delivered after its claim lapsed; another sender may deliver it again."
                    );
                } else {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(f) => {
                let why = f.error.to_string();
                let (refused, next) = match &f.error {
                    ExportError::Refused(_) => {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            delivery,
                            error = why,
                            "A destination refused an alert; it is not sent again."
                        );
                        (true, 0)
                    }
                    ExportError::Misconfigured(_) => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            delivery,
                            error = why,
                            "A destination turned an alert away: check [alerts]; retried with backoff."
                        );
                        (false, self.backoff(d.attempts, None))
                    }
                    ExportError::Unavailable(_) => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            delivery,
                            error = why,
                            "An alert could not be delivered yet; retried with backoff."
                        );
                        (false, self.backoff(d.attempts, f.retry_after))
                    }
                };
                self.release(d, token, refused, next, &why).await
            }
        }
    }
}

/// The sighting an unlinked deploy's alert names.
fn sighting(e: &AlertEvent) -> crate::core::evidence::VersionFact {
    crate::core::evidence::VersionFact {
        service: e.service.clone().unwrap_or_default(),
        environment: e.environment.clone().unwrap_or_default(),
        version: e.version.clone().unwrap_or_default(),
        first_seen_ns: e.first_seen_ns.unwrap_or_default(),
        trace_id: None,
        previous: None,
    }
}

/// When each code of the event was raised: the event's own time when it raises them, else the
/// latest raise of each before it.
fn raised_times(
    history: &[(u64, String, i64, AlertEvent)],
    ev: &AlertEvent,
    event_seq: u64,
    event_ns: i64,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for c in &ev.codes {
        let at = history
            .iter()
            .filter(|(seq, kind, _, e)| {
                *seq <= event_seq && kind == RAISED && e.codes.iter().any(|x| x.code == c.code)
            })
            .map(|(_, _, t, _)| *t)
            .next_back()
            .unwrap_or(event_ns);
        out.insert(c.code.clone(), at);
    }
    out
}

/// The alert as one OTLP log record on the change's service resource.
pub fn record(n: &Notice<'_>, delivery: &str, now_ns: i64) -> ExportLogsServiceRequest {
    let ev = n.event;
    let mut resource = Vec::new();
    for (key, v) in [
        ("service.name", &ev.service),
        ("service.version", &ev.version),
        ("deployment.environment.name", &ev.environment),
    ] {
        if let Some(v) = v {
            resource.push(text(key, v));
        }
    }
    let mut attrs = vec![
        text("changetrail.change.id", &ev.change_id),
        text("changetrail.alert.status", n.status),
        kv(
            "changetrail.alert.codes",
            any_value::Value::ArrayValue(ArrayValue {
                values: ev
                    .codes
                    .iter()
                    .map(|c| AnyValue {
                        value: Some(any_value::Value::StringValue(c.code.clone())),
                    })
                    .collect(),
            }),
        ),
        kv(
            "changetrail.alert.entry_seq",
            any_value::Value::IntValue(i64::try_from(n.event_seq).unwrap_or(i64::MAX)),
        ),
        text("changetrail.alert.delivery", delivery),
    ];
    for (key, v) in [
        ("changetrail.change.requested_by", &ev.requested_by),
        ("changetrail.change.approved_by", &ev.approved_by),
    ] {
        if let Some(v) = v {
            attrs.push(text(key, v));
        }
    }
    if let Some(link) = n.link {
        attrs.push(text("url.full", link));
    }
    let what: Vec<String> = ev
        .codes
        .iter()
        .map(|c| format!("{}: {}", c.code, c.evidence))
        .collect();
    let body = format!(
        "{} change {}: {}",
        if n.status == FIRING {
            "exceptions on"
        } else {
            "resolved on"
        },
        ev.change_id,
        what.join("; ")
    );
    let log = super::otlp::event(
        EVENT_NAME,
        n.time_ns,
        now_ns,
        n.status == FIRING,
        body,
        attrs,
        Vec::new(),
    );
    super::otlp::request(resource, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_id_is_safe_in_a_link() {
        assert_eq!(encode("CHG-1.a_b~"), "CHG-1.a_b~");
        assert_eq!(encode("a/b#c d"), "a%2Fb%23c%20d");
    }

    #[test]
    fn a_resolution_names_when_each_code_was_raised() {
        let ev = |codes: &[&str]| AlertEvent {
            codes: codes
                .iter()
                .map(|c| AlertCode {
                    code: (*c).into(),
                    evidence: String::new(),
                })
                .collect(),
            ..AlertEvent::about("C")
        };
        let history = vec![
            (3, RAISED.to_owned(), 300, ev(&["A"])),
            (5, RAISED.to_owned(), 500, ev(&["B"])),
            (8, RESOLVED.to_owned(), 800, ev(&["A", "B"])),
        ];
        let t = raised_times(&history, &ev(&["A", "B"]), 8, 800);
        assert_eq!(t.get("A"), Some(&300));
        assert_eq!(t.get("B"), Some(&500));
        let t = raised_times(&history, &ev(&["B"]), 5, 500);
        assert_eq!(t.get("B"), Some(&500));
    }
}
