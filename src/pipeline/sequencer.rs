//! The sequencer task: takes whatever is queued (up to a batch limit), appends it in one
//! transaction, then answers every caller in the batch. While one batch commits, the next is
//! gathered and signed against the head the commit will leave (used only if the ledger is then
//! exactly as predicted). Between batches it issues time-based checkpoints and idle heartbeats.
//! On shutdown it drains the queue before stopping.

use super::writer::{AppendError, Appended, LedgerWriter, Prebuilt, Telemetry};
use crate::core::ledger::batch::{Draft, Head};
use crate::sys::now_ns;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct SequencerConfig {
    /// Queued append requests before callers are told to retry.
    pub queue_capacity: usize,
    /// Entries per transaction at most.
    pub batch_max_entries: usize,
    /// Sign a checkpoint when entries are uncovered for this long.
    pub checkpoint_interval: Duration,
    /// Append a heartbeat (and checkpoint) when nothing was appended for this long.
    pub heartbeat_interval: Duration,
    /// How often the timers above are looked at.
    pub tick: Duration,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig {
            queue_capacity: 1024,
            batch_max_entries: 4096,
            checkpoint_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15 * 60),
            tick: Duration::from_secs(1),
        }
    }
}

/// What a caller keeps alive until its job is committed or failed (ingest's hold on the
/// in-flight byte budget: rows waiting in the queue stay counted even if the caller goes away).
pub type Hold = Box<dyn std::any::Any + Send>;

/// Where a job's outcome goes: its entries' seqs once committed, or why not.
type Reply = oneshot::Sender<Result<Appended, Arc<AppendError>>>;

struct Job {
    drafts: Vec<Draft>,
    telemetry: Telemetry,
    reply: Reply,
    hold: Option<Hold>,
}

impl Job {
    /// Rows this job adds to a transaction, for the batch limit.
    fn weight(&self) -> usize {
        self.drafts.len()
            + self.telemetry.spans.len()
            + self.telemetry.logs.len()
            + self.telemetry.facts.len()
    }
}

/// A handle for appending through the sequencer. Cheap to clone.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Job>,
}

impl Appender {
    /// Queues `drafts` and waits until they are committed. A full queue fails at once with
    /// `Overloaded` (retryable) rather than waiting: callers turn that into UNAVAILABLE/503.
    pub async fn append(&self, drafts: Vec<Draft>) -> Result<Appended, Arc<AppendError>> {
        self.submit(drafts, Telemetry::default(), None).await
    }

    /// Queues kept telemetry; answers once it is committed with the entries that reference it.
    pub async fn append_telemetry(
        &self,
        telemetry: Telemetry,
    ) -> Result<Appended, Arc<AppendError>> {
        self.submit(Vec::new(), telemetry, None).await
    }

    /// Like `append_telemetry`, keeping `hold` alive until the job is done.
    pub async fn append_telemetry_holding(
        &self,
        telemetry: Telemetry,
        hold: Hold,
    ) -> Result<Appended, Arc<AppendError>> {
        self.submit(Vec::new(), telemetry, Some(hold)).await
    }

    async fn submit(
        &self,
        drafts: Vec<Draft>,
        telemetry: Telemetry,
        hold: Option<Hold>,
    ) -> Result<Appended, Arc<AppendError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job {
                drafts,
                telemetry,
                reply,
                hold,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Arc::new(AppendError::Overloaded),
                mpsc::error::TrySendError::Closed(_) => Arc::new(AppendError::Stopped),
            })?;
        rx.await.map_err(|_| Arc::new(AppendError::Stopped))?
    }

    /// Like `append`, but waits for queue space instead of failing (for batch tools).
    pub async fn append_waiting(&self, drafts: Vec<Draft>) -> Result<Appended, Arc<AppendError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                drafts,
                telemetry: Telemetry::default(),
                reply,
                hold: None,
            })
            .await
            .map_err(|_| Arc::new(AppendError::Stopped))?;
        rx.await.map_err(|_| Arc::new(AppendError::Stopped))?
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// Starts the sequencer. It stops after `shutdown` is cancelled and the queue is drained.
pub fn spawn_sequencer(
    writer: Arc<LedgerWriter>,
    cfg: SequencerConfig,
    shutdown: CancellationToken,
) -> (Appender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
    let handle = tokio::spawn(run(writer, cfg, rx, shutdown));
    (Appender { tx }, handle)
}

async fn run(
    writer: Arc<LedgerWriter>,
    cfg: SequencerConfig,
    mut rx: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The batch gathered and signed while the previous one committed, if any.
    let mut next: Option<(Batch, Option<Prebuilt>)> = None;
    let mut ahead = SignAhead::default();
    let mut closed = false;
    loop {
        if shutdown.is_cancelled() && !closed {
            // Stop taking new work, then commit everything already accepted.
            rx.close();
            closed = true;
        }
        let (batch, prebuilt) = match next.take() {
            Some(carried) => {
                // Under continuous load the select below is not reached: timers still run.
                if tick_due(&mut tick) {
                    housekeeping(&writer, &cfg).await;
                }
                carried
            }
            None => tokio::select! {
                biased;
                job = rx.recv() => match job {
                    Some(job) => (Batch::gather(job, &mut rx, cfg.batch_max_entries), None),
                    None => break,
                },
                _ = shutdown.cancelled(), if !closed => continue,
                _ = tick.tick() => {
                    housekeeping(&writer, &cfg).await;
                    continue;
                }
            },
        };
        next = commit_and_prepare(&writer, &cfg, &mut ahead, batch, prebuilt, &mut rx).await;
    }
    if let Err(e) = writer.checkpoint().await {
        tracing::warn!(error = %e, "Final checkpoint at shutdown failed.");
    }
    tracing::info!("Sequencer stopped.");
}

/// True (and the timer reset) if the housekeeping timer has fired, without waiting for it.
fn tick_due(tick: &mut tokio::time::Interval) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    tick.poll_tick(&mut cx).is_ready()
}

/// Jobs appended in one transaction, and how to answer each.
struct Batch {
    drafts: Vec<Draft>,
    telemetry: Telemetry,
    /// Each job's reply and its number of drafts, in queue order.
    replies: Vec<(Reply, usize)>,
    holds: Vec<Option<Hold>>,
    /// Rows, for the batch limit and the commit metrics.
    weight: usize,
}

impl Batch {
    /// `first` and whatever else is queued now, up to `max` rows.
    fn gather(first: Job, rx: &mut mpsc::Receiver<Job>, max: usize) -> Batch {
        let mut b = Batch {
            drafts: Vec::new(),
            telemetry: Telemetry::default(),
            replies: Vec::new(),
            holds: Vec::new(),
            weight: 0,
        };
        b.add(first);
        while b.weight < max {
            match rx.try_recv() {
                Ok(job) => b.add(job),
                Err(_) => break,
            }
        }
        b
    }

    fn add(&mut self, j: Job) {
        self.weight += j.weight();
        self.replies.push((j.reply, j.drafts.len()));
        self.drafts.extend(j.drafts);
        self.telemetry.spans.extend(j.telemetry.spans);
        self.telemetry.logs.extend(j.telemetry.logs);
        self.telemetry.facts.extend(j.telemetry.facts);
        self.holds.push(j.hold);
    }
}

/// Whether batches are signed ahead. Each wrong prediction (another process appended, a
/// retried export, a heartbeat) wastes one signing of a batch; when several come in a row (as
/// with several processes on one PostgreSQL) signing ahead costs more than it saves, so it
/// pauses for a while and then tries again.
#[derive(Default)]
struct SignAhead {
    misses_in_row: u32,
    paused_for: u32,
}

impl SignAhead {
    /// Wrong predictions in a row that pause signing ahead.
    const MISSES: u32 = 3;
    /// Batches it then stays paused.
    const PAUSE: u32 = 32;

    /// Whether this batch may be signed ahead; counts down a pause.
    fn active(&mut self) -> bool {
        if self.paused_for > 0 {
            self.paused_for -= 1;
            return false;
        }
        true
    }

    fn record(&mut self, predicted_right: bool) {
        if predicted_right {
            self.misses_in_row = 0;
        } else {
            self.misses_in_row += 1;
            if self.misses_in_row >= Self::MISSES {
                self.misses_in_row = 0;
                self.paused_for = Self::PAUSE;
            }
        }
    }
}

/// Signs `batch` against `head` ahead of its transaction; `None` (and a debug line) if that
/// cannot be done now, e.g. the key was rotated elsewhere: the transaction then builds it.
/// (Drafts and telemetry, not the batch: its holds are `Send` but not `Sync`.)
async fn prepare(
    writer: &LedgerWriter,
    head: &Head,
    drafts: &[Draft],
    telemetry: &Telemetry,
) -> Option<Prebuilt> {
    match writer.prepare(head, drafts, telemetry).await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!(error = %e, "Could not sign a batch ahead; it is built in its transaction.");
            None
        }
    }
}

/// Commits `batch` and, at the same time, gathers the next batch from the queue (what waits
/// there now, or the first job to arrive before the commit ends) and signs it against the head
/// this commit will leave: signing, the costliest step, then overlaps the database's work.
/// Returns the next batch, with its prebuilt entries if the head committed is the one they
/// were signed against.
async fn commit_and_prepare(
    writer: &LedgerWriter,
    cfg: &SequencerConfig,
    ahead: &mut SignAhead,
    batch: Batch,
    prebuilt: Option<Prebuilt>,
    rx: &mut mpsc::Receiver<Job>,
) -> Option<(Batch, Option<Prebuilt>)> {
    let active = ahead.active();
    // A batch not signed ahead (the first, after a wrong prediction, or one signed on a head
    // that is no longer this writer's last) is signed now against the head this writer last
    // committed, so the head it leaves is known and the next batch can be signed meanwhile.
    let last = writer.last_head();
    let prebuilt = match (prebuilt, &last) {
        _ if !active => None,
        (Some(p), Some(head)) if p.signed_on() == head => Some(p),
        (_, Some(head)) => prepare(writer, head, &batch.drafts, &batch.telemetry).await,
        (_, None) => None,
    };
    let after = prebuilt.as_ref().map(|p| p.head_after().clone());
    let committed = CancellationToken::new();
    let commit = async {
        let ok = commit_batch(writer, batch, prebuilt).await;
        committed.cancel();
        ok
    };
    let prepare_next = async {
        let first = tokio::select! {
            biased;
            job = rx.recv() => job?,
            _ = committed.cancelled() => return None,
        };
        let next = Batch::gather(first, rx, cfg.batch_max_entries);
        let prebuilt = match &after {
            Some(head) => prepare(writer, head, &next.drafts, &next.telemetry).await,
            None => None,
        };
        Some((next, prebuilt))
    };
    let (ok, next) = tokio::join!(commit, prepare_next);
    // Right only if this commit left exactly the head the next batch was signed on; a failed
    // commit or one that was built again (another writer moved the head) leaves another.
    let right = ok && after.is_some() && writer.last_head() == after;
    if after.is_some() {
        ahead.record(right);
    }
    next.map(|(b, p)| (b, p.filter(|_| right)))
}

/// Appends one batch in one transaction, then answers every caller in it. True if committed.
async fn commit_batch(writer: &LedgerWriter, batch: Batch, prebuilt: Option<Prebuilt>) -> bool {
    let Batch {
        drafts,
        telemetry,
        replies,
        holds,
        weight,
    } = batch;
    let started = std::time::Instant::now();
    let mut result = writer.append_prepared(&drafts, &telemetry, prebuilt).await;
    // A busy database (another process holding the lock too long) is worth one more try.
    if let Err(e) = &result
        && e.is_transient()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = writer.append_with_telemetry(&drafts, &telemetry).await;
    }
    writer.metrics.record_commit(weight, started.elapsed());
    // What the callers held for these rows is given back once they are committed (or failed),
    // before anyone is answered.
    drop(holds);
    match result {
        Ok(appended) => {
            let mut offset = 0;
            for (reply, n) in replies {
                let part = Appended {
                    seqs: appended.seqs[offset..offset + n].to_vec(),
                    ..appended.clone()
                };
                offset += n;
                let _ = reply.send(Ok(part));
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, rows = weight, "Append failed; callers are told to retry.");
            let e = Arc::new(e);
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
            false
        }
    }
}

async fn housekeeping(writer: &LedgerWriter, cfg: &SequencerConfig) {
    let head = match writer.store().head().await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the ledger head.");
            return;
        }
    };
    let now = now_ns();
    let elapsed = |since: i64| Duration::from_nanos(u64::try_from(now - since).unwrap_or(0));
    let result = if elapsed(head.head.last_time_ns) >= cfg.heartbeat_interval {
        writer.heartbeat(cfg.heartbeat_interval).await.map(|_| ())
    } else if head.head.size > head.checkpoint_size
        && elapsed(head.checkpoint_time_ns) >= cfg.checkpoint_interval
    {
        writer.checkpoint().await.map(|_| ())
    } else {
        Ok(())
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "Timed checkpoint or heartbeat failed.");
    }
}
