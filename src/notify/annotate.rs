//! Deploy markers for the tracing backend (`[annotations.otlp]`): each production change's first
//! successful deploy becomes one OTLP log record on the deployed service's resource, saying who
//! requested and approved the version the backend is looking at.
//!
//! The annotator follows the committed chain with a cursor of its own (`annotation_state`),
//! folds and judges each change the new facts name (as the console does), and claims each deploy
//! in an outbox row before sending it, so two instances never both send one, and a restart sends
//! nothing twice. A claim whose sender stopped, or whose endpoint stayed down through every retry,
//! is sent again after `STALE`. It starts at the head the first time it runs: history from before
//! annotations were switched on is not replayed into the backend.

use super::otlp::{ExportError, LogsExporter};
use crate::core::evidence::identity::Principal;
use crate::core::evidence::{AttemptView, Evidence};
use crate::read::changes::{Criteria, evidence_of, exceptions};
use crate::storage::{StorageError, Store};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeSet;
use std::time::Duration;

/// Entries looked at per step.
const STEP: i64 = 5_000;
/// A claim not finished this long after it was made is sent again.
const STALE: Duration = Duration::from_secs(120);
/// Stale claims taken per pass.
const RECLAIM: u64 = 100;
/// The log record's event name (OTel logs data model `EventName`).
pub const EVENT_NAME: &str = "changetrail.deploy";

/// Follows the chain and announces deploys.
pub struct Annotator {
    pub store: Store,
    pub criteria: Criteria,
    pub exporter: LogsExporter,
    pub interval: Duration,
}

impl Annotator {
    /// Runs until `stop`; a failed pass is logged and tried again at the next interval.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        tracing::info!(
            url = self.exporter.url(),
            "Deploy annotations go to the OTLP endpoint."
        );
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "Deploy annotations could not catch up; retrying.");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One pass: stale claims first, then the entries after the cursor, a step at a time up to
    /// the head as it stood when the pass began. Returns the deploys sent.
    pub async fn pass(&self) -> Result<usize, StorageError> {
        let now = crate::sys::now_ns();
        let stale_before = now.saturating_sub(i64::try_from(STALE.as_nanos()).unwrap_or(i64::MAX));
        let mut sent = 0;
        for (change, attempt) in self
            .store
            .reclaim_annotations(stale_before, now, RECLAIM)
            .await?
        {
            sent += usize::from(self.announce(&change, Some(&attempt), false).await?);
        }
        let head = self
            .store
            .head()
            .await?
            .map_or(-1, |h| h.head.size as i64 - 1);
        let Some(mut cursor) = self.store.annotation_cursor().await? else {
            self.store.move_annotation_cursor(None, head).await?;
            return Ok(sent);
        };
        while cursor < head {
            let upto = head.min(cursor + STEP);
            let after = u64::try_from(cursor).ok();
            let upto_seq = u64::try_from(upto).unwrap_or(0);
            let mut changes = BTreeSet::new();
            let mut runs = Vec::new();
            for (change, run, _) in self.store.facts_after(after, upto_seq).await? {
                match (change, run) {
                    (Some(c), _) => {
                        changes.insert(c);
                    }
                    (None, Some(r)) => runs.push(r),
                    (None, None) => {}
                }
            }
            runs.sort();
            runs.dedup();
            changes.extend(self.store.changes_of_runs(&runs).await?);
            for change in &changes {
                sent += usize::from(self.announce(change, None, true).await?);
            }
            if !self
                .store
                .move_annotation_cursor(Some(cursor), upto)
                .await?
            {
                // Another instance moved it: it announces what follows (claims keep us apart).
                return Ok(sent);
            }
            cursor = upto;
        }
        Ok(sent)
    }

    /// Folds `change` and, when it has a successful production deploy (the one `attempt` names,
    /// when given), claims it (when `claim`) and sends it. True when a record was sent.
    async fn announce(
        &self,
        change: &str,
        attempt: Option<&str>,
        claim: bool,
    ) -> Result<bool, StorageError> {
        let folded = evidence_of(&self.store, change, &self.criteria)
            .await
            .map_err(|e| StorageError::Corrupt(format!("folding {change}: {e}")))?;
        let deploy = folded
            .as_ref()
            .and_then(|(ev, _)| first_deploy(ev))
            .filter(|d| attempt.is_none_or(|a| a == d.task_run_id));
        let (Some((ev, broken)), Some(deploy)) = (&folded, deploy) else {
            if let Some(a) = attempt {
                // A claim taken again whose deploy the evidence no longer shows (its facts were
                // erased, or a retried attempt is now the first success): closed, not retried.
                self.store
                    .finish_annotation(change, a, "gone", crate::sys::now_ns())
                    .await?;
            }
            return Ok(false);
        };
        let now = crate::sys::now_ns();
        if claim
            && !self
                .store
                .claim_annotation(change, &deploy.task_run_id, now)
                .await?
        {
            return Ok(false);
        }
        let codes: Vec<&str> = exceptions(ev, broken, &self.criteria.rules)
            .iter()
            .map(|x| x.code)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let req = record(ev, deploy, &codes, now);
        let state = match self.exporter.export(&req).await {
            Ok(()) => "sent",
            Err(ExportError::Refused(e)) => {
                tracing::error!(change, error = %e, "The OTLP endpoint refused a deploy annotation; it is not sent again.");
                "refused"
            }
            Err(e @ ExportError::Unavailable(_)) => {
                // Left claimed: sent again once the claim is stale.
                tracing::warn!(change, error = %e, "A deploy annotation could not be sent yet.");
                return Ok(false);
            }
        };
        self.store
            .finish_annotation(change, &deploy.task_run_id, state, crate::sys::now_ns())
            .await?;
        Ok(state == "sent")
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

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
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
    let approval = ev
        .approvals
        .iter()
        .rev()
        .find(|a| a.decision == "approved")
        .or_else(|| ev.approvals.last());
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
    let who = |p: Option<&Principal>| {
        p.and_then(|p| p.subject.clone())
            .unwrap_or_else(|| "nobody named".to_owned())
    };
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
    let (severity, severity_text) = if codes.is_empty() {
        (SeverityNumber::Info, "INFO")
    } else {
        (SeverityNumber::Warn, "WARN")
    };
    let log = LogRecord {
        time_unix_nano: u64::try_from(deploy.end_ns).unwrap_or_default(),
        observed_time_unix_nano: u64::try_from(now_ns).unwrap_or_default(),
        severity_number: severity as i32,
        severity_text: severity_text.to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes: attrs,
        trace_id: trace_bytes(deploy.trace_id.as_deref()),
        event_name: EVENT_NAME.to_owned(),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "changetrail".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                log_records: vec![log],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
