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
    self, AlertCode, AlertEvent, Delivered, FIRING, Notice, RAISED, RESOLVED, RESOLVED_STATUS,
};
use crate::core::evidence::Evidence;
use crate::core::evidence::identity::Principal;
use crate::pipeline::{AppendError, LedgerWriter};
use crate::read::changes::{Criteria, evidence_of, exceptions};
use crate::storage::{AlertEntry, Delivery, StorageError, Store};
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
    }
}

/// The alert entries that parse, `None` if one does not (an erased payload): the change is then
/// left alone rather than raised twice.
fn parsed(rows: &[AlertEntry]) -> Option<Vec<(u64, String, i64, AlertEvent)>> {
    rows.iter()
        .map(|(seq, kind, time, payload)| {
            let ev = serde_json::from_str(payload.as_deref()?).ok()?;
            Some((*seq, kind.clone(), *time, ev))
        })
        .collect()
}

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
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = self.tick() => if let Err(e) = r {
                    tracing::warn!(error = %e, "Alerts could not catch up; retrying.");
                },
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One look, then one round of deliveries.
    pub async fn tick(&self) -> Result<(), AlertError> {
        let looked = self.look().await;
        self.deliver().await?;
        looked
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
            let mut looks = Vec::new();
            for change in super::changes_between(&self.store, cursor, upto).await? {
                if let Some(l) = self.differs(&change).await? {
                    looks.push(l);
                }
            }
            for chunk in looks.chunks(LOOKS_PER_APPEND) {
                let appended = self.writer.alerts(chunk, &names).await?;
                self.count_events(&appended.seqs).await?;
            }
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

    /// The look at `change` if its codes now differ from its open alerts (the writer decides
    /// again under the lock).
    async fn differs(&self, change: &str) -> Result<Option<AlertEvent>, AlertError> {
        let folded = match evidence_of(&self.store, change, &self.criteria).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(change, error = %e, "A change could not be folded for alerts; skipped until a new fact names it.");
                return Ok(None);
            }
        };
        let (ev, broken) = &folded;
        let now = look(ev, &exceptions(ev, broken, &self.criteria.rules));
        let Some(before) = parsed(&self.store.alert_events(change).await?) else {
            return Ok(None);
        };
        let open = alerts::open_codes(before.iter().map(|(s, k, _, e)| (*s, k.as_str(), e)));
        let (raise, resolve) = alerts::plan(&open, &now.codes);
        Ok((!raise.is_empty() || !resolve.is_empty()).then_some(now))
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

    /// Claims due deliveries and makes each.
    pub async fn deliver(&self) -> Result<(), AlertError> {
        let token = i64::from_le_bytes(crate::sys::random_bytes::<8>());
        let now = crate::sys::now_ns();
        // Long enough to send once and record it: the claim must not lapse mid-delivery.
        let deadline = now
            .saturating_add(ns(self.timeout) * 2)
            .saturating_add(ns(Duration::from_secs(30)));
        let due = self
            .store
            .claim_alert_deliveries(now, token, deadline, CLAIM)
            .await?;
        for d in due {
            self.deliver_one(&d, token).await?;
        }
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
            .release_alert_delivery(d, token, refused, next_ns, why)
            .await?;
        Ok(())
    }

    async fn deliver_one(&self, d: &Delivery, token: i64) -> Result<(), AlertError> {
        let Some(dest) = self.destinations.iter().find(|x| x.name() == d.destination) else {
            // Configured on another instance (or no longer): left for it.
            let next = self.backoff(u32::MAX, None);
            return self
                .release(d, token, false, next, "not configured on this instance")
                .await;
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
        let history = parsed(&self.store.alert_events(&ev.change_id).await?).unwrap_or_default();
        if self
            .store
            .alert_undelivered_before(&ev.change_id, d.event_seq, &d.destination)
            .await?
        {
            // The earlier event goes first (a resolution must not overtake its raise).
            let next = self.backoff(1, None);
            return self
                .release(
                    d,
                    token,
                    false,
                    next,
                    "waiting for an earlier alert of the change",
                )
                .await;
        }
        let raised_ns = raised_times(&history, &ev, d.event_seq, entry.time_ns);
        let link = self
            .console_url
            .as_ref()
            .map(|u| format!("{u}/#/changes/{}", encode(&ev.change_id)));
        let notice = Notice {
            event_seq: d.event_seq,
            time_ns: entry.time_ns,
            status,
            event: &ev,
            raised_ns: &raised_ns,
            link: link.as_deref(),
        };
        let delivery = format!("{}/{}", d.event_seq, d.destination);
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
