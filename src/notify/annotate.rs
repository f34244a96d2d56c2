//! Deploy markers for the tracing backend (`[annotations.otlp]`): each production change's first
//! successful deploy becomes one OTLP log record on the deployed service's resource, saying who
//! requested and approved the version the backend is looking at.
//!
//! The annotator follows the committed chain with a cursor of its own (`annotation_state`),
//! folds and judges each change the new facts name (as the console does), and claims each deploy
//! in an outbox row before sending it, so two instances never both send one, and a restart sends
//! nothing twice; one marker per change. A claim whose sender stopped, or whose endpoint stayed
//! down through every retry, is sent again once stale (longer than one export can take; renewed
//! right before each send). So a record is sent twice in one case only: a sender stopped (killed,
//! or shut down mid-export) after the endpoint took it and before recording so; a receiver can
//! drop the repeat by `changetrail.deploy.attempt`. Staleness is judged by the reclaiming
//! instance's clock and `timeout`: instances must share the setting and keep their clocks within
//! a minute. It starts at the head the first time it runs: history from
//! before annotations were first switched on is not replayed (switched off and on again, it
//! resumes where it stopped).

use super::otlp::{ExportError, LogsExporter, kv, text};
use crate::core::evidence::identity::Principal;
use crate::core::evidence::{AttemptView, Evidence};
use crate::read::changes::{Criteria, evidence_of, exceptions};
use crate::storage::{StorageError, Store};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Entries looked at per step.
const STEP: i64 = 5_000;
/// Stale claims taken per pass.
const RECLAIM: u64 = 20;
/// The log record's event name (OTel logs data model `EventName`).
pub const EVENT_NAME: &str = "changetrail.deploy";

/// Follows the chain and announces deploys.
pub struct Annotator {
    pub store: Store,
    pub criteria: Criteria,
    pub exporter: LogsExporter,
    pub interval: Duration,
    /// What `/metrics` shows of it.
    pub stats: Arc<Stats>,
}

/// The annotator's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records the endpoint took.
    pub sent: AtomicU64,
    /// Records the endpoint refused for good (a 4xx about the record).
    pub refused: AtomicU64,
    /// Exports that did not go through yet (down, or turned away by configuration).
    pub stalled: AtomicU64,
    /// Committed entries after the cursor at the end of the last pass.
    pub lag_entries: AtomicU64,
}

/// How one announcement went.
enum Outcome {
    /// Nothing to send (no production deploy, or another sender has it).
    Skipped,
    Sent,
    /// The endpoint is down or turned us away: the rest of the pass waits for the next one.
    Stalled,
}

impl Annotator {
    /// Runs until `stop`; a failed pass is logged and tried again at the next interval.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        tracing::info!(
            url = self.exporter.shown_url(),
            "Deploy annotations go to the OTLP endpoint."
        );
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = self.pass() => if let Err(e) = r {
                    tracing::warn!(error = %e, "Deploy annotations could not catch up; retrying.");
                },
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// A claim not finished this long after it was made (or renewed) is taken again: longer
    /// than one export can take, so a claim being sent never goes stale.
    fn stale(&self) -> i64 {
        let d = self.exporter.worst_case() + Duration::from_secs(60);
        i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
    }

    /// One pass: the entries after the cursor, a step at a time up to the head as it stood when
    /// the pass began, then stale claims. Stops at the first export the endpoint does not take
    /// (the cursor stays before that step). Returns the deploys sent.
    pub async fn pass(&self) -> Result<usize, StorageError> {
        let mut sent = 0;
        let head = self
            .store
            .head()
            .await?
            .map_or(-1, |h| i64::try_from(h.head.size).unwrap_or(i64::MAX) - 1);
        let Some(mut cursor) = self.store.annotation_cursor().await? else {
            self.store.move_annotation_cursor(None, head).await?;
            return Ok(sent);
        };
        let lag = |cursor: i64| u64::try_from(head - cursor).unwrap_or_default();
        while cursor < head {
            self.stats.lag_entries.store(lag(cursor), Ordering::Relaxed);
            let upto = head.min(cursor + STEP);
            for change in super::changes_between(&self.store, cursor, upto).await? {
                match self.announce(&change, None).await? {
                    Outcome::Sent => sent += 1,
                    Outcome::Skipped => {}
                    Outcome::Stalled => return Ok(sent),
                }
            }
            if !self
                .store
                .move_annotation_cursor(Some(cursor), upto)
                .await?
            {
                // Another instance moved it: it announces what follows (claims keep us apart).
                cursor = self.store.annotation_cursor().await?.unwrap_or(cursor);
                break;
            }
            cursor = upto;
        }
        self.stats.lag_entries.store(lag(cursor), Ordering::Relaxed);
        let now = crate::sys::now_ns();
        for (change, _) in self
            .store
            .reclaim_annotations(now.saturating_sub(self.stale()), now, RECLAIM)
            .await?
        {
            match self.announce(&change, Some(now)).await? {
                Outcome::Sent => sent += 1,
                Outcome::Skipped => {}
                Outcome::Stalled => break,
            }
        }
        Ok(sent)
    }

    /// Folds `change` and, when it has a successful production deploy, claims it (or renews
    /// `held`, a claim taken again with its token) and sends it.
    async fn announce(&self, change: &str, held: Option<i64>) -> Result<Outcome, StorageError> {
        // One marker per change: a change already announced (or being announced) is not folded.
        if held.is_none() && self.store.annotation_exists(change).await? {
            return Ok(Outcome::Skipped);
        }
        let folded = match evidence_of(&self.store, change, &self.criteria).await {
            Ok(f) => f,
            Err(e) => {
                // One change that cannot be folded must not hold back every later deploy; it is
                // looked at again when a new fact names it (or its claim goes stale).
                tracing::warn!(change, error = %e, "A change could not be folded for its deploy annotation; skipped.");
                return Ok(Outcome::Skipped);
            }
        };
        let deploy = folded.as_ref().and_then(|(ev, _)| first_deploy(ev));
        let (Some((ev, broken)), Some(deploy)) = (&folded, deploy) else {
            if let Some(token) = held {
                // A claim taken again whose change no longer shows a successful production
                // deploy (its facts were erased): closed, not retried.
                let now = crate::sys::now_ns();
                self.store
                    .finish_annotation(change, token, "gone", now)
                    .await?;
            }
            return Ok(Outcome::Skipped);
        };
        let attempt = deploy.task_run_id.as_str();
        let now = crate::sys::now_ns();
        let token = match held {
            None if self.store.claim_annotation(change, attempt, now).await? => now,
            None => return Ok(Outcome::Skipped),
            // Renewed right before sending, so the claim cannot go stale while it is sent.
            Some(old)
                if self
                    .store
                    .renew_annotation(change, attempt, old, now)
                    .await? =>
            {
                now
            }
            Some(_) => return Ok(Outcome::Skipped),
        };
        let codes: Vec<&str> = exceptions(ev, broken, &self.criteria.rules)
            .iter()
            .map(|x| x.code)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let req = record(ev, deploy, &codes, now);
        let exported = self.exporter.export(&req).await;
        let counter = match &exported {
            Ok(()) => &self.stats.sent,
            Err(ExportError::Refused(_)) => &self.stats.refused,
            Err(_) => &self.stats.stalled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let (state, outcome) = match exported {
            Ok(()) => ("sent", Outcome::Sent),
            Err(e @ ExportError::Refused(_)) => {
                tracing::error!(change, error = %e, "A deploy annotation was refused; it is not sent again.");
                ("refused", Outcome::Skipped)
            }
            Err(e @ ExportError::Misconfigured(_)) => {
                // Kept claimed: sent once the configuration is fixed and the claim is stale.
                tracing::error!(change, error = %e, "Deploy annotations are turned away.");
                return Ok(Outcome::Stalled);
            }
            Err(e @ ExportError::Unavailable(_)) => {
                tracing::warn!(change, error = %e, "A deploy annotation could not be sent yet.");
                return Ok(Outcome::Stalled);
            }
        };
        self.store
            .finish_annotation(change, token, state, crate::sys::now_ns())
            .await?;
        Ok(outcome)
    }
}

/// The change's first successful deploy attempt, when it is a production change naming its
/// service.
pub fn first_deploy(ev: &Evidence) -> Option<&AttemptView> {
    if !ev.change.production || ev.change.service.is_none() {
        return None;
    }
    ev.steps
        .iter()
        .flat_map(|s| s.attempts.iter())
        .filter(|a| a.result == "success")
        .min_by_key(|a| (a.end_ns, a.start_ns))
}

/// A principal's subject and whether a trusted token vouched for it, as attributes.
fn identity(out: &mut Vec<KeyValue>, key: &str, p: Option<&Principal>) {
    if let Some(subject) = p.and_then(|p| p.subject.as_deref()) {
        out.push(text(key, subject));
    }
    let verified = p.is_some_and(|p| p.established.is_verified());
    out.push(kv(
        &format!("{key}.verified"),
        any_value::Value::BoolValue(verified),
    ));
}

/// 16 bytes from a 32-hex trace id; empty (no trace) otherwise.
fn trace_bytes(id: Option<&str>) -> Vec<u8> {
    id.and_then(|t| hex::decode(t).ok())
        .filter(|b| b.len() == 16 && b.iter().any(|&x| x != 0))
        .unwrap_or_default()
}

/// The deploy marker: one log record on the deployed service's resource.
pub fn record(
    ev: &Evidence,
    deploy: &AttemptView,
    codes: &[&str],
    now_ns: i64,
) -> ExportLogsServiceRequest {
    let c = &ev.change;
    let mut resource = vec![text(
        "service.name",
        c.service.as_deref().unwrap_or_default(),
    )];
    if let Some(v) = &c.version {
        resource.push(text("service.version", v));
    }
    if let Some(e) = &c.environment {
        resource.push(text("deployment.environment.name", e));
    }
    // The latest decision stands (an approval later rejected is rejected).
    let approval = ev.approvals.iter().max_by_key(|a| (a.decided_ns, a.seq));
    let mut attrs = vec![
        text("changetrail.change.id", &c.id),
        text("changetrail.change.kind", &c.kind),
    ];
    identity(
        &mut attrs,
        "changetrail.change.requested_by",
        ev.requester.as_ref(),
    );
    attrs.push(text(
        "changetrail.change.approval",
        approval.map_or("none", |a| a.decision.as_str()),
    ));
    identity(
        &mut attrs,
        "changetrail.change.approved_by",
        approval.and_then(|a| a.approver.as_ref()),
    );
    for (key, v) in [
        ("changetrail.change.artifact_digest", &c.artifact),
        ("changetrail.change.revision", &c.revision),
        ("changetrail.change.rollback_of", &c.rollback_of),
    ] {
        if let Some(v) = v {
            attrs.push(text(key, v));
        }
    }
    attrs.push(text("changetrail.deploy.attempt", &deploy.task_run_id));
    attrs.push(kv(
        "changetrail.change.exceptions",
        any_value::Value::ArrayValue(ArrayValue {
            values: codes
                .iter()
                .map(|code| AnyValue {
                    value: Some(any_value::Value::StringValue((*code).to_owned())),
                })
                .collect(),
        }),
    ));
    let who = |p: Option<&Principal>| match p {
        Some(Principal {
            subject: Some(s), ..
        }) if p.is_some_and(|p| p.established.is_verified()) => format!("{s} (verified)"),
        Some(Principal {
            subject: Some(s), ..
        }) => format!("{s} (unverified)"),
        _ => "nobody named".to_owned(),
    };
    let unverified = !ev
        .requester
        .as_ref()
        .is_some_and(|p| p.established.is_verified())
        || !approval
            .and_then(|a| a.approver.as_ref())
            .is_some_and(|p| p.established.is_verified());
    let body = format!(
        "{} {} deployed to {} by change {}: requested by {}, {} by {}{}",
        c.service.as_deref().unwrap_or_default(),
        c.version.as_deref().unwrap_or("(no version)"),
        c.environment.as_deref().unwrap_or("(no environment)"),
        c.id,
        who(ev.requester.as_ref()),
        approval.map_or("no approval", |a| a.decision.as_str()),
        who(approval.and_then(|a| a.approver.as_ref())),
        if codes.is_empty() {
            String::new()
        } else {
            format!("; exceptions: {}", codes.join(", "))
        },
    );
    let log = super::otlp::event(
        EVENT_NAME,
        deploy.end_ns,
        now_ns,
        !codes.is_empty() || unverified,
        body,
        attrs,
        trace_bytes(deploy.trace_id.as_deref()),
    );
    super::otlp::request(resource, log)
}
