//! OTLP ingest: gRPC (:4317) and HTTP (:4318) front doors over one `Ingestor`, which validates
//! items, decides what is evidence, parks the rest for late binding, and answers only after the
//! evidence is committed.

pub mod admission;
pub mod binder;
pub mod conductor;
pub mod convert;
pub mod decode;
pub mod grpc;
pub mod http;
pub mod issuers;
pub mod journal;
pub mod limits;
mod logs;
pub mod restore;
pub mod runtime;
pub mod scan;
mod traces;
pub mod versions;

use crate::auth::{AuthError, Authenticator, Principal, Role};
use crate::core::evidence::contract::{KeepRule, Redactor};
use crate::core::evidence::identity::IdentityVerifier;
use crate::core::evidence::{self, Intake, SentBy};
use crate::pipeline::{AppendError, Appender, Telemetry};
use crate::read::ReadError;
use crate::read::history::History;
use crate::sys::metrics::Registry;
use binder::{Binder, BinderStats, SourceId};
use convert::{ParkedSpan, SpanItem};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest request accepted, before and after decompression.
    pub max_request_bytes: usize,
    /// The retry delay suggested when overloaded (short: clients have ~10 s deadlines).
    pub retry_after: Duration,
    pub late_binding_window: Duration,
    pub max_parked_bytes: usize,
    pub max_bound_traces: usize,
    pub redact: Vec<String>,
    /// Bytes all exports in flight may hold (received, decompressed, decoded, as rows); beyond
    /// this, UNAVAILABLE / 503 with a retry delay, so overload is answered instead of growing
    /// memory.
    pub max_inflight_bytes: usize,
    /// What one ingest token's exports may hold of that at once (fairness; also the largest
    /// single export).
    pub max_inflight_bytes_per_token: usize,
    /// `[otlp.limits]`.
    pub limits: limits::Limits,
    /// Bytes of rows one ingest token may have stored per second (0: unpaced).
    pub max_stored_bytes_per_second_per_token: usize,
    /// Environments, task types: what the correlation rules treat specially.
    pub policy: crate::core::evidence::Policy,
    /// Issuers whose tokens verify identities.
    pub identity: IdentityVerifier,
    /// Distinct (service, environment) pairs whose running version is remembered per process.
    pub max_versions_remembered: usize,
    /// Items whose times lie further ahead of the receiver's clock are rejected.
    pub max_clock_skew_ns: i64,
    /// A version not seen for this long that shows again is a sighting (a downgrade, a
    /// redeploy); the version match tolerance.
    pub version_window_ns: i64,
    /// `[suspects]`: runtime spans counted per minute.
    pub runtime: runtime::Settings,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_request_bytes: 16 << 20,
            retry_after: Duration::from_secs(1),
            late_binding_window: Duration::from_secs(15 * 60),
            max_parked_bytes: 64 << 20,
            max_bound_traces: 200_000,
            redact: crate::core::evidence::contract::DEFAULT_REDACTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_inflight_bytes: 384 << 20,
            max_inflight_bytes_per_token: 128 << 20,
            limits: limits::Limits::default(),
            max_stored_bytes_per_second_per_token: 8 << 20,
            policy: Default::default(),
            identity: IdentityVerifier::default(),
            max_versions_remembered: 10_000,
            max_clock_skew_ns: 5 * 60 * 1_000_000_000,
            version_window_ns: 30 * 60 * 1_000_000_000,
            runtime: runtime::Settings::default(),
        }
    }
}

/// Who sent an export: its ingest token's id and name (never the secret).
pub fn sender(p: &Principal) -> SentBy {
    SentBy {
        token_id: Some(p.token_id.clone()),
        name: p.name.clone(),
    }
}

/// What an export produced: how many items were rejected, and why (partial success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub rejected: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Try again shortly: the queue is full, storage is failing, or the service is stopping.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// The request cannot be accepted as sent; retrying the same bytes will not help.
    #[error("{0}")]
    InvalidArgument(String),
    /// The body is larger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Storage refused for a reason retrying cannot fix.
    #[error("internal error")]
    Internal(String),
}

/// What the two OTLP signals share, so each transport serves both with one handler.
pub trait Export: prost::Message + Default + serde::de::DeserializeOwned + Send + 'static {
    type Response: prost::Message + Send + 'static;
    const SIGNAL: Signal;
    /// What the items are called in messages: "spans", "log records".
    const ITEMS: &'static str;
    /// The OTLP/JSON name of the partial-success count.
    const REJECTED_JSON: &'static str;
    /// Logs (not traces): how the cost scan reads the bytes.
    const LOGS: bool;
    fn item_count(&self) -> usize;
    /// Cuts the request to `[otlp.limits]` in place.
    fn apply_limits(&mut self, l: &limits::Limits) -> limits::Applied;
    fn response(o: &Outcome) -> Self::Response;
    fn ingest(
        self,
        ing: &Ingestor,
        sender: SentBy,
        hold: &mut admission::Reservation,
    ) -> impl std::future::Future<Output = Result<Outcome, IngestError>> + Send;

    /// A request that decoded to no items although it carried bytes the decoder skipped
    /// (legacy `instrumentation_library_*` fields) was meant to carry data: not a silent OK.
    fn unread_protobuf(&self, body_len: usize) -> Option<String> {
        (self.item_count() == 0 && self.encoded_len() < body_len).then(|| {
            format!(
                "the request carried {body_len} bytes but no {} this receiver understands (legacy \
                 fields such as instrumentation_library_spans are not supported)",
                Self::ITEMS
            )
        })
    }
}

/// A partial success says what was rejected, or (count 0) what was cut: OTLP lets a receiver
/// warn that way.
fn partial(o: &Outcome) -> Option<(i64, String)> {
    (o.rejected > 0 || !o.message.is_empty()).then(|| {
        (
            i64::try_from(o.rejected).unwrap_or(i64::MAX),
            o.message.clone(),
        )
    })
}

impl Export for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const SIGNAL: Signal = Signal::Traces;
    const ITEMS: &'static str = "spans";
    const REJECTED_JSON: &'static str = "rejectedSpans";
    const LOGS: bool = false;

    fn apply_limits(&mut self, l: &limits::Limits) -> limits::Applied {
        limits::traces(self, l)
    }

    fn item_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    fn response(o: &Outcome) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: partial(o).map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }
    }

    fn ingest(
        self,
        ing: &Ingestor,
        sender: SentBy,
        hold: &mut admission::Reservation,
    ) -> impl std::future::Future<Output = Result<Outcome, IngestError>> + Send {
        ing.traces(self, sender, hold)
    }
}

impl Export for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const SIGNAL: Signal = Signal::Logs;
    const ITEMS: &'static str = "log records";
    const REJECTED_JSON: &'static str = "rejectedLogRecords";
    const LOGS: bool = true;

    fn apply_limits(&mut self, l: &limits::Limits) -> limits::Applied {
        limits::logs(self, l)
    }

    fn item_count(&self) -> usize {
        self.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum()
    }

    fn response(o: &Outcome) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: partial(o).map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }
    }

    fn ingest(
        self,
        ing: &Ingestor,
        sender: SentBy,
        hold: &mut admission::Reservation,
    ) -> impl std::future::Future<Output = Result<Outcome, IngestError>> + Send {
        ing.logs(self, sender, hold)
    }
}

/// The `outcome` label of `changetrail_otlp_requests_total`.
pub fn outcome_label(r: &Result<Outcome, IngestError>) -> &'static str {
    match r {
        Ok(o) if o.rejected > 0 => "partial",
        Ok(_) => "ok",
        Err(IngestError::Unavailable { .. }) => "retryable",
        Err(IngestError::Internal(_)) => "error",
        Err(IngestError::TooLarge(_)) => "too_large",
        Err(IngestError::InvalidArgument(_)) => "rejected",
    }
}

/// Which signal an export carried (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
}

impl Signal {
    pub fn label(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

pub struct Ingestor {
    pub appender: Appender,
    /// Checks ingest tokens (cached briefly: exporters send many requests a second).
    pub auth: Authenticator,
    /// The stored history ingest consults (version sightings).
    pub history: History,
    /// What /metrics renders; shared with the listeners, which count connections in it.
    pub metrics: Arc<Registry>,
    pub config: IngestConfig,
    binder: Binder<ParkedSpan>,
    redactor: Redactor,
    budget: Arc<admission::Budget>,
    pacer: admission::Pacer,
    /// Threads decoding at once (the blocking pool is larger; decoding is CPU work).
    decoders: Arc<tokio::sync::Semaphore>,
    /// Per ingest token, at most half of them, so one sender's stream of expensive requests
    /// cannot keep every decoding thread from the others.
    decoders_by_sender:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    decoders_per_sender: usize,
    /// Which version each production service runs, for sightings.
    versions: versions::Versions,
    /// Where parked spans are written before their export is answered (`None`: memory only).
    journal: Option<journal::Journal>,
    /// Entries committed that the binding sync has not looked at yet (as of its last step).
    binding_lag: std::sync::atomic::AtomicU64,
    /// Runtime spans counted per (environment, service, version, minute) until appended.
    runtime: runtime::Aggregator,
}

impl Ingestor {
    pub fn new(
        appender: Appender,
        auth: Authenticator,
        history: History,
        config: IngestConfig,
    ) -> Ingestor {
        let metrics = Registry::default();
        for (name, help) in [
            (
                "changetrail_otlp_requests_total",
                "OTLP export requests by transport, signal and outcome.",
            ),
            (
                "changetrail_spans_received_total",
                "Spans received (valid or not).",
            ),
            (
                "changetrail_spans_accepted_total",
                "Spans kept as evidence and committed (including repeats already stored).",
            ),
            (
                "changetrail_spans_rejected_total",
                "Spans rejected through partial success, by reason.",
            ),
            (
                "changetrail_spans_parked_total",
                "Spans parked for late binding.",
            ),
            (
                "changetrail_spans_duplicate_total",
                "Kept spans that were stored already (retried exports).",
            ),
            (
                "changetrail_log_records_received_total",
                "Log records received (valid or not).",
            ),
            (
                "changetrail_log_records_accepted_total",
                "Log records kept as evidence and committed.",
            ),
            (
                "changetrail_log_records_rejected_total",
                "Log records rejected through partial success, by reason.",
            ),
            (
                "changetrail_log_records_unrelated_total",
                "Log records that are not evidence and were not stored.",
            ),
            (
                "changetrail_spans_release_dropped_total",
                "Parked spans a binding released but the in-flight byte budget could not hold as rows.",
            ),
            (
                "changetrail_otlp_truncated_total",
                "Attributes, values, events and links cut to [otlp.limits], by what was cut.",
            ),
            (
                "changetrail_journal_errors_total",
                "Parked spans that could not be written to the parking journal (they stay parked in memory only).",
            ),
            (
                "changetrail_spans_replayed_total",
                "Parked spans read back from the parking journal at start.",
            ),
            (
                "changetrail_spans_released_by_sync_total",
                "Parked spans released because evidence committed elsewhere (another instance, or before a restart) bound their trace.",
            ),
            (
                "changetrail_binding_sync_skipped_total",
                "Ranges of entries the binding sync gave up on after repeated failures.",
            ),
            (
                "changetrail_otlp_admission_refused_total",
                "Exports answered retry-later or too-large by the in-flight byte budget, by why.",
            ),
            (
                "changetrail_runtime_spans_total",
                "Production entry spans counted in runtime minutes ([suspects]).",
            ),
            (
                "changetrail_runtime_too_old_total",
                "Production entry spans not counted: they ended longer than suspects.max_age before their receipt.",
            ),
            (
                "changetrail_runtime_overflow_total",
                "Production entry spans not counted: suspects.max_cells cells were held.",
            ),
            (
                "changetrail_runtime_minutes_total",
                "runtime.minute entries appended.",
            ),
        ] {
            metrics.describe(name, "counter", help);
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ingestor {
            budget: admission::Budget::new(
                config.max_inflight_bytes,
                config.max_inflight_bytes_per_token,
            ),
            pacer: admission::Pacer::new(config.max_stored_bytes_per_second_per_token),
            decoders: Arc::new(tokio::sync::Semaphore::new(threads)),
            decoders_by_sender: Default::default(),
            decoders_per_sender: (threads / 2).max(1),
            versions: versions::Versions::new(
                config.version_window_ns,
                config.max_versions_remembered,
            ),
            binder: Binder::new(
                config.late_binding_window,
                config.max_parked_bytes,
                config.max_bound_traces,
            ),
            redactor: Redactor::new(&config.redact),
            journal: None,
            binding_lag: Default::default(),
            runtime: Default::default(),
            appender,
            auth,
            history,
            metrics: Arc::new(metrics),
            config,
        }
    }

    /// Writes parked spans to `journal` before exports that park them are answered.
    pub fn with_journal(mut self, journal: journal::Journal) -> Ingestor {
        self.journal = Some(journal);
        self
    }

    pub fn binder_stats(&self) -> BinderStats {
        self.binder.stats()
    }

    /// `Authorization: Bearer <token>` with role `ingest`.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = crate::auth::bearer(header)?;
        let p = self.auth.authenticate(token, Role::Ingest).await?;
        p.record_on_span();
        Ok(p)
    }

    /// An empty reservation of the in-flight byte budget for one export of `p`.
    pub fn reservation(&self, p: &Principal) -> admission::Reservation {
        self.budget.reservation(&p.token_id)
    }

    /// An empty reservation for a sender known by id only (in-process tools).
    pub fn hold_for(&self, sender: &str) -> admission::Reservation {
        self.budget.reservation(sender)
    }

    /// Bytes all exports hold now (for `/metrics`).
    pub fn inflight_bytes(&self) -> usize {
        self.budget.held()
    }

    /// Holds `n` more received bytes for an export, or the answer to give instead.
    pub fn hold(&self, r: &mut admission::Reservation, n: usize) -> Result<(), IngestError> {
        r.grow(n)
            .map_err(|why| self.refused(why, "the request body"))
    }

    fn refused(&self, why: admission::Refused, what: &str) -> IngestError {
        self.metrics.add(
            "changetrail_otlp_admission_refused_total",
            &[(
                "reason",
                match why {
                    admission::Refused::Full => "full",
                    admission::Refused::Share => "token_share",
                    admission::Refused::TooLarge => "too_large",
                },
            )],
            1,
        );
        let mut e = decode::refused(why, what, self.budget.max_per_sender());
        if let IngestError::Unavailable { retry_after, .. } = &mut e {
            *retry_after = self.config.retry_after;
        }
        e
    }

    /// Reads an export's body as it arrives, each piece held in `r` before it is kept and never
    /// more than `limit` bytes: a slow or large upload holds only what it has sent, within its
    /// sender's share.
    pub async fn receive(
        &self,
        mut body: axum::body::Body,
        declared: Option<u64>,
        r: &mut admission::Reservation,
        limit: usize,
    ) -> Result<Vec<u8>, IngestError> {
        use http_body_util::BodyExt as _;
        let too_large =
            || IngestError::TooLarge(format!("the request body exceeds the {limit}-byte limit"));
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut out: Vec<u8> = Vec::new();
        if let Some(n) = declared.and_then(|n| usize::try_from(n).ok()) {
            self.hold(r, n)?;
            out.reserve_exact(n);
        }
        while let Some(frame) = body.frame().await {
            // Not the client's data at fault but its delivery (cut for arriving below the
            // minimum rate, or the connection lost): retryable, so an exporter sends it again
            // instead of dropping it as a permanent error.
            let frame = frame.map_err(|e| IngestError::Unavailable {
                message: format!("the request body could not be read ({e}); retry"),
                retry_after: self.config.retry_after,
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let need = out.len() + data.len();
            if need > limit {
                return Err(too_large());
            }
            if need > out.capacity() {
                // Grown by doubling, as Vec would, but held before it is allocated.
                let cap = need.max(out.capacity() * 2).min(limit);
                self.hold(r, cap - out.capacity())?;
                out.reserve_exact(cap - out.len());
            }
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// Decompresses, decodes and limits an export's received bytes in the blocking pool.
    pub async fn decode<T: Export>(
        &self,
        raw: Vec<u8>,
        compression: decode::Compression,
        format: decode::Format,
        reservation: admission::Reservation,
    ) -> Result<decode::Decoded<T>, IngestError> {
        let stopping = |_| IngestError::Unavailable {
            message: "changetrail is shutting down; retry shortly".into(),
            retry_after: self.config.retry_after,
        };
        let mine = {
            let mut m = match self.decoders_by_sender.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            // Senders that hold no slot are forgotten, so the map stays as small as the set of
            // tokens sending right now.
            m.retain(|_, s| Arc::strong_count(s) > 1);
            m.entry(reservation.sender().to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.decoders_per_sender)))
                .clone()
        };
        let mine = mine.acquire_owned().await.map_err(stopping)?;
        let thread = self
            .decoders
            .clone()
            .acquire_owned()
            .await
            .map_err(stopping)?;
        let (limit, limits, per_sender) = (
            self.config.max_request_bytes,
            self.config.limits.clone(),
            self.budget.max_per_sender(),
        );
        let done = tokio::task::spawn_blocking(move || {
            // The slots go with the work: a client that goes away does not free them while the
            // decoding it started still runs.
            let _slots = (mine, thread);
            decode::decode::<T>(
                raw,
                compression,
                format,
                limit,
                &limits,
                reservation,
                per_sender,
            )
        })
        .await
        .map_err(|e| IngestError::Internal(format!("decoding stopped: {e}")))?;
        if let Err(IngestError::Unavailable { .. } | IngestError::TooLarge(_)) = &done {
            self.metrics.add(
                "changetrail_otlp_admission_refused_total",
                &[("reason", "decoded")],
                1,
            );
        }
        done
    }

    /// Ingests a decoded export and says, beside what ingest rejected, what the limits refused
    /// or cut.
    pub async fn ingest<T: Export>(
        &self,
        d: decode::Decoded<T>,
        sender: SentBy,
    ) -> Result<Outcome, IngestError> {
        let decode::Decoded {
            request,
            applied,
            unread,
            mut reservation,
        } = d;
        if let Some(why) = unread {
            return Err(IngestError::InvalidArgument(why));
        }
        for (what, n) in &applied.truncated {
            self.metrics.add(
                "changetrail_otlp_truncated_total",
                &[("signal", T::SIGNAL.label()), ("what", what)],
                *n,
            );
        }
        let mut o = request.ingest(self, sender, &mut reservation).await?;
        drop(reservation);
        let mut notes = Vec::new();
        if applied.excess_items > 0 {
            let (received, rejected, max) = match T::SIGNAL {
                Signal::Traces => (
                    "changetrail_spans_received_total",
                    "changetrail_spans_rejected_total",
                    self.config.limits.max_spans_per_request,
                ),
                Signal::Logs => (
                    "changetrail_log_records_received_total",
                    "changetrail_log_records_rejected_total",
                    self.config.limits.max_log_records_per_request,
                ),
            };
            self.metrics.add(
                rejected,
                &[("reason", "too_many_in_request")],
                applied.excess_items,
            );
            self.metrics.add(received, &[], applied.excess_items);
            o.rejected += applied.excess_items;
            notes.push(format!(
                "{} {} rejected: more than {max} in one request ([otlp.limits])",
                applied.excess_items,
                T::ITEMS
            ));
        }
        if !o.message.is_empty() {
            notes.push(std::mem::take(&mut o.message));
        }
        let cut = applied.message();
        if !cut.is_empty() {
            notes.push(cut);
        }
        o.message = notes.join("; ");
        Ok(o)
    }

    pub fn count_request(&self, transport: &str, signal: Signal, outcome: &str) {
        self.metrics.add(
            "changetrail_otlp_requests_total",
            &[
                ("transport", transport),
                ("signal", signal.label()),
                ("outcome", outcome),
            ],
            1,
        );
    }

    /// What an item received now from `sender` is stamped with.
    fn intake(&self, sender: SentBy) -> Intake {
        Intake {
            received_ns: crate::sys::now_ns(),
            sent_by: Some(sender),
            max_lateness_ns: None,
            max_clock_skew_ns: self.config.max_clock_skew_ns,
        }
    }

    /// Whether `sender` may have `bytes` of rows stored now; "retry later" when it stores faster
    /// than `otlp.max_stored_bytes_per_second_per_token`.
    fn pace(&self, sender: &str, bytes: usize) -> Result<(), IngestError> {
        self.pacer
            .take(sender, bytes, std::time::Instant::now())
            .map_err(|wait| {
                self.metrics.add(
                    "changetrail_otlp_admission_refused_total",
                    &[("reason", "store_rate")],
                    1,
                );
                IngestError::Unavailable {
                    message: "this ingest token stores more than it may per second; retry shortly"
                        .into(),
                    retry_after: wait.max(self.config.retry_after),
                }
            })
    }

    fn read_error(&self, e: &ReadError) -> IngestError {
        if e.is_transient() {
            IngestError::Unavailable {
                message: "storage is temporarily unavailable; retry shortly".into(),
                retry_after: self.config.retry_after,
            }
        } else {
            tracing::error!(error = %e, "Stored history could not be read.");
            IngestError::Internal(e.to_string())
        }
    }

    fn append_error(&self, e: &AppendError) -> IngestError {
        if e.is_transient() {
            IngestError::Unavailable {
                message: match e {
                    AppendError::Overloaded => "changetrail is overloaded; retry shortly".into(),
                    AppendError::Stopped => "changetrail is shutting down; retry shortly".into(),
                    _ => "storage is temporarily unavailable; retry shortly".into(),
                },
                retry_after: self.config.retry_after,
            }
        } else {
            tracing::error!(error = %e, "Telemetry could not be committed.");
            IngestError::Internal(e.to_string())
        }
    }
}
