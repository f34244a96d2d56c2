//! The sequencer task: takes whatever is queued (up to a batch limit), appends it in one
//! transaction, then answers every caller in the batch. Between batches it issues time-based
//! checkpoints and idle heartbeats. On shutdown it drains the queue before stopping.

use super::writer::{AppendError, Appended, LedgerWriter, Telemetry};
use crate::core::ledger::batch::Draft;
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

struct Job {
    drafts: Vec<Draft>,
    telemetry: Telemetry,
    reply: oneshot::Sender<Result<Appended, Arc<AppendError>>>,
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
    loop {
        tokio::select! {
            biased;
            job = rx.recv() => match job {
                Some(job) => run_batch(&writer, &cfg, job, &mut rx).await,
                None => break,
            },
            _ = shutdown.cancelled() => {
                // Stop taking new work, then commit everything already accepted.
                rx.close();
                while let Some(job) = rx.recv().await {
                    run_batch(&writer, &cfg, job, &mut rx).await;
                }
                break;
            }
            _ = tick.tick() => housekeeping(&writer, &cfg).await,
        }
    }
    if let Err(e) = writer.checkpoint().await {
        tracing::warn!(error = %e, "Final checkpoint at shutdown failed.");
    }
    tracing::info!("Sequencer stopped.");
}

async fn run_batch(
    writer: &LedgerWriter,
    cfg: &SequencerConfig,
    first: Job,
    rx: &mut mpsc::Receiver<Job>,
) {
    let mut count = first.weight();
    let mut jobs = vec![first];
    while count < cfg.batch_max_entries {
        match rx.try_recv() {
            Ok(job) => {
                count += job.weight();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    let sizes: Vec<usize> = jobs.iter().map(|j| j.drafts.len()).collect();
    let mut drafts = Vec::new();
    let mut telemetry = Telemetry::default();
    let mut replies = Vec::with_capacity(jobs.len());
    let mut holds = Vec::with_capacity(jobs.len());
    for j in jobs {
        drafts.extend(j.drafts);
        telemetry.spans.extend(j.telemetry.spans);
        telemetry.logs.extend(j.telemetry.logs);
        telemetry.facts.extend(j.telemetry.facts);
        replies.push(j.reply);
        holds.push(j.hold);
    }
    let started = std::time::Instant::now();
    let mut result = writer.append_with_telemetry(&drafts, &telemetry).await;
    // A busy database (another process holding the lock too long) is worth one more try.
    if let Err(e) = &result
        && e.is_transient()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = writer.append_with_telemetry(&drafts, &telemetry).await;
    }
    writer.metrics.record_commit(count, started.elapsed());
    // What the callers held for these rows is given back once they are committed (or failed),
    // before anyone is answered.
    drop(holds);
    match result {
        Ok(appended) => {
            let mut offset = 0;
            for (reply, n) in replies.into_iter().zip(sizes) {
                let part = Appended {
                    seqs: appended.seqs[offset..offset + n].to_vec(),
                    ..appended.clone()
                };
                offset += n;
                let _ = reply.send(Ok(part));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, rows = count, "Append failed; callers are told to retry.");
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
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
        writer.heartbeat().await.map(|_| ())
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
