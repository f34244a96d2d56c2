//! Parking that outlives the process and is shared between instances: parked spans go to the
//! journal before their export is answered and come back from it at start; traces bound by
//! evidence committed anywhere (another instance on the same database, or this one before a
//! restart) are bound here too, releasing what waited for them.
//!
//! The committed telemetry is the one source of truth about bindings: a stored span or log
//! record means its trace is bound to its subject. An instance follows the entries committed
//! after its cursor (`Store::bound_traces`) and binds what they name; its own bindings come back
//! as no-ops. That is also how a restarted instance learns the bindings of the last window.

use super::*;
use journal::ReplayStats;
use tokio_util::sync::CancellationToken;

/// Who the rows released by a sync are recorded as received from: the spans' own senders are not
/// kept in parking, and the binding evidence names its sender already.
const SYNC_SENDER: &str = "changetrail binding sync";

/// Entries looked at per query while following the chain (a `spans.bound` entry binds up to a
/// batch of spans; the query returns each trace once).
const SYNC_CHUNK: u64 = 2_000;

/// Attempts at one range before a failure that does not go away is logged, counted and skipped:
/// one bad range must not stop every later binding.
const SYNC_ATTEMPTS: u32 = 5;

impl Ingestor {
    /// Writes spans about to be parked to the journal, if there is one. A failed write is logged
    /// and counted, and the spans stay parked in memory: the evidence path must not stop because
    /// the journal's disk did.
    pub(super) fn journal_parked<'a>(
        &self,
        spans: impl IntoIterator<Item = &'a ParkedSpan>,
        intake: &Intake,
    ) {
        let Some(j) = &self.journal else { return };
        let anonymous = SentBy {
            token_id: None,
            name: String::new(),
        };
        let sender = intake.sent_by.as_ref().unwrap_or(&anonymous);
        let request = convert::JournalRequest::of(spans.into_iter().collect());
        let written = j.append_with(
            intake.received_ns,
            sender,
            request.encoded_len(),
            |out| request.write(out),
            crate::sys::now_ns(),
        );
        if let Err(e) = written {
            self.metrics.add("changetrail_journal_errors_total", &[], 1);
            tracing::error!(error = %e, "Could not write parked spans to the parking journal; they are parked in memory only.");
        }
    }

    /// Committed entries the binding sync has yet to look at, as of its last step.
    pub fn binding_lag(&self) -> u64 {
        self.binding_lag.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the journal holds on disk (0 without one).
    pub fn journal_bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.bytes())
    }

    /// Wraps the journal's segment keys under the key `secret` derives, if it is not the one in
    /// use (the signing key rotated).
    pub fn rekey_journal(&self, secret: &[u8; 32]) {
        if let Some(j) = &self.journal
            && !j.uses(secret)
        {
            match j.rekey(secret) {
                Ok(()) => tracing::info!(
                    "The signing key rotated; the parking journal's keys are wrapped under the new one."
                ),
                Err(e) => {
                    self.metrics.add("changetrail_journal_errors_total", &[], 1);
                    tracing::error!(error = %e, "Could not wrap the parking journal's keys under the rotated signing key.");
                }
            }
        }
    }

    /// Flushes the journal to disk and applies its bounds.
    pub fn sync_journal(&self) {
        if let Some(j) = &self.journal
            && let Err(e) = j.sync(crate::sys::now_ns())
        {
            self.metrics.add("changetrail_journal_errors_total", &[], 1);
            tracing::error!(error = %e, "Could not flush the parking journal.");
        }
    }

    /// Parks again what the journal holds from the last window, each span aged as it was when
    /// it first arrived. Run once at start, before the listeners open.
    pub fn replay_journal(&self) -> std::io::Result<ReplayStats> {
        let Some(j) = &self.journal else {
            return Ok(ReplayStats::default());
        };
        let now_ns = crate::sys::now_ns();
        let now = Instant::now();
        let skew = self.config.max_clock_skew_ns.max(0) as u64;
        let mut replayed = 0u64;
        let stats = j.replay(now_ns, |r| {
            use prost::Message as _;
            let Ok(req) = ExportTraceServiceRequest::decode(r.request.as_slice()) else {
                return;
            };
            let (items, _) = convert::spans(req.resource_spans, now_ns.max(0) as u64, skew);
            let age = Duration::from_nanos(u64::try_from(now_ns - r.received_ns).unwrap_or(0));
            let at = now.checked_sub(age).unwrap_or(now);
            let source = SourceId::of(&r.sender);
            replayed += items.len() as u64;
            self.binder.with(at, |v| {
                for item in items {
                    traces::park_item(v, item, source);
                }
            });
        })?;
        self.metrics
            .add("changetrail_spans_replayed_total", &[], replayed);
        Ok(stats)
    }

    /// Binds the traces that telemetry committed with entries `after < seq <= upto` is bound
    /// to, and stores the parked spans that releases. Returns how many were released; on an
    /// error they are parked again, and the caller retries the same range.
    pub async fn bind_committed(&self, after: u64, upto: u64) -> Result<u64, IngestError> {
        let bindings =
            self.history
                .bound_traces(after, upto)
                .await
                .map_err(|e| IngestError::Unavailable {
                    message: format!("cannot read committed bindings: {e}"),
                    retry_after: self.config.retry_after,
                })?;
        if bindings.is_empty() {
            return Ok(0);
        }
        let mut released = Vec::new();
        self.binder.with(Instant::now(), |v| {
            for (trace, subject) in &bindings {
                released.extend(traces::bind_all(v, *trace, subject));
            }
        });
        if released.is_empty() {
            return Ok(0);
        }
        let sender = SentBy {
            token_id: None,
            name: SYNC_SENDER.to_owned(),
        };
        let source = SourceId::of(&sender);
        let intake = self.intake(sender);
        // Rows are held in the in-flight budget like any export's; what does not fit now goes
        // back to parking (never dropped: these spans were acknowledged) for the next sync.
        let mut hold = self.hold_for(SYNC_SENDER);
        let mut fits = Vec::with_capacity(released.len());
        let mut refused = Vec::new();
        for (p, rule, subject) in released {
            let room = hold.grow(p.row_bytes(&self.redactor)).is_ok();
            if let Some(item) = p.unpark() {
                if room {
                    fits.push((item, rule, subject));
                } else {
                    refused.push((item, rule, subject));
                }
            }
        }
        if !refused.is_empty() {
            self.repark(refused, source);
        }
        let released = fits;
        let mut facts = Vec::new();
        let rows = self.span_rows(released.iter(), &intake, &mut facts);
        let count = rows.len() as u64;
        let result = self
            .appender
            .append_telemetry_holding(
                Telemetry {
                    spans: rows,
                    logs: Vec::new(),
                    facts,
                },
                Box::new(hold.take()),
            )
            .await;
        match result {
            Ok(done) => {
                let stored = count.saturating_sub(done.spans_duplicate);
                self.metrics
                    .add("changetrail_spans_released_by_sync_total", &[], stored);
                Ok(stored)
            }
            Err(e) => {
                self.repark(released, source);
                Err(self.append_error(&e))
            }
        }
    }
}

/// Follows the committed chain every `interval`: binds what other instances bound (and, right
/// after a start, what was bound in the last two windows: a replayed span may wait a whole window
/// for a binding made up to a window before it arrived), flushes the journal, and wraps the
/// journal's keys again when the signing key rotated. Stops with `stop`.
pub async fn run_binding_sync(
    ing: Arc<Ingestor>,
    writer: Arc<crate::pipeline::LedgerWriter>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut cursor: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let caught_up = match sync_once(&ing, &mut cursor).await {
            Ok(caught_up) => {
                failures = 0;
                caught_up
            }
            Err((e, range_end)) => {
                failures += 1;
                if failures >= SYNC_ATTEMPTS
                    && let Some(end) = range_end
                {
                    tracing::error!(error = %e, through = end, "Binding sync gave up on a range of entries; spans parked for its traces wait for their own bindings.");
                    ing.metrics
                        .add("changetrail_binding_sync_skipped_total", &[], 1);
                    cursor = Some(end);
                    failures = 0;
                } else {
                    tracing::warn!(error = %e, "Binding sync failed; retrying.");
                }
                true
            }
        };
        let ing2 = ing.clone();
        let secret = writer.key().derive_secret(journal::KEY_LABEL);
        // File work (fsync, rewrapping headers) belongs on a blocking thread.
        let _ = tokio::task::spawn_blocking(move || {
            ing2.rekey_journal(&secret);
            ing2.sync_journal();
        })
        .await;
        if caught_up {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

/// One step: at most `SYNC_CHUNK` entries; whether the cursor reached the head. On an error, the
/// end of the range that failed.
async fn sync_once(
    ing: &Ingestor,
    cursor: &mut Option<u64>,
) -> Result<bool, (IngestError, Option<u64>)> {
    let unavailable = |e: crate::read::ReadError| {
        (
            IngestError::Unavailable {
                message: e.to_string(),
                retry_after: ing.config.retry_after,
            },
            *cursor,
        )
    };
    let size = ing.history.ledger_size().await.map_err(unavailable)?;
    if size == 0 {
        return Ok(true);
    }
    let from = match *cursor {
        Some(c) => c,
        None => {
            let window = i64::try_from(ing.config.late_binding_window.as_nanos()).unwrap_or(0);
            let since = crate::sys::now_ns().saturating_sub(window.saturating_mul(2));
            // "after" is exclusive: start one before the first entry of the two windows (seq 0
            // is the ledger's creation, which binds nothing).
            let first = ing
                .history
                .first_seq_at(since, size)
                .await
                .map_err(unavailable)?;
            first.saturating_sub(1)
        }
    };
    let upto = size.saturating_sub(1).min(from + SYNC_CHUNK);
    if upto > from {
        ing.bind_committed(from, upto)
            .await
            .map_err(|e| (e, Some(upto)))?;
    }
    *cursor = Some(upto.max(from));
    ing.binding_lag.store(
        size.saturating_sub(upto.max(from) + 1),
        std::sync::atomic::Ordering::Relaxed,
    );
    Ok(upto + 1 >= size)
}
