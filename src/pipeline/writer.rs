//! The ledger writer: every append is one transaction under the head lock — build (chain, commit,
//! sign on all cores), insert, maybe checkpoint (only if consistent with the previous one), commit.
//! Used by the sequencer task and by the CLI commands that append (rotate, erase, checkpoint).

use super::fresh::FreshTelemetry;
use super::work::Work;
use crate::core::alerts;
use crate::core::evidence::FactRecord;
use crate::core::evidence::telemetry::{LogRow, SpanRow};
use crate::core::ledger::batch::{
    self, BatchError, BuildTimings, BuiltBatch, CheckpointRefused, Draft, DraftError, Head,
};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::{KeyId, LedgerKey};
use crate::core::ledger::merkle::{consistency_ranges, fold_nodes, perfect_nodes};
use crate::storage::{AppendTx, CheckpointRow, HeadRow, KeyRow, StorageError, Store, TokenRow};
use crate::sys::{now_ns, random_bytes};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Draft(#[from] DraftError),
    #[error("checkpoint refused: {0}")]
    CheckpointRefused(#[from] CheckpointRefused),
    #[error(
        "the ledger has not been created yet (run `changetrail serve` or `changetrail migrate` first)"
    )]
    NoLedger,
    #[error("ledger {ledger} already exists; this key is for {ours}")]
    OtherLedger { ledger: String, ours: String },
    #[error("cannot erase entry {0}: {1}")]
    Erase(u64, String),
    #[error("the signing key cannot be reloaded: {0}")]
    KeyReload(String),
    #[error("the sequencer is not running")]
    Stopped,
    #[error("the append queue is full")]
    Overloaded,
    #[error("no active token with id {0}")]
    NoActiveToken(String),
}

impl AppendError {
    /// True when trying again later may succeed (the client should get a retryable answer).
    pub fn is_transient(&self) -> bool {
        match self {
            AppendError::Storage(e) => e.is_transient(),
            AppendError::Overloaded | AppendError::Stopped => true,
            _ => false,
        }
    }
}

/// Cumulative cost counters, read by the benchmark and by /metrics later.
#[derive(Debug, Default)]
pub struct WriterMetrics {
    pub entries: AtomicU64,
    pub batches: AtomicU64,
    pub checkpoints: AtomicU64,
    pub encode_ns: AtomicU64,
    pub hash_ns: AtomicU64,
    pub sign_ns: AtomicU64,
    /// Inserts, head update, checkpoint and commit: everything but building the batch.
    pub storage_ns: AtomicU64,
    /// Sequencer transactions: how many, their rows, their total and largest latency.
    pub commits: AtomicU64,
    pub commit_rows: AtomicU64,
    pub commit_ns: AtomicU64,
    pub commit_max_ns: AtomicU64,
    /// Batches signed ahead of their transaction (while the previous one committed) and used,
    /// and those thrown away because the head or the stored rows were not as predicted.
    pub prebuilt_used: AtomicU64,
    pub prebuilt_discarded: AtomicU64,
}

impl WriterMetrics {
    pub fn record_commit(&self, rows: usize, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.commit_ns.fetch_add(ns, Ordering::Relaxed);
        self.commit_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Adds one build's phases to the totals; returns their sum.
    fn record_build(&self, t: &BuildTimings) -> u64 {
        self.encode_ns.fetch_add(t.encode_ns, Ordering::Relaxed);
        self.hash_ns.fetch_add(t.hash_ns, Ordering::Relaxed);
        self.sign_ns.fetch_add(t.sign_ns, Ordering::Relaxed);
        t.encode_ns + t.hash_ns + t.sign_ns
    }
}

/// A batch chained and signed ahead of its transaction, while the previous transaction commits,
/// against the head that transaction will leave. It is used only if, under the head lock, the
/// head is exactly that one and the stored rows select exactly the drafts it was built from;
/// otherwise it is dropped and the batch is built again in the transaction. Nothing of it is
/// stored or shown unless it is used, so a dropped one is like a rolled-back transaction.
pub struct Prebuilt {
    on: Head,
    built: BuiltBatch,
    timings: BuildTimings,
}

impl Prebuilt {
    /// The head after this batch, on which the following batch can be prebuilt.
    pub fn head_after(&self) -> &Head {
        &self.built.head
    }

    /// The head this batch was signed on.
    pub fn signed_on(&self) -> &Head {
        &self.on
    }

    /// The built batch, if it was built on `head` from exactly `drafts`.
    fn take_if(self, head: &Head, drafts: &[Draft]) -> Option<(BuiltBatch, BuildTimings)> {
        let same = self.on == *head
            && self.built.entries.len() == drafts.len()
            && self.built.entries.iter().zip(drafts).all(|(e, d)| {
                e.kind == d.kind() && e.subject == d.subject() && e.payload == d.payload()
            });
        same.then_some((self.built, self.timings))
    }
}

/// Where the signing key comes from, so a rotation made by another process can be picked up.
pub trait KeySource: Send + Sync {
    /// Returns the key with `wanted` id if this source can provide it now.
    fn load(&self, wanted: KeyId) -> Result<LedgerKey, String>;
}

/// Kept telemetry to store in an append, referenced by `spans.bound` / `logs.bound` entries.
#[derive(Debug, Default, Clone)]
pub struct Telemetry {
    pub spans: Vec<SpanRow>,
    pub logs: Vec<LogRow>,
    /// Facts about changes that the telemetry (or an import) states.
    pub facts: Vec<FactRecord>,
}

impl Telemetry {
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.logs.is_empty() && self.facts.is_empty()
    }
}

pub struct LedgerWriter {
    store: Store,
    key: RwLock<Arc<LedgerKey>>,
    key_source: Option<Box<dyn KeySource>>,
    checkpoint_every: u64,
    software: String,
    pub metrics: WriterMetrics,
    /// The head this writer's last transaction committed: what the next batch is signed
    /// against ahead of its transaction (another process may have moved it since: then the
    /// prediction fails under the lock and the batch is built again).
    last_head: std::sync::Mutex<Option<Head>>,
}

/// What an append produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// Sequence numbers of the caller's drafts, in order.
    pub seqs: Vec<u64>,
    pub checkpoint: Option<u64>,
    /// Telemetry rows newly stored, and those already stored (a retried export).
    pub spans_stored: u64,
    pub spans_duplicate: u64,
    pub logs_stored: u64,
    pub logs_duplicate: u64,
    pub facts_stored: u64,
    pub facts_duplicate: u64,
}

impl LedgerWriter {
    pub fn new(
        store: Store,
        key: LedgerKey,
        key_source: Option<Box<dyn KeySource>>,
        checkpoint_every: u64,
    ) -> LedgerWriter {
        LedgerWriter {
            store,
            key: RwLock::new(Arc::new(key)),
            key_source,
            checkpoint_every: checkpoint_every.max(1),
            software: format!("changetrail {}", env!("CARGO_PKG_VERSION")),
            metrics: WriterMetrics::default(),
            last_head: std::sync::Mutex::new(None),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A handle that reads the current signing key and can do nothing else (for report signing
    /// in the API, which must not hold the writer).
    pub fn key_handle(self: &Arc<Self>) -> KeyHandle {
        KeyHandle(self.clone())
    }

    pub fn key(&self) -> Arc<LedgerKey> {
        match self.key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_key(&self, key: LedgerKey) {
        let mut guard = match self.key.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(key);
    }

    /// Creates the ledger (entry 0 `ledger.created` and a first checkpoint) unless it exists.
    /// Safe when several processes start at once: creation happens under the writer lock.
    pub async fn ensure_ledger(&self) -> Result<HeadRow, AppendError> {
        let key = self.key();
        let mut tx = self.store.begin_append().await?;
        if let Some(existing) = tx.lock_head().await? {
            if &existing.head.origin != key.origin() {
                return Err(AppendError::OtherLedger {
                    ledger: existing.head.origin.to_string(),
                    ours: key.origin().to_string(),
                });
            }
            self.remember_head(&existing.head);
            return Ok(existing);
        }
        let now = now_ns();
        let head = Head::empty(key.origin().clone(), key.key_id());
        let draft = batch::genesis_draft(&key, &self.software)?;
        let (built, timings) = self.build(&head, vec![draft], now, key.clone()).await?;
        self.metrics.record_build(&timings);
        tx.insert_batch(&built).await?;
        tx.insert_key(&KeyRow {
            key_id: key.key_id().to_hex(),
            vkey: key.vkey().to_string(),
            from_seq: 0,
            rotation_seq: None,
        })
        .await?;
        let mut row = HeadRow {
            head: built.head,
            checkpoint_size: 0,
            checkpoint_time_ns: now,
        };
        self.checkpoint_in(&mut tx, &mut row, &key, now).await?;
        tx.write_head(&row, true).await?;
        tx.commit().await?;
        self.remember_head(&row.head);
        Ok(row)
    }

    /// Appends drafts in one transaction; a checkpoint follows every `checkpoint_every` entries.
    pub async fn append(&self, drafts: &[Draft]) -> Result<Appended, AppendError> {
        self.run(Work::Drafts(drafts, &Telemetry::default()), None)
            .await
    }

    /// Appends drafts and stores telemetry in one transaction: spans and log records not stored
    /// before are written with the entries that reference them; repeats are counted, not stored.
    pub async fn append_with_telemetry(
        &self,
        drafts: &[Draft],
        telemetry: &Telemetry,
    ) -> Result<Appended, AppendError> {
        self.run(Work::Drafts(drafts, telemetry), None).await
    }

    /// `append_with_telemetry` with a batch `prepare`d from the same drafts and telemetry; it is
    /// used if the ledger is still as predicted, else the batch is built again.
    pub async fn append_prepared(
        &self,
        drafts: &[Draft],
        telemetry: &Telemetry,
        prebuilt: Option<Prebuilt>,
    ) -> Result<Appended, AppendError> {
        self.run(Work::Drafts(drafts, telemetry), prebuilt).await
    }

    /// Chains and signs what `append_prepared(drafts, telemetry)` would append after `head`,
    /// predicting that none of the telemetry is stored yet (a retried export is the exception,
    /// and the transaction then builds the batch again). Pure computation: no lock, no storage.
    pub async fn prepare(
        &self,
        head: &Head,
        drafts: &[Draft],
        telemetry: &Telemetry,
    ) -> Result<Prebuilt, AppendError> {
        let fresh =
            FreshTelemetry::select(telemetry, &HashSet::new(), &HashSet::new(), &HashSet::new())?;
        let all: Vec<Draft> = drafts
            .iter()
            .cloned()
            .chain(fresh.entries.iter().map(|e| e.draft.clone()))
            .collect();
        let (built, timings) = self.build(head, all, now_ns(), self.key()).await?;
        Ok(Prebuilt {
            on: head.clone(),
            built,
            timings,
        })
    }

    /// Signs a checkpoint of everything appended so far, if anything is uncovered.
    pub async fn checkpoint(&self) -> Result<Appended, AppendError> {
        self.run(Work::Checkpoint, None).await
    }

    /// Appends a `heartbeat` entry and a checkpoint covering it, if the ledger (as the head row
    /// shows it under the lock, whoever appended) has been idle for `idle`.
    pub async fn heartbeat(&self, idle: std::time::Duration) -> Result<Appended, AppendError> {
        let idle_ns = i64::try_from(idle.as_nanos()).unwrap_or(i64::MAX);
        self.run(Work::Heartbeat(idle_ns), None).await
    }

    /// Appends `key.rotated` (signed by the current key, counter-signed by `new_key`); every
    /// later entry and checkpoint is signed by `new_key`.
    pub async fn rotate(&self, new_key: LedgerKey) -> Result<Appended, AppendError> {
        let new_key = Arc::new(new_key);
        let out = self.run(Work::Rotate(new_key.clone()), None).await?;
        if let Ok(k) = Arc::try_unwrap(new_key) {
            self.set_key(k);
        }
        Ok(out)
    }

    /// Stores a new API token with the `token.created` entry that records it (`by`: who made it).
    pub async fn create_token(&self, row: &TokenRow, by: &str) -> Result<Appended, AppendError> {
        self.run(Work::CreateToken { row, by }, None).await
    }

    /// Revokes an active token with a `token.revoked` entry; `NoActiveToken` if there is none.
    pub async fn revoke_token(&self, id: &str, by: &str) -> Result<Appended, AppendError> {
        self.run(Work::RevokeToken { id, by }, None).await
    }

    /// Records tokens made before the ledger recorded tokens (once, on upgrade).
    pub async fn adopt_tokens(&self, rows: &[TokenRow]) -> Result<Appended, AppendError> {
        self.run(Work::AdoptTokens(rows), None).await
    }

    /// Raises and resolves alerts: for each look (a change's exception codes now, in `codes`),
    /// `alert.resolved` for open codes it no longer shows and `alert.raised` for codes it shows
    /// that are not open, each with a pending delivery per destination. Appends nothing when the
    /// open codes already match (another instance was first).
    pub async fn alerts(
        &self,
        looks: &[alerts::Look],
        destinations: &[String],
    ) -> Result<Appended, AppendError> {
        self.run(
            Work::Alerts {
                looks,
                destinations,
            },
            None,
        )
        .await
    }

    /// Appends `alert.delivered` for a delivery claimed by `token` and marks it delivered;
    /// appends nothing (empty `seqs`) when the claim was lost to another holder.
    pub async fn alert_delivered(
        &self,
        change_id: &str,
        delivered: &alerts::Delivered,
        token: i64,
    ) -> Result<Appended, AppendError> {
        self.run(
            Work::AlertDelivered {
                change_id,
                delivered,
                token,
            },
            None,
        )
        .await
    }

    /// Erases the payload and salt of entry `seq` and logs it with a `payload.erased` entry.
    pub async fn erase(
        &self,
        seq: u64,
        reason: &str,
        requested_by: &str,
    ) -> Result<Appended, AppendError> {
        self.run(
            Work::Erase {
                seq,
                reason: reason.to_owned(),
                requested_by: requested_by.to_owned(),
            },
            None,
        )
        .await
    }

    async fn run(
        &self,
        work: Work<'_>,
        mut prebuilt: Option<Prebuilt>,
    ) -> Result<Appended, AppendError> {
        // Retry once after reloading the key if another process rotated it meanwhile.
        let mut reloaded = false;
        loop {
            match self.run_once(&work, prebuilt.take()).await {
                Err(AppendError::Batch(BatchError::KeyMismatch { ledger, .. })) if !reloaded => {
                    reloaded = true;
                    let source = self.key_source.as_ref().ok_or_else(|| {
                        AppendError::KeyReload(format!(
                            "the ledger is now signed by key {ledger}; restart with that key"
                        ))
                    })?;
                    let key = source.load(ledger).map_err(AppendError::KeyReload)?;
                    tracing::warn!(key_id = %ledger, "The ledger key was rotated elsewhere; reloaded it.");
                    self.set_key(key);
                }
                other => return other,
            }
        }
    }

    /// One append transaction, in this order: lock the head, build the batch (chain, commit,
    /// sign) unless `prebuilt` was built on this very head from these very drafts, insert it with
    /// the rows that go with it, checkpoint if due (only if consistent with the previous one),
    /// commit, answer.
    async fn run_once(
        &self,
        work: &Work<'_>,
        prebuilt: Option<Prebuilt>,
    ) -> Result<Appended, AppendError> {
        let key = self.key();
        let started = Instant::now();
        let mut built_ns = 0;
        let mut tx = self.store.begin_append().await?;
        let mut row = tx.lock_head().await?.ok_or(AppendError::NoLedger)?;
        let now = now_ns();
        let (drafts, fresh) = work.drafts(&mut tx, &row.head).await?;
        // A prebuilt batch predicted that no telemetry row was stored before, and this head.
        let offered = prebuilt.is_some();
        let prebuilt = prebuilt
            .filter(|_| fresh.all_fresh)
            .and_then(|p| p.take_if(&row.head, &drafts));
        if offered && prebuilt.is_none() {
            self.metrics
                .prebuilt_discarded
                .fetch_add(1, Ordering::Relaxed);
        }
        // The key that signs this transaction's checkpoint must be the ledger's (a prebuilt
        // batch skips the build, which checks it): if another process rotated it, reload first.
        if key.key_id() != row.head.key_id {
            return Err(BatchError::KeyMismatch {
                ledger: row.head.key_id,
                ours: key.key_id(),
            }
            .into());
        }
        let mut seqs = Vec::new();
        // The entries' time (never behind the previous entry's): what derived rows record as
        // their receipt, so they agree with the signed entries.
        let mut batch_time = now;
        if !drafts.is_empty() {
            let m = &self.metrics;
            let built = match prebuilt {
                Some((built, timings)) => {
                    // Counted as build cost, though it was spent before this transaction began.
                    m.record_build(&timings);
                    m.prebuilt_used.fetch_add(1, Ordering::Relaxed);
                    built
                }
                None => {
                    let (built, timings) = self
                        .build(&row.head, drafts.into_owned(), now, key.clone())
                        .await?;
                    built_ns = m.record_build(&timings);
                    built
                }
            };
            seqs = built.entries.iter().map(|e| e.seq).collect();
            tx.insert_batch(&built).await?;
            row.head = built.head;
            batch_time = row.head.last_time_ns;
        }
        // Telemetry entries follow the caller's drafts; each row is stored with its entry's seq.
        let own_count = seqs.len() - fresh.entries.len();
        fresh
            .insert(&mut tx, &seqs[own_count..], batch_time)
            .await?;
        let appended_any = !seqs.is_empty();
        seqs.truncate(own_count);
        let (signer, force_checkpoint) = work
            .insert_rows(&mut tx, &mut row, &seqs, &key, batch_time)
            .await?;
        let due = row.head.size >= row.checkpoint_size + self.checkpoint_every;
        let mut checkpoint = None;
        if (force_checkpoint || due) && row.head.size > row.checkpoint_size {
            checkpoint = Some(self.checkpoint_in(&mut tx, &mut row, &signer, now).await?);
        }
        if appended_any || checkpoint.is_some() {
            tx.write_head(&row, false).await?;
        }
        tx.commit().await?;
        self.remember_head(&row.head);
        self.record_append(started, built_ns, own_count + fresh.entries.len());
        Ok(Appended {
            seqs,
            checkpoint,
            spans_stored: fresh.spans.len() as u64,
            spans_duplicate: fresh.spans_duplicate,
            logs_stored: fresh.logs.len() as u64,
            logs_duplicate: fresh.logs_duplicate,
            facts_stored: fresh.facts.len() as u64,
            facts_duplicate: fresh.facts_duplicate,
        })
    }

    fn remember_head(&self, head: &Head) {
        let mut guard = match self.last_head.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(head.clone());
    }

    /// The head this writer last committed, if it committed anything yet.
    pub fn last_head(&self) -> Option<Head> {
        match self.last_head.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Counts a committed append of `entries` entries that began at `started` and spent
    /// `built_ns` of it building the batch.
    fn record_append(&self, started: Instant, built_ns: u64, entries: usize) {
        let m = &self.metrics;
        // Storage time is what the transaction took beyond building the batch.
        let total = started.elapsed().as_nanos() as u64;
        m.storage_ns
            .fetch_add(total.saturating_sub(built_ns), Ordering::Relaxed);
        m.entries.fetch_add(entries as u64, Ordering::Relaxed);
        m.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Chains, commits to and signs `drafts` after `head` on the blocking pool (all cores).
    async fn build(
        &self,
        head: &Head,
        drafts: Vec<Draft>,
        now: i64,
        key: Arc<LedgerKey>,
    ) -> Result<(BuiltBatch, BuildTimings), AppendError> {
        let salts: Vec<[u8; 32]> = (0..drafts.len()).map(|_| random_bytes()).collect();
        let head = head.clone();
        let epoch = Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            let clock = || epoch.elapsed().as_nanos() as u64;
            batch::build_batch(&head, &drafts, salts, now, &key, &clock)
        })
        .await
        .map_err(|e| AppendError::KeyReload(format!("batch builder failed: {e}")))??;
        Ok(built)
    }

    /// Signs and stores a checkpoint of `row.head` inside `tx`, after proving it consistent with
    /// the previous checkpoint from the stored tree.
    async fn checkpoint_in(
        &self,
        tx: &mut AppendTx,
        row: &mut HeadRow,
        key: &LedgerKey,
        now: i64,
    ) -> Result<u64, AppendError> {
        let previous = tx.latest_checkpoint().await?;
        let mut proof: Vec<Hash> = Vec::new();
        if let Some(prev) = &previous
            && prev.size > 0
            && prev.size < row.head.size
        {
            for r in consistency_ranges(prev.size, row.head.size).unwrap_or_default() {
                let hashes = tx.nodes(&perfect_nodes(r)).await?;
                proof.extend(fold_nodes(&hashes));
            }
        }
        let (cp, note) = batch::sign_checkpoint(
            &row.head,
            key,
            previous.as_ref().map(|p| p.note.as_str()),
            &proof,
        )?;
        tx.insert_checkpoint(&CheckpointRow {
            size: cp.size,
            root: cp.root,
            note,
            key_id: key.key_id().to_hex(),
            created_ns: now,
        })
        .await?;
        row.checkpoint_size = cp.size;
        row.checkpoint_time_ns = now;
        self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(cp.size)
    }
}

/// The ledger's current signing key, read-only: it follows rotations, and cannot append.
#[derive(Clone)]
pub struct KeyHandle(Arc<LedgerWriter>);

impl KeyHandle {
    /// The key in force now.
    pub fn current(&self) -> Arc<LedgerKey> {
        self.0.key()
    }
}
